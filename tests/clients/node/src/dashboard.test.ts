// The operator dashboard in a real browser (Debian's chromium driven by playwright-core): log in,
// create an application, an agent and a key, copy the secret, chat in the try-it panel, delete the
// key. Screenshots go to $SCREENSHOTS (default: screenshots/). Fails on any console error.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

import { chromium, type Browser, type Page } from "playwright-core";

import { call, slowProvider } from "./chat.js";

const BASE = process.env.CONFIDANT_URL ?? "http://127.0.0.1:8080";
const EMAIL = process.env.CONFIDANT_ADMIN_EMAIL ?? "admin@example.com";
const PASSWORD = process.env.CONFIDANT_ADMIN_PASSWORD ?? "confidant-dev-password";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOTS ?? "screenshots";

const skip = process.env.SKIP_BROWSER ? `no browser: ${process.env.SKIP_BROWSER}` : false;
let browser: Browser;
let page: Page;
const consoleErrors: string[] = [];

async function shot(name: string) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

before(async () => {
  if (skip) return;
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
  page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
});

after(async () => {
  await browser?.close();
});

test("an operator manages an agent and its keys and chats with it", { skip }, async () => {
  await page.goto(`${BASE}/dashboard`);
  await page.getByLabel("Email").fill(EMAIL);
  await page.getByLabel("Password").fill(PASSWORD);
  await shot("01-login");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByText(EMAIL).waitFor();

  // A fresh application for this run.
  await page.getByRole("button", { name: "New application" }).click();
  const appName = `Dashboard ${Date.now()}`;
  await page.getByRole("dialog").getByLabel("Name").fill(appName);
  await page.getByRole("button", { name: "Create", exact: true }).click();
  // The new application becomes the selected one (earlier runs may have left others).
  await page.waitForFunction((name) => document.querySelector("#application option:checked")?.textContent === name, appName);
  await page.getByRole("heading", { name: "New agent" }).waitFor();
  await page.getByText("No agents yet.").waitFor();

  // An agent.
  await page.getByLabel("Name", { exact: true }).fill("Support");
  await page.getByLabel("Instructions (system prompt)").fill("Help Acme's customers.");
  await page.getByLabel("Give the model the user's memory").check();
  await page.getByRole("button", { name: "Create agent" }).click();
  await page.getByRole("button", { name: "Support", exact: true }).waitFor();
  await shot("02-agents");

  // An authentication key scoped to that agent; its secret shown once and copied.
  await page.getByRole("tab", { name: "Authentication keys" }).click();
  await page.getByLabel("Name", { exact: true }).fill("backend");
  await page.getByLabel("Chosen agents").check();
  await page.getByLabel("Support").check();
  await page.getByRole("button", { name: "Create key" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText("you will not see this again").waitFor();
  const secret = (await page.locator("#shown-secret").textContent()) ?? "";
  assert.match(secret, /^sk-cfd-/);
  await dialog.getByRole("button", { name: "Copy" }).click();
  await dialog.getByText("Copied.").waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  await shot("03-secret-shown-once");
  await dialog.getByRole("button", { name: "I have stored it" }).click();
  const row = page.getByRole("row", { name: /backend/ });
  await row.waitFor();
  assert.match((await row.textContent()) ?? "", /Support/);
  assert.ok(!(await page.content()).includes(secret), "the secret must not be listed");

  // Try it: a short-lived token for a test user, then a streamed reply from the echo model.
  await page.getByRole("tab", { name: "Agents" }).click();
  await page.getByRole("button", { name: "Support", exact: true }).click();
  await page.getByRole("heading", { name: "Try it" }).waitFor();
  await page.getByLabel("Message").fill("hello from the browser");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator("#chat-log .reply", { hasText: "hello from the browser" }).waitFor();
  await page.getByLabel("Message").fill("and once more");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator("#chat-log .reply", { hasText: "and once more" }).waitFor();
  // The usage numbers count the conversation after a reload of the page.
  await page.getByRole("button", { name: "← All agents" }).click();
  await page.getByRole("button", { name: "Support", exact: true }).click();
  await page.locator("#stat-conversations", { hasText: "1" }).waitFor();
  assert.equal(await page.locator("#stat-users").textContent(), "1");
  await shot("04-agent-try-it");

  // Conversations across users: the try-it chat is listed under its user, and its transcript reads.
  await page.getByRole("button", { name: "← All agents" }).click();
  await page.getByRole("tab", { name: "Conversations" }).click();
  const listed = page.getByRole("row", { name: /dashboard-test-user/ });
  await listed.waitFor();
  await listed.getByRole("button").click();
  await page.locator("#transcript", { hasText: "and once more" }).waitFor();
  assert.match((await page.locator("#transcript").textContent()) ?? "", /hello from the browser/);
  await shot("04a-transcript");
  await page.getByRole("button", { name: "← Back" }).click();
  await page.getByRole("tab", { name: "Feedback" }).click();
  await page.getByText("No feedback yet.").waitFor();
  await page.getByRole("tab", { name: "Agents" }).click();
  await page.getByRole("button", { name: "Support", exact: true }).click();

  // Usage & limits: the two turns are counted (written about a second after each turn), and the
  // browser origins and per-user limits are saved.
  await page.getByRole("button", { name: "← All agents" }).click();
  await page.getByRole("tab", { name: "Usage & limits" }).click();
  for (let i = 0; i < 20 && (await page.locator("#usage-turns").textContent()) !== "2"; i++) {
    await page.waitForTimeout(300);
    await page.getByRole("tab", { name: "Usage & limits" }).click();
    await page.locator("#usage-turns").waitFor();
  }
  assert.equal(await page.locator("#usage-turns").textContent(), "2");
  assert.ok(Number(await page.locator("#usage-tokens").textContent()) > 0);

  // (Before origins are restricted: the dashboard's own origin stays allowed.)
  // Tools: a client tool and the memory tools, saved on the agent page; Try it shows the calls,
  // runs the server's and takes the app's result typed in.
  await page.getByRole("tab", { name: "Agents" }).click();
  await page.getByRole("button", { name: "Support", exact: true }).click();
  await page.getByLabel("Client tools: functions your app runs, in OpenAI's function shape (JSON)").fill(
    JSON.stringify([{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }]),
  );
  await page.getByLabel("Let the model save and search the user's own memory (memorize, search_memory)").check();
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await page.getByText("Agent saved.").waitFor();
  await page.getByLabel("Client tools: functions your app runs, in OpenAI's function shape (JSON)").fill("[{");
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await page.getByText("Client tools: this is not valid JSON.").waitFor();
  await page.getByLabel("Message").fill('/call get_weather {"city": "Paris"}');
  await page.getByRole("button", { name: "Send" }).click();
  await page
    .locator("#chat-log .tool", { hasText: 'get_weather({"city":"Paris"})' })
    .waitFor();
  await page.getByLabel("Result of get_weather").fill("sunny in Paris");
  await page.getByRole("button", { name: "Send result" }).click();
  await page.locator("#chat-log .reply", { hasText: "sunny in Paris" }).waitFor();
  await page.getByLabel("Message").fill('/call memorize {"content": "likes green tea"}');
  await page.getByRole("button", { name: "Send", exact: true }).click();
  await page.locator("#chat-log .tool", { hasText: "Result:" }).waitFor();
  assert.match((await page.locator("#chat-log").textContent()) ?? "", /Tool \(server\):memorize/);
  await shot("04c-try-it-tools");
  // A reload comes back to the agent's page, with the Try-it conversation as it was.
  await page.reload();
  await page.getByRole("heading", { name: "Try it" }).waitFor();
  await page.locator("#chat-log", { hasText: "likes green tea" }).waitFor();
  assert.match((await page.locator("#chat-log").textContent()) ?? "", /hello from the browser[\s\S]*sunny in Paris/);
  // The transcript shows the calls and their results.
  await page.getByRole("button", { name: "← All agents" }).click();
  await page.getByRole("tab", { name: "Conversations" }).click();
  await page.getByRole("row", { name: /dashboard-test-user/ }).first().getByRole("button").click();
  await page.locator("#transcript", { hasText: 'calls get_weather({"city": "Paris"})' }).waitFor();
  assert.match((await page.locator("#transcript").textContent()) ?? "", /sunny in Paris/);
  await page.getByRole("button", { name: "← Back" }).click();
  await page.getByRole("tab", { name: "Usage & limits" }).click();

  await page.getByLabel("Allowed browser origins, one per line").fill("https://shop.example.com\nhttps://*.example.org");
  await page.getByLabel("Completions per minute").fill("20");
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await page.getByText("Settings saved.").waitFor();
  await page.getByRole("tab", { name: "Usage & limits" }).click();
  assert.equal(await page.getByLabel("Allowed browser origins, one per line").inputValue(), "https://shop.example.com\nhttps://*.example.org");
  assert.equal(await page.getByLabel("Completions per minute").inputValue(), "20");
  assert.equal(await page.getByLabel("Tokens per day (UTC)").inputValue(), "");
  await shot("04b-usage-and-limits");
  // Retention and privacy mode: saved after a confirmation, read back after a reload of the tab.
  await page.getByLabel("Delete conversations inactive for (days)").fill("30");
  await page.getByLabel("Store message text and memory").uncheck();
  await page.getByRole("button", { name: "Save retention" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Turn on privacy mode" }).click();
  await page.getByText("Retention saved.").waitFor();
  await page.getByRole("tab", { name: "Usage & limits" }).click();
  assert.equal(await page.getByLabel("Delete conversations inactive for (days)").inputValue(), "30");
  assert.equal(await page.getByLabel("Delete memory not updated for (days)").inputValue(), "");
  assert.equal(await page.getByLabel("Store message text and memory").isChecked(), false);
  await page.getByLabel("Store message text and memory").check();
  await page.getByRole("button", { name: "Save retention" }).click();
  await page.getByText("Retention saved.").waitFor();
  await page.getByRole("tab", { name: "Agents" }).click();

  // Webhooks: one added (its secret shown once), a test event sent and seen delivered in the log.
  const hooks = createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      received.push(String(request.headers["webhook-signature"] ?? ""));
      response.writeHead(204).end();
    });
  });
  const received: string[] = [];
  await new Promise<void>((resolve) => hooks.listen(0, "127.0.0.1", resolve));
  await page.getByRole("tab", { name: "Webhooks" }).click();
  await page.getByText("No webhooks yet").waitFor();
  await page.getByLabel("URL (events are POSTed here, signed)").fill(`http://127.0.0.1:${(hooks.address() as AddressInfo).port}/hook`);
  await page.getByLabel(/^feedback\.created/).uncheck();
  await page.getByRole("button", { name: "Add webhook" }).click();
  await page.getByRole("dialog").getByText("you will not see this again").waitFor();
  assert.match((await page.locator("#shown-secret").textContent()) ?? "", /^whsec_/);
  await page.getByRole("dialog").getByRole("button", { name: "I have stored it" }).click();
  const hookRow = page.getByRole("row", { name: /127\.0\.0\.1/ });
  await hookRow.waitFor();
  assert.doesNotMatch((await hookRow.textContent()) ?? "", /feedback\.created/);
  await hookRow.getByRole("button", { name: /Send a test event/ }).click();
  await page.locator("#deliveries .badge.delivered").waitFor({ timeout: 10_000 });
  assert.match((await page.locator("#deliveries").textContent()) ?? "", /webhook\.test/);
  assert.equal(received.length, 1);
  assert.match(received[0], /^v1,/);
  await shot("04d-webhooks");
  hooks.close();

  // Try it picks up a reply in progress after a reload: a slow model, an application whose
  // replies go on without their page (`resumable`), and the page reloaded mid-reply.
  const words = Array.from({ length: 16 }, (_, i) => `part${i} `);
  const slow = slowProvider(words);
  await new Promise<void>((resolve) => slow.listen(0, "127.0.0.1", resolve));
  const operator = await page.evaluate(() => JSON.parse(sessionStorage.getItem("confidant.session") ?? "null").access);
  const appId = await page.evaluate(() => sessionStorage.getItem("confidant.app"));
  await call("PATCH", `/v1/applications/${appId}`, operator, { resumable: true });
  await call("POST", `/v1/applications/${appId}/providers`, operator, {
    name: "slow",
    kind: "openai-compatible",
    base_url: `http://127.0.0.1:${(slow.address() as AddressInfo).port}/v1`,
  });
  await call("POST", `/v1/applications/${appId}/agents`, operator, {
    name: "Slow",
    model: { provider: "slow", model: "slow-1" },
    // The application's origins were narrowed above; this agent lets the dashboard's page in.
    allowed_origins: [BASE],
  });
  const slowKey = await call("POST", `/v1/applications/${appId}/authentication-keys`, operator, { name: "all agents", scope: { all_agents: true } });
  await page.getByRole("tab", { name: "Agents" }).click();
  await page.getByRole("button", { name: "Slow", exact: true }).click();
  await page.getByRole("heading", { name: "Try it" }).waitFor();
  await page.getByLabel("Message").fill("count slowly");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator("#chat-log .reply", { hasText: "part2" }).waitFor();
  await page.reload();
  await page.locator("#chat-log .reply", { hasText: "part15" }).waitFor({ timeout: 15_000 });
  assert.equal(await page.locator("#chat-log .reply").count(), 1, "the resumed reply is shown once");
  assert.equal((await page.locator("#chat-log .reply").textContent())?.trim(), words.join("").trim());
  slow.close();
  await page.getByRole("button", { name: "← All agents" }).click();
  await call("PATCH", `/v1/applications/${appId}`, operator, { resumable: false });
  await call("DELETE", `/v1/applications/${appId}/authentication-keys/${slowKey.id}`, operator);

  // Delete the key, after confirming.
  await page.getByRole("tab", { name: "Authentication keys" }).click();
  await page.getByRole("button", { name: "Delete key backend" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete key" }).click();
  await page.getByText("No keys yet.").waitFor();
  await shot("05-key-deleted");

  // Keyboard: the tabs are buttons reachable and usable without a mouse.
  await page.getByRole("tab", { name: "Providers" }).focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "New provider (OpenAI-compatible)" }).waitFor();

  // An access token the server refuses (as an expired one is) is refreshed once, transparently:
  // the page loads as usual and the refresh token has rotated.
  const session = () => page.evaluate(() => JSON.parse(sessionStorage.getItem("confidant.session") ?? "null"));
  const stale = await session();
  await page.evaluate(() => {
    const saved = JSON.parse(sessionStorage.getItem("confidant.session") ?? "null");
    sessionStorage.setItem("confidant.session", JSON.stringify({ ...saved, access: "not.a.valid-token" }));
  });
  const errorsBefore = consoleErrors.length;
  await page.reload();
  await page.getByRole("tab", { name: "Authentication keys" }).waitFor();
  await page.getByText(EMAIL).waitFor();
  const fresh = await session();
  assert.notEqual(fresh.access, "not.a.valid-token");
  assert.notEqual(fresh.refresh, stale.refresh);
  // The browser logs the one refused request; nothing else may go wrong.
  const refused = consoleErrors.splice(errorsBefore);
  assert.ok(refused.every((text) => text.includes("401")), `unexpected console errors: ${refused}`);

  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("heading", { name: "Log in" }).waitFor();
  assert.deepEqual(consoleErrors, []);
});
