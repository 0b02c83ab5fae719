//! Resource samples from /proc (the daemon's own process and the host), and the built-in
//! performance and health rules that turn samples into [`Observation`]s for the alerts room.
//!
//! Every read is a few small /proc files (plus `statvfs` of local filesystems only: a network
//! mount could hang), fine on the loop at scrape or cycle time. Bounded: at most
//! [`MAX_INTERFACES`] network interfaces, [`MAX_DISKS`] disks and [`MAX_FILESYSTEMS`]
//! filesystems are read; the [`Sampler`] keeps one previous snapshot per route and per server
//! (their number is bounded by the telemetry's label-set bound).

use super::observation::{Family, Hysteresis, Observation, Severity};
use crate::telemetry::Totals;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Instant;

/// Network interfaces read per sample.
pub const MAX_INTERFACES: usize = 32;
/// Disks read per sample.
pub const MAX_DISKS: usize = 32;
/// Filesystems read per sample.
pub const MAX_FILESYSTEMS: usize = 16;
/// Filesystem types measured (local ones: `statvfs` of a network mount may block).
const LOCAL_FS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "vfat", "exfat", "zfs", "overlay",
];
/// How long the list of mounted filesystems is reused before `/proc/self/mounts` is read
/// again (it is the costliest file of a sample and rarely changes).
const MOUNTS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Local filesystems as (mount point, type), and when the list was read.
type MountList = Option<(Instant, Vec<(String, String)>)>;

thread_local! {
    /// The local filesystems mounted, and when that was read.
    static MOUNTS: std::cell::RefCell<MountList> =
        const { std::cell::RefCell::new(None) };
}

/// Online CPUs, read once (`available_parallelism` reads cgroup files each time).
fn cpus() -> u64 {
    static CPUS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
}

/// Local mounts, from a copy at most [`MOUNTS_TTL`] old.
fn local_mounts() -> Vec<(String, String)> {
    MOUNTS.with(|m| {
        let mut m = m.borrow_mut();
        match &*m {
            Some((at, list)) if at.elapsed() < MOUNTS_TTL => list.clone(),
            _ => {
                let list =
                    parse_mounts(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default());
                *m = Some((Instant::now(), list.clone()));
                list
            }
        }
    })
}

/// Routes whose answers are long-lived streams (their duration is not a response time).
const STREAM_ROUTES: &[&str] = &["/api/v1/events", "/api/v1/logs", "/ws/monitor"];

/// The daemon process.
#[derive(Debug, Clone, Default)]
pub struct ProcessSample {
    /// Resident set size.
    pub rss_bytes: u64,
    /// User + system CPU time.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Threads.
    pub threads: u64,
    /// Voluntary context switches of the main thread.
    pub voluntary_ctxt_switches: u64,
}

/// The host.
#[derive(Debug, Clone, Default)]
pub struct HostSample {
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// Total memory.
    pub mem_total_bytes: u64,
    /// Available memory.
    pub mem_available_bytes: u64,
    /// Online CPUs.
    pub cpus: u64,
    /// CPU ticks spent not idle (all CPUs) since boot.
    pub cpu_busy_ticks: u64,
    /// CPU ticks since boot (all CPUs).
    pub cpu_total_ticks: u64,
    /// Swap size.
    pub swap_total_bytes: u64,
    /// Free swap.
    pub swap_free_bytes: u64,
    /// Network interfaces (at most [`MAX_INTERFACES`]).
    pub interfaces: Vec<NetIf>,
    /// Disks (at most [`MAX_DISKS`]).
    pub disks: Vec<Disk>,
    /// Local filesystems (at most [`MAX_FILESYSTEMS`]).
    pub filesystems: Vec<Fs>,
}

/// One network interface's counters since boot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetIf {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Send errors.
    pub tx_errors: u64,
}

/// One disk's I/O counters since boot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Disk {
    /// Device name.
    pub name: String,
    /// Reads completed.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Milliseconds spent doing I/O.
    pub io_ms: u64,
}

/// One mounted local filesystem's usage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fs {
    /// Mount point.
    pub mount: String,
    /// Type.
    pub fstype: String,
    /// Size.
    pub total_bytes: u64,
    /// Available to unprivileged users.
    pub avail_bytes: u64,
    /// Used, percent of what users can have (`df`'s figure).
    pub used_percent: f64,
}

/// `/proc/net/dev`: interfaces with their counters (at most [`MAX_INTERFACES`]).
pub fn parse_net_dev(text: &str) -> Vec<NetIf> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            (f.len() >= 11).then(|| NetIf {
                name: name.trim().to_string(),
                rx_bytes: f[0],
                rx_errors: f[2],
                tx_bytes: f[8],
                tx_errors: f[10],
            })
        })
        .take(MAX_INTERFACES)
        .collect()
}

/// `/proc/diskstats`: disks with their counters, loop and RAM devices left out (at most
/// [`MAX_DISKS`]).
pub fn parse_diskstats(text: &str) -> Vec<Disk> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let name = *f.get(2)?;
            if name.starts_with("loop") || name.starts_with("ram") || f.len() < 13 {
                return None;
            }
            let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            Some(Disk {
                name: name.to_string(),
                reads: n(3),
                read_bytes: n(5).saturating_mul(512),
                writes: n(7),
                written_bytes: n(9).saturating_mul(512),
                io_ms: n(12),
            })
        })
        .take(MAX_DISKS)
        .collect()
}

/// The first line of `/proc/stat`: (busy ticks, total ticks).
pub fn parse_cpu_line(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already)
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// `/proc/mounts`: (mount point, type) of local filesystems, each mount point once (at most
/// [`MAX_FILESYSTEMS`]).
pub fn parse_mounts(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(mount), Some(fstype)) = (f.get(1), f.get(2)) else {
            continue;
        };
        // `\040` and friends: octal escapes of spaces in mount points.
        let mount = mount.replace("\\040", " ");
        if LOCAL_FS.contains(fstype) && !out.iter().any(|(m, _)| *m == mount) {
            out.push((mount, (*fstype).to_string()));
            if out.len() == MAX_FILESYSTEMS {
                break;
            }
        }
    }
    out
}

fn statvfs(mount: &str, fstype: &str) -> Option<Fs> {
    let u = crate::sys::filesystem_usage(std::path::Path::new(mount)).ok()?;
    Some(Fs {
        mount: mount.to_string(),
        fstype: fstype.to_string(),
        total_bytes: u.total_bytes,
        avail_bytes: u.avail_bytes,
        used_percent: u.used_percent(),
    })
}

/// Reads the daemon's own process sample (missing fields stay 0).
pub fn own_process() -> ProcessSample {
    let mut s = own_process_brief();
    s.voluntary_ctxt_switches = own_ctxt_switches().0.unwrap_or(0);
    s
}

/// The daemon's (voluntary, nonvoluntary) context switches from `/proc/self/status`.
pub fn own_ctxt_switches() -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
    };
    (
        field("voluntary_ctxt_switches"),
        field("nonvoluntary_ctxt_switches"),
    )
}

/// The daemon's resident memory in bytes (`/proc/self/statm`).
pub fn own_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(crate::sys::page_size()))
}

/// Reads the host sample (missing fields stay 0).
pub fn host() -> HostSample {
    let mut h = HostSample::default();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    for (i, v) in read("/proc/loadavg").split_whitespace().take(3).enumerate() {
        h.load[i] = v.parse().unwrap_or(0.0);
    }
    (h.mem_total_bytes, h.mem_available_bytes, _, _) = parse_meminfo(&read("/proc/meminfo"));
    h.cpus = cpus();
    h
}

/// The daemon process from `/proc/self/stat` alone (CPU time, threads, RSS) and the fd
/// count: the cycle's cheaper read (no context switches).
pub fn own_process_brief() -> ProcessSample {
    let mut s = ProcessSample::default();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    if let Some((_, rest)) = stat.rsplit_once(')') {
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let ticks = crate::sys::clock_ticks() as f64;
        s.cpu_seconds = (n(11) + n(12)) as f64 / ticks.max(1.0);
        s.threads = n(17);
        s.rss_bytes = n(21).saturating_mul(crate::sys::page_size());
    }
    s.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    s
}

/// `/proc/meminfo`: (total, available, swap total, swap free) in bytes; available falls
/// back to free on kernels without it.
pub fn parse_meminfo(text: &str) -> (u64, u64, u64, u64) {
    let (mut total, mut avail, mut free, mut swap_total, mut swap_free) = (0, None, 0, 0, 0);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kb = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_mul(1024);
        match key {
            "MemTotal" => total = kb,
            "MemFree" => free = kb,
            "MemAvailable" => avail = Some(kb),
            "SwapTotal" => swap_total = kb,
            "SwapFree" => swap_free = kb,
            _ => {}
        }
    }
    (total, avail.unwrap_or(free), swap_total, swap_free)
}

/// Reads the host sample with CPU ticks, swap, network, disks and filesystems (missing
/// fields stay 0 or empty). Plain reads and small parsers: this runs on the loop each cycle.
pub fn host_full() -> HostSample {
    let mut h = HostSample::default();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let load = read("/proc/loadavg");
    for (i, v) in load.split_whitespace().take(3).enumerate() {
        h.load[i] = v.parse().unwrap_or(0.0);
    }
    (
        h.mem_total_bytes,
        h.mem_available_bytes,
        h.swap_total_bytes,
        h.swap_free_bytes,
    ) = parse_meminfo(&read("/proc/meminfo"));
    h.cpus = cpus();
    if let Some((busy, total)) = parse_cpu_line(&read("/proc/stat")) {
        h.cpu_busy_ticks = busy;
        h.cpu_total_ticks = total;
    }
    h.interfaces = parse_net_dev(&read("/proc/net/dev"));
    h.disks = parse_diskstats(&read("/proc/diskstats"));
    h.filesystems = local_mounts()
        .iter()
        .filter_map(|(m, t)| statvfs(m, t))
        .collect();
    h
}

impl ProcessSample {
    /// JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "rss_bytes": self.rss_bytes,
            "cpu_seconds": (self.cpu_seconds * 1000.0).round() / 1000.0,
            "open_fds": self.open_fds,
            "threads": self.threads,
            "voluntary_ctxt_switches": self.voluntary_ctxt_switches,
        })
    }
}

impl HostSample {
    /// Memory in use, percent of the total (what is not available).
    pub fn memory_used_percent(&self) -> f64 {
        if self.mem_total_bytes > 0 {
            100.0 * (1.0 - self.mem_available_bytes as f64 / self.mem_total_bytes as f64)
        } else {
            0.0
        }
    }

    /// JSON form, with memory usage in percent.
    pub fn to_json(&self) -> Value {
        let used = self.memory_used_percent();
        json!({
            "load_average": self.load,
            "cpus": self.cpus,
            "memory_total_bytes": self.mem_total_bytes,
            "memory_available_bytes": self.mem_available_bytes,
            "memory_used_percent": (used * 100.0).round() / 100.0,
        })
    }
}

/// The built-in thresholds (`monitoring.alert_thresholds`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// p95 response time above this (ms) is bad.
    pub response_time_max_ms: f64,
    /// Error rate above this (percent) is bad.
    pub error_rate_max_percent: f64,
    /// Host memory use above this (percent) is bad.
    pub memory_usage_max_percent: f64,
}

/// One window's latency and errors of a route or server.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowFigures {
    /// Requests or calls in the window.
    pub count: u64,
    /// Of which errors.
    pub errors: u64,
    /// Percent of `count`.
    pub error_rate_percent: f64,
    /// Quantiles in ms (None when nothing was recorded).
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

impl WindowFigures {
    fn between(now: &Totals, before: Option<&Totals>) -> Self {
        let (latency, count, errors) = match before {
            Some(b) if b.count <= now.count => (
                now.latency.since(&b.latency),
                now.count - b.count,
                now.errors.saturating_sub(b.errors),
            ),
            _ => (now.latency.clone(), now.count, now.errors),
        };
        let ms = |q| latency.quantile(q).map(|s| (s * 1e6).round() / 1e3);
        WindowFigures {
            count,
            errors,
            error_rate_percent: if count > 0 {
                100.0 * errors as f64 / count as f64
            } else {
                0.0
            },
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "errors": self.errors,
            "error_rate_percent": (self.error_rate_percent * 100.0).round() / 100.0,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
        })
    }
}

/// The performance cycle's memory: the previous cycle's cumulative figures, so each cycle
/// reports rates and quantiles over the window since the previous one (one
/// `performance_check_interval_ms`), and the last cycle's figures for the metrics views.
#[derive(Debug, Default)]
pub struct Sampler {
    prev_at: Option<Instant>,
    prev_cpu_seconds: f64,
    prev_host_ticks: Option<(u64, u64)>,
    prev_routes: BTreeMap<String, Totals>,
    prev_servers: BTreeMap<String, Totals>,
    prev_net: BTreeMap<String, NetIf>,
    prev_disks: BTreeMap<String, Disk>,
    /// The last cycle's figures (null before the first).
    pub last: Value,
}

/// Inputs of one performance cycle.
pub struct Cycle<'a> {
    /// When it runs.
    pub now: Instant,
    /// The daemon process.
    pub process: &'a ProcessSample,
    /// The host (with [`host_full`]'s fields).
    pub host: &'a HostSample,
    /// Cumulative figures per API route.
    pub routes: Vec<Totals>,
    /// Cumulative figures per MCP server.
    pub servers: Vec<Totals>,
    /// The thresholds.
    pub thresholds: Thresholds,
    /// Actions configured for the built-in rules.
    pub actions: &'a [String],
}

fn rate(now: u64, before: Option<u64>, seconds: f64) -> Option<f64> {
    let before = before?;
    (seconds > 0.0).then(|| now.saturating_sub(before) as f64 / seconds)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl Sampler {
    /// Runs one cycle: updates [`Sampler::last`] and returns the readings of the built-in
    /// performance rules. `tracked(rule)`: whether the alerts room knows the rule (a route or
    /// server with no traffic in the window reports only then, as good, so a firing alert on
    /// it can clear without every idle route becoming a rule).
    pub fn performance(
        &mut self,
        c: Cycle<'_>,
        tracked: &dyn Fn(&str) -> bool,
    ) -> Vec<Observation> {
        let elapsed = self
            .prev_at
            .map_or(0.0, |t| c.now.saturating_duration_since(t).as_secs_f64());
        let cpu_percent = (elapsed > 0.0).then(|| {
            round2(100.0 * (c.process.cpu_seconds - self.prev_cpu_seconds).max(0.0) / elapsed)
        });
        let host_cpu = self.prev_host_ticks.and_then(|(busy, total)| {
            let dt = c.host.cpu_total_ticks.saturating_sub(total);
            (dt > 0).then(|| {
                round2(100.0 * c.host.cpu_busy_ticks.saturating_sub(busy) as f64 / dt as f64)
            })
        });
        let mem = c.host.memory_used_percent();
        let mut out = vec![Observation {
            rule: "performance:memory_usage_percent".into(),
            family: Family::Performance,
            metric: "memory_usage_percent".into(),
            value: round2(mem),
            threshold: Some(c.thresholds.memory_usage_max_percent),
            bad: mem > c.thresholds.memory_usage_max_percent,
            severity: Severity::Warning,
            message: format!(
                "host memory in use {mem:.1} % (limit {} %)",
                c.thresholds.memory_usage_max_percent
            ),
            actions: c.actions.to_vec(),
            hysteresis: Hysteresis::default(),
        }];
        let mut windows = Map::new();
        for (kind, now, prev) in [
            ("route", &c.routes, &mut self.prev_routes),
            ("server", &c.servers, &mut self.prev_servers),
        ] {
            let mut figures = Map::new();
            for t in now {
                let w = WindowFigures::between(t, prev.get(&t.name));
                let label = if kind == "route" {
                    format!("route {}", t.name)
                } else {
                    format!("MCP server {}", t.name)
                };
                let time_rule = format!("performance:response_time:{kind}:{}", t.name);
                let error_rule = format!("performance:error_rate:{kind}:{}", t.name);
                if kind == "server" || !STREAM_ROUTES.contains(&t.name.as_str()) {
                    if let Some(p95) = w.p95_ms.filter(|_| w.count > 0) {
                        let max = c.thresholds.response_time_max_ms;
                        out.push(Observation {
                            rule: time_rule,
                            family: Family::Performance,
                            metric: "response_time_ms".into(),
                            value: p95,
                            threshold: Some(max),
                            bad: p95 > max,
                            severity: Severity::Warning,
                            message: format!(
                                "{label}: p95 response time {p95} ms (limit {max} ms)"
                            ),
                            actions: c.actions.to_vec(),
                            hysteresis: Hysteresis::default(),
                        });
                    } else if tracked(&time_rule) {
                        out.push(idle(
                            time_rule,
                            "response_time_ms",
                            c.thresholds.response_time_max_ms,
                            &label,
                            c.actions,
                        ));
                    }
                }
                let max = c.thresholds.error_rate_max_percent;
                if w.count > 0 {
                    out.push(Observation {
                        rule: error_rule,
                        family: Family::Performance,
                        metric: "error_rate_percent".into(),
                        value: round2(w.error_rate_percent),
                        threshold: Some(max),
                        bad: w.error_rate_percent > max,
                        severity: Severity::Warning,
                        message: format!(
                            "{label}: {} of {} failed ({:.1} %, limit {max} %)",
                            w.errors, w.count, w.error_rate_percent
                        ),
                        actions: c.actions.to_vec(),
                        hysteresis: Hysteresis::default(),
                    });
                } else if tracked(&error_rule) {
                    out.push(idle(
                        error_rule,
                        "error_rate_percent",
                        max,
                        &label,
                        c.actions,
                    ));
                }
                figures.insert(t.name.clone(), w.to_json());
            }
            *prev = now.iter().map(|t| (t.name.clone(), t.clone())).collect();
            windows.insert(format!("{kind}s"), Value::Object(figures));
        }
        let network: Vec<Value> = c
            .host
            .interfaces
            .iter()
            .map(|i| {
                let p = self.prev_net.get(&i.name);
                json!({
                    "interface": i.name,
                    "rx_bytes": i.rx_bytes, "tx_bytes": i.tx_bytes,
                    "rx_errors": i.rx_errors, "tx_errors": i.tx_errors,
                    "rx_bytes_per_second": rate(i.rx_bytes, p.map(|p| p.rx_bytes), elapsed).map(round2),
                    "tx_bytes_per_second": rate(i.tx_bytes, p.map(|p| p.tx_bytes), elapsed).map(round2),
                })
            })
            .collect();
        let disks: Vec<Value> = c
            .host
            .disks
            .iter()
            .map(|d| {
                let p = self.prev_disks.get(&d.name);
                json!({
                    "disk": d.name,
                    "reads": d.reads, "writes": d.writes,
                    "read_bytes": d.read_bytes, "written_bytes": d.written_bytes, "io_ms": d.io_ms,
                    "read_bytes_per_second": rate(d.read_bytes, p.map(|p| p.read_bytes), elapsed).map(round2),
                    "written_bytes_per_second": rate(d.written_bytes, p.map(|p| p.written_bytes), elapsed).map(round2),
                })
            })
            .collect();
        let filesystems: Vec<Value> = c
            .host
            .filesystems
            .iter()
            .map(|f| {
                json!({"mount": f.mount, "type": f.fstype, "total_bytes": f.total_bytes,
                            "avail_bytes": f.avail_bytes, "used_percent": round2(f.used_percent)})
            })
            .collect();
        let swap_used = if c.host.swap_total_bytes > 0 {
            round2(100.0 * (1.0 - c.host.swap_free_bytes as f64 / c.host.swap_total_bytes as f64))
        } else {
            0.0
        };
        self.last = json!({
            "sampled_at": crate::state::rfc3339_utc_millis(std::time::SystemTime::now()),
            "window_seconds": round2(elapsed),
            "process": {"cpu_percent": cpu_percent, "rss_bytes": c.process.rss_bytes,
                        "open_fds": c.process.open_fds, "threads": c.process.threads},
            "host": {"cpu_percent": host_cpu, "memory_used_percent": round2(mem),
                     "load_average": c.host.load, "swap_total_bytes": c.host.swap_total_bytes,
                     "swap_used_percent": swap_used, "network": network, "disks": disks,
                     "filesystems": filesystems},
            "windows": windows,
        });
        self.prev_at = Some(c.now);
        self.prev_cpu_seconds = c.process.cpu_seconds;
        self.prev_host_ticks = Some((c.host.cpu_busy_ticks, c.host.cpu_total_ticks));
        self.prev_net = c
            .host
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), i.clone()))
            .collect();
        self.prev_disks = c
            .host
            .disks
            .iter()
            .map(|d| (d.name.clone(), d.clone()))
            .collect();
        out
    }
}

/// A good reading of a route or server with no traffic in the window.
fn idle(
    rule: String,
    metric: &str,
    threshold: f64,
    label: &str,
    actions: &[String],
) -> Observation {
    Observation {
        rule,
        family: Family::Performance,
        metric: metric.into(),
        value: 0.0,
        threshold: Some(threshold),
        bad: false,
        severity: Severity::Warning,
        message: format!("{label}: no traffic in the window"),
        actions: actions.to_vec(),
        hysteresis: Hysteresis::default(),
    }
}

/// What the health cycle reads of one MCP server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerHealth {
    /// Server id.
    pub id: String,
    /// Its status (`active`, `backoff`, `failed`, ...).
    pub status: &'static str,
    /// Health pings missed in a row.
    pub missed_pings: u32,
    /// Whether its circuit breaker is open.
    pub breaker_open: bool,
    /// Round trip of its latest answered health ping, in ms.
    pub ping_last_ms: Option<f64>,
    /// Its ping figures (`last_ms`, `p50_ms`, `p95_ms`, `samples`), as shown.
    pub ping: serde_json::Value,
}

/// The health cycle's rule per server (`health:server:ID`, metric `server_up`): bad while the
/// server is waiting to restart, degraded (missing pings) or failed; critical once its circuit
/// breaker is open. A server an operator stopped, or one not started, is not bad.
///
/// A serving server's latest ping round trip is a second rule (`health:ping:ID`, metric
/// `ping_ms`, a warning): bad above `ping_max_ms` (the `response_time_max_ms` threshold).
pub fn health_observations(
    servers: &[ServerHealth],
    ping_max_ms: f64,
    actions: &[String],
) -> Vec<Observation> {
    let pings = servers.iter().filter_map(|s| {
        let ms = s.ping_last_ms.filter(|_| s.status == "active")?;
        Some(Observation {
            rule: format!("health:ping:{}", s.id),
            family: Family::Health,
            metric: "ping_ms".into(),
            value: ms,
            threshold: Some(ping_max_ms),
            bad: ms > ping_max_ms,
            severity: Severity::Warning,
            message: format!(
                "MCP server {} answered its health ping in {ms:.1} ms (limit {ping_max_ms} ms)",
                s.id
            ),
            actions: actions.to_vec(),
            hysteresis: Hysteresis::default(),
        })
    });
    let mut out: Vec<Observation> = servers
        .iter()
        .map(|s| {
            let bad = matches!(s.status, "backoff" | "degraded" | "failed") || s.breaker_open;
            let critical = s.status == "failed" || s.breaker_open;
            Observation {
                rule: format!("health:server:{}", s.id),
                family: Family::Health,
                metric: "server_up".into(),
                value: if bad { 0.0 } else { 1.0 },
                threshold: None,
                bad,
                severity: if critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                message: format!(
                    "MCP server {} is {} (missed pings {}, circuit breaker {})",
                    s.id,
                    s.status,
                    s.missed_pings,
                    if s.breaker_open { "open" } else { "closed" }
                ),
                actions: actions.to_vec(),
                hysteresis: Hysteresis::default(),
            }
        })
        .collect();
    out.extend(pings);
    out
}

/// Appends the alert and host network/disk/filesystem families to a Prometheus exposition.
pub fn write_prometheus(
    host: &HostSample,
    firing: [(&'static str, usize); 3],
    e: &mut crate::telemetry::Exposition,
) {
    let sev: Vec<[(&str, &str); 1]> = firing.iter().map(|(s, _)| [("severity", *s)]).collect();
    let samples: Vec<(&[(&str, &str)], f64)> = sev
        .iter()
        .zip(firing)
        .map(|(l, (_, n))| (&l[..], n as f64))
        .collect();
    e.gauge("vsm_alerts_firing", "Alerts firing, by severity.", &samples);
    let ifs: Vec<[(&str, &str); 1]> = host
        .interfaces
        .iter()
        .map(|i| [("interface", i.name.as_str())])
        .collect();
    type Pick<T> = fn(&T) -> u64;
    let net: [(&str, &str, Pick<NetIf>); 4] = [
        (
            "vsm_host_network_receive_bytes_total",
            "Bytes received, per interface.",
            |i| i.rx_bytes,
        ),
        (
            "vsm_host_network_transmit_bytes_total",
            "Bytes sent, per interface.",
            |i| i.tx_bytes,
        ),
        (
            "vsm_host_network_receive_errors_total",
            "Receive errors, per interface.",
            |i| i.rx_errors,
        ),
        (
            "vsm_host_network_transmit_errors_total",
            "Send errors, per interface.",
            |i| i.tx_errors,
        ),
    ];
    for (name, help, pick) in net {
        let samples: Vec<(&[(&str, &str)], f64)> = ifs
            .iter()
            .zip(&host.interfaces)
            .map(|(l, i)| (&l[..], pick(i) as f64))
            .collect();
        e.counter(name, help, &samples);
    }
    let disks: Vec<[(&str, &str); 1]> = host
        .disks
        .iter()
        .map(|d| [("disk", d.name.as_str())])
        .collect();
    let io: [(&str, &str, Pick<Disk>); 5] = [
        (
            "vsm_host_disk_reads_total",
            "Reads completed, per disk.",
            |d| d.reads,
        ),
        (
            "vsm_host_disk_writes_total",
            "Writes completed, per disk.",
            |d| d.writes,
        ),
        (
            "vsm_host_disk_read_bytes_total",
            "Bytes read, per disk.",
            |d| d.read_bytes,
        ),
        (
            "vsm_host_disk_written_bytes_total",
            "Bytes written, per disk.",
            |d| d.written_bytes,
        ),
        (
            "vsm_host_disk_io_time_seconds_total",
            "Time spent doing I/O, per disk.",
            |d| d.io_ms / 1000,
        ),
    ];
    for (name, help, pick) in io {
        let samples: Vec<(&[(&str, &str)], f64)> = disks
            .iter()
            .zip(&host.disks)
            .map(|(l, d)| (&l[..], pick(d) as f64))
            .collect();
        e.counter(name, help, &samples);
    }
    let mounts: Vec<[(&str, &str); 1]> = host
        .filesystems
        .iter()
        .map(|f| [("mount", f.mount.as_str())])
        .collect();
    let samples: Vec<(&[(&str, &str)], f64)> = mounts
        .iter()
        .zip(&host.filesystems)
        .map(|(l, f)| (&l[..], f.used_percent))
        .collect();
    e.gauge(
        "vsm_host_filesystem_used_percent",
        "Used space of local filesystems, percent of what users can have.",
        &samples,
    );
    e.gauge(
        "vsm_host_swap_free_bytes",
        "Free swap.",
        &[(&[][..], host.swap_free_bytes as f64)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_read_real_values() {
        let p = own_process();
        assert!(p.rss_bytes > 0 && p.open_fds > 0 && p.threads >= 1);
        let h = host();
        assert!(h.mem_total_bytes > 0 && h.cpus >= 1);
        assert!(h.to_json()["memory_used_percent"].as_f64().is_some());
        let full = host_full();
        assert!(full.cpu_total_ticks > 0 && !full.interfaces.is_empty());
        assert!(full.mem_total_bytes > 0 && full.load.iter().all(|l| *l >= 0.0));
        let brief = own_process_brief();
        assert!(brief.rss_bytes > 0 && brief.threads >= 1 && brief.open_fds > 0);
    }

    #[test]
    fn own_process_is_read_from_proc() {
        // The test process: resident, some CPU time, at least this thread, and it has slept.
        assert!(own_rss_bytes().is_some_and(|b| b > 0));
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (voluntary, nonvoluntary) = own_ctxt_switches();
        assert!(voluntary.is_some_and(|n| n > 0) && nonvoluntary.is_some());
        let s = own_process();
        assert!(
            s.rss_bytes > 0 && s.threads >= 1 && s.open_fds >= 3,
            "{s:?}"
        );
        assert!(s.voluntary_ctxt_switches > 0);
        let h = host();
        assert!(h.mem_total_bytes >= h.mem_available_bytes && h.mem_available_bytes > 0);
        assert!(h.load.iter().all(|l| *l >= 0.0) && h.cpus >= 1);
    }

    #[test]
    fn procfs_texts_parse_and_stay_bounded() {
        let mut dev = String::from("Inter-|   Receive\n face |bytes    packets errs\n");
        for i in 0..100 {
            dev.push_str(&format!("eth{i}: 100 2 3 0 0 0 0 0 200 4 5 0 0 0 0 0\n"));
        }
        let ifs = parse_net_dev(&dev);
        assert_eq!(ifs.len(), MAX_INTERFACES);
        assert_eq!(
            ifs[0],
            NetIf {
                name: "eth0".into(),
                rx_bytes: 100,
                rx_errors: 3,
                tx_bytes: 200,
                tx_errors: 5
            }
        );
        let disks = parse_diskstats(
            "   7       0 loop0 1 0 2 0 0 0 0 0 0 0 0 0 0\n 8 0 sda 10 0 20 5 30 0 40 6 0 70 80 0 0\n",
        );
        assert_eq!(disks.len(), 1);
        assert_eq!(
            (
                disks[0].reads,
                disks[0].read_bytes,
                disks[0].writes,
                disks[0].written_bytes,
                disks[0].io_ms
            ),
            (10, 10240, 30, 20480, 70)
        );
        assert_eq!(
            parse_cpu_line("cpu  10 0 10 70 10 0 0 0 5 0\ncpu0 1"),
            Some((20, 100))
        );
        assert_eq!(parse_cpu_line("garbage"), None);
        assert_eq!(
            parse_meminfo("MemTotal: 100 kB\nMemFree: 10 kB\nMemAvailable: 40 kB\nSwapTotal: 8 kB\nSwapFree: 2 kB\n"),
            (102_400, 40_960, 8192, 2048)
        );
        assert_eq!(
            parse_meminfo("MemTotal: 100 kB\nMemFree: 10 kB\n"),
            (102_400, 10_240, 0, 0)
        );
        let mounts = parse_mounts(
            "/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\nsrv:/x /mnt/nfs nfs4 rw 0 0\n/dev/sda1 / ext4 rw 0 0\n",
        );
        assert_eq!(mounts, vec![("/".to_string(), "ext4".to_string())]);
    }

    fn totals(name: &str, samples: &[f64], errors: u64) -> Totals {
        let mut latency = crate::telemetry::Histogram::new(crate::telemetry::LATENCY_BUCKETS);
        for s in samples {
            latency.observe(*s);
        }
        Totals {
            name: name.into(),
            latency,
            count: samples.len() as u64,
            errors,
        }
    }

    #[test]
    fn performance_rules_read_windows_between_cycles() {
        let mut s = Sampler::default();
        let process = own_process();
        let mut host = host_full();
        host.mem_total_bytes = 100;
        host.mem_available_bytes = 10; // 90 % used
        let thresholds = Thresholds {
            response_time_max_ms: 100.0,
            error_rate_max_percent: 5.0,
            memory_usage_max_percent: 80.0,
        };
        let actions = vec!["log".to_string()];
        let t0 = Instant::now();
        // Cycle 1: a slow route (all 2 s) with errors.
        let obs = s.performance(
            Cycle {
                now: t0,
                process: &process,
                host: &host,
                routes: vec![totals("/slow", &[2.0; 10], 5)],
                servers: vec![],
                thresholds,
                actions: &actions,
            },
            &|_| false,
        );
        let get = |obs: &[Observation], r: &str| obs.iter().find(|o| o.rule == r).cloned();
        assert!(get(&obs, "performance:memory_usage_percent").is_some_and(|o| o.bad));
        let slow = get(&obs, "performance:response_time:route:/slow").expect("time rule");
        assert!(slow.bad && slow.value > 1000.0);
        assert!(get(&obs, "performance:error_rate:route:/slow")
            .is_some_and(|o| o.bad && o.value == 50.0));
        // Cycle 2: 10 fast answers since: the window sees only them.
        let mut fast = totals("/slow", &[2.0; 10], 5);
        for _ in 0..10 {
            fast.latency.observe(0.001);
        }
        fast.count = 20;
        let obs = s.performance(
            Cycle {
                now: t0 + std::time::Duration::from_secs(1),
                process: &process,
                host: &host,
                routes: vec![fast.clone()],
                servers: vec![],
                thresholds,
                actions: &actions,
            },
            &|_| false,
        );
        let slow = get(&obs, "performance:response_time:route:/slow").expect("time rule");
        assert!(!slow.bad && slow.value < 5.0, "{slow:?}");
        assert!(get(&obs, "performance:error_rate:route:/slow").is_some_and(|o| !o.bad));
        assert!(s.last["host"]["network"].as_array().is_some());
        // Cycle 3: no traffic: reported only for rules the alerts room tracks.
        let cycle = |s: &mut Sampler, tracked: &dyn Fn(&str) -> bool| {
            s.performance(
                Cycle {
                    now: t0 + std::time::Duration::from_secs(2),
                    process: &process,
                    host: &host,
                    routes: vec![fast.clone()],
                    servers: vec![],
                    thresholds,
                    actions: &actions,
                },
                tracked,
            )
        };
        assert!(get(
            &cycle(&mut s, &|_| false),
            "performance:response_time:route:/slow"
        )
        .is_none());
        let idle = get(
            &cycle(&mut s, &|_| true),
            "performance:response_time:route:/slow",
        );
        assert!(idle.is_some_and(|o| !o.bad));
    }

    #[test]
    fn health_rules_follow_the_server_status() {
        let s = |status, breaker_open| ServerHealth {
            id: "x".into(),
            status,
            missed_pings: 0,
            breaker_open,
            ping_last_ms: None,
            ping: serde_json::Value::Null,
        };
        let table = [
            (s("active", false), false, Severity::Warning),
            (s("stopped", false), false, Severity::Warning),
            (s("backoff", false), true, Severity::Warning),
            (s("degraded", false), true, Severity::Warning),
            (s("failed", true), true, Severity::Critical),
        ];
        for (server, bad, severity) in table {
            let o = &health_observations(std::slice::from_ref(&server), 100.0, &[])[0];
            assert_eq!((o.bad, o.severity), (bad, severity), "{server:?}");
            assert_eq!(o.rule, "health:server:x");
        }
        // The ping rule: only for a serving server with a measurement, bad above the limit.
        let pinged = |status, ms| ServerHealth {
            ping_last_ms: Some(ms),
            ..s(status, false)
        };
        let ping = |server: ServerHealth| {
            health_observations(&[server], 100.0, &[])
                .into_iter()
                .find(|o| o.rule == "health:ping:x")
                .map(|o| (o.bad, o.value, o.threshold))
        };
        assert_eq!(
            ping(pinged("active", 250.0)),
            Some((true, 250.0, Some(100.0)))
        );
        assert_eq!(
            ping(pinged("active", 40.0)),
            Some((false, 40.0, Some(100.0)))
        );
        assert_eq!(ping(pinged("backoff", 250.0)), None);
        assert_eq!(ping(s("active", false)), None);
    }
}
