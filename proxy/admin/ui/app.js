// The release page's main loop: read the open API about once a second (routes, cumulative stats,
// the dark launches' reports), draw, and schedule the next read; send the actions with the token
// kept in this tab's session storage. No full page reload, ever: the page follows the proxy.

import { actionsPanel } from "./actions.js";
import { History, Journal } from "./model.js";
import { renderRoutes } from "./view.js";

const API = new URL("../api/v1/", location.href);
const TOKEN_KEY = "switchyard.admin-token";
const POLL_MS = 1000;

const history = new History();
const journal = new Journal();
const cards = new Map();
const shadows = new Map();
const status = document.getElementById("status");

function token() {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

async function getJSON(path) {
  const r = await fetch(new URL(path, API), { cache: "no-store" });
  if (!r.ok) {
    throw new Error(`${path}: HTTP ${r.status}`);
  }
  return r.json();
}

/** Sends one change; resolves to `{ok, message}` and never throws. */
async function call(route, method, path, body) {
  const headers = {};
  const t = token();
  if (t) {
    headers.authorization = `Bearer ${t}`;
  }
  if (body) {
    headers["content-type"] = "application/json";
  }
  try {
    const url = new URL(`routes/${encodeURIComponent(route)}/${path}`, API);
    const r = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined, cache: "no-store" });
    const answer = await r.json().catch(() => null);
    schedule(0);
    if (r.ok) {
      return { ok: true };
    }
    if (r.status === 401) {
      return { ok: false, message: t ? "the admin API refused this token" : "this change needs the admin token: type it in at the top of the page" };
    }
    return { ok: false, message: answer?.error?.message ?? `HTTP ${r.status}` };
  } catch (e) {
    return { ok: false, message: `admin API unreachable (${e.message})` };
  }
}

/** Asks before a change that moves traffic at once; resolves to `{ok, reason}`. */
function confirm({ text, ok, reason }) {
  const dialog = document.getElementById("confirm");
  const input = document.getElementById("confirm-reason");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = ok;
  document.getElementById("confirm-reason-label").hidden = reason === null;
  input.value = reason ?? "";
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.removeEventListener("close", onClose);
      okButton.removeEventListener("click", onOk);
      cancel.removeEventListener("click", onCancel);
      if (dialog.open) {
        dialog.close();
      }
      resolve(answer);
    };
    const okButton = document.getElementById("confirm-ok");
    const cancel = document.getElementById("confirm-cancel");
    const onOk = () => done({ ok: true, reason: input.value.trim() || reason });
    const onCancel = () => done({ ok: false });
    const onClose = () => done({ ok: false });
    okButton.addEventListener("click", onOk);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
  });
}

let timer = null;
let polling = false;
let again = false;

function schedule(ms) {
  if (polling) {
    again = true;
    return;
  }
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

async function poll() {
  polling = true;
  let data = null;
  try {
    const [routes, stats] = await Promise.all([getJSON("routes"), getJSON("stats")]);
    history.push(stats);
    await Promise.all(
      stats.routes
        .filter((r) => r.shadow)
        .map(async (r) => {
          shadows.set(r.name, await getJSON(`routes/${encodeURIComponent(r.name)}/shadow/report`));
        }),
    );
    data = { routes: routes.routes, stats, history, journal, shadows };
    status.textContent = `live · generation ${stats.generation} · ${new Date(stats.at_unix_ms).toLocaleTimeString()}`;
    status.className = "status ok";
  } catch (e) {
    status.textContent = `admin API unreachable: ${e.message}; retrying`;
    status.className = "status bad";
  }
  try {
    if (data) {
      renderRoutes(document.getElementById("routes"), cards, data, (route, s) => actionsPanel(route, s, { call, confirm }));
    }
  } catch (e) {
    console.error("the release page failed to draw:", e); // a bug of the page: the test sees it
  } finally {
    polling = false;
    const next = again ? 0 : POLL_MS;
    again = false;
    clearTimeout(timer);
    timer = setTimeout(poll, next);
  }
}

function showToken() {
  const state = document.getElementById("token-state");
  state.textContent = token() ? "token in use (this tab only)" : "no token in this tab";
  document.getElementById("token-forget").disabled = !token();
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("token");
  if (input.value) {
    sessionStorage.setItem(TOKEN_KEY, input.value);
  }
  input.value = "";
  showToken();
});
document.getElementById("token-forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showToken();
});

showToken();
poll();
