// Confidant's operator dashboard: a small app on the public REST API. This file is the frame:
// the header, the application's navigation, the login page and the router; each page lives in
// pages/. Every element is built with DOM calls, never from HTML strings.

import { api, login, loggedIn, logout, onSessionEnd } from "/dashboard/api.js";
import { $, field, h, textInput } from "/dashboard/dom.js";
import { current, go, href } from "/dashboard/router.js";
import { card, failed, loading, onSubmit, showDialog, toast } from "/dashboard/ui.js";
import { agentPage } from "/dashboard/pages/agent.js";
import { agentsPage } from "/dashboard/pages/agents.js";
import { conversationsPage, transcriptPage, feedbackPage } from "/dashboard/pages/conversations.js";
import { apiKeysPage, authenticationKeysPage } from "/dashboard/pages/keys.js";
import { membersPage } from "/dashboard/pages/members.js";
import { overviewPage } from "/dashboard/pages/overview.js";
import { providersPage } from "/dashboard/pages/providers.js";
import { settingsPage } from "/dashboard/pages/settings.js";
import { userPage, usersPage } from "/dashboard/pages/users.js";
import { webhooksPage } from "/dashboard/pages/webhooks.js";

/** The application's pages, in the navigation's order: [page, label, render]. */
const PAGES = [
  ["overview", "Overview", overviewPage],
  ["agents", "Agents", (ctx) => (ctx.rest[0] ? agentPage(ctx) : agentsPage(ctx))],
  ["users", "Users", (ctx) => (ctx.rest[0] ? userPage(ctx) : usersPage(ctx))],
  ["conversations", "Conversations", (ctx) => (ctx.rest[1] ? transcriptPage(ctx) : conversationsPage(ctx))],
  ["feedback", "Feedback", feedbackPage],
  ["keys", "Authentication keys", authenticationKeysPage],
  ["api-keys", "API keys", apiKeysPage],
  ["providers", "Providers", providersPage],
  ["webhooks", "Webhooks", webhooksPage],
  ["members", "Members", membersPage],
  ["settings", "Settings", settingsPage],
];

const state = { me: null, renders: 0, afterLogin: null, notice: null };

// ---------------------------------------------------------------------------------------------
// Header

function showFrame(on) {
  $("app-switch").hidden = !on;
  $("account").hidden = !on;
  $("nav").hidden = !on;
  document.body.classList.toggle("signed-in", on);
}

function fillSwitcher(appId) {
  const select = $("application");
  select.replaceChildren(...state.me.applications.map((a) => h("option", { value: a.id }, a.name)));
  select.value = appId ?? "";
  select.disabled = !state.me.applications.length;
}

function fillNav(appId, page) {
  const links = PAGES.map(([id, label]) =>
    h("li", {}, h("a", { href: href(appId, id), "aria-current": id === page ? "page" : null }, label)),
  );
  $("nav").replaceChildren(h("ul", {}, links));
}

async function loadMe() {
  state.me = await api("GET", "/v1/auth/me");
  $("who").textContent = state.me.email;
  return state.me;
}

// ---------------------------------------------------------------------------------------------
// Login, and the page for an operator with no application yet

function loginPage() {
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true, maxlength: 254 });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true, maxlength: 1024 });
  const notice = state.notice ? h("p", { class: "notice", role: "status", text: state.notice }) : null;
  state.notice = null;
  const form = onSubmit(
    h("form", { class: "card login" }, h("h1", { text: "Log in" }), notice, field("Email", email), field("Password", password), h("button", { class: "primary", type: "submit" }, "Log in")),
    async () => {
      await login(email.value, password.value);
      const target = state.afterLogin && state.afterLogin !== "#/login" ? state.afterLogin : "#/";
      state.afterLogin = null;
      go(target, true);
    },
  );
  setTimeout(() => email.focus(), 0);
  return [h("div", { class: "login-wrap" }, form)];
}

/** Creates an application (from the header's button or the first-run page) and opens it. */
async function createApplication(name) {
  const app = await api("POST", "/v1/applications", { name });
  await loadMe();
  toast(`Application “${app.name}” created.`);
  go(href(app.id, "agents"));
  return app;
}

function firstApplicationForm(label = "Create application") {
  const name = textInput({ required: true, placeholder: "Acme support" });
  return onSubmit(
    h("form", {}, field("Name", name, { name: "name", hint: "What your team calls it; you can rename it later." }), h("button", { class: "primary", type: "submit" }, label)),
    () => createApplication(name.value),
  );
}

function welcomePage() {
  return [
    card(
      "Welcome to Confidant",
      h("p", { text: "An application holds your agents, the keys your backend signs user tokens with, and your users' conversations and memory. Create one to begin." }),
      firstApplicationForm(),
    ),
  ];
}

// ---------------------------------------------------------------------------------------------
// The router

async function render() {
  const run = ++state.renders;
  const where = current();
  const main = $("main");
  const tabFocused = document.activeElement?.getAttribute("role") === "tab";
  if (!loggedIn()) {
    showFrame(false);
    if (where.page !== "login") state.afterLogin = location.hash;
    if (where.page !== "login") history.replaceState(null, "", "#/login");
    document.title = "Log in · Confidant";
    main.replaceChildren(...loginPage());
    return;
  }
  if (where.page === "login") return go("#/", true);
  showFrame(true);
  main.replaceChildren(loading());
  try {
    if (!state.me) await loadMe();
    if (run !== state.renders) return;
    if (where.page === "agent-legacy") {
      const appId = sessionStorage.getItem("confidant.app") ?? state.me.applications[0]?.id;
      return appId ? go(href(appId, "agents", where.rest[0]), true) : go("#/", true);
    }
    if (!where.appId) {
      const remembered = sessionStorage.getItem("confidant.app");
      const app = state.me.applications.find((a) => a.id === remembered) ?? state.me.applications[0];
      if (app) return go(href(app.id, "overview"), true);
      fillSwitcher(null);
      $("nav").hidden = true;
      document.title = "Welcome · Confidant";
      main.replaceChildren(...welcomePage());
      return;
    }
    let app = state.me.applications.find((a) => a.id === where.appId);
    if (!app) {
      await loadMe(); // created elsewhere since this page loaded?
      app = state.me.applications.find((a) => a.id === where.appId);
    }
    const page = PAGES.find(([id]) => id === where.page);
    fillSwitcher(app?.id ?? null);
    if (!app || !page) {
      $("nav").hidden = !app;
      if (app) fillNav(app.id, null);
      main.replaceChildren(failed({ status: 404 }), h("p", {}, h("a", { href: "#/" }, "Go to the dashboard's start")));
      return;
    }
    sessionStorage.setItem("confidant.app", app.id);
    fillNav(app.id, where.page);
    const ctx = {
      app,
      appId: app.id,
      rest: where.rest,
      me: state.me,
      path: (suffix = "") => `/v1/applications/${app.id}${suffix}`,
      href: (...parts) => href(app.id, ...parts),
      go,
      rerender: () => render(),
      /** After a change to the application (rename): the header and context follow. */
      applicationChanged: async (target) => {
        await loadMe();
        if (target) go(target);
        else render();
      },
      stale: () => run !== state.renders,
    };
    const nodes = await page[2](ctx);
    if (run !== state.renders) return;
    main.replaceChildren(...[nodes].flat(Infinity).filter((node) => node !== null && node !== undefined));
    const title = main.querySelector("h1")?.textContent ?? page[1];
    document.title = `${title} · ${app.name} · Confidant`;
    if (tabFocused) main.querySelector('[role=tab][aria-selected="true"]')?.focus();
    else if (state.focusOnRender) main.querySelector("h1")?.focus();
    state.focusOnRender = false;
  } catch (error) {
    if (run !== state.renders || !loggedIn()) return;
    main.replaceChildren(failed(error, () => render()));
  }
}

onSessionEnd((message) => {
  state.me = null;
  state.notice = message;
  state.afterLogin = location.hash;
  render();
});

window.addEventListener("hashchange", () => render());

// Moving to another page by a link puts the keyboard and screen reader at its title.
document.addEventListener("click", (event) => {
  if (event.target.closest?.("#nav a, main a[href^='#/']")) state.focusOnRender = true;
});

$("logout").addEventListener("click", async () => {
  await logout();
  state.me = null;
  state.notice = "You have logged out.";
  sessionStorage.removeItem("confidant.app");
  go("#/login");
});

$("application").addEventListener("change", (event) => {
  const page = current().page;
  go(href(event.target.value, PAGES.some(([id]) => id === page) ? page : "overview"));
});

$("new-application").addEventListener("click", () => {
  const name = textInput({ required: true, placeholder: "Acme support" });
  const form = onSubmit(
    h(
      "form",
      { id: "new-application-form" },
      field("Name", name, { name: "name", hint: "What your team calls it; you can rename it later." }),
      h("div", { class: "dialog-actions" }, h("button", { type: "button", onclick: () => $("dialog").close("cancel") }, "Cancel"), h("button", { class: "primary", type: "submit" }, "Create application")),
    ),
    async () => {
      const app = await createApplication(name.value);
      $("dialog").close("created");
      return app;
    },
  );
  showDialog("New application", form, [], { onOpen: () => name.focus() });
});

render();
