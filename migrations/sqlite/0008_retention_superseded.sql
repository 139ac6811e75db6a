-- Retention and privacy mode, and replaced (superseded) messages.
-- retention: a JSON object {conversation_days, memory_days, store_content} (a missing day count:
-- forever; store_content missing: true).
ALTER TABLE applications ADD COLUMN retention TEXT NOT NULL DEFAULT '{}';

-- A message replaced by a regenerate or an edit keeps its row, marked with when it was replaced;
-- it is never given to the model again and is listed only when asked for. A live message's client
-- id stays unique in its conversation; a replaced one gives its id up to the message that
-- replaces it (an edit keeps the AI SDK's message id).
ALTER TABLE messages ADD COLUMN superseded_at INTEGER;
DROP INDEX messages_conversation_client_id;
CREATE UNIQUE INDEX messages_conversation_client_id ON messages (conversation_id, client_id)
    WHERE client_id IS NOT NULL AND superseded_at IS NULL;

-- The purge finds an application's memories not written since the cutoff.
CREATE INDEX memories_application_updated ON memories (application_id, updated_at);
