// The agents list, and the form that creates one.

import { api } from "/dashboard/api.js";
import { field, h, textInput, when } from "/dashboard/dom.js";
import { badge, card, onSubmit, pageHeader, table } from "/dashboard/ui.js";
import { loadProviders, modelFields, modelText } from "/dashboard/pages/common.js";

export async function agentsPage(ctx) {
  const [agents, providers] = await Promise.all([api("GET", ctx.path("/agents?limit=100")), loadProviders(ctx)]);
  const rows = agents.data.map((agent) =>
    h(
      "tr",
      {},
      h("td", {}, h("a", { href: ctx.href("agents", agent.id), class: "cell-title" }, agent.name)),
      h("td", { class: "mono", text: modelText(agent.model) }),
      h("td", {}, agent.memory ? badge("memory", "ok") : null, " ", agent.tools.length || agent.mcp_servers.length ? badge(`${agent.tools.length + agent.mcp_servers.length} tool source(s)`) : null),
      h("td", {}, when(agent.created_at)),
      h("td", { class: "actions" }, h("a", { href: ctx.href("agents", agent.id, "try") }, "Try it")),
    ),
  );
  const form = newAgentForm(ctx, providers);
  return [
    pageHeader("Agents", "Each agent has its own instructions, model, tools and conversations."),
    card(null, table(["Name", "Model", "Features", "Created", ""], rows, "No agents yet. Create the first one below: a name and instructions are enough to try it.")),
    card("New agent", form),
  ];
}

function newAgentForm(ctx, providers) {
  const name = textInput({ required: true, placeholder: "Support assistant" });
  const instructions = h("textarea", { rows: 4, maxlength: 65536, placeholder: "You are a helpful assistant for Acme's customers…" });
  const memory = h("input", { type: "checkbox" });
  const model = modelFields(providers);
  return onSubmit(
    h(
      "form",
      { id: "new-agent" },
      field("Name", name, { name: "name" }),
      field("Instructions (system prompt)", instructions, { name: "instructions", hint: "What the model is told before every conversation." }),
      model.nodes,
      field("Give the model the user's memory", memory, { inline: true, name: "memory", hint: "The records saved for this user are added to the instructions." }),
      h("button", { class: "primary", type: "submit" }, "Create agent"),
    ),
    async () => {
      const agent = await api("POST", ctx.path("/agents"), { name: name.value, instructions: instructions.value, memory: memory.checked, model: model.read() });
      ctx.go(ctx.href("agents", agent.id));
      return agent;
    },
    (agent) => `Agent “${agent.name}” created.`,
  );
}
