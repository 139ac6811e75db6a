// The operators who manage this application: owners (everything, members included) and admins.

import { api } from "/dashboard/api.js";
import { field, h, when } from "/dashboard/dom.js";
import { badge, card, confirmAction, onSubmit, pageHeader, table } from "/dashboard/ui.js";
import { run } from "/dashboard/pages/common.js";

export async function membersPage(ctx) {
  const members = (await api("GET", ctx.path("/members?limit=100"))).data;
  const rows = members.map((m) => {
    const you = m.operator_id === ctx.me.id;
    const remove = h("button", { type: "button", class: "danger", "aria-label": `${you ? "Leave" : "Remove"} ${m.email}` }, you ? "Leave" : "Remove");
    remove.addEventListener("click", async () => {
      const message = you
        ? `Leave ${ctx.app.name}? You lose access to it at once; another owner can add you again.`
        : `Remove ${m.email} from ${ctx.app.name}? They lose access at once.`;
      if (!(await confirmAction(you ? "Leave this application?" : "Remove member?", message, you ? "Leave" : "Remove member"))) return;
      const done = await run(remove, () => api("DELETE", ctx.path(`/members/${m.operator_id}`)), you ? `You left ${ctx.app.name}.` : `${m.email} removed.`);
      if (done === undefined) return;
      if (you) ctx.applicationChanged("#/");
      else ctx.rerender();
    });
    return h("tr", {}, h("td", {}, m.email, you ? " " : null, you ? badge("you") : null), h("td", {}, badge(m.role, m.role === "owner" ? "ok" : "")), h("td", {}, when(m.created_at)), h("td", { class: "actions" }, remove));
  });
  const email = h("input", { type: "email", required: true, maxlength: 254, placeholder: "colleague@example.com", autocomplete: "off" });
  const role = h("select", {}, h("option", { value: "admin" }, "Admin: agents, keys, users, settings"), h("option", { value: "owner" }, "Owner: all of that, and members"));
  const form = onSubmit(
    h(
      "form",
      { id: "new-member" },
      field("Email", email, { name: "email", hint: "Of an operator who already has a login (made with confidant admin create)." }),
      field("Role", role, { name: "role" }),
      h("button", { class: "primary", type: "submit" }, "Add member"),
    ),
    async () => {
      const added = await api("POST", ctx.path("/members"), { email: email.value.trim(), role: role.value });
      ctx.rerender();
      return added;
    },
    (m) => `${m.email} added as ${m.role}.`,
  );
  return [
    pageHeader("Members", `The operators who manage ${ctx.app.name}.`),
    card(null, table(["Email", "Role", "Added", ""], rows, "No members.")),
    card("Add a member", form),
  ];
}
