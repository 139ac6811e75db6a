// Tools with real clients, unchanged: the AI SDK 5 chat runs a client tool with onToolCall and
// addToolResult, @ag-ui/client's HttpAgent runs turns (a client tool's result included), and the
// OpenAI SDK does a tool round trip, whole and streamed. The agent is the built-in echo model,
// whose `/call <tool> <json>` makes it call a tool and whose answer after a result is its text.

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";

import { HttpAgent } from "@ag-ui/client";
import { DefaultChatTransport, lastAssistantMessageIsCompleteWithToolCalls } from "ai";
import { SignJWT } from "jose";
import OpenAI from "openai";

import { BASE, EMAIL, PASSWORD, Chat, call } from "./chat.js";


const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

describe("tools with real clients", () => {
  let agentId = "";
  let kid = "";
  let secret = "";

  async function userToken(sub: string): Promise<string> {
    return new SignJWT({ sub })
      .setProtectedHeader({ alg: "HS256", kid })
      .setIssuedAt()
      .setExpirationTime("10m")
      .sign(new TextEncoder().encode(secret));
  }

  async function stored(token: string, conversation: string): Promise<any[]> {
    const read = await call("GET", `/v1/agents/${agentId}/conversations/${conversation}`, token);
    return read.messages;
  }

  before(async () => {
    const login = await call("POST", "/v1/auth/login", "", { email: EMAIL, password: PASSWORD });
    const access = login.access;
    const app = await call("POST", "/v1/applications", access, { name: `tools-${Date.now()}` });
    const agent = await call("POST", `/v1/applications/${app.id}/agents`, access, {
      name: "Weather",
      tools: [WEATHER],
      memory_tools: true,
    });
    agentId = agent.id;
    const key = await call("POST", `/v1/applications/${app.id}/authentication-keys`, access, {
      name: "backend",
      scope: { all_agents: true },
    });
    kid = key.id;
    secret = key.secret;
  });

  test("the AI SDK 5 chat runs a client tool with onToolCall and addToolResult", async () => {
    const token = await userToken("ai-sdk-tools");
    const calls: Array<{ toolName: string; input: unknown }> = [];
    const chat: Chat = new Chat({
      id: `tools-${Date.now()}`,
      transport: new DefaultChatTransport({
        api: `${BASE}/v1/agents/${agentId}/completions`,
        headers: { "X-Secure-User-Token": token },
      }),
      sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
      onToolCall: ({ toolCall }) => {
        calls.push({ toolName: toolCall.toolName, input: toolCall.input });
        const { city } = toolCall.input as { city: string };
        // As the AI SDK's docs do it: no await inside onToolCall.
        void chat.addToolResult({ tool: "get_weather", toolCallId: toolCall.toolCallId, output: `sunny in ${city}` });
      },
    });
    await chat.sendMessage({ text: '/call get_weather {"city": "Paris"}' });
    // The result goes back by itself; wait for the model's answer to it.
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const last = chat.messages.at(-1);
      const done = chat.status === "ready" && last?.parts.some((p) => p.type === "text" && p.text === "sunny in Paris");
      if (done || chat.status === "error") break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(chat.status, "ready", String(chat.error));
    assert.deepEqual(calls, [{ toolName: "get_weather", input: { city: "Paris" } }]);
    assert.equal(chat.messages.length, 2, JSON.stringify(chat.messages));
    const parts = chat.messages[1].parts.filter((p) => p.type !== "step-start");
    assert.equal(parts[0].type, "tool-get_weather");
    assert.equal((parts[0] as any).state, "output-available");
    const last = parts.at(-1) as { type: string; text?: string };
    assert.deepEqual([last.type, last.text], ["text", "sunny in Paris"]);

    const messages = await stored(token, chat.id);
    assert.deepEqual(
      messages.map((m) => [m.role, m.content, m.status]),
      [
        ["user", '/call get_weather {"city": "Paris"}', "complete"],
        ["assistant", "", "complete"],
        ["tool", "sunny in Paris", "complete"],
        ["assistant", "sunny in Paris", "complete"],
      ],
    );
    // The chat goes on in the message whose tool call it answered.
    assert.equal(messages[1].id, chat.messages[1].id);

    // A server tool in the same chat: no onToolCall for it, and its result is shown.
    await chat.sendMessage({ text: '/call search_memory {"query": "weather"}' });
    assert.equal(chat.status, "ready", String(chat.error));
    assert.equal(calls.length, 1, "onToolCall is not called for a server tool");
    const serverPart = chat.messages.at(-1)!.parts.find((p) => p.type === "tool-search_memory") as any;
    assert.equal(serverPart.state, "output-available");
    assert.deepEqual(serverPart.output, { memories: [] });
    const after = await stored(token, chat.id);
    assert.ok(after.every((m) => m.status === "complete"), JSON.stringify(after));
  });

  test("@ag-ui/client's HttpAgent runs a turn, then a client tool's result", async () => {
    const token = await userToken("ag-ui-user");
    const threadId = `thread-${Date.now()}`;
    const agent = new HttpAgent({
      url: `${BASE}/v1/agents/${agentId}/completions?format=ag-ui`,
      headers: { Authorization: `Bearer ${token}` },
      threadId,
      initialMessages: [{ id: "u1", role: "user", content: "hello from ag-ui" }],
    });
    const first = await agent.runAgent({ runId: "run-1" });
    assert.equal(first.newMessages.length, 1, JSON.stringify(first.newMessages));
    assert.equal(first.newMessages[0].role, "assistant");
    assert.equal(first.newMessages[0].content, "hello from ag-ui");

    agent.addMessage({ id: "u2", role: "user", content: '/call get_weather {"city": "Oslo"}' });
    const second = await agent.runAgent({ runId: "run-2" });
    const asked = second.newMessages.find((m) => m.role === "assistant") as any;
    assert.equal(asked.toolCalls.length, 1, JSON.stringify(second.newMessages));
    assert.equal(asked.toolCalls[0].function.name, "get_weather");
    assert.deepEqual(JSON.parse(asked.toolCalls[0].function.arguments), { city: "Oslo" });

    agent.addMessage({ id: "r1", role: "tool", toolCallId: asked.toolCalls[0].id, content: "snowing in Oslo" });
    const third = await agent.runAgent({ runId: "run-3" });
    const answer = third.newMessages.find((m) => m.role === "assistant");
    assert.equal(answer?.content, "snowing in Oslo");

    const messages = await stored(token, threadId);
    assert.deepEqual(
      messages.map((m) => m.role),
      ["user", "assistant", "user", "assistant", "tool", "assistant"],
    );
  });

  test("the OpenAI SDK does a tool round trip, whole and streamed", async () => {
    const token = await userToken("openai-tools");
    const client = new OpenAI({ baseURL: `${BASE}/v1/agents/${agentId}`, apiKey: token });
    const ask = { role: "user" as const, content: '/call get_weather {"city": "Rome"}' };
    const first = await client.chat.completions.create({
      model: "ignored",
      messages: [ask],
      // @ts-expect-error: Confidant's extension.
      conversation_id: "openai-tools",
    });
    assert.equal(first.choices[0].finish_reason, "tool_calls");
    const toolCall = first.choices[0].message.tool_calls![0] as OpenAI.Chat.ChatCompletionMessageFunctionToolCall;
    assert.equal(toolCall.function.name, "get_weather");
    assert.deepEqual(JSON.parse(toolCall.function.arguments), { city: "Rome" });
    const answered = await client.chat.completions.create({
      model: "ignored",
      messages: [ask, first.choices[0].message, { role: "tool", tool_call_id: toolCall.id, content: "warm in Rome" }],
      // @ts-expect-error: Confidant's extension.
      conversation_id: "openai-tools",
    });
    assert.equal(answered.choices[0].message.content, "warm in Rome");

    // Streamed: the SDK's own helper assembles the call from its chunks.
    // Confidant's extension rides in the body, as the SDK passes unknown fields through.
    const params: OpenAI.Chat.ChatCompletionCreateParamsStreaming & { conversation_id: string } = {
      model: "ignored",
      messages: [{ role: "user", content: '/call get_weather {"city": "Lima"}' }],
      stream: true,
      conversation_id: "openai-tools-streamed",
    };
    const stream = client.chat.completions.stream(params);
    const final = await stream.finalChatCompletion();
    assert.equal(final.choices[0].finish_reason, "tool_calls");
    const streamedCall = final.choices[0].message.tool_calls![0] as OpenAI.Chat.ChatCompletionMessageFunctionToolCall;
    assert.equal(streamedCall.function.name, "get_weather");
    assert.deepEqual(JSON.parse(streamedCall.function.arguments), { city: "Lima" });
  });
});
