// Model providers (OpenAI or any compatible API): add, edit, test the connection, delete. The
// stored API key is never shown again.

import { api } from "/dashboard/api.js";
import { field, h, textInput, when } from "/dashboard/dom.js";
import { badge, card, empty, onSubmit, pageHeader, showDialog, table } from "/dashboard/ui.js";
import { deleteButton, run } from "/dashboard/pages/common.js";

export async function providersPage(ctx) {
  const providers = (await api("GET", ctx.path("/providers?limit=100"))).data;
  const result = h("div", { id: "provider-test", "aria-live": "polite" });
  const rows = providers.map((p) => {
    const test = h("button", { type: "button", "aria-label": `Test connection to ${p.name}` }, "Test connection");
    test.addEventListener("click", () => run(test, async () => result.replaceChildren(testResult(p, await api("POST", ctx.path(`/providers/${p.id}/test`)))))); 
    const edit = h("button", { type: "button", "aria-label": `Edit ${p.name}`, onclick: () => editProvider(ctx, p) }, "Edit");
    return h(
      "tr",
      {},
      h("td", { class: "cell-title", text: p.name }),
      h("td", { class: "mono", text: p.base_url }),
      h("td", {}, p.has_api_key ? badge("stored", "ok") : badge("none")),
      h("td", {}, when(p.created_at)),
      h("td", { class: "actions" }, test, edit, deleteButton(ctx, `provider ${p.name}`, "provider", `/providers/${p.id}`)),
    );
  });
  return [
    pageHeader("Providers", "Where agents' models run: OpenAI, or any API that speaks OpenAI's chat completions (vLLM, Ollama, LiteLLM, OpenRouter…)."),
    card(null, table(["Name", "Base URL", "API key", "Added", ""], rows, empty("No providers yet: agents use the built-in echo model, which repeats what it is told. Add one below to use a real model.")), result),
    card("New provider", providerForm(ctx)),
  ];
}

function testResult(provider, test) {
  const models = test.models.length
    ? h("details", {}, h("summary", { text: `${test.models.length} model(s) offered` }), h("ul", { class: "mono" }, test.models.map((m) => h("li", { text: m }))))
    : null;
  return h(
    "div",
    { class: test.ok ? "notice" : "form-error", role: "status" },
    h("strong", { text: test.ok ? `${provider.name}: connected` : `${provider.name}: not connected` }),
    h("p", { text: `${test.message}${test.elapsed_ms != null ? ` (${test.elapsed_ms} ms)` : ""}` }),
    models,
  );
}

/** The provider form, empty for a new one or filled from `provider` to edit it. */
function providerFields(provider) {
  const name = textInput({ required: true, placeholder: "openai", value: provider?.name ?? "" });
  const baseUrl = h("input", { type: "url", required: true, maxlength: 2048, placeholder: "https://api.openai.com/v1", value: provider?.base_url ?? "" });
  const apiKey = h("input", { type: "password", autocomplete: "off", maxlength: 4096 });
  const removeKey = h("input", { type: "checkbox" });
  const nodes = [
    field("Name", name, { name: "name", hint: "Agents choose their provider by this name." }),
    field("Base URL", baseUrl, { name: "base_url", hint: "Up to /v1: the service adds /chat/completions." }),
    field(provider?.has_api_key ? "New API key" : "API key", apiKey, { name: "api_key", hint: provider?.has_api_key ? "Leave empty to keep the stored key. Stored encrypted, never shown." : "Stored encrypted, never shown again. Leave empty for a provider without keys." }),
    provider?.has_api_key ? field("Remove the stored key", removeKey, { inline: true }) : null,
  ];
  return { name, baseUrl, apiKey, removeKey, nodes };
}

function providerForm(ctx) {
  const f = providerFields(null);
  return onSubmit(
    h("form", { id: "new-provider" }, f.nodes, h("button", { class: "primary", type: "submit" }, "Add provider")),
    async () => {
      const body = { name: f.name.value, kind: "openai-compatible", base_url: f.baseUrl.value, api_key: f.apiKey.value || null };
      const created = await api("POST", ctx.path("/providers"), body);
      ctx.rerender();
      return created;
    },
    (p) => `Provider “${p.name}” added. Test its connection from the list.`,
  );
}

async function editProvider(ctx, provider) {
  const f = providerFields(provider);
  let saved = null;
  const form = onSubmit(
    h("form", { id: "edit-provider" }, f.nodes, h("div", { class: "dialog-actions" }, h("button", { type: "button", value: "cancel", onclick: () => form.closest("dialog").close("cancel") }, "Cancel"), h("button", { class: "primary", type: "submit" }, "Save provider"))),
    async () => {
      const body = { name: f.name.value, base_url: f.baseUrl.value };
      if (f.removeKey.checked) body.api_key = null;
      else if (f.apiKey.value) body.api_key = f.apiKey.value;
      saved = await api("PATCH", ctx.path(`/providers/${provider.id}`), body);
      form.closest("dialog").close("saved");
      return saved;
    },
    (p) => `Provider “${p.name}” saved.`,
  );
  await showDialog(`Edit provider ${provider.name}`, form, []);
  if (saved) ctx.rerender();
}
