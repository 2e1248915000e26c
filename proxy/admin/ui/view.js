// The route cards: a header with the release state, the versions (share as a percentage and a
// bar, where the weight comes from, live figures), three charts, then the panels and the actions.
// Each part of a card is rebuilt only when what it shows changed, so text stays selectable and the
// inputs of the actions keep what the user typed.

import { lineChart } from "./chart.js";
import { abortPanel, rolloutPanel, shadowPanel } from "./panels.js";
import { describe } from "./model.js";
import { fmt, h } from "./dom.js";

const SOURCES = {
  file: ["file", "the configuration file's weight"],
  api: ["API", "set through the admin API (weights, promote or switch)"],
  rollout: ["rollout", "the rollout's current step"],
  abort: ["abort", "held at 0 by an abort"],
  unhealthy: ["health", "held at 0: every endpoint is down"],
};

/** Rebuilds `part` from `build()` when `key` differs from the last build's. */
function update(part, key, build) {
  if (part.dataset.key !== key) {
    part.replaceChildren(...[build()].flat().filter(Boolean));
    part.dataset.key = key;
  }
}

/** The table shows the last ten seconds (what is happening now); the charts, five-second steps. */
const SUMMARY_MS = 10_000;
const STEP_MS = 5_000;

/** Draws every route; `cards` keeps each route's card between polls. */
export function renderRoutes(main, cards, data, makeActions) {
  const names = new Set(data.routes.map((r) => r.name));
  for (const [name, card] of cards) {
    if (!names.has(name)) {
      card.root.remove();
      cards.delete(name);
    }
  }
  data.routes.forEach((route, i) => {
    let card = cards.get(route.name);
    if (!card) {
      card = newCard(route.name);
      cards.set(route.name, card);
    }
    if (main.children[i] !== card.root) {
      main.insertBefore(card.root, main.children[i] ?? null);
    }
    drawCard(card, route, data, makeActions);
  });
  if (!data.routes.length) {
    main.replaceChildren(h("p", { class: "muted" }, "No routes configured."));
  }
}

function newCard(name) {
  const parts = {};
  for (const p of ["head", "versions", "charts", "panels", "actions"]) {
    parts[p] = h("div", { class: `card-${p}` });
  }
  const root = h("section", { class: "route", "data-route": name }, Object.values(parts));
  return { root, parts, actions: null };
}

function drawCard(card, route, data, makeActions) {
  const stats = data.stats.routes.find((r) => r.name === route.name);
  const { history, journal, shadows } = data;
  const total = route.versions.reduce((a, v) => a + v.weight, 0);
  const head = [route.name, route.state, describe(route), route.generation, stats?.strategy];
  update(card.parts.head, JSON.stringify(head), () => [
    h("h2", {}, route.name),
    h("span", { class: `badge state-${route.state}` }, route.state),
    route.rollout ? h("span", { class: `badge rollout-${route.rollout.state}` }, `rollout ${route.rollout.state}`) : null,
    stats?.strategy === "blue_green" ? h("span", { class: "badge" }, "blue/green") : null,
    stats?.shadow ? h("span", { class: "badge" }, `dark launch: ${stats.shadow}`) : null,
    h("span", { class: "muted head-note" }, `${describe(route)} · generation ${route.generation}`),
  ]);

  const rows = route.versions.map((v, i) => {
    const f = history.summary(route.name, v.name, SUMMARY_MS);
    const live = stats?.versions.find((s) => s.name === v.name);
    return { v, i, f, inFlight: live?.in_flight ?? 0 };
  });
  const span = Math.min(SUMMARY_MS, history.span());
  update(card.parts.versions, JSON.stringify([rows, total, stats?.shadow, span]), () =>
    versionsTable(rows, total, stats?.shadow, span),
  );

  const to = history.now();
  const from = Math.max(to - 5 * 60_000, history.samples[0]?.t ?? to);
  const series = route.versions.map((v, i) => ({
    name: v.name,
    color: i,
    points: history.series(route.name, v.name, STEP_MS),
  }));
  update(card.parts.charts, JSON.stringify([from, to, series.map((s) => s.points.length)]), () => {
    const pick = (field) => series.map((s) => ({ ...s, points: s.points.map((p) => ({ t: p.t, value: p[field] })) }));
    // A version that never had a request in the span (a shadow, a canary not started) has no line.
    const rates = pick("rate").filter((s) => s.points.some((p) => p.value > 0));
    return [
      lineChart({ title: "requests/s", lines: rates, from, to, format: fmt.rate, least: 1 }),
      lineChart({ title: "error rate", lines: pick("errorRate"), from, to, format: fmt.percent, least: 0.01 }),
      lineChart({ title: "p99 latency", lines: pick("p99"), from, to, format: fmt.ms, least: 1 }),
    ];
  });

  const j = journal.observe(route, data.stats.at_unix_ms);
  const shadow = stats?.shadow ? shadows.get(route.name) : null;
  update(card.parts.panels, JSON.stringify([route.rollout, route.aborted, j.looks.length, j.events.length, shadow]), () => [
    route.aborted ? abortPanel(route.aborted) : null,
    route.rollout ? rolloutPanel(route, j) : null,
    stats?.shadow ? shadowPanel(stats.shadow, shadow) : null,
  ]);

  const signature = JSON.stringify([route.versions.map((v) => v.name), stats?.strategy, Boolean(route.rollout)]);
  if (!card.actions || card.actions.signature !== signature) {
    card.actions = makeActions(route, stats);
    card.actions.signature = signature;
    card.parts.actions.replaceChildren(card.actions.root);
  }
  card.actions.refresh(route);
}

function versionsTable(rows, total, shadow, span) {
  const body = rows.map(({ v, i, f, inFlight }) => {
    const [label, why] = SOURCES[v.source] ?? [v.source, ""];
    const fill = h("div", { class: "bar-fill" });
    fill.style.width = total ? `${(v.weight * 100) / total}%` : "0";
    const changed = v.weight !== v.file_weight ? ` (file: ${v.file_weight})` : "";
    return h(
      "tr",
      { "data-version": v.name, class: `c${i % 6}` },
      h(
        "td",
        { class: "name" },
        h("span", { class: "swatch" }),
        h("span", { class: "vname" }, v.name),
        " ",
        h("span", { class: "pct", title: `weight ${v.weight} of ${total}` }, fmt.share(v.weight, total)),
        v.name === shadow ? h("span", { class: "badge small" }, "shadow") : null,
      ),
      h("td", { class: "bar" }, h("div", { class: "bar-track" }, fill)),
      h("td", {}, h("span", { class: `source source-${v.source}`, title: why + changed }, label)),
      h("td", { class: "num" }, fmt.rate(f?.rate)),
      h("td", { class: `num ${f?.errorRate > 0 ? "bad" : ""}` }, fmt.percent(f?.errorRate)),
      h("td", { class: "num" }, fmt.ms(f?.p50)),
      h("td", { class: "num" }, fmt.ms(f?.p99)),
      h("td", { class: "num" }, String(inFlight)),
    );
  });
  const window = span >= SUMMARY_MS - 1500 ? "the last 10 s" : `the last ${Math.round(span / 1000)} s (since the page opened)`;
  return [
    h(
      "table",
      { class: "versions" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Version", "Share", "Weight from", "Requests", "Errors", "p50", "p99", "In flight"].map((c, k) =>
            h("th", { class: k >= 3 ? "num" : null }, c),
          ),
        ),
      ),
      h("tbody", {}, body),
    ),
    h("p", { class: "muted small" }, `Requests, errors and latency over ${window}, the charts over the last minutes; latency as the proxy's buckets read it (about 10%).`),
  ];
}
