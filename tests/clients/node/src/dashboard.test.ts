// The operator dashboard in a real browser (Debian's chromium driven by playwright-core), walked
// as an operator would: log in, create an application, an agent and keys, chat in Try it, find
// that user and their conversation again by clicking, manage providers, webhooks, members and
// settings, erase the user, delete the application, log out. Every page is checked at 1,280 px and
// 390 px for horizontal overflow and with axe-core (no serious or critical violation), in light
// and dark themes; any script error fails the test. Screenshots go to $SCREENSHOTS.

import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

import { call, slowProvider } from "./chat.js";

const BASE = process.env.CONFIDANT_URL ?? "http://127.0.0.1:8080";
const EMAIL = process.env.CONFIDANT_ADMIN_EMAIL ?? "admin@example.com";
const PASSWORD = process.env.CONFIDANT_ADMIN_PASSWORD ?? "confidant-dev-password";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOTS ?? "screenshots";
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const WIDE = { width: 1280, height: 860 };
const NARROW = { width: 390, height: 844 };

const skip = process.env.SKIP_BROWSER ? `no browser: ${process.env.SKIP_BROWSER}` : false;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const consoleErrors: string[] = [];
/** Pages checked, for the summary: `name@width`. */
const checked: string[] = [];

async function shot(name: string) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

/** Waits until the page has loaded what it shows (no "Loading…", no busy button). */
async function settled() {
  await page.waitForFunction(() => !document.querySelector("main .loading") && (document.querySelector("dialog[open]") || !document.querySelector("main [aria-busy=true]")));
}

/**
 * Checks the page as it is: nothing wider than the window, and no serious or critical axe-core
 * violation. `name` names it in failures and screenshots.
 */
async function check(name: string, screenshot = false) {
  await settled();
  const width = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, window: window.innerWidth }));
  assert.ok(width.page <= width.window, `${name}: the page is ${width.page} px wide in a ${width.window} px window`);
  if (!(await page.evaluate(() => "axe" in window))) await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    // @ts-expect-error axe is injected above
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((v: { impact: string }) => v.impact === "serious" || v.impact === "critical")
      .map((v: { id: string; help: string; nodes: { target: string[] }[] }) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join("; ")})`);
  });
  assert.deepEqual(violations, [], `${name}: axe-core found serious or critical violations`);
  checked.push(`${name}@${page.viewportSize()?.width}`);
  if (screenshot) await shot(name);
}

/** The operator's tokens and the selected application, as the page keeps them. */
async function session() {
  return page.evaluate(() => ({
    ...(JSON.parse(sessionStorage.getItem("confidant.session") ?? "null") ?? {}),
    app: sessionStorage.getItem("confidant.app"),
  }));
}

const hash = () => new URL(page.url()).hash;
const heading = (name: string | RegExp) => page.getByRole("heading", { level: 1, name });
const nav = (name: string) => page.getByRole("navigation", { name: "Application" }).getByRole("link", { name, exact: true });
const toast = (text: string | RegExp) => page.locator("#toasts").getByText(text).last();

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
}

before(async () => {
  if (skip) return;
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  context = await browser.newContext({ viewport: WIDE });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
  page = await context.newPage();
  page.on("console", (message) => {
    // The browser logs each refused request (a wrong password, an invalid field: the walk makes
    // them on purpose); a 5xx or anything else is an error.
    if (message.type() === "error" && !/^Failed to load resource: .* status of 4\d\d/.test(message.text())) consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
});

after(async () => {
  await browser?.close();
});

test("an operator runs an application from the dashboard, on a wide and a narrow screen", { skip }, async () => {
  // Before login: only the login form; no application switcher, no account menu.
  await page.goto(`${BASE}/dashboard`);
  await heading("Log in").waitFor();
  assert.equal(hash(), "#/login");
  assert.equal(await page.locator("#app-switch").isVisible(), false);
  assert.equal(await page.locator("#account").isVisible(), false);
  assert.equal(await page.getByRole("button", { name: "New application" }).count(), 0, "no New application button is reachable before login");
  await check("01-login", true);
  // A wrong password is said next to the form, in a sentence.
  await page.getByLabel("Email").fill(EMAIL);
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.locator(".form-error").waitFor();
  assert.match((await page.locator(".form-error").textContent()) ?? "", /^[A-Z].*\.$/);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.locator("#who", { hasText: EMAIL }).waitFor();

  // A new application, from the header. A double click creates it once.
  await page.getByRole("button", { name: "New application" }).click();
  const appName = `Dashboard ${Date.now()}`;
  await page.getByRole("dialog").getByLabel("Name").fill(appName);
  await page.getByRole("dialog").getByRole("button", { name: "Create application" }).dblclick();
  await heading("Agents").waitFor();
  await page.waitForFunction((name) => document.querySelector("#application option:checked")?.textContent === name, appName);
  const operator = (await session()).access as string;
  const me = await call("GET", "/v1/auth/me", operator);
  assert.equal(me.applications.filter((a: { name: string }) => a.name === appName).length, 1, "a double click creates one application");
  const appId = (await session()).app as string;
  assert.equal(hash(), `#/a/${appId}/agents`);
  await toast(`Application “${appName}” created.`).waitFor();
  await page.getByText("No agents yet.").waitFor();

  // The overview of a new application says what to do first.
  await nav("Overview").click();
  await page.getByRole("heading", { name: "Get started" }).waitFor();
  await page.getByText("Nothing yet in the last 30 days.").waitFor();
  await check("02-overview-empty");

  // An agent. Its page has its own URL.
  await nav("Agents").click();
  await heading("Agents").waitFor();
  await page.getByLabel("Name", { exact: true }).fill("Support");
  await page.getByLabel("Instructions (system prompt)").fill("Help Acme's customers.");
  await page.getByLabel("Give the model the user's memory").check();
  await page.getByRole("button", { name: "Create agent" }).click();
  await heading("Support").waitFor();
  const agentId = /agents\/([0-9a-f-]{36})/.exec(hash())?.[1];
  assert.ok(agentId, `an agent page URL: ${hash()}`);
  await toast("Agent “Support” created.").waitFor();

  // Tabs follow the keyboard (arrow keys), and each has its URL.
  await page.getByRole("tab", { name: "Activity" }).focus();
  await page.keyboard.press("ArrowRight");
  await page.waitForFunction(() => location.hash.endsWith("/settings"));
  await page.getByRole("tab", { name: "Settings", selected: true }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Settings");
  const controls = await page.getByRole("tab", { name: "Settings" }).getAttribute("aria-controls");
  assert.equal(await page.locator(`#${controls}`).getAttribute("role"), "tabpanel");

  // Renaming the agent renames its heading.
  await page.getByLabel("Name", { exact: true }).fill("Support desk");
  await page.getByRole("button", { name: "Save changes" }).click();
  await toast("Agent saved.").waitFor();
  await heading("Support desk").waitFor();
  // A client tool that is not JSON is marked on its field, in a sentence tied to it.
  const tools = page.getByLabel("Client tools (JSON)");
  await tools.fill("[{");
  await page.getByRole("button", { name: "Save changes" }).click();
  await page.getByText(/This is not valid JSON/).waitFor();
  assert.equal(await tools.getAttribute("aria-invalid"), "true");
  const described = (await tools.getAttribute("aria-describedby")) ?? "";
  assert.match((await page.locator(`[id="${described.split(" ").at(-1)}"]`).textContent()) ?? "", /not valid JSON/);
  await tools.fill(JSON.stringify([{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }]));
  await page.getByLabel("Let the model save and search the user's own memory (memorize, search_memory)").check();
  await page.getByRole("button", { name: "Save changes" }).click();
  await toast("Agent saved.").waitFor();
  assert.equal(await tools.getAttribute("aria-invalid"), null, "the field is no longer marked once valid");
  await check("03-agent-settings", true);

  // A name of 200 characters without a space fits the page.
  const long = "L".repeat(200);
  const longAgent = await call("POST", `/v1/applications/${appId}/agents`, operator, { name: long, instructions: "" });
  assert.equal(await page.getByLabel("Name", { exact: true }).getAttribute("maxlength"), "200");

  // An authentication key for the agent; its secret shown once and copied.
  await nav("Authentication keys").click();
  await heading("Authentication keys").waitFor();
  await page.getByLabel("Name", { exact: true }).fill("backend");
  await page.getByLabel("Chosen agents only").check();
  await page.getByRole("button", { name: "Create key" }).click();
  await page.getByText("Choose at least one agent, or All agents.").waitFor();
  await page.getByLabel("Support desk").check();
  await page.getByRole("button", { name: "Create key" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText("you will not see this again").waitFor();
  const secret = (await page.locator("#shown-secret").textContent()) ?? "";
  assert.match(secret, /^sk-cfd-/);
  await dialog.getByRole("button", { name: "Copy" }).click();
  await dialog.getByText("Copied.").waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  await check("04-secret-shown-once", true);
  await dialog.getByRole("button", { name: "I have stored it" }).click();
  const keyRow = page.getByRole("row", { name: /backend/ });
  await keyRow.waitFor();
  assert.match((await keyRow.textContent()) ?? "", /Support desk/);
  assert.ok(!(await page.content()).includes(secret), "the secret must not be listed");
  // A key whose only agent is deleted says so.
  await call("POST", `/v1/applications/${appId}/authentication-keys`, operator, { name: "orphan", scope: { agents: [longAgent.id] } });
  await page.reload();
  await check("05-keys-long-name");
  // …on the agents list and the agent's own page too, wide and narrow.
  for (const viewport of [WIDE, NARROW]) {
    await page.setViewportSize(viewport);
    await page.goto(`${BASE}/dashboard#/a/${appId}/agents`);
    await page.getByRole("link", { name: long }).waitFor();
    await check("05-agents-long-name");
    await page.getByRole("link", { name: long }).click();
    await heading(long).waitFor();
    await check("05-agent-long-name");
  }
  await page.setViewportSize(WIDE);
  await page.goto(`${BASE}/dashboard#/a/${appId}/keys`);
  await call("DELETE", `/v1/applications/${appId}/agents/${longAgent.id}`, operator);
  await page.reload();
  const orphan = page.getByRole("row", { name: /orphan/ });
  await orphan.getByText("covers no agent").waitFor();
  assert.match((await orphan.locator("td").nth(2).textContent()) ?? "", /^1 deleted agent/, "the deleted agent is named as such, not by its id");
  await orphan.getByRole("button", { name: "Delete key orphan" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete key" }).click();
  await toast("Deleted key orphan.").waitFor();

  // Try it: a streamed reply as a test user, then that user and the conversation found by clicking.
  await nav("Agents").click();
  await page.getByRole("link", { name: "Support desk" }).click();
  await heading("Support desk").waitFor();
  await page.getByRole("tab", { name: "Try it" }).click();
  await page.waitForFunction(() => location.hash.endsWith("/try"));
  await page.getByLabel("Message").fill("hello from the browser");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator("#chat-log .reply", { hasText: "hello from the browser" }).waitFor();
  await page.getByLabel("Message").fill("and once more");
  await page.getByLabel("Message").press("Enter");
  await page.locator("#chat-log .reply", { hasText: "and once more" }).waitFor();
  // Tools: the app's tool call, its result typed in; the server's memory tool run.
  await page.getByLabel("Message").fill('/call get_weather {"city": "Paris"}');
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator("#chat-log .tool", { hasText: 'get_weather({"city":"Paris"})' }).waitFor();
  await page.getByLabel("Result of get_weather").fill("sunny in Paris");
  await page.getByRole("button", { name: "Send result" }).click();
  await page.locator("#chat-log .reply", { hasText: "sunny in Paris" }).waitFor();
  await page.getByLabel("Message").fill('/call memorize {"content": "likes green tea"}');
  await page.getByRole("button", { name: "Send", exact: true }).click();
  await page.locator("#chat-log .tool", { hasText: "Tool result" }).waitFor();
  await check("06-try-it", true);
  // Elsewhere and back: the conversation is still there (and after a reload too).
  await nav("Providers").click();
  await heading("Providers").waitFor();
  await page.goBack();
  await page.locator("#chat-log", { hasText: "likes green tea" }).waitFor();
  await page.reload();
  await page.locator("#chat-log", { hasText: "likes green tea" }).waitFor();
  assert.match((await page.locator("#chat-log").textContent()) ?? "", /hello from the browser[\s\S]*sunny in Paris/);
  await page.getByRole("link", { name: "user dashboard-test-user" }).click();
  await heading("dashboard-test-user").waitFor();
  await page.locator("#user-conversations", { hasText: "1" }).waitFor();
  const conversations = page.getByRole("region", { name: "Conversations" });
  await conversations.getByRole("link").first().click();
  await page.locator("#transcript", { hasText: "and once more" }).waitFor();
  const transcript = (await page.locator("#transcript").textContent()) ?? "";
  assert.match(transcript, /hello from the browser/);
  assert.match(transcript, /calls get_weather\(\{"city": ?"Paris"\}\)/);
  assert.match(transcript, /sunny in Paris/);
  await check("07-transcript", true);
  // Back returns to the user, forward to the transcript, and a reload keeps the page.
  await page.goBack();
  await heading("dashboard-test-user").waitFor();
  await page.goForward();
  await page.locator("#transcript").waitFor();
  await page.reload();
  await page.locator("#transcript", { hasText: "and once more" }).waitFor();
  await page.getByRole("link", { name: "Conversations", exact: true }).first().click();
  await heading("Conversations").waitFor();
  await page.getByRole("row", { name: /dashboard-test-user/ }).first().waitFor();
  await check("08-conversations");

  // The overview counts the turns (written about a second after each) and charts them per day.
  await nav("Overview").click();
  for (let i = 0; i < 30; i++) {
    await heading("Overview").waitFor();
    await settled();
    if (Number((await page.locator("#overview-turns").textContent())?.replace(/\D/g, "")) >= 4) break;
    await page.waitForTimeout(300);
    await page.reload();
  }
  assert.ok(Number((await page.locator("#overview-turns").textContent())?.replace(/\D/g, "")) >= 4);
  assert.equal(await page.locator("#overview-users").textContent(), "1");
  await page.locator(".chart .bar").last().hover();
  await page.locator(".chart-tip", { hasText: /turns/ }).waitFor();
  assert.ok((await page.locator(".chart text").count()) > 6, "the chart has axis labels");
  await page.getByRole("button", { name: "Tokens" }).click();
  await page.getByRole("button", { name: "Tokens", pressed: true }).waitFor();
  await page.getByRole("link", { name: "Support desk" }).waitFor();
  await page.getByRole("link", { name: "dashboard-test-user" }).waitFor();
  await check("09-overview", true);

  // Users: found by sub.
  await nav("Users").click();
  await page.getByLabel("User id (sub)").fill("dashboard-test-user");
  await page.getByRole("button", { name: "Find user" }).click();
  await heading("dashboard-test-user").waitFor();
  await page.getByText("likes green tea").waitFor();
  await check("10-user", true);
  await nav("Users").click();
  await page.getByLabel("User id (sub)").fill("nobody-like-this");
  await page.getByRole("button", { name: "Find user" }).click();
  await page.getByText(/holds nothing for nobody-like-this/).waitFor();
  await nav("Feedback").click();
  await page.getByText(/No feedback yet/).waitFor();
  await check("11-feedback");

  // Providers: added, tested (the models it offers), edited, and a failing one explained.
  const models = createServer((request, response) => {
    if (request.url === "/v1/models") response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [{ id: "local-small" }, { id: "local-large" }] }));
    else response.writeHead(404).end();
  });
  const modelsPort = await listen(models);
  await nav("Providers").click();
  await page.getByText(/No providers yet/).waitFor();
  await page.getByLabel("Name", { exact: true }).fill("local");
  await page.getByLabel("Base URL").fill(`http://127.0.0.1:${modelsPort}/v1`);
  await page.getByRole("button", { name: "Add provider" }).click();
  await toast(/Provider “local” added/).waitFor();
  await page.getByRole("button", { name: "Test connection to local" }).click();
  await page.locator("#provider-test", { hasText: "local: connected" }).waitFor();
  assert.match((await page.locator("#provider-test").textContent()) ?? "", /2 model\(s\) offered/);
  await page.getByRole("button", { name: "Edit local" }).click();
  await page.getByRole("dialog").getByLabel("Base URL").fill(`http://127.0.0.1:${modelsPort}/wrong`);
  await page.getByRole("dialog").getByLabel("Name").fill("local-models");
  await page.getByRole("dialog").getByRole("button", { name: "Save provider" }).click();
  await toast("Provider “local-models” saved.").waitFor();
  await page.getByRole("button", { name: "Test connection to local-models" }).click();
  await page.locator("#provider-test", { hasText: "local-models: not connected" }).waitFor();
  await check("12-providers", true);
  models.close();

  // Webhooks: one added (its secret shown once), a test event sent and seen delivered in the log.
  const received: string[] = [];
  const hooks = createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      received.push(String(request.headers["webhook-signature"] ?? ""));
      response.writeHead(204).end();
    });
  });
  const hooksPort = await listen(hooks);
  await nav("Webhooks").click();
  await page.getByText("No webhooks yet").waitFor();
  await page.getByLabel("URL", { exact: true }).fill(`http://127.0.0.1:${hooksPort}/hook`);
  await page.getByLabel(/^feedback\.created/).uncheck();
  await page.getByRole("button", { name: "Add webhook" }).click();
  await page.getByRole("dialog").getByText("you will not see this again").waitFor();
  assert.match((await page.locator("#shown-secret").textContent()) ?? "", /^whsec_/);
  await page.getByRole("dialog").getByRole("button", { name: "I have stored it" }).click();
  const hookRow = page.getByRole("row", { name: /127\.0\.0\.1/ });
  await hookRow.waitFor();
  assert.doesNotMatch((await hookRow.textContent()) ?? "", /feedback\.created/);
  await hookRow.getByRole("button", { name: /Send test event/ }).click();
  await page.locator("#deliveries .badge.delivered").waitFor({ timeout: 10_000 });
  assert.match((await page.locator("#deliveries").textContent()) ?? "", /webhook\.test/);
  assert.equal(received.length, 1);
  assert.match(received[0], /^v1,/);
  await check("13-webhooks");
  hooks.close();

  // Members: the operator is listed; an unknown email is refused next to the form.
  await nav("Members").click();
  await page.getByRole("row", { name: new RegExp(EMAIL.replace(/[.]/g, "\\.")) }).getByText("you").waitFor();
  await page.getByLabel("Email").fill("nobody@example.com");
  await page.getByRole("button", { name: "Add member" }).click();
  await page.locator("#new-member [role=alert]:not([hidden]), #new-member .field-error:not([hidden])").first().waitFor();
  await check("14-members");

  // Settings: renamed (the header follows), origins and limits, privacy mode after a confirmation.
  await nav("Settings").click();
  const renamed = `${appName} (renamed)`;
  await page.getByLabel("Name", { exact: true }).fill(renamed);
  await page.getByRole("button", { name: "Rename" }).click();
  await toast(`Renamed to “${renamed}”.`).waitFor();
  await page.waitForFunction((name) => document.querySelector("#application option:checked")?.textContent === name, renamed);
  await page.getByLabel("Allowed browser origins").fill("https://shop.example.com\nnot an origin");
  await page.getByRole("button", { name: "Save", exact: true }).nth(1).click();
  await page.locator("#app-limits .field-error:not([hidden])").waitFor();
  assert.equal(await page.getByLabel("Allowed browser origins").getAttribute("aria-invalid"), "true");
  await page.getByLabel("Allowed browser origins").fill(`https://shop.example.com\n${BASE}`);
  await page.getByLabel("Completions per minute").fill("20");
  await page.getByRole("button", { name: "Save", exact: true }).nth(1).click();
  await toast("Browsers and limits saved.").waitFor();
  await page.getByLabel("Delete conversations inactive for (days)").fill("30");
  await page.getByLabel("Store message text and memory").uncheck();
  await page.getByRole("button", { name: "Save retention" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Turn on privacy mode" }).click();
  await toast("Retention saved.").waitFor();
  await page.reload();
  await heading("Settings").waitFor();
  assert.equal(await page.getByLabel("Completions per minute").inputValue(), "20");
  assert.equal(await page.getByLabel("Delete conversations inactive for (days)").inputValue(), "30");
  assert.equal(await page.getByLabel("Store message text and memory").isChecked(), false);
  await page.getByLabel("Store message text and memory").check();
  await page.getByRole("button", { name: "Save retention" }).click();
  await toast("Retention saved.").waitFor();
  await check("15-settings", true);

  // Try it picks up a reply in progress after a reload: a slow model, an application whose
  // replies go on without their page (`resumable`), and the page reloaded mid-reply.
  const words = Array.from({ length: 16 }, (_, i) => `part${i} `);
  const slow = slowProvider(words);
  const slowPort = await listen(slow);
  await page.getByLabel("Replies go on when their client leaves").check();
  await page.getByRole("button", { name: "Save", exact: true }).first().click();
  await toast("Saved.").waitFor();
  await call("POST", `/v1/applications/${appId}/providers`, operator, { name: "slow", kind: "openai-compatible", base_url: `http://127.0.0.1:${slowPort}/v1` });
  const slowAgent = await call("POST", `/v1/applications/${appId}/agents`, operator, { name: "Slow", model: { provider: "slow", model: "slow-1" } });
  const allKey = await call("POST", `/v1/applications/${appId}/authentication-keys`, operator, { name: "all agents", scope: { all_agents: true } });
  await page.goto(`${BASE}/dashboard#/a/${appId}/agents/${slowAgent.id}/try`);
  await page.getByLabel("Message").fill("count slowly");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator("#chat-log .reply", { hasText: "part2" }).waitFor();
  await page.reload();
  await page.locator("#chat-log .reply", { hasText: "part15" }).waitFor({ timeout: 15_000 });
  assert.equal(await page.locator("#chat-log .reply").count(), 1, "the resumed reply is shown once");
  assert.equal((await page.locator("#chat-log .reply").textContent())?.trim(), words.join("").trim());
  slow.close();
  await call("DELETE", `/v1/applications/${appId}/authentication-keys/${allKey.id}`, operator);

  // Every page of the application, wide and narrow, light and dark.
  const pages = [
    "overview",
    "agents",
    `agents/${agentId}`,
    `agents/${agentId}/settings`,
    `agents/${agentId}/conversations`,
    `agents/${agentId}/users`,
    `agents/${agentId}/try`,
    "users",
    "users/dashboard-test-user",
    "conversations",
    "feedback",
    "keys",
    "api-keys",
    "providers",
    "webhooks",
    "members",
    "settings",
  ];
  for (const [viewport, scheme] of [[NARROW, "light"], [WIDE, "dark"], [NARROW, "dark"]] as const) {
    await page.setViewportSize(viewport);
    await page.emulateMedia({ colorScheme: scheme });
    for (const path of pages) {
      await page.goto(`${BASE}/dashboard#/a/${appId}/${path}`);
      await page.locator("main h1").waitFor();
      await check(`${path.replaceAll("/", "-")}-${scheme}`);
    }
  }
  await page.emulateMedia({ colorScheme: "dark" });
  await page.setViewportSize(WIDE);
  await page.goto(`${BASE}/dashboard#/a/${appId}/overview`);
  await check("16-overview-dark", true);
  await page.setViewportSize(NARROW);
  await page.goto(`${BASE}/dashboard#/a/${appId}/agents/${agentId}/try`);
  await check("17-try-it-narrow-dark", true);
  await page.emulateMedia({ colorScheme: "light" });
  await page.goto(`${BASE}/dashboard#/a/${appId}/users/dashboard-test-user`);
  await check("18-user-narrow", true);
  await page.setViewportSize(WIDE);

  // An API key, its secret shown once.
  await page.goto(`${BASE}/dashboard#/a/${appId}/api-keys`);
  await page.getByLabel("Name", { exact: true }).fill("exporter");
  await page.getByLabel(/^admin:/).check();
  await page.getByRole("button", { name: "Create API key" }).click();
  assert.match((await page.locator("#shown-secret").textContent()) ?? "", /\S{20,}/);
  await page.getByRole("dialog").getByRole("button", { name: "I have stored it" }).click();
  await page.getByRole("row", { name: /exporter/ }).waitFor();

  // An access token the server refuses (as an expired one is) is refreshed once, transparently.
  const stale = await session();
  await page.evaluate(() => {
    const saved = JSON.parse(sessionStorage.getItem("confidant.session") ?? "null");
    sessionStorage.setItem("confidant.session", JSON.stringify({ ...saved, access: "not.a.valid-token" }));
  });
  await page.reload();
  await heading("API keys").waitFor();
  const fresh = await session();
  assert.notEqual(fresh.access, "not.a.valid-token");
  assert.notEqual(fresh.refresh, stale.refresh);
  // A session the server ended (refresh refused too) says so, and logging in returns to the page.
  await page.evaluate(() => sessionStorage.setItem("confidant.session", JSON.stringify({ access: "not.a.valid-token", refresh: "expired" })));
  await page.goto(`${BASE}/dashboard#/a/${appId}/webhooks`);
  await page.reload(); // a new hash alone does not reload the page, and the page keeps its tokens
  await page.getByText("Your session has ended. Log in again to go on.").waitFor();
  assert.equal(await page.locator("#app-switch").isVisible(), false);
  await page.getByLabel("Email").fill(EMAIL);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await heading("Webhooks").waitFor();
  assert.equal(hash(), `#/a/${appId}/webhooks`);

  // A deep link opens in a new tab after its login.
  const other = await context.newPage();
  await other.goto(`${BASE}/dashboard#/a/${appId}/agents/${agentId}/conversations`);
  await other.getByLabel("Email").fill(EMAIL);
  await other.getByLabel("Password").fill(PASSWORD);
  await other.getByRole("button", { name: "Log in" }).click();
  await other.getByRole("heading", { level: 1, name: "Support desk" }).waitFor();
  await other.getByRole("tab", { name: "Conversations", selected: true }).waitFor();
  await other.close();

  // The user erased, after typing their sub.
  await page.goto(`${BASE}/dashboard#/a/${appId}/users/dashboard-test-user`);
  await page.getByRole("button", { name: "Erase user" }).click();
  const confirm = page.getByRole("dialog").getByRole("button", { name: "Erase user" });
  assert.equal(await confirm.isDisabled(), true, "erasing waits for the typed sub");
  await page.getByRole("dialog").getByLabel(/Type/).fill("dashboard-test-user");
  await confirm.click();
  await toast(/Erased 2 conversation\(s\)/).waitFor();
  await heading("Users").waitFor();
  await page.goto(`${BASE}/dashboard#/a/${appId}/users/dashboard-test-user`);
  await page.getByText(/holds nothing for dashboard-test-user/).waitFor();

  // The application deleted, after typing its name; the dashboard goes to another one, or the start.
  await nav("Settings").click();
  await page.getByRole("button", { name: "Delete application" }).click();
  await page.getByRole("dialog").getByLabel(/Type/).fill(renamed);
  await page.getByRole("dialog").getByRole("button", { name: "Delete application" }).click();
  await toast(`Application “${renamed}” deleted.`).waitFor();
  await page.waitForFunction((id) => !location.hash.includes(id), appId);
  const after = await call("GET", "/v1/auth/me", (await session()).access);
  assert.ok(!after.applications.some((a: { id: string }) => a.id === appId));

  // Logging out leaves only the login form.
  await page.getByRole("button", { name: "Log out" }).click();
  await heading("Log in").waitFor();
  await page.getByText("You have logged out.").waitFor();
  assert.equal(await page.locator("#app-switch").isVisible(), false);
  assert.equal(await page.locator("#account").isVisible(), false);
  assert.deepEqual(consoleErrors, [], "no script errors");
  console.log(`checked ${checked.length} page views: ${checked.join(", ")}`);
});
