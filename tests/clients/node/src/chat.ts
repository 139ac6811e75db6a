// What the client tests share: the server they drive, and `useChat` without React (the AI SDK 5's
// AbstractChat over an in-memory state, as @ai-sdk/react's ReactChatState keeps it).

import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";

import { AbstractChat, DefaultChatTransport, type ChatInit, type ChatState, type ChatStatus, type UIMessage } from "ai";

export const BASE = process.env.CONFIDANT_URL ?? "http://127.0.0.1:8080";
export const EMAIL = process.env.CONFIDANT_ADMIN_EMAIL ?? "admin@example.com";
export const PASSWORD = process.env.CONFIDANT_ADMIN_PASSWORD ?? "confidant-dev-password";

/** The chat state a UI framework would keep, starting from `messages` (a page's saved ones). */
export class MemoryState implements ChatState<UIMessage> {
  status: ChatStatus = "ready";
  error: Error | undefined = undefined;
  messages: UIMessage[];
  constructor(messages: UIMessage[] = []) {
    this.messages = messages;
  }
  pushMessage = (message: UIMessage) => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index: number, message: UIMessage) => {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  };
  snapshot = <T>(thing: T): T => structuredClone(thing);
}

/** `useChat` without React. */
export class Chat extends AbstractChat<UIMessage> {
  constructor(init: ChatInit<UIMessage>) {
    super({ ...init, state: new MemoryState(init.messages) });
  }
}

export function textOf(message: UIMessage | undefined): string {
  return (message?.parts ?? []).map((part) => (part.type === "text" ? part.text : "")).join("");
}

/** A JSON call that must succeed; its parsed body (`null` when empty). */
export async function call(method: string, path: string, token: string, body?: unknown): Promise<any> {
  const response = await fetch(`${BASE}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A chat with this id over the default transport to `api`: no reconnect URL is configured. */
export function chatAt(id: string, api: string, headers: Record<string, string>, messages: UIMessage[] = []): Chat {
  return new Chat({ id, transport: new DefaultChatTransport({ api, headers }), messages });
}

/** An OpenAI-compatible provider that streams `words`, one every 150 ms (listen on 127.0.0.1). */
export function slowProvider(words: string[]): Server {
  return createServer((request, response) => {
    request.resume();
    request.on("end", async () => {
      response.writeHead(200, { "content-type": "text/event-stream" });
      for (const word of words) {
        const chunk = { id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: word } }] };
        response.write(`data: ${JSON.stringify(chunk)}\n\n`);
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
      const last = { id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta: {}, finish_reason: "stop" }] };
      response.end(`data: ${JSON.stringify(last)}\n\ndata: [DONE]\n\n`);
    });
  });
}
