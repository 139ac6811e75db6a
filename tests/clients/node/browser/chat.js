// A web page's chat, as a company's site would ship it: the Vercel AI SDK 5 (bundled for the
// browser by the test), talking to Confidant from another origin with a user's token.
import { AbstractChat, DefaultChatTransport } from "ai";

class MemoryState {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  };
  snapshot = (thing) => structuredClone(thing);
}

class Chat extends AbstractChat {
  constructor(id, api, headers) {
    super({ id, transport: new DefaultChatTransport({ api, headers }), state: new MemoryState() });
  }
}

/** Sends one message; resolves with the chat's status, error and the last reply's text. */
window.runChat = async (api, token, text) => {
  const chat = new Chat(`page-${Date.now()}`, api, { Authorization: `Bearer ${token}` });
  await chat.sendMessage({ text });
  const last = chat.messages.at(-1);
  const reply = last?.role === "assistant" ? last.parts.map((p) => (p.type === "text" ? p.text : "")).join("") : "";
  return { status: chat.status, error: chat.error ? String(chat.error.message) : null, reply };
};
