//! The autonomous acquisition cycle (`[variety] auto_acquire`, the seed's "full autonomous
//! operation"): a required capability without a provider is looked up in discovery and the
//! best-ranked candidate that brings it is acquired without anyone asking.
//!
//! This is the bookkeeping only (no I/O, no clock of its own: the room passes `now`); the
//! acquisition room follows `variety_gap_detected` and `variety_updated` events, asks
//! discovery and queues what [`Auto::next`] picks.
//!
//! Invariants: one chain at a time (one capability, its ranked candidates tried one after the
//! other, each only once the previous one failed); a chain stops as soon as its gap closes
//! (no flapping: a chain never starts for a gap that is not open, and a closed gap's remaining
//! candidates are dropped); a package that failed is not picked again for the cooldown; a
//! capability whose chain ended with its gap still open is retried once the first of the
//! packages it tried has cooled down (or after one cooldown when discovery found nothing), with
//! a fresh discovery. Only gaps that no registered server could close are acted on (their
//! remedy is acquiring: a provider that is registered but starting, stopped or failed is the
//! supervisor's business, not a reason to install a second one).
//! Bounded: [`MAX_CANDIDATES`] per chain, [`MAX_WAITING`] gaps waiting, [`MAX_COOLING`]
//! packages cooling (the one closest to the end of its cooldown goes first), one retry time
//! per open gap.

use crate::variety::package::PackageRef;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Candidates kept for one chain at most.
pub const MAX_CANDIDATES: usize = 16;
/// Gaps waiting for the chain in progress at most.
pub const MAX_WAITING: usize = 256;
/// Packages cooling down at most.
pub const MAX_COOLING: usize = 256;

/// A candidate to acquire, from a discovery answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// The exact package.
    pub package: PackageRef,
    /// The registry's server name, when a registry listed it.
    pub server_name: Option<String>,
    /// The registry's status.
    pub status: Option<String>,
    /// Capabilities discovery says it brings.
    pub capabilities: Vec<String>,
    /// The defaults of the environment variables its registry entry declares.
    pub env: BTreeMap<String, String>,
}

/// The capability being worked on.
#[derive(Debug)]
struct Chain {
    capability: String,
    /// The tag of the discovery answer awaited.
    discovering: Option<u64>,
    candidates: VecDeque<Pick>,
    /// The acquisition running for it.
    current: Option<u64>,
    /// Packages tried or skipped as cooling (bounded by the candidates taken).
    tried: Vec<String>,
}

/// The cycle's state.
#[derive(Debug, Default)]
pub struct Auto {
    enabled: bool,
    cooldown: Duration,
    /// Gaps announced while a chain was in progress, oldest first.
    waiting: VecDeque<String>,
    /// Gaps open that only an acquisition could close, as the variety room last said.
    open: BTreeSet<String>,
    /// Gaps whose chain ended with the gap still open → when to try them again.
    stalled: BTreeMap<String, Instant>,
    chain: Option<Chain>,
    /// Package (`npm:NAME@VERSION`) → when it may be tried again.
    cooling: BTreeMap<String, Instant>,
}

impl Auto {
    /// A cycle with the given settings.
    pub fn new(enabled: bool, cooldown: Duration) -> Auto {
        Auto {
            enabled,
            cooldown,
            ..Auto::default()
        }
    }

    /// New settings; turning it off drops what was planned (a running acquisition finishes);
    /// turning it on takes the gaps open now as if each had just been detected. Returns the
    /// capability whose chain starts now, if one does.
    pub fn configure(&mut self, enabled: bool, cooldown: Duration, now: Instant) -> Option<String> {
        self.cooldown = cooldown;
        let switched_on = enabled && !self.enabled;
        self.enabled = enabled;
        if switched_on {
            for gap in &self.open {
                if !self.waiting.contains(gap) && self.waiting.len() < MAX_WAITING {
                    self.waiting.push_back(gap.clone());
                }
            }
            if self.chain.is_none() {
                return self.end(now);
            }
        }
        if !enabled {
            self.waiting.clear();
            self.stalled.clear();
            if let Some(chain) = self.chain.as_mut() {
                chain.candidates.clear();
                chain.discovering = None;
                if chain.current.is_none() {
                    self.chain = None;
                }
            }
        }
        None
    }

    /// Whether the cycle is on (`variety.auto_acquire`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Re-evaluates the open gaps now: with the cycle on, every open gap (that only an
    /// acquisition closes) neither being worked on nor waiting is put in line, also those
    /// waiting for a retry. Returns the gaps open, those put in line, and the capability whose
    /// chain starts now, if one does.
    pub fn decide(&mut self, now: Instant) -> (Vec<String>, Vec<String>, Option<String>) {
        let open: Vec<String> = self.open.iter().cloned().collect();
        let mut queued = Vec::new();
        if !self.enabled {
            return (open, queued, None);
        }
        let current = self.chain.as_ref().map(|c| c.capability.clone());
        for gap in &open {
            if current.as_deref() != Some(gap.as_str())
                && !self.waiting.contains(gap)
                && self.waiting.len() < MAX_WAITING
            {
                self.waiting.push_back(gap.clone());
                self.stalled.remove(gap);
                queued.push(gap.clone());
            }
        }
        let start = if self.chain.is_none() {
            self.end(now)
        } else {
            None
        };
        (open, queued, start)
    }

    /// A gap was detected: `Some(capability)` when a chain should start for it now.
    pub fn gap(&mut self, capability: &str) -> Option<String> {
        if !self.enabled {
            return None;
        }
        self.open.insert(capability.to_string());
        match &self.chain {
            None => Some(capability.to_string()),
            Some(c) if c.capability == capability => None,
            Some(_) => {
                if !self.waiting.iter().any(|w| w == capability) && self.waiting.len() < MAX_WAITING
                {
                    self.waiting.push_back(capability.to_string());
                }
                None
            }
        }
    }

    /// The gaps open now that only an acquisition closes (every analysis that changed
    /// something says so; followed even when the cycle is off, so that switching it on finds
    /// them). Returns those that were not open before, most severe first: each is a gap to
    /// act on as [`Auto::gap`] says.
    pub fn gaps_now(&mut self, acquirable: &[String]) -> Vec<String> {
        let new: Vec<String> = acquirable
            .iter()
            .filter(|g| !self.open.contains(*g))
            .cloned()
            .collect();
        self.open = acquirable.iter().cloned().collect();
        let open = &self.open;
        self.waiting.retain(|w| open.contains(w));
        self.stalled.retain(|g, _| open.contains(g));
        if let Some(chain) = self.chain.as_mut() {
            if !open.contains(&chain.capability) {
                chain.candidates.clear();
            }
        }
        new
    }

    /// When the first gap waiting for a retry is due.
    pub fn retry_at(&self) -> Option<Instant> {
        if !self.enabled {
            return None;
        }
        self.stalled.values().min().copied()
    }

    /// Puts the gaps whose retry is due in line; returns the capability whose chain starts
    /// now, if one does.
    pub fn retry(&mut self, now: Instant) -> Option<String> {
        let due: Vec<String> = self
            .stalled
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(g, _)| g.clone())
            .collect();
        for gap in due {
            self.stalled.remove(&gap);
            let working = self.chain.as_ref().is_some_and(|c| c.capability == gap);
            if self.enabled
                && !working
                && self.open.contains(&gap)
                && !self.waiting.contains(&gap)
                && self.waiting.len() < MAX_WAITING
            {
                log::info!("auto-acquire: trying '{gap}' again (its cooldown is over)");
                self.waiting.push_back(gap);
            }
        }
        if self.chain.is_none() {
            self.end(now)
        } else {
            None
        }
    }

    /// A chain starts for `capability`; discovery's answer will carry `tag`.
    pub fn start(&mut self, capability: String, tag: u64) {
        self.chain = Some(Chain {
            capability,
            discovering: Some(tag),
            candidates: VecDeque::new(),
            current: None,
            tried: Vec::new(),
        });
    }

    /// The capability of the chain awaiting the discovery answer `tag`.
    pub fn awaits(&self, tag: u64) -> Option<&str> {
        self.chain
            .as_ref()
            .filter(|c| c.discovering == Some(tag))
            .map(|c| c.capability.as_str())
    }

    /// Discovery answered (its `data`: ranked `candidates`); keeps those that bring the
    /// capability, in rank order. `None` data: discovery failed. Returns how many were kept.
    pub fn discovered(&mut self, data: Option<&Value>) -> usize {
        let Some(chain) = self.chain.as_mut() else {
            return 0;
        };
        chain.discovering = None;
        let wanted = chain.capability.clone();
        let picks = data
            .and_then(|d| d["candidates"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|c| pick(c, &wanted))
            .take(MAX_CANDIDATES);
        chain.candidates.extend(picks);
        chain.candidates.len()
    }

    /// The next candidate to queue for the chain, skipping cooling ones; `None` when the
    /// chain has nothing to try now (its gap closed, or every candidate is used or cooling).
    pub fn next(&mut self, now: Instant) -> Option<Pick> {
        let chain = self.chain.as_mut()?;
        if chain.current.is_some() || chain.discovering.is_some() {
            return None;
        }
        if !self.open.contains(&chain.capability) {
            chain.candidates.clear();
            return None;
        }
        while let Some(p) = chain.candidates.pop_front() {
            let key = p.package.to_string();
            chain.tried.push(key.clone());
            if self.cooling.get(&key).is_some_and(|until| *until > now) {
                log::info!("auto-acquire: {key} is cooling down after a failure; skipped");
                continue;
            }
            return Some(p);
        }
        None
    }

    /// Acquisition `n` was queued for the chain.
    pub fn running(&mut self, n: u64) {
        if let Some(chain) = self.chain.as_mut() {
            chain.current = Some(n);
        }
    }

    /// The chain's acquisition that is no longer wanted: its gap closed (a provider came, or
    /// the capability is no longer required) while it was queued for it.
    pub fn unwanted(&self) -> Option<u64> {
        self.chain
            .as_ref()
            .filter(|c| !self.open.contains(&c.capability))
            .and_then(|c| c.current)
    }

    /// The chain's acquisition `n` was dropped before it started: nothing cools down (the
    /// package did not fail) and nothing else of the chain is tried.
    pub fn dropped(&mut self, n: u64) {
        if let Some(chain) = self.chain.as_mut().filter(|c| c.current == Some(n)) {
            chain.current = None;
            chain.candidates.clear();
        }
    }

    /// Whether the chain has nothing in flight (no discovery, no acquisition): then it is
    /// over once [`Auto::next`] has nothing either.
    pub fn idle(&self) -> bool {
        self.chain
            .as_ref()
            .is_some_and(|c| c.current.is_none() && c.discovering.is_none())
    }

    /// The chain is over; `Some(capability)`: the next waiting gap still open, to start. A
    /// chain that ends with its gap open is retried when the first package it tried has cooled
    /// down (after one cooldown when it had none to try).
    pub fn end(&mut self, now: Instant) -> Option<String> {
        if let Some(chain) = self.chain.take() {
            if self.enabled && self.open.contains(&chain.capability) {
                let at = chain
                    .tried
                    .iter()
                    .filter_map(|p| self.cooling.get(p))
                    .min()
                    .copied()
                    .unwrap_or(now + self.cooldown)
                    .max(now);
                log::info!(
                    "auto-acquire: '{}' is still missing; tried again in {} s",
                    chain.capability,
                    at.duration_since(now).as_secs()
                );
                self.stalled.insert(chain.capability, at);
            } else {
                log::info!("auto-acquire: done with '{}'", chain.capability);
            }
        }
        if !self.enabled {
            return None;
        }
        while let Some(w) = self.waiting.pop_front() {
            if self.open.contains(&w) {
                return Some(w);
            }
        }
        None
    }

    /// Acquisition `n` of `package` ended (`ok`: acquired). A failure cools the package
    /// down; returns whether it was the chain's (then the room tries the next candidate, or
    /// ends the chain when it succeeded).
    pub fn finished(&mut self, n: u64, package: &str, ok: bool, now: Instant) -> bool {
        if !ok {
            self.cool(package, now);
        }
        let Some(chain) = self.chain.as_mut().filter(|c| c.current == Some(n)) else {
            return false;
        };
        chain.current = None;
        if ok {
            // Its gap is closed (or closing): what is left of the chain is not needed.
            chain.candidates.clear();
        }
        true
    }

    fn cool(&mut self, package: &str, now: Instant) {
        self.cooling.retain(|_, until| *until > now);
        if self.cooling.len() >= MAX_COOLING && !self.cooling.contains_key(package) {
            let soonest = self
                .cooling
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                self.cooling.remove(&k);
            }
        }
        self.cooling
            .insert(package.to_string(), now + self.cooldown);
    }
}

/// A discovery candidate that brings `capability`, with an exact package.
fn pick(candidate: &Value, capability: &str) -> Option<Pick> {
    let capabilities: Vec<String> = candidate["capabilities"]
        .as_array()?
        .iter()
        .filter_map(|b| b["capability"].as_str().map(str::to_string))
        .collect();
    if !capabilities.iter().any(|c| c == capability) {
        return None;
    }
    let package = PackageRef::parse(candidate["package"]["ref"].as_str()?).ok()?;
    // Values nobody gave cannot be made up: a candidate needing one is left to the operator.
    let mut env = BTreeMap::new();
    let vars = candidate["package"]["environment_variables"].as_array();
    for var in vars.into_iter().flatten() {
        let Some(name) = var["name"].as_str() else {
            continue;
        };
        match var["default"].as_str() {
            Some(default) => {
                env.insert(name.to_string(), default.to_string());
            }
            None if var["is_required"].as_bool() == Some(true) => {
                log::info!("auto-acquire: {package} needs {name}, which only an operator can give; skipped");
                return None;
            }
            None => {}
        }
    }
    let text = |k: &str| candidate[k].as_str().map(str::to_string);
    Some(Pick {
        package,
        server_name: text("server_name"),
        status: text("status"),
        capabilities,
        env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(refs: &[(&str, &str)]) -> Value {
        let candidates: Vec<Value> = refs
            .iter()
            .map(|(r, cap)| {
                json!({"package": {"ref": r}, "capabilities": [{"capability": cap, "reason": "declared"}],
                       "server_name": "io.example/x", "status": "active"})
            })
            .collect();
        json!({ "candidates": candidates })
    }

    fn on(cooldown_s: u64) -> Auto {
        Auto::new(true, Duration::from_secs(cooldown_s))
    }

    /// S5's decide: off, it starts nothing; on, the open gaps not worked on are put in line and
    /// the first starts, and asking again while they are worked on adds nothing.
    #[test]
    fn decide_takes_up_the_open_gaps_only_when_on() {
        let mut off = Auto::new(false, Duration::from_secs(60));
        off.gaps_now(&["a".to_string()]);
        assert_eq!(
            off.decide(Instant::now()),
            (vec!["a".to_string()], vec![], None)
        );

        let mut a = on(60);
        a.gaps_now(&["a".to_string(), "b".to_string()]);
        let (open, queued, start) = a.decide(Instant::now());
        assert_eq!(open, ["a", "b"]);
        assert_eq!(queued, ["a", "b"]);
        assert_eq!(start.as_deref(), Some("a"));
        a.start("a".to_string(), 1);
        let (_, queued, start) = a.decide(Instant::now());
        assert!(queued.is_empty(), "{queued:?}");
        assert_eq!(start, None);
        // a closes: its chain ends and b, still waiting, is next.
        a.gaps_now(&["b".to_string()]);
        assert_eq!(a.end(Instant::now()).as_deref(), Some("b"));
    }

    #[test]
    fn the_best_candidate_bringing_the_capability_is_picked_then_the_next_after_a_failure() {
        let mut a = on(3600);
        let now = Instant::now();
        assert_eq!(a.gap("memory").as_deref(), Some("memory"));
        a.start("memory".into(), 7);
        assert_eq!(a.awaits(7), Some("memory"));
        assert_eq!(a.next(now), None, "nothing before discovery answers");
        let kept = a.discovered(Some(&answer(&[
            ("npm:broken@9.9.9", "memory"),
            ("pypi:mcp-server-time==1.0.0", "time"),
            ("npm:mem@1.0.0", "memory"),
        ])));
        assert_eq!(kept, 2, "the time server does not bring memory");
        let first = a.next(now).expect("a pick");
        assert_eq!(first.package.to_string(), "npm:broken@9.9.9");
        a.running(1);
        assert_eq!(a.next(now), None, "one at a time");
        assert!(a.finished(1, "npm:broken@9.9.9", false, now));
        let second = a.next(now).expect("the next-ranked");
        assert_eq!(second.package.to_string(), "npm:mem@1.0.0");
        a.running(2);
        assert!(a.finished(2, "npm:mem@1.0.0", true, now));
        assert_eq!(a.next(now), None);
        assert!(a.idle());
        assert_eq!(a.end(Instant::now()), None);
    }

    #[test]
    fn a_failed_package_cools_down_and_a_closed_gap_stops_the_chain() {
        let mut a = on(60);
        let now = Instant::now();
        a.gap("memory");
        a.start("memory".into(), 1);
        a.discovered(Some(&answer(&[("npm:a@1.0.0", "memory")])));
        let p = a.next(now).expect("pick");
        a.running(1);
        a.finished(1, &p.package.to_string(), false, now);
        assert_eq!(a.next(now), None, "exhausted");
        a.end(Instant::now());
        // The next gap event: the failed package is still cooling down.
        assert!(a.gap("memory").is_some());
        a.start("memory".into(), 2);
        a.discovered(Some(&answer(&[("npm:a@1.0.0", "memory")])));
        assert_eq!(a.next(now + Duration::from_secs(30)), None, "cooling");
        a.end(Instant::now());
        a.gap("memory");
        a.start("memory".into(), 3);
        a.discovered(Some(&answer(&[("npm:a@1.0.0", "memory")])));
        assert!(a.next(now + Duration::from_secs(61)).is_some(), "cooled");
        // A closed gap drops what is left.
        a.end(Instant::now());
        a.gap("memory");
        a.start("memory".into(), 4);
        a.discovered(Some(&answer(&[("npm:a@1.0.0", "memory")])));
        a.gaps_now(&[]);
        assert_eq!(a.next(now + Duration::from_secs(61)), None);
    }

    #[test]
    fn an_acquisition_queued_for_a_gap_that_closed_is_unwanted_and_dropped_without_cooling() {
        let mut a = on(60);
        let now = Instant::now();
        a.gaps_now(&["memory".into(), "time".into()]);
        a.gap("memory");
        a.start("memory".into(), 1);
        assert_eq!(a.gap("time"), None, "waits for the chain in progress");
        a.discovered(Some(&answer(&[
            ("npm:a@1.0.0", "memory"),
            ("npm:b@1.0.0", "memory"),
        ])));
        let p = a.next(now).expect("pick");
        a.running(7);
        assert_eq!(a.unwanted(), None, "its gap is open");
        a.gaps_now(&["time".into()]);
        assert_eq!(a.unwanted(), Some(7), "its gap closed while it waited");
        a.dropped(7);
        assert_eq!(a.unwanted(), None);
        assert!(a.idle());
        assert_eq!(a.next(now), None, "the rest of the chain is not needed");
        assert_eq!(a.end(now), Some("time".into()), "the waiting gap is next");
        // Nothing cooled down: the package may be picked at once for a new gap.
        a.gaps_now(&["time".into(), "memory".into()]);
        a.start("memory".into(), 2);
        a.discovered(Some(&answer(&[("npm:a@1.0.0", "memory")])));
        assert_eq!(a.next(now).map(|q| q.package), Some(p.package));
    }

    #[test]
    fn gaps_wait_for_the_chain_in_progress_and_off_means_nothing_starts() {
        let mut a = on(60);
        assert!(a.gap("memory").is_some());
        a.start("memory".into(), 1);
        assert_eq!(a.gap("time"), None);
        assert_eq!(a.gap("time"), None);
        a.discovered(None);
        assert!(a.idle());
        assert_eq!(a.end(Instant::now()).as_deref(), Some("time"));
        assert_eq!(a.end(Instant::now()), None, "each gap event is taken once");
        let mut off = Auto::new(false, Duration::from_secs(60));
        assert_eq!(off.gap("memory"), None);
        off.gaps_now(&["memory".into(), "time".into()]);
        assert_eq!(
            off.configure(true, Duration::from_secs(60), Instant::now())
                .as_deref(),
            Some("memory"),
            "switched on: the open gaps are taken"
        );
        off.start("memory".into(), 1);
        off.discovered(None);
        assert_eq!(off.end(Instant::now()).as_deref(), Some("time"));
        assert_eq!(
            off.configure(true, Duration::from_secs(60), Instant::now()),
            None,
            "already on"
        );
    }

    #[test]
    fn cooling_is_bounded() {
        let mut a = on(60);
        let now = Instant::now();
        for i in 0..(MAX_COOLING + 10) {
            a.cool(
                &format!("npm:p{i}@1.0.0"),
                now + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(a.cooling.len(), MAX_COOLING);
        assert!(a
            .cooling
            .contains_key(&format!("npm:p{}@1.0.0", MAX_COOLING + 9)));
    }

    /// Only gaps that an acquisition alone closes are acted on, each once when it opens.
    #[test]
    fn gaps_are_acted_on_when_they_become_acquirable() {
        let mut a = on(60);
        assert_eq!(a.gaps_now(&["memory".into()]), ["memory"]);
        assert_eq!(a.gaps_now(&["memory".into(), "time".into()]), ["time"]);
        assert!(a.gaps_now(&["memory".into(), "time".into()]).is_empty());
        // A provider registered for memory (starting): no longer acquirable, then again.
        assert!(a.gaps_now(&["time".into()]).is_empty());
        assert_eq!(a.gaps_now(&["time".into(), "memory".into()]), ["memory"]);
    }

    /// A chain that ends with its gap still open is retried when the first package it tried
    /// has cooled down, with a fresh discovery; one that found nothing after a cooldown; a
    /// gap that closes meanwhile is not retried.
    #[test]
    fn a_gap_left_open_is_retried_when_its_cooldown_ends() {
        let mut a = on(60);
        let now = Instant::now();
        a.gaps_now(&["memory".into()]);
        assert_eq!(a.gap("memory").as_deref(), Some("memory"));
        a.start("memory".into(), 1);
        a.discovered(Some(&answer(&[("npm:a@1.0.0", "memory")])));
        let p = a.next(now).expect("pick");
        a.running(1);
        a.finished(
            1,
            &p.package.to_string(),
            false,
            now + Duration::from_secs(5),
        );
        assert_eq!(a.next(now), None, "exhausted");
        assert!(a.idle());
        assert_eq!(a.retry_at(), None);
        assert_eq!(a.end(now + Duration::from_secs(5)), None);
        assert_eq!(
            a.retry_at(),
            Some(now + Duration::from_secs(65)),
            "when npm:a has cooled down"
        );
        assert_eq!(a.retry(now + Duration::from_secs(64)), None, "not yet");
        assert_eq!(
            a.retry(now + Duration::from_secs(65)).as_deref(),
            Some("memory"),
            "due: discovered again"
        );
        assert_eq!(a.retry_at(), None, "taken");
        // Discovery finds nothing: retried after one cooldown.
        a.start("memory".into(), 2);
        a.discovered(None);
        let later = now + Duration::from_secs(100);
        assert_eq!(a.end(later), None);
        assert_eq!(a.retry_at(), Some(later + Duration::from_secs(60)));
        // The gap closes: nothing is retried.
        a.gaps_now(&[]);
        assert_eq!(a.retry_at(), None);
        assert_eq!(a.retry(later + Duration::from_secs(600)), None);
        // Off: nothing waits.
        a.gaps_now(&["memory".into()]);
        a.start("memory".into(), 3);
        a.discovered(None);
        a.end(later);
        assert!(a.retry_at().is_some());
        a.configure(false, Duration::from_secs(60), later);
        assert_eq!(a.retry_at(), None);
    }
}
