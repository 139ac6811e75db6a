// The public REST API with the operator's tokens: the access token is refreshed once when the
// server refuses it, and when that fails too the session has ended (the app shows the login page).

const KEY = "confidant.session";
const session = JSON.parse(sessionStorage.getItem(KEY) || "null") ?? {};
let ended = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ? sentence(body.message) : status ? `The server answered ${status}.` : "The server could not be reached.");
    this.status = status;
    this.code = body?.error;
    /** `validation_failed`: field path → what is wrong with it. */
    this.fields = body?.details?.fields ?? {};
  }
}

/** The API's messages are lower-case clauses; the page shows sentences. */
export function sentence(text) {
  const s = String(text).trim();
  return s ? s[0].toUpperCase() + s.slice(1) + (/[.!?]$/.test(s) ? "" : ".") : s;
}

export const loggedIn = () => Boolean(session.access);
export const accessToken = () => session.access;

/** Called with a message when the session ends on the server's word (not on logout). */
export function onSessionEnd(callback) {
  ended = callback;
}

function save(tokens) {
  session.access = tokens?.access ?? null;
  session.refresh = tokens?.refresh ?? null;
  if (session.access) sessionStorage.setItem(KEY, JSON.stringify(session));
  else sessionStorage.removeItem(KEY);
}

async function send(method, path, body, token) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  try {
    return await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, null);
  }
}

let refreshing = null;
async function refresh() {
  if (!session.refresh) return false;
  // Parallel requests that all met a stale token share one refresh (a refresh token works once).
  refreshing ??= send("POST", "/v1/auth/refresh", { refresh: session.refresh })
    .then(async (response) => {
      if (!response.ok) return false;
      save(await response.json());
      return true;
    })
    .catch(() => false)
    .finally(() => setTimeout(() => { refreshing = null; }, 0));
  return refreshing;
}

/** One API call; resolves to the JSON body (null for 204), rejects with an ApiError. */
export async function api(method, path, body) {
  let response = await send(method, path, body, session.access);
  if (response.status === 401 && (await refresh())) response = await send(method, path, body, session.access);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) {
      save(null);
      ended("Your session has ended. Log in again to go on.");
    }
    throw new ApiError(response.status, data);
  }
  return data;
}

export async function login(email, password) {
  const response = await send("POST", "/v1/auth/login", { email, password });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  save(data);
}

export async function logout() {
  await api("POST", "/v1/auth/logout").catch(() => null);
  save(null);
}
