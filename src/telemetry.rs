//! Telemetry: counters and latency histograms the daemon updates as it works, rendered as JSON
//! (`GET /api/v1/metrics/performance`) and as Prometheus text exposition format 0.0.4
//! (`GET /metrics`).
//!
//! Invariants:
//! - Memory is bounded: every labelled family keeps at most [`MAX_LABEL_SETS`] distinct label
//!   sets; later new sets are folded into one set whose every label value is `"other"`, so a
//!   family never holds more than `MAX_LABEL_SETS + 1` sets whatever clients send.
//! - A [`Histogram`] only records finite observations (negative ones count as 0), so its sum is
//!   finite and its bucket counts add up to its count.
//! - The exposition is always parseable: metric and label names are sanitized to
//!   `[a-zA-Z_:][a-zA-Z0-9_:]*`, counter names end in `_total`, label values and help texts are
//!   escaped, numbers are printed as Prometheus reads them (`+Inf`, `-Inf`, `NaN`, integers
//!   without a fraction), and each family's `# HELP`/`# TYPE` appears once, even without samples.
//! - Nothing here does I/O or panics on data; rendering order is deterministic (sorted labels).

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Latency buckets in seconds (Prometheus convention).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Distinct label sets kept per metric family before new ones are folded into `"other"`.
pub const MAX_LABEL_SETS: usize = 256;

/// The label value that absorbs label sets beyond [`MAX_LABEL_SETS`].
pub const OTHER: &str = "other";

/// A fixed-bucket histogram of durations in seconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Upper bounds (inclusive, ascending, finite); the `+Inf` bucket is implicit.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); `bounds.len() + 1` entries, the last is `+Inf`.
    counts: Vec<u64>,
    /// Sum of all observations.
    sum: f64,
    /// Number of observations.
    count: u64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending, finite).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must ascend");
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation; NaN and infinities are ignored, negative values count as 0.
    pub fn observe(&mut self, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        let v = seconds.max(0.0);
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observations, seconds.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Cumulative counts per bound, ending with the `+Inf` bucket (= `count`).
    fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().scan(0u64, |acc, c| {
            *acc += c;
            Some(*acc)
        })
    }

    /// Estimated quantile (linear interpolation inside the bucket, like Prometheus'
    /// histogram_quantile); None when empty.
    ///
    /// `q` is clamped to `[0, 1]` (NaN gives `None`). A quantile falling in the `+Inf` bucket is
    /// reported as the largest finite bound; the lowest bucket starts at 0.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || q.is_nan() {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, cum) in self.cumulative().enumerate() {
            let in_bucket = cum - below;
            if in_bucket > 0 && cum as f64 >= rank {
                let Some(&end) = self.bounds.get(i) else {
                    return self.bounds.last().copied();
                };
                let start = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                if i == 0 && end <= 0.0 {
                    return Some(end);
                }
                let fraction = ((rank - below as f64) / in_bucket as f64).clamp(0.0, 1.0);
                return Some(start + (end - start) * fraction);
            }
            below = cum;
        }
        self.bounds.last().copied()
    }

    /// What was recorded after `earlier`, a copy of this histogram taken before: bucket by
    /// bucket, so quantiles over a window come from two cumulative snapshots (a snapshot with
    /// other bounds, or a reset since, gives everything as the window).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        if earlier.bounds != self.bounds || earlier.count > self.count {
            return self.clone();
        }
        Histogram {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
            count: self.count - earlier.count,
        }
    }

    /// {"count", "sum_seconds", "p50_ms", "p90_ms", "p99_ms"} (quantiles in ms rounded to 3
    /// decimals, null when empty)
    pub fn to_json(&self) -> Value {
        let ms = |q| self.quantile(q).map(|s| round(s * 1000.0, 3));
        json!({
            "count": self.count,
            "sum_seconds": round(self.sum, 6),
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
        })
    }
}

/// Rounds to `decimals` places.
fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// One metric family's values by label values (in the family's label-name order).
#[derive(Debug, Clone)]
struct Family<T> {
    sets: BTreeMap<Vec<String>, T>,
}

impl<T> Default for Family<T> {
    fn default() -> Self {
        Family {
            sets: BTreeMap::new(),
        }
    }
}

/// A label set as the families key it ([`Vec<String>`]) or as a request names it
/// (`&[&str]`), so that a known set is found in the map by its order, without allocating.
trait Labels {
    fn view(&self) -> View<'_>;
}

/// The labels of a [`Labels`].
enum View<'a> {
    Owned(&'a [String]),
    Borrowed(&'a [&'a str]),
}

impl Labels for Vec<String> {
    fn view(&self) -> View<'_> {
        View::Owned(self)
    }
}

impl Labels for &[&str] {
    fn view(&self) -> View<'_> {
        View::Borrowed(self)
    }
}

impl<'a> std::borrow::Borrow<dyn Labels + 'a> for Vec<String> {
    fn borrow(&self) -> &(dyn Labels + 'a) {
        self
    }
}

impl PartialEq for dyn Labels + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for dyn Labels + '_ {}

impl PartialOrd for dyn Labels + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// As `Vec<String>` orders: label by label, a prefix first.
impl Ord for dyn Labels + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self.view(), other.view()) {
            (View::Owned(a), View::Owned(b)) => a.cmp(b),
            (View::Owned(a), View::Borrowed(b)) => {
                a.iter().map(String::as_str).cmp(b.iter().copied())
            }
            (View::Borrowed(a), View::Owned(b)) => {
                a.iter().copied().cmp(b.iter().map(String::as_str))
            }
            (View::Borrowed(a), View::Borrowed(b)) => a.cmp(b),
        }
    }
}

impl<T> Family<T> {
    /// Applies `f` to the value for these label values, created with `make` when new; a new
    /// set beyond [`MAX_LABEL_SETS`] is folded into the all-`"other"` set.
    fn update(&mut self, values: &[&str], make: impl FnOnce() -> T, f: impl FnOnce(&mut T)) {
        // A known label set is found by one search of the map's order, without allocating
        // (this runs a few times per request). `f` is applied here rather than a `&mut T`
        // returned, which the borrow checker would only take after a second search.
        let known: &dyn Labels = &values;
        if let Some(v) = self.sets.get_mut(known) {
            return f(v);
        }
        let mut key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        if self.sets.len() >= MAX_LABEL_SETS && !self.sets.contains_key(&key) {
            key = vec![OTHER.to_owned(); values.len()];
        }
        f(self.sets.entry(key).or_insert_with(make))
    }

    /// Label sets as `(name, value)` pairs, with their values, in sorted order.
    fn labelled<'a>(&'a self, names: &'a [&'a str]) -> Vec<(Vec<(&'a str, &'a str)>, &'a T)> {
        self.sets
            .iter()
            .map(|(values, v)| {
                let labels = names
                    .iter()
                    .copied()
                    .zip(values.iter().map(String::as_str))
                    .collect();
                (labels, v)
            })
            .collect()
    }
}

impl<T> Family<T> {
    /// Drops every label set whose label number `index` has `value`.
    fn forget(&mut self, index: usize, value: &str) {
        self.sets
            .retain(|k, _| k.get(index).is_none_or(|v| v != value));
    }
}

impl Family<u64> {
    fn add(&mut self, values: &[&str], n: u64) {
        self.update(values, || 0, |c| *c = c.saturating_add(n));
    }
}

/// Counters and histograms the daemon updates as it works (bounded: label sets come from fixed
/// routes, server ids and outcomes; keep at most 256 distinct label sets per metric and fold the
/// rest into a label value "other").
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Labels route, method, status.
    http_requests: Family<u64>,
    /// Label route.
    http_duration: Family<Histogram>,
    /// Labels server, outcome.
    tool_calls: Family<u64>,
    /// Label server.
    tool_duration: Family<Histogram>,
    /// Labels server, method, outcome.
    requests: Family<u64>,
    /// Label server.
    restarts: Family<u64>,
    /// Label type.
    events: Family<u64>,
    ws_dropped: u64,
    ws_closed_slow: u64,
    /// Label reason.
    auth_failures: Family<u64>,
}

impl Telemetry {
    /// Empty telemetry.
    pub fn new() -> Self {
        Self::default()
    }

    /// One answered HTTP request: route pattern (e.g. "/api/v1/mcp/servers/{id}"), method,
    /// status, duration.
    pub fn http_request(&mut self, route: &str, method: &str, status: u16, seconds: f64) {
        let digits = [
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
        ];
        let status = std::str::from_utf8(&digits).unwrap_or("000");
        self.http_requests.add(&[route, method, status], 1);
        let new = || Histogram::new(LATENCY_BUCKETS);
        self.http_duration
            .update(&[route], new, |h| h.observe(seconds));
    }

    /// One tool call: server id, outcome ("ok" | "tool_error" | "mcp_error" | "timeout" | "cancelled" |
    /// "server_exited"), duration.
    pub fn tool_call(&mut self, server: &str, outcome: &str, seconds: f64) {
        self.tool_calls.add(&[server, outcome], 1);
        let new = || Histogram::new(LATENCY_BUCKETS);
        self.tool_duration
            .update(&[server], new, |h| h.observe(seconds));
    }

    /// One forwarded request other than a tool call (`prompts/get`, `resources/read`,
    /// `completion/complete`, `resources/subscribe`, `logging/setLevel`...): server id,
    /// method, outcome (as a tool call's, without `tool_error`).
    pub fn request(&mut self, server: &str, method: &str, outcome: &str) {
        self.requests.add(&[server, method, outcome], 1);
    }

    /// An MCP server restart (automatic).
    pub fn server_restart(&mut self, server: &str) {
        self.restarts.add(&[server], 1);
    }

    /// A server was unregistered: its series (tool calls, their latency, restarts) go, so
    /// `/metrics` does not export a server that no longer exists (nor keep its label sets).
    pub fn forget_server(&mut self, server: &str) {
        self.tool_calls.forget(0, server);
        self.tool_duration.forget(0, server);
        self.requests.forget(0, server);
        self.restarts.forget(0, server);
    }

    /// Events published (by type).
    pub fn event(&mut self, kind: &str) {
        self.events.add(&[kind], 1);
    }

    /// WebSocket: events dropped for slow consumers.
    pub fn ws_dropped(&mut self, n: u64) {
        self.ws_dropped = self.ws_dropped.saturating_add(n);
    }

    /// WebSocket: clients closed for not draining.
    pub fn ws_closed_slow(&mut self) {
        self.ws_closed_slow = self.ws_closed_slow.saturating_add(1);
    }

    /// Authentication failures and refused Host/Origin (security signals).
    pub fn auth_failure(&mut self, reason: &str) {
        self.auth_failures.add(&[reason], 1);
    }

    /// Per route: cumulative latency, requests and 5xx answers (for windows over them).
    pub fn route_totals(&self) -> Vec<Totals> {
        totals(&self.http_requests, &self.http_duration, |s| {
            s.starts_with('5')
        })
    }

    /// Per MCP server: cumulative tool-call latency, calls and calls not `ok`.
    pub fn server_totals(&self) -> Vec<Totals> {
        totals(&self.tool_calls, &self.tool_duration, |o| o != "ok")
    }

    /// JSON for GET /api/v1/metrics/performance: per-route request counts and latency
    /// (Histogram::to_json), per-server tool-call counts by outcome and latency, overall error
    /// rate percent of HTTP 5xx and of tool calls.
    ///
    /// Shape: `{"http": {"requests", "server_errors", "error_rate_percent", "routes": {route:
    /// {"requests", "by_status": {status: n}, "latency"}}}, "tool_calls": {"calls", "errors",
    /// "error_rate_percent", "servers": {id: {"calls", "by_outcome": {outcome: n},
    /// "latency"}}}}`. A tool call is an error when its outcome is not `ok`; rates are 0 when
    /// nothing was counted.
    pub fn performance_json(&self) -> Value {
        let (requests, server_errors, routes) = breakdown(
            &self.http_requests,
            &self.http_duration,
            "requests",
            "by_status",
            |status| status.starts_with('5'),
        );
        let (calls, call_errors, servers) = breakdown(
            &self.tool_calls,
            &self.tool_duration,
            "calls",
            "by_outcome",
            |outcome| outcome != "ok",
        );
        json!({
            "http": {
                "requests": requests,
                "server_errors": server_errors,
                "error_rate_percent": percent(server_errors, requests),
                "routes": routes,
            },
            "tool_calls": {
                "calls": calls,
                "errors": call_errors,
                "error_rate_percent": percent(call_errors, calls),
                "servers": servers,
            },
        })
    }

    /// Appends this telemetry's families to a Prometheus exposition.
    pub fn write_prometheus(&self, out: &mut Exposition) {
        let counters: [(&str, &str, &[&str], &Family<u64>); 6] = [
            (
                "vsm_http_requests_total",
                "HTTP requests answered, by route pattern, method and status.",
                &["route", "method", "status"],
                &self.http_requests,
            ),
            (
                "vsm_mcp_tool_calls_total",
                "MCP tool calls finished, by server and outcome.",
                &["server", "outcome"],
                &self.tool_calls,
            ),
            (
                "vsm_mcp_requests_total",
                "MCP requests other than tool calls forwarded to servers, by server, method and outcome.",
                &["server", "method", "outcome"],
                &self.requests,
            ),
            (
                "vsm_mcp_server_restarts_total",
                "Automatic MCP server restarts, by server.",
                &["server"],
                &self.restarts,
            ),
            (
                "vsm_events_total",
                "Events published, by type.",
                &["type"],
                &self.events,
            ),
            (
                "vsm_auth_failures_total",
                "Authentication failures and refused Host/Origin headers, by reason.",
                &["reason"],
                &self.auth_failures,
            ),
        ];
        for (name, help, labels, family) in counters {
            let sets = family.labelled(labels);
            let samples: Vec<(&[(&str, &str)], f64)> = sets
                .iter()
                .map(|(l, v)| (l.as_slice(), **v as f64))
                .collect();
            out.counter(name, help, &samples);
        }
        for (name, help, value) in [
            (
                "vsm_ws_events_dropped_total",
                "WebSocket events dropped for slow consumers.",
                self.ws_dropped,
            ),
            (
                "vsm_ws_clients_closed_slow_total",
                "WebSocket clients closed for not draining their queue.",
                self.ws_closed_slow,
            ),
        ] {
            out.counter(name, help, &[(&[], value as f64)]);
        }
        let histograms: [(&str, &str, &[&str], &Family<Histogram>); 2] = [
            (
                "vsm_http_request_duration_seconds",
                "HTTP request latency by route pattern.",
                &["route"],
                &self.http_duration,
            ),
            (
                "vsm_mcp_tool_call_duration_seconds",
                "MCP tool call latency by server.",
                &["server"],
                &self.tool_duration,
            ),
        ];
        for (name, help, labels, family) in histograms {
            let sets = family.labelled(labels);
            let samples: Vec<(&[(&str, &str)], &Histogram)> =
                sets.iter().map(|(l, h)| (l.as_slice(), *h)).collect();
            out.histogram(name, help, &samples);
        }
    }
}

/// One label's cumulative figures: its latency histogram, its count and its errors.
#[derive(Debug, Clone)]
pub struct Totals {
    /// The route pattern or server id.
    pub name: String,
    /// Latency so far.
    pub latency: Histogram,
    /// Requests or calls so far.
    pub count: u64,
    /// Of which errors.
    pub errors: u64,
}

/// [`Totals`] per first label of `counts` (the histogram family is keyed by that label).
fn totals(
    counts: &Family<u64>,
    latency: &Family<Histogram>,
    is_error: impl Fn(&str) -> bool,
) -> Vec<Totals> {
    let mut by: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (labels, n) in &counts.sets {
        let e = by
            .entry(labels.first().map_or("", String::as_str))
            .or_default();
        e.0 = e.0.saturating_add(*n);
        if is_error(labels.last().map_or("", String::as_str)) {
            e.1 = e.1.saturating_add(*n);
        }
    }
    by.into_iter()
        .map(|(name, (count, errors))| Totals {
            name: name.to_owned(),
            latency: latency
                .sets
                .get(&[name.to_owned()][..])
                .cloned()
                .unwrap_or_else(|| Histogram::new(LATENCY_BUCKETS)),
            count,
            errors,
        })
        .collect()
}

/// Groups a `(key, sub)` counter family by `key`: returns the total, the total of samples whose
/// `sub` is an error, and `{key: {count_name, by_name: {sub: n}, "latency"}}` with the
/// latency taken from the `key`-labelled histogram family.
fn breakdown(
    counts: &Family<u64>,
    latency: &Family<Histogram>,
    count_name: &str,
    by_name: &str,
    is_error: impl Fn(&str) -> bool,
) -> (u64, u64, Map<String, Value>) {
    let mut total = 0u64;
    let mut errors = 0u64;
    let mut groups: BTreeMap<&str, (u64, Map<String, Value>)> = BTreeMap::new();
    for (labels, n) in &counts.sets {
        let key = labels.first().map_or("", String::as_str);
        let sub = labels.last().map_or("", String::as_str);
        total = total.saturating_add(*n);
        if is_error(sub) {
            errors = errors.saturating_add(*n);
        }
        let group = groups.entry(key).or_default();
        group.0 = group.0.saturating_add(*n);
        let prev = group.1.get(sub).and_then(Value::as_u64).unwrap_or(0);
        group
            .1
            .insert(sub.to_owned(), json!(prev.saturating_add(*n)));
    }
    for key in latency.sets.keys() {
        groups
            .entry(key.first().map_or("", String::as_str))
            .or_default();
    }
    let out = groups
        .into_iter()
        .map(|(key, (n, by))| {
            let hist = latency.sets.get(&[key.to_owned()][..]).map_or_else(
                || Histogram::new(LATENCY_BUCKETS).to_json(),
                Histogram::to_json,
            );
            let mut entry = Map::new();
            entry.insert(count_name.to_owned(), json!(n));
            entry.insert(by_name.to_owned(), Value::Object(by));
            entry.insert("latency".to_owned(), hist);
            (key.to_owned(), Value::Object(entry))
        })
        .collect();
    (total, errors, out)
}

/// `part / whole` in percent, 2 decimals; 0 when `whole` is 0.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round(part as f64 * 100.0 / whole as f64, 2)
    }
}

/// Prometheus text exposition format 0.0.4 builder.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// The content type of [`Exposition::finish`]'s text.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// `# HELP` + `# TYPE name counter` + one line per (labels, value). Names must match
    /// [a-zA-Z_:][a-zA-Z0-9_:]*; counters end in `_total`.
    ///
    /// Invalid characters in names are replaced with `_`; `_total` is appended when missing.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], f64)]) {
        let mut name = metric_name(name);
        if !name.ends_with("_total") {
            name.push_str("_total");
        }
        self.header(&name, help, "counter");
        for (labels, value) in samples {
            self.sample(&name, labels, None, *value);
        }
    }

    /// `# HELP` + `# TYPE name gauge` + one line per (labels, value).
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], f64)]) {
        let name = metric_name(name);
        self.header(&name, help, "gauge");
        for (labels, value) in samples {
            self.sample(&name, labels, None, *value);
        }
    }

    /// `_bucket{le="..."}` cumulative incl. `le="+Inf"`, `_sum`, `_count`, per label set.
    pub fn histogram(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], &Histogram)]) {
        let name = metric_name(name);
        self.header(&name, help, "histogram");
        let (bucket, sum, count) = (
            format!("{name}_bucket"),
            format!("{name}_sum"),
            format!("{name}_count"),
        );
        for (labels, h) in samples {
            let bounds = h.bounds.iter().map(|b| format_value(*b));
            for (le, cum) in bounds.chain(["+Inf".to_owned()]).zip(h.cumulative()) {
                self.sample(&bucket, labels, Some(&le), cum as f64);
            }
            self.sample(&sum, labels, None, h.sum);
            self.sample(&count, labels, None, h.count as f64);
        }
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        self.text
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// `name{labels[,le="..."]} value`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], le: Option<&str>, value: f64) {
        self.text.push_str(name);
        let le = le.map(|le| ("le", le));
        let mut all = labels.iter().copied().chain(le).peekable();
        if all.peek().is_some() {
            self.text.push('{');
            for (i, (k, v)) in all.enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(&label_name(k));
                self.text.push_str("=\"");
                escape_label_value(&mut self.text, v);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(&format_value(value));
        self.text.push('\n');
    }
}

/// A metric name with characters outside `[a-zA-Z0-9_:]` (and a leading digit) replaced by `_`.
fn metric_name(name: &str) -> String {
    sanitize(name, |c| c == ':')
}

/// A label name (`[a-zA-Z_][a-zA-Z0-9_]*`), sanitized like [`metric_name`].
fn label_name(name: &str) -> String {
    sanitize(name, |_| false)
}

fn sanitize(name: &str, extra: impl Fn(char) -> bool) -> String {
    let mut out: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let ok =
                c.is_ascii_alphabetic() || c == '_' || extra(c) || (i > 0 && c.is_ascii_digit());
            if ok {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Escapes `\`, `"` and newline as the text format requires.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as Prometheus parses it: `NaN`, `+Inf`, `-Inf`, whole numbers without a
/// fraction, very large or small magnitudes in exponent form, otherwise the shortest decimal.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v == 0.0 {
        "0".to_owned()
    } else if v.abs() >= 1e15 || v.abs() < 1e-4 {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &[f64] = &[1.0, 2.0, 4.0];

    #[test]
    fn exposition_exact_text() {
        let mut h1 = Histogram::new(&[0.1, 0.5]);
        h1.observe(0.05);
        h1.observe(0.3);
        h1.observe(7.0);
        let mut h2 = Histogram::new(&[0.1, 0.5]);
        h2.observe(0.5);
        let mut e = Exposition::new();
        e.counter(
            "x_requests_total",
            "Requests.",
            &[(&[("code", "200")], 3.0)],
        );
        e.gauge(
            "x_temp",
            "Temp.",
            &[(&[], 21.5), (&[("a", "b"), ("c", "d")], -2.0)],
        );
        e.histogram(
            "x_latency_seconds",
            "Latency.",
            &[(&[("r", "a")], &h1), (&[("r", "b")], &h2)],
        );
        e.counter("x_empty_total", "Nothing yet.", &[]);
        let expected = "\
# HELP x_requests_total Requests.
# TYPE x_requests_total counter
x_requests_total{code=\"200\"} 3
# HELP x_temp Temp.
# TYPE x_temp gauge
x_temp 21.5
x_temp{a=\"b\",c=\"d\"} -2
# HELP x_latency_seconds Latency.
# TYPE x_latency_seconds histogram
x_latency_seconds_bucket{r=\"a\",le=\"0.1\"} 1
x_latency_seconds_bucket{r=\"a\",le=\"0.5\"} 2
x_latency_seconds_bucket{r=\"a\",le=\"+Inf\"} 3
x_latency_seconds_sum{r=\"a\"} 7.35
x_latency_seconds_count{r=\"a\"} 3
x_latency_seconds_bucket{r=\"b\",le=\"0.1\"} 0
x_latency_seconds_bucket{r=\"b\",le=\"0.5\"} 1
x_latency_seconds_bucket{r=\"b\",le=\"+Inf\"} 1
x_latency_seconds_sum{r=\"b\"} 0.5
x_latency_seconds_count{r=\"b\"} 1
# HELP x_empty_total Nothing yet.
# TYPE x_empty_total counter
";
        assert_eq!(e.finish(), expected);
    }

    #[test]
    fn a_known_label_set_is_found_in_a_full_family() {
        let mut f = Family::<u64>::default();
        // Sets that order differently as tuples and as joined strings.
        let tricky: [&[&str]; 6] = [&["a"], &["a", "b"], &["ab"], &["a", ""], &[], &["", "a"]];
        // Found by the map's order: a request's labels must order as the keys do.
        let owned: Vec<Vec<String>> = tricky
            .iter()
            .map(|s| s.iter().map(|v| (*v).to_owned()).collect())
            .collect();
        for (a, oa) in tricky.iter().zip(&owned) {
            for (b, ob) in tricky.iter().zip(&owned) {
                let want = oa.cmp(ob);
                let (ka, kb): (&dyn Labels, &dyn Labels) = (a, b);
                let (koa, kob): (&dyn Labels, &dyn Labels) = (oa, ob);
                assert_eq!(ka.cmp(kb), want, "{a:?} {b:?}");
                assert_eq!(koa.cmp(kb), want, "{a:?} {b:?}");
                assert_eq!(ka.cmp(kob), want, "{a:?} {b:?}");
                assert_eq!(koa.cmp(kob), want, "{a:?} {b:?}");
            }
        }
        for set in tricky {
            f.add(set, 1);
        }
        let names: Vec<String> = (tricky.len()..MAX_LABEL_SETS)
            .map(|i| format!("s{i}"))
            .collect();
        for n in &names {
            f.add(&[n, "x"], 1);
        }
        assert_eq!(f.sets.len(), MAX_LABEL_SETS);
        for set in tricky {
            f.add(set, 10);
        }
        for n in &names {
            f.add(&[n, "x"], 10);
        }
        assert_eq!(f.sets.len(), MAX_LABEL_SETS, "nothing folded");
        assert!(f.sets.values().all(|v| *v == 11), "{:?}", f.sets);
        f.add(&["new", "x"], 1);
        assert_eq!(f.sets.len(), MAX_LABEL_SETS + 1);
        assert_eq!(f.sets.get(&vec![OTHER.to_owned(); 2]), Some(&1));
    }

    #[test]
    fn escaping_and_names() {
        let mut e = Exposition::new();
        e.counter(
            "bad-name",
            "line one\nback\\slash",
            &[(&[("9x", "a\"b\\c\nd")], 1.0)],
        );
        e.gauge(
            "g",
            "values",
            &[
                (&[], f64::INFINITY),
                (&[], f64::NAN),
                (&[], 1e-9),
                (&[], 2e20),
            ],
        );
        let text = e.finish();
        assert!(
            text.contains("# HELP bad_name_total line one\\nback\\\\slash\n"),
            "{text}"
        );
        assert!(
            text.contains("bad_name_total{_x=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("g +Inf\ng NaN\ng 1e-9\ng 2e20\n"), "{text}");
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let mut h = Histogram::new(B);
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.to_json()["p50_ms"], Value::Null);
        for _ in 0..10 {
            h.observe(1.5);
            h.observe(3.0);
        }
        assert_eq!(h.count(), 20);
        assert!((h.sum() - 45.0).abs() < 1e-9);
        assert_eq!(h.quantile(0.5), Some(2.0));
        let p90 = h.quantile(0.9).unwrap_or(f64::NAN);
        assert!((p90 - 3.6).abs() < 1e-9, "{p90}");
        assert_eq!(h.quantile(0.0), Some(1.0));
        let mut low = Histogram::new(B);
        for _ in 0..10 {
            low.observe(0.5);
        }
        assert_eq!(low.quantile(0.5), Some(0.5));
        low.observe(100.0);
        assert_eq!(
            low.quantile(1.0),
            Some(4.0),
            "+Inf bucket reports the top bound"
        );
        low.observe(f64::NAN);
        low.observe(-1.0);
        assert_eq!(low.count(), 12);
        let j = h.to_json();
        assert_eq!(j["count"], 20);
        assert_eq!(j["p50_ms"], 2000.0);
        assert_eq!(j["p90_ms"], 3600.0);
    }

    #[test]
    fn label_sets_are_capped() {
        let mut t = Telemetry::new();
        for i in 0..300 {
            t.event(&format!("kind{i}"));
            t.tool_call(&format!("s{i}"), "ok", 0.01);
        }
        t.event("kind0");
        t.event("brand-new");
        assert_eq!(t.events.sets.len(), MAX_LABEL_SETS + 1);
        assert_eq!(t.events.sets[&vec!["kind0".to_owned()]], 2);
        assert_eq!(t.events.sets[&vec![OTHER.to_owned()]], 45);
        assert_eq!(
            t.tool_calls.sets[&vec![OTHER.to_owned(), OTHER.to_owned()]],
            44
        );
        assert_eq!(t.tool_duration.sets.len(), MAX_LABEL_SETS + 1);
        assert_eq!(t.tool_duration.sets[&vec![OTHER.to_owned()]].count(), 44);
    }

    #[test]
    fn performance_json_shape() {
        let mut t = Telemetry::new();
        t.http_request("/api/v1/status", "GET", 200, 0.001);
        t.http_request("/api/v1/status", "GET", 503, 0.002);
        t.http_request("/api/v1/mcp/servers/{id}", "GET", 404, 0.0005);
        t.http_request("/api/v1/config", "PUT", 500, 0.01);
        t.tool_call("time", "ok", 0.2);
        t.tool_call("time", "timeout", 30.0);
        t.tool_call("echo", "ok", 0.05);
        t.tool_call("echo", "ok", 0.05);
        let p = t.performance_json();
        assert_eq!(p["http"]["requests"], 4);
        assert_eq!(p["http"]["server_errors"], 2);
        assert_eq!(p["http"]["error_rate_percent"], 50.0);
        let status = &p["http"]["routes"]["/api/v1/status"];
        assert_eq!(status["requests"], 2);
        assert_eq!(status["by_status"]["503"], 1);
        assert_eq!(status["latency"]["count"], 2);
        assert_eq!(p["tool_calls"]["calls"], 4);
        assert_eq!(p["tool_calls"]["errors"], 1);
        assert_eq!(p["tool_calls"]["error_rate_percent"], 25.0);
        assert_eq!(
            p["tool_calls"]["servers"]["time"]["by_outcome"]["timeout"],
            1
        );
        assert_eq!(p["tool_calls"]["servers"]["echo"]["calls"], 2);
        assert_eq!(
            p["tool_calls"]["servers"]["echo"]["latency"]["p50_ms"],
            37.5
        );
        let empty = Telemetry::new().performance_json();
        assert_eq!(empty["tool_calls"]["error_rate_percent"], 0.0);
    }

    /// `^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? (-?[0-9.eE+-]+|\+Inf|NaN)$`
    fn sample_line_ok(line: &str) -> bool {
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let (name, rest) = line.split_at(name_end);
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return false;
        }
        let rest = match rest.strip_prefix('{') {
            Some(r) => match r.find('}') {
                Some(i) => &r[i + 1..],
                None => return false,
            },
            None => rest,
        };
        let Some(value) = rest.strip_prefix(' ') else {
            return false;
        };
        let digits = value.strip_prefix('-').unwrap_or(value);
        value == "+Inf"
            || value == "NaN"
            || (!digits.is_empty()
                && digits
                    .chars()
                    .all(|c| c.is_ascii_digit() || ".eE+-".contains(c)))
    }

    #[test]
    fn an_unregistered_server_leaves_no_series() {
        let mut t = Telemetry::new();
        for server in ["time", "timer"] {
            t.tool_call(server, "ok", 0.25);
            t.tool_call(server, "timeout", 1.0);
            t.request(server, "prompts/get", "ok");
            t.server_restart(server);
        }
        t.forget_server("time");
        let mut e = Exposition::new();
        t.write_prometheus(&mut e);
        let text = e.finish();
        assert!(!text.contains("server=\"time\""), "{text}");
        assert!(text.contains("vsm_mcp_server_restarts_total{server=\"timer\"} 1\n"));
        assert!(text.contains("vsm_mcp_tool_calls_total{server=\"timer\",outcome=\"ok\"} 1\n"));
        assert!(text.contains("vsm_mcp_tool_call_duration_seconds_count{server=\"timer\"} 2\n"));
        assert!(text.contains(
            "vsm_mcp_requests_total{server=\"timer\",method=\"prompts/get\",outcome=\"ok\"} 1\n"
        ));
    }

    #[test]
    fn telemetry_exposition_parses() {
        let mut t = Telemetry::new();
        t.http_request("/api/v1/mcp/servers/{id}", "GET", 200, 0.003);
        t.http_request("/api/v1/status", "GET", 200, 0.0001);
        t.tool_call("time", "ok", 0.25);
        t.tool_call("time", "mcp_error", 1.0);
        t.request("time", "resources/read", "timeout");
        t.server_restart("time");
        t.event("mcp_server_status_change");
        t.ws_dropped(3);
        t.ws_closed_slow();
        t.auth_failure("bad_token");
        let mut e = Exposition::new();
        t.write_prometheus(&mut e);
        let text = e.finish();
        for name in [
            "vsm_http_requests_total",
            "vsm_http_request_duration_seconds",
            "vsm_mcp_tool_calls_total",
            "vsm_mcp_tool_call_duration_seconds",
            "vsm_mcp_requests_total",
            "vsm_mcp_server_restarts_total",
            "vsm_events_total",
            "vsm_ws_events_dropped_total",
            "vsm_ws_clients_closed_slow_total",
            "vsm_auth_failures_total",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
        assert!(text.contains(
            "vsm_http_requests_total{route=\"/api/v1/mcp/servers/{id}\",method=\"GET\",status=\"200\"} 1\n"
        ));
        assert!(text.contains("vsm_ws_events_dropped_total 3\n"));
        assert!(text.contains(
            "vsm_mcp_tool_call_duration_seconds_bucket{server=\"time\",le=\"0.25\"} 1\n"
        ));
        assert!(text.contains("vsm_mcp_tool_call_duration_seconds_count{server=\"time\"} 2\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            // Route values contain `{id}`; blank them so the `[^}]*` label block stays simple.
            let line = line.replace("{id}", "ID");
            assert!(sample_line_ok(&line), "{line}");
        }
        let empty = {
            let mut e = Exposition::new();
            Telemetry::new().write_prometheus(&mut e);
            e.finish()
        };
        assert_eq!(
            empty.lines().filter(|l| !l.starts_with('#')).count(),
            2,
            "{empty}"
        );
    }
}
