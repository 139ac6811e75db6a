// Hash routing: every page has its own URL, so Back, reload and shared links work.
//
//   #/login                          #/a/<app>/agents/<agent>[/conversations|/users|/try]
//   #/                               #/a/<app>/conversations[/<sub>/<conversation>]
//   #/a/<app>/overview               #/a/<app>/users[/<sub>]
//   #/a/<app>/<page>                 (feedback, keys, api-keys, providers, webhooks, members, settings)

/** The current location as `{ appId, page, rest }` (`rest`: the decoded segments after the page). */
export function current() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "a" && parts[1]) return { appId: parts[1], page: parts[2] || "overview", rest: parts.slice(3) };
  // The old dashboard's agent links (#agent/<id>) still open the agent.
  if (/^agent$/.test(parts[0] ?? "") && parts[1]) return { appId: null, page: "agent-legacy", rest: [parts[1]] };
  return { appId: null, page: parts[0] || "", rest: parts.slice(1) };
}

/** The hash of an application's page: `href(app, "agents", id, "try")`. */
export function href(appId, page, ...rest) {
  return `#/a/${encodeURIComponent(appId)}/${[page, ...rest].map(encodeURIComponent).join("/")}`;
}

/** Goes to `hash` (a new history entry unless `replace`). */
export function go(hash, replace = false) {
  if (location.hash === hash) {
    window.dispatchEvent(new HashChangeEvent("hashchange"));
    return;
  }
  if (replace) {
    history.replaceState(null, "", hash);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  } else {
    location.hash = hash;
  }
}
