// The panels under a route's versions: the rollout (steps, state, the analysis' looks with their
// numbers, what the page saw happen), an abort's evidence, and the dark launch's report.

import { fmt, h } from "./dom.js";

/** Example values longer than this are cut (the whole value is in the tooltip). */
const EXAMPLE_CHARS = 160;
/** Looks listed: the newest. */
const LOOKS_SHOWN = 8;

/** The rollout: steps taken, state, last look, looks seen and the timeline. */
export function rolloutPanel(route, journal) {
  const r = route.rollout;
  const steps = r.steps.map((pct, i) => {
    const taken = r.step !== null && r.step !== undefined && i <= r.step && r.state !== "idle";
    const current = taken && i === r.step && r.state !== "promoted";
    const cls = ["step", taken ? "taken" : "", current ? "current" : ""].join(" ");
    return h("li", { class: cls, title: `step ${i + 1}: ${r.canary} at ${pct}%` }, `${pct}%`);
  });
  const notes = {
    idle: "Not started: start it from the actions below, or with `switchyard ctl rollout start`.",
    progressing: "Each step lasts its interval; the analysis looks at every window and steps up only on a pass.",
    paused: "Paused: the step holds, and the analysis still aborts on a regression.",
    promoted: `Promoted: ${r.canary} takes all the traffic.`,
    aborted: `Aborted: ${r.baseline} takes all the traffic until the abort is lifted.`,
  };
  // After a reset the last look is the previous rollout's: show it only once this one runs.
  const look = r.state === "idle" ? null : r.analysis;
  return h(
    "div",
    { class: "panel rollout" },
    h("h3", {}, `Rollout: ${r.baseline} → ${r.canary}`),
    h("ol", { class: "steps" }, steps),
    h("p", { class: "muted" }, notes[r.state] ?? r.state),
    lastLook(route, look),
    journal.looks.length > 1 ? looksTable(journal.looks.slice(0, LOOKS_SHOWN)) : null,
    h("h4", {}, "Seen on this page"),
    h(
      "ul",
      { class: "timeline" },
      journal.events.map((e) => h("li", {}, h("span", { class: "muted" }, fmt.time(e.t)), " ", e.text)),
    ),
  );
}

function lastLook(route, look) {
  if (!look) {
    return h("p", { class: "muted" }, "No look by the analysis yet.");
  }
  const when = h("span", { class: "muted" }, fmt.time(look.at_unix_ms));
  if (route.aborted?.evidence && look.verdict === "fail") {
    // The abort panel above shows this look's figures as the evidence.
    return [h("h4", {}, "Last look ", when), h("p", {}, verdict(look), " ", h("span", { class: "muted" }, "(its figures are the abort's evidence, above)"))];
  }
  return [h("h4", {}, "Last look ", when), h("p", {}, verdict(look)), sides(look.evidence)];
}

function verdict(look) {
  const cls = `verdict verdict-${look.verdict}`;
  if (look.verdict === "fail") {
    return h("span", { class: cls }, `fail: ${look.reason}`);
  }
  if (look.verdict === "hold") {
    return [h("span", { class: cls }, "hold"), " ", look.why];
  }
  return h("span", { class: cls }, look.verdict);
}

function looksTable(looks) {
  const rows = looks.map((l) => {
    const e = l.evidence;
    return h(
      "tr",
      {},
      h("td", {}, fmt.time(l.at_unix_ms)),
      h("td", {}, verdict(l)),
      h("td", { class: "num" }, `${e.baseline.requests} / ${e.canary.requests}`),
      h("td", { class: "num" }, `${fmt.percent(e.baseline.error_rate)} / ${fmt.percent(e.canary.error_rate)}`),
      h("td", { class: "num" }, `${fmt.ms(e.baseline.p99_ms)} / ${fmt.ms(e.canary.p99_ms)}`),
    );
  });
  return [
    h("h4", {}, "Looks ", h("span", { class: "muted" }, "(newest first)")),
    h(
      "table",
      { class: "looks" },
      h(
        "thead",
        {},
        h("tr", {}, ["At", "Verdict", "Requests (baseline / canary)", "Error rate", "p99"].map((c) => h("th", {}, c))),
      ),
      h("tbody", {}, rows),
    ),
  ];
}

/** Baseline and canary side by side over one window, and the failing test. */
function sides(e) {
  const row = (label, f) => h("tr", {}, h("th", {}, label), h("td", { class: "num" }, f(e.baseline)), h("td", { class: "num" }, f(e.canary)));
  return [
    h(
      "table",
      { class: "sides" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", { class: "num" }, "baseline"), h("th", { class: "num" }, "canary"))),
      h(
        "tbody",
        {},
        row("requests", (s) => s.requests),
        row("errors", (s) => s.errors),
        row("error rate", (s) => fmt.percent(s.error_rate)),
        row("p50", (s) => fmt.ms(s.p50_ms)),
        row("p99", (s) => fmt.ms(s.p99_ms)),
      ),
    ),
    e.test ? h("p", { class: "test" }, e.test) : null,
  ];
}

/** Why and by whom the route was aborted, with the analysis' figures when it was automatic. */
export function abortPanel(a) {
  return h(
    "div",
    { class: "panel abort" },
    h("h3", {}, "Aborted"),
    h("p", {}, h("strong", {}, a.reason), ` by ${a.by}, ${fmt.time(a.at_unix_ms)}`),
    a.evidence ? [h("h4", {}, "Evidence"), sides(a.evidence)] : h("p", { class: "muted" }, "No analysis figures: an operator's abort."),
  );
}

/** The dark launch's comparison report. */
export function shadowPanel(name, report) {
  if (!report) {
    return h("div", { class: "panel shadow" }, h("h3", {}, `Dark launch: ${name}`), h("p", { class: "muted" }, "No report yet."));
  }
  const t = report.total;
  const figure = (label, value, bad) => h("div", { class: `figure ${bad ? "bad" : ""}` }, h("div", { class: "figure-value" }, value), h("div", { class: "figure-label" }, label));
  const l = t.latency;
  const change = (v) => (v === null || v === undefined ? "–" : `${v > 0 ? "+" : ""}${v}%`);
  const latencyRows = ["p50", "p95", "p99"].map((q, i) =>
    h("tr", {}, h("th", {}, q), h("td", { class: "num" }, fmt.ms(l.live_ms[i])), h("td", { class: "num" }, fmt.ms(l.shadow_ms[i])), h("td", { class: "num" }, change(l.change_percent[i]))),
  );
  latencyRows.push(
    h("tr", {}, h("th", {}, "errors"), h("td", { class: "num" }, fmt.percent(l.live_error_rate)), h("td", { class: "num" }, fmt.percent(l.shadow_error_rate)), h("td", {}, "")),
  );
  const cut = (s) => (s.length > EXAMPLE_CHARS ? `${s.slice(0, EXAMPLE_CHARS)}…` : s);
  const diffs = t.top_differences.slice(0, 10).map((d) =>
    h(
      "tr",
      {},
      h("td", {}, h("code", {}, d.path)),
      h("td", { class: "num" }, d.count),
      h("td", {}, h("code", { class: "example", title: d.live }, cut(d.live))),
      h("td", {}, h("code", { class: "example", title: d.shadow }, cut(d.shadow))),
    ),
  );
  const paths = Object.entries(report.paths)
    .sort((a, b) => b[1].compared - a[1].compared)
    .slice(0, 8)
    .map(([path, p]) =>
      h(
        "tr",
        {},
        h("td", {}, h("code", {}, path)),
        h("td", { class: "num" }, p.compared),
        h("td", { class: "num" }, `${p.identical_percent}%`),
        h("td", { class: "num" }, `${fmt.ms(p.latency.live_ms[2])} / ${fmt.ms(p.latency.shadow_ms[2])}`),
      ),
    );
  const table = (head, rows, cls) => h("table", { class: cls }, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows));
  return h(
    "div",
    { class: "panel shadow" },
    h("h3", {}, `Dark launch: ${name}`),
    h(
      "div",
      { class: "figures" },
      figure("compared", t.compared),
      figure("identical", `${t.identical_percent}%`, t.compared && t.identical_percent < 100),
      figure("noise only", t.noise_only),
      figure("status differs", t.status_mismatches, t.status_mismatches > 0),
      figure("shadow failed", t.shadow_failures, t.shadow_failures > 0),
    ),
    h("div", { class: "columns" },
      h("div", {}, h("h4", {}, "Latency, live vs shadow"), table(["", "live", "shadow", "change"], latencyRows, "sides")),
      paths.length ? h("div", {}, h("h4", {}, "By path"), table(["Path", "Compared", "Identical", "p99 live / shadow"], paths, "paths")) : null,
    ),
    h("h4", {}, "Top differences ", h("span", { class: "muted" }, "(noise and ignored fields left out; one example each)")),
    diffs.length ? table(["Field", "Count", "Live", "Shadow"], diffs, "diffs") : h("p", { class: "muted" }, "None: every compared answer matched."),
  );
}
