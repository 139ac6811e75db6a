// A reply that survives a page reload, with the Vercel AI SDK 5 as it is: the first page's request
// is cut mid-reply; a second page with the same chat id does what `useChat({resume: true})` does
// on mount (`resumeStream()`, a GET of `{api}/{chatId}/stream`) and shows the whole reply.
// The model is a slow OpenAI-compatible provider on loopback, so the reply is still running when
// the first page goes away (the server allows 127.0.0.1 for providers in these tests).

import assert from "node:assert/strict";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";

import { SignJWT } from "jose";

import { BASE, EMAIL, PASSWORD, call, chatAt, slowProvider, textOf } from "./chat.js";


const WORDS = Array.from({ length: 12 }, (_, i) => `word${i} `);
const WHOLE = WORDS.join("");

describe("a reply resumed by the AI SDK 5 after a reload", () => {
  let provider: Server;
  let agentId = "";
  let kid = "";
  let secret = "";

  before(async () => {
    provider = slowProvider(WORDS);
    await new Promise<void>((resolve) => provider.listen(0, "127.0.0.1", resolve));
    const port = (provider.address() as AddressInfo).port;
    const login = await call("POST", "/v1/auth/login", "", { email: EMAIL, password: PASSWORD });
    const access = login.access;
    // A resumable application: a reply goes on when its page goes away.
    const app = await call("POST", "/v1/applications", access, { name: `resume-${Date.now()}`, resumable: true });
    await call("POST", `/v1/applications/${app.id}/providers`, access, {
      name: "slow",
      kind: "openai-compatible",
      base_url: `http://127.0.0.1:${port}/v1`,
    });
    const agent = await call("POST", `/v1/applications/${app.id}/agents`, access, {
      name: "Slow",
      model: { provider: "slow", model: "slow-1" },
      memory: false,
    });
    agentId = agent.id;
    const key = await call("POST", `/v1/applications/${app.id}/authentication-keys`, access, {
      name: "backend",
      scope: { all_agents: true },
    });
    kid = key.id;
    secret = key.secret;
  });

  after(() => provider.close());

  test("useChat's resume reconnects after the first request is cut and shows the whole reply", async () => {
    const token = await new SignJWT({ sub: "reloading-user" })
      .setProtectedHeader({ alg: "HS256", kid })
      .setIssuedAt()
      .setExpirationTime("10m")
      .sign(new TextEncoder().encode(secret));
    const api = `${BASE}/v1/agents/${agentId}/completions`;
    const headers = { "X-Secure-User-Token": token };
    const id = `reload-${Date.now()}`;

    // The first page: sends, sees the reply begin, and is gone (its request aborted).
    const first = chatAt(id, api, headers);
    const sent = first.sendMessage({ text: "tell me twelve words" });
    const deadline = Date.now() + 10_000;
    while (!textOf(first.messages[1]).includes("word1 ") && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await first.stop();
    await sent;
    const cut = textOf(first.messages[1]);
    assert.ok(cut.length > 0 && cut.length < WHOLE.length, `the first page saw part of the reply: ${cut}`);

    // The reloaded page: its messages as the app saved them (the user's), then resume on mount.
    const userMessage = first.messages[0];
    const second = chatAt(id, api, headers, [userMessage]);
    await second.resumeStream();
    assert.equal(second.status, "ready", String(second.error));
    assert.equal(second.messages.length, 2, JSON.stringify(second.messages));
    assert.equal(second.messages[1].role, "assistant");
    assert.equal(textOf(second.messages[1]), WHOLE);

    // Nothing is in progress any more: a third page's resume finds nothing (204) and adds nothing.
    const third = chatAt(id, api, headers, [userMessage]);
    await third.resumeStream();
    assert.equal(third.status, "ready", String(third.error));
    assert.equal(third.messages.length, 1);

    // The server stored the whole reply once (written as the reply ends: wait for it).
    let stored = await call("GET", `/v1/agents/${agentId}/conversations/${id}`, token);
    for (let i = 0; i < 50 && stored.messages.length < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      stored = await call("GET", `/v1/agents/${agentId}/conversations/${id}`, token);
    }
    assert.deepEqual(
      stored.messages.map((m: any) => [m.role, m.content, m.status]),
      [
        ["user", "tell me twelve words", "complete"],
        ["assistant", WHOLE, "complete"],
      ],
    );
  });
});
