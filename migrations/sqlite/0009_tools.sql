-- Tools: an agent's tool set, and the tool calls and results of a conversation.
-- agents.tools: a JSON object {client: [OpenAI function tools], memory_tools, mcp_servers: [{name,
-- url, headers (values sealed under the master key), allowed_tools}], max_steps}; '{}' is no tools.
ALTER TABLE agents ADD COLUMN tools TEXT NOT NULL DEFAULT '{}';

-- An assistant message that calls tools carries them (a JSON array of {id, name, arguments}); a
-- tool message names the call it answers. A result's client_id is `tool:<call id>`, so the live
-- client-id index also keeps one result per call.
ALTER TABLE messages ADD COLUMN tool_calls TEXT;
ALTER TABLE messages ADD COLUMN tool_call_id TEXT;
