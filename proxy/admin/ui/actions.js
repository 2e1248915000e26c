// A route's actions: the API's changes (weights, rollout start, pause, resume, promote, abort,
// lift an abort, reset, switch) as a form and buttons. Each is enabled only in the states where
// the API would accept it; abort, promote, switch and reset ask for confirmation first. The calls
// go through `call`, which adds the tab's token; the API's answer (or refusal) is shown beside.

import { h } from "./dom.js";

/**
 * Builds the actions of `route` (`stats` says its strategy); returns `{root, refresh(route)}`.
 * `call(route, method, path, body)` resolves to `{ok, message}`; `confirm({...})` to
 * `{ok, reason}`.
 */
export function actionsPanel(route, stats, { call, confirm }) {
  const name = route.name;
  const first = route.versions[0]?.name;
  const last = route.versions[route.versions.length - 1]?.name;
  const message = h("span", { class: "action-message", role: "status" });
  let dirty = false;
  const inputs = route.versions.map((v) =>
    h("input", {
      type: "number",
      min: 0,
      step: 1,
      value: v.weight,
      "data-weight": v.name,
      "aria-label": `weight of ${v.name}`,
      oninput: () => {
        dirty = true;
      },
    }),
  );

  const run = async (label, method, path, body) => {
    message.textContent = `${label}…`;
    message.className = "action-message";
    const result = await call(name, method, path, body);
    message.textContent = result.ok ? `${label}: done` : `${label}: ${result.message}`;
    message.className = `action-message ${result.ok ? "ok" : "bad"}`;
    return result.ok;
  };

  const weights = h("form", {
    class: "weights",
    onsubmit: async (e) => {
      e.preventDefault();
      const body = {};
      for (const input of inputs) {
        body[input.dataset.weight] = Number(input.value);
      }
      if (await run("set weights", "PUT", "weights", body)) {
        dirty = false;
      }
    },
  });
  weights.append(
    ...route.versions.map((v, i) => h("label", {}, v.name, " ", inputs[i])),
    h("button", { type: "submit", "data-action": "weights" }, "Set weights"),
  );

  const rollout = Boolean(route.rollout);
  const spec = [
    rollout && ["start", "Start rollout", "POST", "rollout/start", null],
    rollout && ["pause", "Pause", "POST", "rollout/pause", null],
    rollout && ["resume-rollout", "Resume rollout", "POST", "rollout/resume", null],
    [
      "promote",
      "Promote",
      "POST",
      rollout ? "rollout/promote" : "promote",
      { text: `Promote ${last} on ${name}? It takes 100% of the traffic now.`, ok: "Promote" },
    ],
    stats?.strategy === "blue_green" && [
      "switch",
      "Switch",
      "POST",
      "switch",
      { text: `Switch ${name}? The standby takes 100% of the traffic, if its health checks pass.`, ok: "Switch" },
    ],
    [
      "abort",
      "Abort",
      "POST",
      "abort",
      {
        text: `Abort ${name}? Every version but ${first} goes to 0% at once, and stays there until the abort is lifted.`,
        ok: "Abort",
        reason: true,
      },
    ],
    ["resume", "Lift abort", "POST", "resume", null],
    [
      "reset",
      "Reset to file",
      "POST",
      "reset",
      { text: `Reset ${name} to its configuration file? API weights and any abort are dropped.`, ok: "Reset" },
    ],
  ].filter(Boolean);

  const buttons = new Map();
  for (const [action, label, method, path, ask] of spec) {
    const button = h("button", {
      type: "button",
      "data-action": action,
      class: action === "abort" ? "danger" : null,
      onclick: async () => {
        let body = null;
        if (ask) {
          const answer = await confirm({ ...ask, reason: ask.reason ? "aborted from the release page" : null });
          if (!answer.ok) {
            return;
          }
          if (ask.reason) {
            body = { reason: answer.reason };
          }
        }
        await run(label.toLowerCase(), method, path, body);
      },
    }, label);
    buttons.set(action, button);
  }

  const root = h(
    "div",
    { class: "panel actions" },
    h("h3", {}, "Actions ", h("span", { class: "muted" }, "(need the admin token)")),
    weights,
    h("div", { class: "buttons" }, [...buttons.values()]),
    message,
  );

  /** Enables what the route's state allows, and shows the weights in service unless edited. */
  const refresh = (r) => {
    const aborted = r.state === "aborted";
    const rs = r.rollout?.state;
    const allowed = {
      start: !aborted && (rs === "idle" || rs === "promoted"),
      pause: !aborted && rs === "progressing",
      "resume-rollout": !aborted && rs === "paused",
      promote: !aborted && (!rollout || rs === "progressing" || rs === "paused"),
      switch: !aborted,
      abort: !aborted,
      resume: aborted,
      reset: true,
    };
    for (const [action, button] of buttons) {
      button.disabled = !allowed[action];
    }
    weights.querySelector("button").disabled = aborted;
    const editing = inputs.includes(document.activeElement);
    if (!dirty && !editing) {
      r.versions.forEach((v, i) => {
        if (inputs[i] && inputs[i].value !== String(v.weight)) {
          inputs[i].value = String(v.weight);
        }
      });
    }
  };
  return { root, refresh };
}
