// What the page knows beyond one poll: the copies of /api/v1/stats it has read (the last five
// minutes of them), from which rates, error rates and latency quantiles over a window are the
// difference of two copies, as the proxy's own analysis computes them; and, per route, the rollout
// transitions and analysis looks seen since the page opened (the API keeps only the last look).

/** Copies kept: five minutes at one a second, with some slack. */
const KEEP_MS = 5 * 60 * 1000 + 5000;

/** Cumulative counts read over time. */
export class History {
  constructor() {
    /** @type {{t: number, counts: Map<string, {requests: number, errors: number, latency: number[]}>}[]} */
    this.samples = [];
    /** Latency bucket upper bounds (ms), from the server; null is unbounded. */
    this.bounds = [];
  }

  /** Adds one /api/v1/stats answer. */
  push(stats) {
    this.bounds = stats.latency_bucket_upper_ms;
    const counts = new Map();
    for (const route of stats.routes) {
      for (const v of route.versions) {
        counts.set(key(route.name, v.name), v);
      }
    }
    const last = this.samples[this.samples.length - 1];
    if (last && [...counts].some(([k, c]) => last.counts.has(k) && c.requests < last.counts.get(k).requests)) {
      this.samples = []; // the counts went backwards: a restarted proxy; start again
    }
    this.samples.push({ t: stats.at_unix_ms, counts });
    const oldest = stats.at_unix_ms - KEEP_MS;
    while (this.samples.length > 2 && this.samples[0].t < oldest) {
      this.samples.shift();
    }
  }

  /** Milliseconds of history held. */
  span() {
    const n = this.samples.length;
    return n < 2 ? 0 : this.samples[n - 1].t - this.samples[0].t;
  }

  /** The figures of a version over the last `ms` (or all the history when shorter). */
  summary(route, version, ms) {
    const n = this.samples.length;
    if (n < 2) {
      return null;
    }
    const end = this.samples[n - 1];
    const start = this.sampleAtOrBefore(end.t - ms) ?? this.samples[0];
    return figures(delta(start, end, key(route, version)), (end.t - start.t) / 1000, this.bounds);
  }

  /** Points of a version over the history, each the figures of the `stepMs` before it. */
  series(route, version, stepMs) {
    const points = [];
    const k = key(route, version);
    let from = 0;
    for (let i = 1; i < this.samples.length; i++) {
      const end = this.samples[i];
      while (from < i - 1 && this.samples[from + 1].t <= end.t - stepMs) {
        from++;
      }
      const start = this.samples[from];
      if (end.t - start.t < stepMs * 0.6) {
        continue;
      }
      const f = figures(delta(start, end, k), (end.t - start.t) / 1000, this.bounds);
      if (f) {
        points.push({ t: end.t, ...f });
      }
    }
    return points;
  }

  /** The time of the newest copy. */
  now() {
    const n = this.samples.length;
    return n ? this.samples[n - 1].t : Date.now();
  }

  sampleAtOrBefore(t) {
    let found = null;
    for (const s of this.samples) {
      if (s.t <= t) {
        found = s;
      } else {
        break;
      }
    }
    return found;
  }
}

function key(route, version) {
  return `${route}\u0000${version}`;
}

function delta(start, end, k) {
  const a = start.counts.get(k);
  const b = end.counts.get(k);
  if (!b) {
    return null;
  }
  const zero = { requests: 0, errors: 0, latency: [] };
  const from = a ?? zero;
  const latency = [];
  for (let i = 0; i < b.latency.length; i++) {
    latency.push(Math.max(0, b.latency[i] - (from.latency[i] ?? 0)));
  }
  return {
    requests: Math.max(0, b.requests - from.requests),
    errors: Math.max(0, b.errors - from.errors),
    latency,
  };
}

function figures(d, seconds, bounds) {
  if (!d || seconds <= 0) {
    return null;
  }
  return {
    requests: d.requests,
    rate: d.requests / seconds,
    errorRate: d.requests ? d.errors / d.requests : null,
    p50: quantile(d.latency, 0.5, bounds),
    p99: quantile(d.latency, 0.99, bounds),
  };
}

/** Quantile `q` in ms: the upper bound of the bucket holding it, as the proxy reads it. */
export function quantile(latency, q, bounds) {
  const total = latency.reduce((a, b) => a + b, 0);
  if (!total) {
    return null;
  }
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let i = 0; i < latency.length; i++) {
    seen += latency[i];
    if (seen >= rank) {
      return bounds[i] ?? 60000;
    }
  }
  return null;
}

/** Looks kept per route. */
const MAX_LOOKS = 30;
/** Timeline entries kept per route. */
const MAX_EVENTS = 50;

/** Rollout transitions and analysis looks seen, per route. */
export class Journal {
  constructor() {
    this.routes = new Map();
  }

  /** Notes what changed in one route since the last poll. */
  observe(route, now) {
    let j = this.routes.get(route.name);
    const first = !j;
    if (!j) {
      j = { looks: [], events: [], last: null };
      this.routes.set(route.name, j);
    }
    const r = route.rollout;
    const state = describe(route);
    if (j.last !== state) {
      const why = route.aborted ? `: ${route.aborted.reason}` : "";
      j.events.unshift({ t: now, text: `${first ? "page opened: " : ""}${state}${why}` });
      j.events.length = Math.min(j.events.length, MAX_EVENTS);
      j.last = state;
    }
    const look = r?.analysis;
    if (look && look.at_unix_ms !== j.looks[0]?.at_unix_ms) {
      j.looks.unshift(look);
      j.looks.length = Math.min(j.looks.length, MAX_LOOKS);
    }
    return j;
  }
}

/** A short line for a route's release state, e.g. `rollout progressing: step 2 of 4, canary 30%`. */
export function describe(route) {
  const r = route.rollout;
  if (route.aborted) {
    return `aborted by ${route.aborted.by}`;
  }
  if (!r) {
    return route.versions.map((v) => `${v.name} ${v.weight}`).join(", ");
  }
  if (r.state === "progressing" || r.state === "paused") {
    return `rollout ${r.state}: step ${(r.step ?? 0) + 1} of ${r.steps.length}, ${r.canary} ${r.canary_weight}%`;
  }
  return `rollout ${r.state}, ${r.canary} ${r.canary_weight}%`;
}
