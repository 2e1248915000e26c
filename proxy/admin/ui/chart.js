// Small SVG line charts: one line per version over the last minutes, a title, the top of the
// scale, and the time span. Drawn from scratch each poll; no library.

const NS = "http://www.w3.org/2000/svg";
const W = 320;
const H = 110;
const PAD = { left: 6, right: 6, top: 22, bottom: 16 };

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, String(v));
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** A "nice" scale top at or above `max`: 1, 2 or 5 times a power of ten. */
function niceTop(max, least) {
  if (!(max > least)) {
    return least;
  }
  const p = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((m) => m * p).find((v) => v >= max);
}

/**
 * A chart of `lines` ({name, color (index of the palette), points: [{t, value}]}, value null for
 * a gap) over
 * [from, to] ms, with `format` for the scale's top label.
 */
export function lineChart({ title, lines, from, to, format, least }) {
  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": title,
  });
  const max = niceTop(Math.max(0, ...lines.flatMap((l) => l.points.map((p) => p.value ?? 0))), least);
  const x = (t) => PAD.left + ((t - from) / Math.max(1, to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  svg.append(el("text", { x: PAD.left, y: 12, class: "chart-title" }, title));
  svg.append(el("text", { x: W - PAD.right, y: 12, class: "chart-scale", "text-anchor": "end" }, format(max)));
  for (const v of [0, max / 2, max]) {
    svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "chart-grid" }));
  }
  const span = Math.round((to - from) / 1000);
  const ago = span >= 120 ? `${Math.round(span / 60)} min ago` : `${span} s ago`;
  svg.append(el("text", { x: PAD.left, y: H - 3, class: "chart-axis" }, ago));
  svg.append(el("text", { x: W - PAD.right, y: H - 3, class: "chart-axis", "text-anchor": "end" }, "now"));
  if (!lines.some((l) => l.points.some((p) => p.value !== null && p.value !== undefined))) {
    svg.append(el("text", { x: W / 2, y: H / 2 + 4, class: "chart-axis", "text-anchor": "middle" }, "no requests yet"));
  }
  for (const line of lines) {
    let d = "";
    let pen = false;
    for (const p of line.points) {
      if (p.value === null || p.value === undefined || p.t < from) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)} ${y(p.value).toFixed(1)} `;
      pen = true;
    }
    if (d) {
      const path = el("path", { d, class: `chart-line c${line.color % 6}` });
      path.append(el("title", {}, line.name));
      svg.append(path);
    }
  }
  return svg;
}
