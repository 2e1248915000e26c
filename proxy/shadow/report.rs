//! Shadow comparison aggregates per route and normalised path, bounded in memory: at most
//! [`MAX_PATHS`] paths per route (the rest under `(other)`), [`MAX_FIELDS`] differing fields per
//! path, one example pair per field.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::latency::Counts;
use crate::shadow::compare::FieldDiff;

/// Normalised paths kept per route.
pub const MAX_PATHS: usize = 200;
/// Differing fields kept per path.
pub const MAX_FIELDS: usize = 50;

/// How one mirrored exchange ended.
pub enum Outcome {
    /// Both answers complete: the differences, and those that were noise.
    Compared {
        /// Differences live vs shadow not explained by noise.
        regressions: Vec<FieldDiff>,
        /// Differences live vs shadow that live vs secondary also shows.
        noise: usize,
    },
    /// The shadow failed (connect, timeout, reset).
    ShadowFailed,
    /// The live answer never completed (client left, upstream failed).
    LiveIncomplete,
}

#[derive(Default)]
struct FieldStats {
    count: u64,
    example: (String, String),
}

#[derive(Default)]
struct PathStats {
    compared: u64,
    identical: u64,
    noise_only: u64,
    status_mismatches: u64,
    shadow_failures: u64,
    live_incomplete: u64,
    live: Counts,
    shadow: Counts,
    fields: HashMap<String, FieldStats>,
}

/// The aggregates of one route.
#[derive(Default)]
pub struct RouteReport {
    paths: HashMap<String, PathStats>,
}

impl RouteReport {
    /// Adds one mirrored exchange.
    pub fn add(
        &mut self,
        path: String,
        outcome: Outcome,
        live: Option<(u16, Duration)>,
        shadow: Option<(u16, Duration)>,
    ) {
        let key = if self.paths.contains_key(&path) || self.paths.len() < MAX_PATHS {
            path
        } else {
            "(other)".to_string()
        };
        let p = self.paths.entry(key).or_default();
        if let Some((status, latency)) = live {
            p.live.add(status >= 500, latency);
        }
        if let Some((status, latency)) = shadow {
            p.shadow.add(status >= 500, latency);
        }
        match outcome {
            Outcome::ShadowFailed => p.shadow_failures += 1,
            Outcome::LiveIncomplete => p.live_incomplete += 1,
            Outcome::Compared { regressions, noise } => {
                p.compared += 1;
                if regressions.is_empty() {
                    p.identical += 1;
                    if noise > 0 {
                        p.noise_only += 1;
                    }
                }
                if regressions.iter().any(|d| d.path == "status") {
                    p.status_mismatches += 1;
                }
                for d in regressions {
                    if !p.fields.contains_key(&d.path) && p.fields.len() >= MAX_FIELDS {
                        continue;
                    }
                    let f = p.fields.entry(d.path).or_default();
                    f.count += 1;
                    if f.count == 1 {
                        f.example = (d.left, d.right);
                    }
                }
            }
        }
    }

    /// The report as the API shows it.
    pub fn view(&self, route: &str) -> ReportView {
        let mut total = PathView::default();
        let mut paths: BTreeMap<String, PathView> = BTreeMap::new();
        let mut live_all = Counts::default();
        let mut shadow_all = Counts::default();
        let mut fields_all: HashMap<&str, (u64, &(String, String))> = HashMap::new();
        for (path, p) in &self.paths {
            paths.insert(path.clone(), PathView::of(p));
            total.compared += p.compared;
            total.identical += p.identical;
            total.noise_only += p.noise_only;
            total.status_mismatches += p.status_mismatches;
            total.shadow_failures += p.shadow_failures;
            total.live_incomplete += p.live_incomplete;
            live_all = sum(&live_all, &p.live);
            shadow_all = sum(&shadow_all, &p.shadow);
            for (name, f) in &p.fields {
                let e = fields_all.entry(name.as_str()).or_insert((0, &f.example));
                e.0 += f.count;
            }
        }
        total.identical_percent = percent(total.identical, total.compared);
        total.latency = LatencyView::of(&live_all, &shadow_all);
        let mut top: Vec<FieldView> = fields_all
            .into_iter()
            .map(|(path, (count, ex))| FieldView {
                path: path.to_string(),
                count,
                live: ex.0.clone(),
                shadow: ex.1.clone(),
            })
            .collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then(a.path.cmp(&b.path)));
        top.truncate(20);
        total.top_differences = top;
        ReportView {
            route: route.to_string(),
            total,
            paths,
        }
    }
}

fn sum(a: &Counts, b: &Counts) -> Counts {
    Counts {
        requests: a.requests + b.requests,
        errors: a.errors + b.errors,
        latency: std::array::from_fn(|i| a.latency[i] + b.latency[i]),
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 10_000.0 / whole as f64).round() / 100.0
    }
}

/// The shadow report of a route.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportView {
    /// Route name.
    pub route: String,
    /// All paths together.
    pub total: PathView,
    /// Per normalised path.
    pub paths: BTreeMap<String, PathView>,
}

/// Aggregates of one path (or of all).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PathView {
    /// Exchanges with both answers complete.
    pub compared: u64,
    /// Of which with no difference outside noise and ignored fields.
    pub identical: u64,
    /// `identical` as a percentage of `compared`.
    pub identical_percent: f64,
    /// Identical once noise (differences the secondary shows too) is set aside.
    pub noise_only: u64,
    /// Exchanges whose statuses differ.
    pub status_mismatches: u64,
    /// Shadow requests that failed (connect, timeout, reset).
    pub shadow_failures: u64,
    /// Live answers that never completed.
    pub live_incomplete: u64,
    /// Latency and error rates, live vs shadow.
    pub latency: LatencyView,
    /// The most frequent differing fields, one example each.
    pub top_differences: Vec<FieldView>,
}

impl PathView {
    fn of(p: &PathStats) -> PathView {
        let mut fields: Vec<FieldView> = p
            .fields
            .iter()
            .map(|(path, f)| FieldView {
                path: path.clone(),
                count: f.count,
                live: f.example.0.clone(),
                shadow: f.example.1.clone(),
            })
            .collect();
        fields.sort_by(|a, b| b.count.cmp(&a.count).then(a.path.cmp(&b.path)));
        fields.truncate(10);
        PathView {
            compared: p.compared,
            identical: p.identical,
            identical_percent: percent(p.identical, p.compared),
            noise_only: p.noise_only,
            status_mismatches: p.status_mismatches,
            shadow_failures: p.shadow_failures,
            live_incomplete: p.live_incomplete,
            latency: LatencyView::of(&p.live, &p.shadow),
            top_differences: fields,
        }
    }
}

/// A differing field with its count and one example.
#[derive(Debug, Serialize, Deserialize)]
pub struct FieldView {
    /// `status`, `header:NAME`, `body` or a JSON pointer.
    pub path: String,
    /// How many exchanges differed there.
    pub count: u64,
    /// Example live value.
    pub live: String,
    /// Example shadow value.
    pub shadow: String,
}

/// Latency quantiles (ms, bucket upper bounds, about 10% resolution) and error rates.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LatencyView {
    /// Live p50, p95, p99.
    pub live_ms: [Option<f64>; 3],
    /// Shadow p50, p95, p99.
    pub shadow_ms: [Option<f64>; 3],
    /// Shadow vs live change at p50, p95, p99, in percent.
    pub change_percent: [Option<f64>; 3],
    /// Live 5xx rate.
    pub live_error_rate: f64,
    /// Shadow 5xx-or-failure rate.
    pub shadow_error_rate: f64,
}

impl LatencyView {
    fn of(live: &Counts, shadow: &Counts) -> LatencyView {
        let q = |c: &Counts| [0.5, 0.95, 0.99].map(|q| c.quantile_ms(q));
        let (l, s) = (q(live), q(shadow));
        let change = std::array::from_fn(|i| match (l[i], s[i]) {
            (Some(a), Some(b)) if a > 0.0 => Some(((b - a) / a * 1000.0).round() / 10.0),
            _ => None,
        });
        LatencyView {
            live_ms: l,
            shadow_ms: s,
            change_percent: change,
            live_error_rate: live.error_rate(),
            shadow_error_rate: shadow.error_rate(),
        }
    }
}
