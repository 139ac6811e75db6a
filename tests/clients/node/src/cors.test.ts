// A web page on another origin (a real Chromium) uses the Vercel AI SDK 5 transport against an
// agent whose application lists that origin, and is refused once the list no longer does.

import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { build } from "esbuild";
import { SignJWT } from "jose";
import { chromium, type Browser } from "playwright-core";

const BASE = process.env.CONFIDANT_URL ?? "http://127.0.0.1:8080";
const EMAIL = process.env.CONFIDANT_ADMIN_EMAIL ?? "admin@example.com";
const PASSWORD = process.env.CONFIDANT_ADMIN_PASSWORD ?? "confidant-dev-password";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const skip = process.env.SKIP_BROWSER ? `no browser: ${process.env.SKIP_BROWSER}` : false;

let browser: Browser;
let site: Server;
let siteOrigin = "";

async function call(method: string, path: string, token: string, body?: unknown) {
  const response = await fetch(`${BASE}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

before(async () => {
  if (skip) return;
  // The page's script: the AI SDK bundled for the browser, as a site's build would.
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL("../browser/chat.js", import.meta.url))],
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "silent",
  });
  const script = bundle.outputFiles[0].text;
  site = createServer((request, response) => {
    if (request.url === "/chat.js") {
      response.writeHead(200, { "content-type": "text/javascript" }).end(script);
    } else {
      response.writeHead(200, { "content-type": "text/html" }).end('<!doctype html><title>Shop</title><script src="/chat.js"></script>');
    }
  });
  await new Promise<void>((resolve) => site.listen(0, "127.0.0.1", resolve));
  siteOrigin = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close();
  site?.close();
});

test("a page on an allowed origin chats with the AI SDK; a page on another origin is refused", { skip }, async () => {
  const login = await fetch(`${BASE}/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: EMAIL, password: PASSWORD }),
  }).then((r) => r.json());
  const access: string = login.access;
  const app = await call("POST", "/v1/applications", access, { name: `cors-${Date.now()}`, allowed_origins: [siteOrigin] });
  assert.notEqual(new URL(BASE).origin, siteOrigin, "the page must be on another origin than the API");
  const agent = await call("POST", `/v1/applications/${app.id}/agents`, access, { name: "Shop assistant" });
  const key = await call("POST", `/v1/applications/${app.id}/authentication-keys`, access, { name: "shop", scope: { all_agents: true } });
  const token = await new SignJWT({ sub: "shopper-1" })
    .setProtectedHeader({ alg: "HS256", kid: key.id })
    .setIssuedAt()
    .setExpirationTime("10m")
    .sign(new TextEncoder().encode(key.secret));

  const page = await browser.newPage();
  const consoleErrors: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  await page.goto(siteOrigin);
  await page.waitForFunction(() => "runChat" in window);
  const completions = `${BASE}/v1/agents/${agent.id}/completions`;
  type Result = { status: string; error: string | null; reply: string };
  const run = (text: string) =>
    page.evaluate(
      ([api, jwt, message]) => (window as unknown as { runChat: (a: string, t: string, m: string) => Promise<Result> }).runChat(api, jwt, message),
      [completions, token, text],
    );

  const allowed = await run("hello from another origin");
  assert.deepEqual(allowed, { status: "ready", error: null, reply: "hello from another origin" });
  assert.deepEqual(consoleErrors, []);

  // The application now lists another origin: the page reads why it is refused.
  await call("PATCH", `/v1/applications/${app.id}`, access, { allowed_origins: ["https://shop.example.com"] });
  const refused = await run("and again");
  assert.equal(refused.status, "error", JSON.stringify(refused));
  assert.match(refused.error ?? "", /origin_not_allowed/);
  await page.close();
});
