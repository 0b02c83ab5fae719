//! Security signals, every `monitoring.security_check_interval_ms`: failed authentication and
//! refused Host/Origin per TCP peer, a request-rate anomaly per peer (an EWMA baseline of its
//! requests per cycle, weighted by `consciousness.learning_rate`, and a z-score above
//! [`Z_LIMIT`]), MCP server processes killed by their CPU rlimit (SIGXCPU), listening
//! sockets held by an MCP server's processes (a stdio server has no business listening), tool
//! calls refused by the capability policy and operations an MCP server's Landlock sandbox
//! refused (seen on its stderr; the MCP room sends at most one per server per 10 s). Each
//! is an [`Observation`] of family `security`; deciding is the alerts room's job.
//!
//! Peers are counted per address (IPv6 per /64). Invariants: at most [`MAX_PEERS`] peers are
//! tracked per cycle and in the baselines (the rest share one `other` bucket; the stalest
//! baseline is forgotten first); a rule that was bad in a cycle gets a reading in the next one
//! even when its peer went quiet, so its alert can resolve; counting a request is one hash
//! map update on the loop; the `/proc` walk for listeners runs on the worker.

use crate::monitor::observation::{Family, Hysteresis, Observation, Severity};
use crate::reactor::timer::TimerId;
use crate::room::{Effect, Room, RoomCx};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Peers tracked per cycle and in the baselines.
pub const MAX_PEERS: usize = 256;
/// Failed authentications per peer per cycle that count as an attack.
pub const AUTH_FAILURES_LIMIT: u64 = 5;
/// Refused Host/Origin/cross-site requests per peer per cycle that count as an attack.
pub const REFUSED_ORIGIN_LIMIT: u64 = 3;
/// A peer's request count this cycle this many standard deviations above its baseline is an
/// anomaly.
pub const Z_LIMIT: f64 = 4.0;
/// Cycles a baseline needs before its z-score is trusted.
const WARM_UP_CYCLES: u32 = 5;
/// Fewer requests than this in a cycle are never an anomaly (a quiet peer's noise).
const MIN_REQUESTS: u64 = 20;
/// The smallest standard deviation used (a perfectly steady peer would otherwise make any
/// extra request infinitely unusual).
const MIN_STDDEV: f64 = 1.0;
/// Names of processes killed by their CPU limit kept per cycle.
const MAX_RLIMIT_NOTES: usize = 16;

/// The room's timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A security cycle is due.
    Cycle,
}

/// Listening sockets found per server (from the worker).
#[derive(Debug)]
pub struct Scanned {
    servers: Vec<(String, Vec<u16>)>,
}

/// What the room hands to the wiring.
#[derive(Debug)]
pub enum Output {
    /// A common effect.
    Effect(Effect),
    /// A reading for the deciding room.
    Observe(Observation),
    /// The wiring should call [`Security::scan`] with the MCP servers' pids.
    WantServers,
}

impl From<Effect> for Output {
    fn from(e: Effect) -> Self {
        Output::Effect(e)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: u64,
    auth_failures: u64,
    refused_origin: u64,
}

/// An exponentially weighted mean and variance of a peer's requests per cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// Mean.
    pub mean: f64,
    /// Variance.
    pub var: f64,
    /// Cycles folded in.
    pub cycles: u32,
    last_cycle: u64,
}

impl Baseline {
    /// The z-score of `x` against the baseline (before `x` is folded in).
    pub fn z(&self, x: f64) -> f64 {
        (x - self.mean) / self.var.sqrt().max(MIN_STDDEV)
    }

    /// Folds `x` in with weight `alpha` (West's incremental EWMA variance).
    pub fn update(&mut self, x: f64, alpha: f64) {
        if self.cycles == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let diff = x - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.cycles = self.cycles.saturating_add(1);
    }
}

/// The security room.
#[derive(Debug)]
pub struct Security {
    window: HashMap<IpAddr, Counts>,
    other: Counts,
    baselines: HashMap<IpAddr, Baseline>,
    flagged: HashSet<String>,
    rlimit_kills: Vec<String>,
    rlimit_count: u64,
    interval: Duration,
    learning_rate: f64,
    timer: Option<TimerId>,
    cycle: u64,
    last: BTreeMap<String, Value>,
}

impl Room for Security {
    type Timer = Timer;
    type Job = Scanned;
    type Output = Output;
    const NAME: &'static str = "security";

    /// A reload moves the cycle and the baseline's learning rate.
    fn apply_config(&mut self, cx: &mut RoomCx<'_, Self>, config: &crate::config::Config) {
        let every = Duration::from_millis(config.monitoring.security_check_interval_ms);
        self.configure(cx, every, config.consciousness.learning_rate);
    }

    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, _t: Timer) {
        self.timer = Some(
            cx.timers()
                .insert(Instant::now() + self.interval, Timer::Cycle),
        );
        let observations = self.cycle_observations();
        for o in observations {
            self.note(&o);
            cx.emit(Output::Observe(o));
        }
        cx.emit(Output::WantServers);
    }

    /// A tool call refused by the capability policy (REST, CLI, WebSocket or `/mcp`) is a
    /// reading at once: rule `security:capability_blocked:SERVER:TOOL`, resolved after two
    /// quiet cycles.
    ///
    /// An MCP server refused something by its sandbox (`sandbox_denied`, from its stderr
    /// while Landlock is enforced for it) is one too: rule `security:sandbox_denied:SERVER`,
    /// with the evidence line, resolved after two quiet cycles.
    fn on_event(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        _seq: u64,
        _channel: crate::events::Channel,
        data: &crate::events::EventData,
    ) {
        if let crate::events::EventData::SandboxDenied {
            server_id,
            line,
            suppressed,
        } = data
        {
            let o = observation(
                format!("security:sandbox_denied:{server_id}"),
                "sandbox_denials",
                1.0 + *suppressed as f64,
                Some(0.0),
                true,
                format!("MCP server {server_id} was refused by its sandbox (Landlock): {line}"),
            );
            self.note(&o);
            cx.emit(Output::Observe(o));
            return;
        }
        let crate::events::EventData::ToolCallBlocked {
            server_id,
            tool,
            capabilities,
        } = data
        else {
            return;
        };
        let o = observation(
            format!("security:capability_blocked:{server_id}:{tool}"),
            "capability_blocked_calls",
            1.0,
            Some(0.0),
            true,
            format!(
                "a call of tool {tool} of MCP server {server_id} was refused: it falls under blocked capability {}",
                capabilities.join(", ")
            ),
        );
        self.note(&o);
        cx.emit(Output::Observe(o));
    }

    fn on_job(&mut self, cx: &mut RoomCx<'_, Self>, done: Scanned) {
        for (server, ports) in done.servers {
            let bad = !ports.is_empty();
            let message = if bad {
                let shown: Vec<String> = ports.iter().take(16).map(u16::to_string).collect();
                format!(
                    "MCP server {server} listens on TCP port(s) {}",
                    shown.join(", ")
                )
            } else {
                format!("MCP server {server} holds no listening socket")
            };
            let o = observation(
                format!("security:listening:{server}"),
                "listening_sockets",
                ports.len() as f64,
                Some(0.0),
                bad,
                message,
            );
            self.note(&o);
            cx.emit(Output::Observe(o));
        }
    }
}

fn observation(
    rule: String,
    metric: &str,
    value: f64,
    threshold: Option<f64>,
    bad: bool,
    message: String,
) -> Observation {
    Observation {
        rule,
        family: Family::Security,
        metric: metric.to_string(),
        value,
        threshold,
        bad,
        severity: Severity::Warning,
        message: crate::monitor::checks::probe::bounded(message),
        actions: vec!["log".to_string()],
        hysteresis: Hysteresis {
            failures_before_alert: 1,
            successes_before_clear: 2,
        },
    }
}

/// The key a peer is counted under: its address, IPv6 per /64 (one host holds a whole /64).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

impl Security {
    /// A room with nothing counted; cycles every `interval`.
    pub fn new(interval: Duration, learning_rate: f64) -> Security {
        Security {
            window: HashMap::new(),
            other: Counts::default(),
            baselines: HashMap::new(),
            flagged: HashSet::new(),
            rlimit_kills: Vec::new(),
            rlimit_count: 0,
            interval,
            learning_rate,
            timer: None,
            cycle: 0,
            last: BTreeMap::new(),
        }
    }

    /// (Re)arms the cycle with `interval` and `learning_rate` (at start and on config change).
    pub fn configure(&mut self, cx: &mut RoomCx<'_, Self>, interval: Duration, learning_rate: f64) {
        self.learning_rate = learning_rate.clamp(0.0, 1.0);
        if self.timer.is_some() && interval == self.interval {
            return;
        }
        self.interval = interval;
        if let Some(t) = self.timer.take() {
            cx.timers().cancel(t);
        }
        self.timer = Some(cx.timers().insert(Instant::now() + interval, Timer::Cycle));
    }

    fn counts(&mut self, ip: IpAddr) -> &mut Counts {
        let key = peer_key(ip);
        if self.window.len() >= MAX_PEERS && !self.window.contains_key(&key) {
            return &mut self.other;
        }
        self.window.entry(key).or_default()
    }

    /// A TCP request from `ip` reached the daemon.
    pub fn request(&mut self, ip: IpAddr) {
        self.counts(ip).requests += 1;
    }

    /// A TCP request from `ip` was refused for its token.
    pub fn auth_failure(&mut self, ip: IpAddr) {
        self.counts(ip).auth_failures += 1;
    }

    /// A TCP request from `ip` was refused for its Host, Origin or Sec-Fetch-Site.
    pub fn refused_origin(&mut self, ip: IpAddr) {
        self.counts(ip).refused_origin += 1;
    }

    /// A child of the daemon ended with raw wait `status`; `who` names it. Counts those killed
    /// by their CPU limit (SIGXCPU).
    pub fn child_exit(&mut self, who: String, status: i32) {
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGXCPU {
            self.rlimit_count += 1;
            if self.rlimit_kills.len() < MAX_RLIMIT_NOTES {
                self.rlimit_kills.push(who);
            }
        }
    }

    fn note(&mut self, o: &Observation) {
        if o.bad {
            self.flagged.insert(o.rule.clone());
        }
        if self.last.len() < 4 * MAX_PEERS || self.last.contains_key(&o.rule) {
            let reading = json!({"value": o.value, "message": o.message,
                                 "at": crate::state::rfc3339_utc_millis(std::time::SystemTime::now())});
            let entry = self
                .last
                .entry(o.rule.clone())
                .or_insert_with(|| json!({"bad_cycles": 0}));
            entry["metric"] = json!(o.metric);
            entry["threshold"] = json!(o.threshold);
            entry["bad"] = json!(o.bad);
            if o.bad {
                entry["bad_cycles"] = json!(entry["bad_cycles"].as_u64().unwrap_or(0) + 1);
                entry["last_bad"] = reading.clone();
            }
            entry["last"] = reading;
        }
    }

    /// Ends the counting window: the observations of this cycle (pure but for the window).
    pub fn cycle_observations(&mut self) -> Vec<Observation> {
        self.cycle += 1;
        let window = std::mem::take(&mut self.window);
        let other = std::mem::take(&mut self.other);
        let flagged = std::mem::take(&mut self.flagged);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut peers: Vec<(String, Counts, Option<IpAddr>)> = window
            .iter()
            .map(|(ip, c)| (ip.to_string(), *c, Some(*ip)))
            .collect();
        if other.requests + other.auth_failures + other.refused_origin > 0 {
            peers.push(("other".into(), other, None));
        }
        for (peer, c, ip) in peers {
            let rule = format!("security:auth_failures:{peer}");
            let bad = c.auth_failures >= AUTH_FAILURES_LIMIT;
            if c.auth_failures > 0 || flagged.contains(&rule) {
                out.push(observation(
                    rule.clone(),
                    "auth_failures",
                    c.auth_failures as f64,
                    Some(AUTH_FAILURES_LIMIT as f64),
                    bad,
                    format!(
                        "{} failed authentication(s) from {peer} in one cycle",
                        c.auth_failures
                    ),
                ));
            }
            seen.insert(rule);
            let rule = format!("security:refused_origin:{peer}");
            if c.refused_origin > 0 || flagged.contains(&rule) {
                out.push(observation(
                    rule.clone(),
                    "refused_host_origin",
                    c.refused_origin as f64,
                    Some(REFUSED_ORIGIN_LIMIT as f64),
                    c.refused_origin >= REFUSED_ORIGIN_LIMIT,
                    format!(
                        "{} request(s) from {peer} refused for Host/Origin",
                        c.refused_origin
                    ),
                ));
            }
            seen.insert(rule);
            if let Some(ip) = ip {
                let rule = format!("security:request_rate:{peer}");
                let x = c.requests as f64;
                let alpha = self.learning_rate;
                let cycle = self.cycle;
                let base = self.baselines.get(&ip).copied();
                let z = base.map_or(0.0, |b| b.z(x));
                let warm = base.is_some_and(|b| b.cycles >= WARM_UP_CYCLES);
                let bad = warm && c.requests >= MIN_REQUESTS && z > Z_LIMIT;
                if bad || flagged.contains(&rule) {
                    let mean = base.map_or(0.0, |b| b.mean);
                    out.push(observation(
                        rule.clone(),
                        "request_rate_zscore",
                        (z * 100.0).round() / 100.0,
                        Some(Z_LIMIT),
                        bad,
                        format!(
                            "{peer} sent {} request(s) this cycle against a baseline of {mean:.1} (z = {z:.1})",
                            c.requests
                        ),
                    ));
                }
                seen.insert(rule);
                if !bad {
                    // An anomaly does not become the new normal at once.
                    self.fold(ip, x, alpha, cycle);
                }
            }
        }
        // Peers quiet this cycle: their baselines learn the zero, flagged rules resolve.
        let quiet: Vec<IpAddr> = self
            .baselines
            .keys()
            .filter(|ip| !window.contains_key(ip))
            .copied()
            .collect();
        for ip in quiet {
            let (alpha, cycle) = (self.learning_rate, self.cycle);
            self.fold(ip, 0.0, alpha, cycle);
        }
        for rule in flagged.iter().filter(|r| !seen.contains(*r)) {
            if let Some(rest) = rule.strip_prefix("security:") {
                let metric = match rest.split(':').next() {
                    Some("auth_failures") => "auth_failures",
                    Some("refused_origin") => "refused_host_origin",
                    Some("request_rate") => "request_rate_zscore",
                    Some("rlimit") => "rlimit_kills",
                    Some("capability_blocked") => "capability_blocked_calls",
                    Some("sandbox_denied") => "sandbox_denials",
                    _ => continue, // listening: the scan reports every server
                };
                out.push(observation(
                    rule.clone(),
                    metric,
                    0.0,
                    None,
                    false,
                    "quiet this cycle".into(),
                ));
            }
        }
        let rule = "security:rlimit".to_string();
        if self.rlimit_count > 0 || flagged.contains(&rule) {
            let who = std::mem::take(&mut self.rlimit_kills);
            out.push(observation(
                rule,
                "rlimit_kills",
                self.rlimit_count as f64,
                Some(0.0),
                self.rlimit_count > 0,
                if who.is_empty() {
                    "no process hit its CPU limit".into()
                } else {
                    format!("killed by their CPU limit (SIGXCPU): {}", who.join(", "))
                },
            ));
        }
        self.rlimit_count = 0;
        out
    }

    fn fold(&mut self, ip: IpAddr, x: f64, alpha: f64, cycle: u64) {
        if !self.baselines.contains_key(&ip) && self.baselines.len() >= MAX_PEERS {
            if let Some(stalest) = self
                .baselines
                .iter()
                .min_by_key(|(_, b)| b.last_cycle)
                .map(|(ip, _)| *ip)
            {
                self.baselines.remove(&stalest);
            }
        }
        let b = self.baselines.entry(ip).or_insert(Baseline {
            mean: 0.0,
            var: 0.0,
            cycles: 0,
            last_cycle: cycle,
        });
        b.update(x, alpha);
        if x > 0.0 {
            b.last_cycle = cycle;
        }
    }

    /// Looks for listening sockets of each server's processes (its session) on the worker.
    pub fn scan(&mut self, cx: &mut RoomCx<'_, Self>, servers: Vec<(String, i32)>) {
        if servers.is_empty() {
            return;
        }
        // A scan the worker cannot take is skipped (its failure logs why): the next cycle
        // tries again, and no reading is better than a made-up one.
        let _skipped = cx.submit(
            Duration::from_secs(10),
            move || Scanned {
                servers: listening_ports(&servers),
            },
            |why| {
                log::warn!("listening-socket scan not run: {why}");
                Scanned {
                    servers: Vec::new(),
                }
            },
        );
    }

    /// Per rule: its last reading, whether it was bad, how many cycles were bad and the last
    /// bad reading; and the cycle count.
    pub fn status(&self) -> Value {
        json!({
            "cycles": self.cycle,
            "interval_ms": self.interval.as_millis() as u64,
            "peers_tracked": self.baselines.len(),
            "readings": self.last,
        })
    }
}

/// TCP ports in LISTEN state held by the processes of each `(server, session id)` (on the
/// worker: walks `/proc`).
pub fn listening_ports(servers: &[(String, i32)]) -> Vec<(String, Vec<u16>)> {
    let sessions: HashMap<i32, &str> = servers.iter().map(|(s, p)| (*p, s.as_str())).collect();
    let mut members: HashMap<&str, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command: state ppid pgrp session ...
        let session = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(3))
            .and_then(|s| s.parse::<i32>().ok());
        if let Some(server) = session.and_then(|s| sessions.get(&s)) {
            members.entry(server).or_default().push(pid);
        }
    }
    servers
        .iter()
        .map(|(server, _)| {
            let pids = members.get(server.as_str()).cloned().unwrap_or_default();
            let mut inodes = HashSet::new();
            for pid in &pids {
                for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if let Ok(link) = std::fs::read_link(fd.path()) {
                        let link = link.to_string_lossy();
                        if let Some(n) = link
                            .strip_prefix("socket:[")
                            .and_then(|r| r.strip_suffix(']'))
                        {
                            inodes.insert(n.to_string());
                        }
                    }
                }
            }
            let mut ports = Vec::new();
            if let Some(pid) = pids.first().filter(|_| !inodes.is_empty()) {
                for table in ["tcp", "tcp6"] {
                    let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
                        .unwrap_or_default();
                    ports.extend(listeners_in(&text, &inodes));
                }
            }
            ports.sort_unstable();
            ports.dedup();
            (server.clone(), ports)
        })
        .collect()
}

/// Ports of `/proc/net/tcp*` rows in LISTEN state (`0A`) whose inode is in `inodes`.
pub fn listeners_in(table: &str, inodes: &HashSet<String>) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != "0A" || !inodes.contains(*inode) {
                return None;
            }
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(obs: &[Observation]) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = obs.iter().map(|o| (o.rule.clone(), o.bad)).collect();
        v.sort();
        v
    }

    #[test]
    fn failed_auth_per_peer_raises_then_resolves_when_quiet() {
        let mut s = Security::new(Duration::from_secs(30), 0.1);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..AUTH_FAILURES_LIMIT {
            s.auth_failure(a);
        }
        s.auth_failure(b);
        let first = s.cycle_observations();
        for o in &first {
            s.note(o);
        }
        assert_eq!(
            rules(&first),
            [
                ("security:auth_failures:10.0.0.1".to_string(), true),
                ("security:auth_failures:10.0.0.2".to_string(), false)
            ]
        );
        let second = s.cycle_observations();
        assert_eq!(
            rules(&second),
            [("security:auth_failures:10.0.0.1".to_string(), false)]
        );
        assert!(s.cycle_observations().is_empty());
    }

    #[test]
    fn a_burst_over_the_baseline_is_an_anomaly_and_steady_traffic_is_not() {
        let mut s = Security::new(Duration::from_secs(30), 0.2);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        for i in 0..20 {
            for _ in 0..(30 + i % 3) {
                s.request(ip);
            }
            let obs = s.cycle_observations();
            assert!(
                obs.is_empty(),
                "steady traffic flagged in cycle {i}: {obs:?}"
            );
        }
        for _ in 0..300 {
            s.request(ip);
        }
        let obs = s.cycle_observations();
        assert_eq!(
            rules(&obs),
            [("security:request_rate:192.0.2.7".to_string(), true)]
        );
        assert!(obs[0].value > Z_LIMIT);
    }

    #[test]
    fn ipv6_peers_count_per_64_and_peers_are_bounded() {
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::ffff:2".parse().expect("ip");
        assert_eq!(peer_key(a), peer_key(b));
        let mut s = Security::new(Duration::from_secs(30), 0.1);
        for i in 0..(MAX_PEERS as u32 + 50) {
            s.auth_failure(IpAddr::V4(i.into()));
        }
        assert_eq!(s.window.len(), MAX_PEERS);
        assert_eq!(s.other.auth_failures, 50);
    }

    #[test]
    fn listening_rows_are_matched_by_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n\
           1: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9999 1 0\n\
           2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0\n";
        let inodes: HashSet<String> = ["4242".to_string(), "4243".to_string()].into();
        assert_eq!(listeners_in(table, &inodes), [8080]);
    }
}
