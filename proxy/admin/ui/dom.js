// Two helpers every part of the page uses: building elements without HTML strings (every value
// from the API lands in a text node, never in markup), and formatting figures.

/** Builds an element: `h("td", {class: "x", "data-version": "canary"}, "text", child)`. */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (k.startsWith("on")) {
      node.addEventListener(k.slice(2), v);
    } else if (v === true) {
      node.setAttribute(k, "");
    } else if (v !== false && v !== null && v !== undefined) {
      node.setAttribute(k, String(v));
    }
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined && c !== false) {
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  return node;
}

/** `12.3/s`, `0.5%`, `87 ms`: figures as people read them; a dash for "no data". */
export const fmt = {
  rate: (v) => (v === null || v === undefined ? "–" : `${v < 10 ? v.toFixed(1) : Math.round(v)}/s`),
  percent: (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(v && v < 0.001 ? 3 : 1)}%`),
  ms: (v) => {
    if (v === null || v === undefined) {
      return "–";
    }
    if (v >= 1000) {
      return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)} s`;
    }
    return `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`;
  },
  time: (ms) => new Date(ms).toLocaleTimeString(),
  share: (weight, total) => {
    if (!total) {
      return "0%";
    }
    const p = (weight * 100) / total;
    return `${Number.isInteger(p) ? p : p.toFixed(1)}%`;
  },
};
