// Drives a running Confidant with libraries nobody here wrote: a client generated from
// openapi/openapi.json (openapi-typescript + openapi-fetch), the Vercel AI SDK 5 chat, and the
// OpenAI SDK. CONFIDANT_URL, CONFIDANT_ADMIN_EMAIL and CONFIDANT_ADMIN_PASSWORD name the server.

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";

import { SignJWT } from "jose";
import OpenAI from "openai";
import createClient from "openapi-fetch";

import type { paths } from "../generated/schema.js";
import { BASE, EMAIL, PASSWORD, chatAt, textOf } from "./chat.js";


describe("Confidant with real clients", () => {
  const api = createClient<paths>({ baseUrl: BASE });
  let access = "";
  let appId = "";
  let agentId = "";
  let kid = "";
  let secret = "";

  /** Signs a secure user token the way a company's backend does (jose). */
  async function userToken(sub: string): Promise<string> {
    return new SignJWT({ sub })
      .setProtectedHeader({ alg: "HS256", kid })
      .setIssuedAt()
      .setExpirationTime("10m")
      .sign(new TextEncoder().encode(secret));
  }

  before(async () => {
    const login = await api.POST("/v1/auth/login", { body: { email: EMAIL, password: PASSWORD } });
    assert.equal(login.response.status, 200, JSON.stringify(login.error));
    access = login.data!.access;
    const auth = { headers: { Authorization: `Bearer ${access}` } };

    const app = await api.POST("/v1/applications", { ...auth, body: { name: `clients-${Date.now()}` } });
    assert.equal(app.response.status, 201, JSON.stringify(app.error));
    appId = app.data!.id;

    const agent = await api.POST("/v1/applications/{app_id}/agents", {
      ...auth,
      params: { path: { app_id: appId } },
      body: { name: "Echo", instructions: "Repeat after the user.", memory: false },
    });
    assert.equal(agent.response.status, 201, JSON.stringify(agent.error));
    agentId = agent.data!.id;

    const key = await api.POST("/v1/applications/{app_id}/authentication-keys", {
      ...auth,
      params: { path: { app_id: appId } },
      body: { name: "backend", scope: { all_agents: true } },
    });
    assert.equal(key.response.status, 201, JSON.stringify(key.error));
    kid = key.data!.id;
    secret = key.data!.secret;

    const apiKey = await api.POST("/v1/applications/{app_id}/api-keys", {
      ...auth,
      params: { path: { app_id: appId } },
      body: { name: "ci", acl: ["admin"] },
    });
    assert.equal(apiKey.response.status, 201, JSON.stringify(apiKey.error));
    assert.ok(apiKey.data!.key.startsWith("cfd_"));
    const viaKey = await api.GET("/v1/applications/{app_id}/agents", {
      params: { path: { app_id: appId } },
      headers: { "X-API-Key": apiKey.data!.key },
    });
    assert.equal(viaKey.data!.data[0].id, agentId);
  });

  test("the AI SDK 5 chat talks to the agent over two turns", async () => {
    const token = await userToken("ai-sdk-user");
    const chat = chatAt(`chat-${Date.now()}`, `${BASE}/v1/agents/${agentId}/completions`, {
      "X-Secure-User-Token": token,
    });
    await chat.sendMessage({ text: "hello from the ai sdk" });
    assert.equal(chat.status, "ready", String(chat.error));
    assert.equal(chat.messages.length, 2);
    assert.equal(chat.messages[1].role, "assistant");
    assert.equal(textOf(chat.messages[1]), "hello from the ai sdk");

    await chat.sendMessage({ text: "and a second turn" });
    assert.equal(chat.status, "ready", String(chat.error));
    assert.equal(chat.messages.length, 4);
    assert.equal(textOf(chat.messages[3]), "and a second turn");

    // The server kept exactly that conversation, with no duplicated history.
    const stored = await api.GET("/v1/agents/{agent_id}/conversations/{conversation_id}", {
      params: { path: { agent_id: agentId, conversation_id: chat.id } },
      headers: { "X-Secure-User-Token": token },
    });
    assert.equal(stored.response.status, 200);
    assert.deepEqual(
      stored.data!.messages.map((m) => [m.role, m.content]),
      [
        ["user", "hello from the ai sdk"],
        ["assistant", "hello from the ai sdk"],
        ["user", "and a second turn"],
        ["assistant", "and a second turn"],
      ],
    );
  });

  test("the AI SDK 5 chat regenerates and edits, and the server ends with what it shows", async () => {
    const token = await userToken("ai-sdk-editor");
    const headers = { "X-Secure-User-Token": token };
    const chat = chatAt(`edit-${Date.now()}`, `${BASE}/v1/agents/${agentId}/completions`, headers);
    await chat.sendMessage({ text: "first question" });
    await chat.sendMessage({ text: "second question" });
    assert.equal(chat.messages.length, 4);
    const replaced = chat.messages[3].id;

    await chat.regenerate();
    assert.equal(chat.status, "ready", String(chat.error));
    assert.equal(chat.messages.length, 4);
    assert.notEqual(chat.messages[3].id, replaced, "a new reply, not the old one");

    // Edit the first message: useChat keeps its id, drops what followed and asks again.
    await chat.sendMessage({ text: "first question, edited", messageId: chat.messages[0].id });
    assert.equal(chat.status, "ready", String(chat.error));
    assert.equal(chat.messages.length, 2);
    assert.equal(textOf(chat.messages[1]), "first question, edited");

    const read = (include?: "superseded") =>
      api.GET("/v1/agents/{agent_id}/conversations/{conversation_id}", {
        params: { path: { agent_id: agentId, conversation_id: chat.id }, query: include ? { include } : {} },
        headers,
      });
    const stored = await read();
    assert.equal(stored.response.status, 200);
    const shown = chat.messages.map((m) => [m.role, textOf(m)]);
    assert.deepEqual(
      stored.data!.messages.map((m) => [m.role, m.content]),
      shown,
    );
    // The replies are the very messages useChat holds.
    assert.equal(stored.data!.messages[1].id, chat.messages[1].id);
    const everything = await read("superseded");
    assert.deepEqual(
      everything.data!.messages.map((m) => m.status),
      ["superseded", "superseded", "superseded", "superseded", "superseded", "complete", "complete"],
    );
  });

  test("the AI SDK surfaces a 401 as an error", async () => {
    const chat = chatAt(`bad-${Date.now()}`, `${BASE}/v1/agents/${agentId}/completions`, {
      "X-Secure-User-Token": "not-a-token",
    });
    await chat.sendMessage({ text: "hello?" });
    assert.equal(chat.status, "error");
    assert.match(String(chat.error?.message), /invalid_token/);
  });

  test("the OpenAI SDK gets whole and streamed completions", async () => {
    const token = await userToken("openai-user");
    const client = new OpenAI({ baseURL: `${BASE}/v1/agents/${agentId}`, apiKey: token });
    const whole = await client.chat.completions.create({
      model: "ignored",
      messages: [{ role: "user", content: "whole reply please" }],
      // @ts-expect-error: Confidant's extension, sent in the body as the SDK passes it through.
      conversation_id: "openai-chat",
    });
    assert.equal(whole.object, "chat.completion");
    assert.equal(whole.choices[0].message.content, "whole reply please");

    const stream = await client.chat.completions.create({
      model: "ignored",
      messages: [{ role: "user", content: "streamed reply please" }],
      stream: true,
    });
    let text = "";
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
    }
    assert.equal(text, "streamed reply please");

    const badClient = new OpenAI({ baseURL: `${BASE}/v1/agents/${agentId}`, apiKey: "nope", maxRetries: 0 });
    await assert.rejects(
      badClient.chat.completions.create({ model: "x", messages: [{ role: "user", content: "hi" }] }),
      (error: unknown) => error instanceof OpenAI.AuthenticationError,
    );
  });

  test("the generated client lists the user's conversations", async () => {
    const token = await userToken("lister");
    const client = new OpenAI({ baseURL: `${BASE}/v1/agents/${agentId}`, apiKey: token });
    for (const id of ["first", "second"]) {
      await client.chat.completions.create({
        model: "x",
        messages: [{ role: "user", content: `conversation ${id}` }],
        // @ts-expect-error: Confidant's extension.
        conversation_id: id,
      });
    }
    const list = await api.GET("/v1/agents/{agent_id}/conversations", {
      params: { path: { agent_id: agentId }, query: { limit: 10 } },
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(list.response.status, 200, JSON.stringify(list.error));
    assert.deepEqual(
      list.data!.data.map((c) => c.id),
      ["second", "first"],
    );
    assert.equal(list.data!.next_cursor, null);

    const denied = await api.GET("/v1/agents/{agent_id}/conversations", {
      params: { path: { agent_id: agentId } },
      headers: { Authorization: "Bearer nope" },
    });
    assert.equal(denied.response.status, 401);
    assert.equal(denied.error!.error, "invalid_token");
  });
});
