//! Discovery: where MCP servers the host could run are found (`mcp discover`,
//! `GET /api/v1/mcp/discover`, and a periodic refresh), for people and for the variety and
//! acquisition rooms (`Request::Discovery`, and the `discovery_completed` event).
//!
//! Sources ([`Source`]): the operator's catalog file, the official MCP registry (API v0.1),
//! the npm registry's search and GitHub's repository search; which ones run is
//! `mcp_servers.discovery_sources`, where each is comes from configuration only. Every
//! request to a source is a worker job ([`source::fetch`]): one per source, within
//! `mcp_servers.discovery_timeout_ms`. The loop only keeps the run's reply and each source's
//! outcome; when the last one is in, joining them ([`candidate::merge`]: filtered,
//! deduplicated, ranked) and building the answer is one more worker job (a page of 100
//! candidates costs milliseconds: not loop time), whose result the loop sends. A source that is not configured, down, slow or
//! answering garbage gives its own error in the answer; the others still answer; only when
//! none answers is the request refused (`upstream_unavailable`, with each source's error).
//!
//! Each source's answer is cached per query for `mcp_servers.discovery_cache_ttl_ms`, in
//! memory and in `<state dir>/discovery-cache.json` (written on the worker, one write at a
//! time, the last state winning; read back once at start on the worker, every finding checked again as if a source had
//! sent it; a corrupt file is ignored and rewritten). Two requests for the same source and
//! query while one is in flight share it.
//!
//! Events (channel `variety_monitoring`, the seed's S4 "opportunity scanning"):
//! `discovery_progress` per source as it finishes, `discovery_completed` per run with the
//! best candidates (the opportunities other rooms follow in `Room::on_event`).
//!
//! Bounds: [`MAX_RUNS`] runs in flight, [`cache::MAX_ENTRIES`] cached answers,
//! [`candidate::MAX_PER_SOURCE`] findings per source, [`candidate::MAX_CANDIDATES`] per
//! answer, [`source::MAX_BODY_BYTES`] per answer read.

pub mod cache;
pub mod candidate;
pub mod ops;
pub mod source;

use crate::api::{Answer, ApiError, DiscoveryRequest, ErrorCode, ReplyTo};
use crate::config::Config;
use crate::events::{Channel, EventData, Opportunity};
use crate::reactor::timer::TimerId;
use crate::room::{Effect, Room, RoomCx, Serve};
use crate::variety::capability::{self, Rule};
use cache::Cache;
use candidate::{Candidate, Query, Runtimes, Skipped, Source};
use serde_json::{json, Value};
use source::{Endpoints, Parsed};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Runs in flight at once; one more is refused (`busy`). Each holds at most its sources'
/// findings (each source's answer was at most [`source::MAX_BODY_BYTES`]).
pub const MAX_RUNS: usize = 4;
/// Candidates named in a `discovery_completed` event.
pub const MAX_OPPORTUNITIES: usize = 20;
/// A worker job gets this beyond the source's own timeout (which ureq enforces).
const JOB_MARGIN: Duration = Duration::from_secs(5);

/// The room's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The periodic refresh is due.
    Refresh,
}

/// What comes back from the worker.
#[derive(Debug)]
pub enum Job {
    /// A source answered (or failed).
    Fetched {
        /// The source.
        source: Source,
        /// The query it was asked.
        query: String,
        /// Its findings, or why there are none.
        result: Result<Parsed, String>,
        /// The host's runtimes (checked once, on the worker).
        runtimes: Option<Runtimes>,
        /// How long it took.
        elapsed: Duration,
    },
    /// The cache file was read at start.
    CacheLoaded(Result<Cache, String>),
    /// The cache file was written.
    CacheSaved(Result<(), String>),
    /// A run's findings were joined and ranked (`None`: the worker did not do it, the loop
    /// does).
    Ranked {
        /// The run.
        run: u64,
        /// The outcome.
        ranked: Option<Ranked>,
    },
}

/// A finished run, joined and ranked.
#[derive(Debug)]
pub struct Ranked {
    answer: Answer,
    opportunities: Vec<Opportunity>,
    candidates: usize,
    errors: usize,
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Request,
    Periodic,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Request => "request",
            Trigger::Periodic => "periodic",
        }
    }
}

/// What one source gave a run (its findings shared with the cache).
#[derive(Debug, Clone)]
struct Outcome {
    /// `ok` (asked now), `cached` or `error`.
    status: &'static str,
    parsed: Arc<Parsed>,
    error: Option<String>,
    elapsed_ms: u64,
    fetched_at_ms: Option<u64>,
}

/// A discovery in progress.
#[derive(Debug)]
struct Run {
    query: String,
    reply: Option<ReplyTo>,
    trigger: Trigger,
    started: Instant,
    /// Sources asked, in configuration order.
    sources: Vec<Source>,
    results: BTreeMap<Source, Outcome>,
    /// Its ranking job is out.
    ranking: bool,
}

/// Writing the cache file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Saving {
    Idle,
    /// A write is out; `dirty`: the cache changed since, write again when it is back.
    Busy {
        dirty: bool,
    },
}

/// The last completed run (for status).
#[derive(Debug, Clone)]
struct Last {
    at: String,
}

/// The discovery room.
pub struct Discovery {
    sources: Vec<Source>,
    endpoints: Endpoints,
    ttl_ms: u64,
    timeout: Duration,
    every_ms: u64,
    rules: Vec<Rule>,
    state_dir: PathBuf,
    cache: Cache,
    runs: BTreeMap<u64, Run>,
    next_run: u64,
    /// Fetches in flight: (source, query) → the runs waiting for it.
    fetching: BTreeMap<(Source, String), Vec<u64>>,
    runtimes: Option<Runtimes>,
    refresh: Option<TimerId>,
    last: Option<Last>,
    saving: Saving,
    /// Requests that came before the cache file was read (answered from it once it is):
    /// at most [`MAX_RUNS`].
    waiting: Option<Vec<(Vec<Source>, String, ReplyTo)>>,
}

impl Discovery {
    /// The room for `config`, keeping its cache in `state_dir`.
    pub fn new(config: &Config, state_dir: PathBuf) -> Discovery {
        let mut room = Discovery {
            sources: Vec::new(),
            endpoints: Endpoints::default(),
            ttl_ms: 0,
            timeout: Duration::from_secs(10),
            every_ms: 0,
            rules: capability::builtin(),
            state_dir,
            cache: Cache::default(),
            runs: BTreeMap::new(),
            next_run: 1,
            fetching: BTreeMap::new(),
            runtimes: None,
            refresh: None,
            last: None,
            saving: Saving::Idle,
            waiting: None,
        };
        room.take_config(config);
        room
    }

    fn take_config(&mut self, config: &Config) {
        // The same rules the variety room and the assessment map with: the built-in ones and
        // `[[variety.rules]]`, so a candidate brings what the analysis would count.
        self.rules = crate::variety::required::rules(&config.variety.rules);
        let m = &config.mcp_servers;
        self.sources = m
            .discovery_sources
            .iter()
            .filter_map(|s| Source::parse(s))
            .collect();
        let url = |s: &str| s.trim_end_matches('/').to_string();
        self.endpoints = Endpoints {
            registry: url(&m.registry_url),
            npm: url(&m.npm_registry_url),
            github: url(&m.github_api_url),
            github_token_file: m.github_token_file.clone(),
            catalog: m.catalog_file.clone(),
            ca_file: config.security.ca_file.clone(),
        };
        self.ttl_ms = m.discovery_cache_ttl_ms;
        self.timeout = Duration::from_millis(m.discovery_timeout_ms);
        self.every_ms = m.auto_discovery_interval_ms;
    }

    /// Reads the cache file (on the worker) and arms the periodic refresh.
    fn load_and_arm(&mut self, cx: &mut RoomCx<'_, Self>) {
        self.waiting = Some(Vec::new());
        let path = self.state_dir.join(cache::FILE);
        let submitted = cx.submit(
            Duration::from_secs(30),
            move || Job::CacheLoaded(cache::load(&path, now_ms())),
            |why| Job::CacheLoaded(Err(why.to_string())),
        );
        if let Err(job) = submitted {
            self.on_job(cx, job);
        }
        self.arm(cx);
    }

    fn arm(&mut self, cx: &mut RoomCx<'_, Self>) {
        if let Some(t) = self.refresh.take() {
            cx.timers().cancel(t);
        }
        if self.every_ms > 0 {
            let at = Instant::now() + Duration::from_millis(self.every_ms);
            self.refresh = Some(cx.timers().insert(at, Timer::Refresh));
        }
    }

    /// When the last run completed (RFC 3339), for `mcp_servers.last_discovery`.
    pub fn last_discovery(&self) -> Option<&str> {
        self.last.as_ref().map(|l| l.at.as_str())
    }

    /// Starts a run over `sources` for `query`; `fresh` skips the cache.
    fn begin(
        &mut self,
        cx: &mut RoomCx<'_, Self>,
        sources: Vec<Source>,
        query: String,
        trigger: Trigger,
        reply: Option<ReplyTo>,
        fresh: bool,
    ) {
        let id = self.next_run;
        self.next_run += 1;
        self.runs.insert(
            id,
            Run {
                query: query.clone(),
                reply,
                trigger,
                started: Instant::now(),
                sources: sources.clone(),
                results: BTreeMap::new(),
                ranking: false,
            },
        );
        let now = now_ms();
        for source in sources {
            if !fresh && self.ttl_ms > 0 {
                if let Some(entry) = self.cache.fresh(source, &query, now, self.ttl_ms) {
                    let outcome = Outcome {
                        status: "cached",
                        parsed: entry.parsed.clone(),
                        error: None,
                        elapsed_ms: 0,
                        fetched_at_ms: Some(entry.fetched_at_ms),
                    };
                    self.record(cx, id, source, outcome);
                    continue;
                }
            }
            let key = (source, query.clone());
            if let Some(waiting) = self.fetching.get_mut(&key) {
                waiting.push(id);
                continue;
            }
            self.fetching.insert(key, vec![id]);
            let endpoints = self.endpoints.clone();
            let timeout = self.timeout;
            let rules = self.rules.clone();
            let q = query.clone();
            let q2 = query.clone();
            let submitted = cx.submit(
                timeout + JOB_MARGIN,
                move || {
                    let started = Instant::now();
                    let parsed_query = Query::new(&q, &rules);
                    let result = source::fetch(source, &endpoints, &q, &parsed_query, timeout);
                    Job::Fetched {
                        source,
                        query: q,
                        result,
                        runtimes: Some(runtimes()),
                        elapsed: started.elapsed(),
                    }
                },
                move |why| Job::Fetched {
                    source,
                    query: q2,
                    result: Err(format!("the worker did not run it: {why}")),
                    runtimes: None,
                    elapsed: Duration::ZERO,
                },
            );
            if let Err(job) = submitted {
                self.on_job(cx, job);
            }
        }
        // Every source may have come from the cache.
        self.finish_if_done(cx, id);
    }

    /// One source's outcome for run `id`: its progress event, then the run's end if it was
    /// the last.
    fn record(&mut self, cx: &mut RoomCx<'_, Self>, id: u64, source: Source, outcome: Outcome) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        cx.event(
            Channel::VarietyMonitoring,
            EventData::DiscoveryProgress {
                run: id,
                source: source.name(),
                status: outcome.status,
                found: outcome.parsed.found.len(),
                error: outcome.error.clone(),
                elapsed_ms: outcome.elapsed_ms,
            },
        );
        run.results.insert(source, outcome);
    }

    /// When every source of run `id` is in: its ranking goes to the worker.
    fn finish_if_done(&mut self, cx: &mut RoomCx<'_, Self>, id: u64) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        if run.ranking || !run.sources.iter().all(|s| run.results.contains_key(s)) {
            return;
        }
        run.ranking = true;
        let input = self.rank_input(id);
        let submitted = cx.submit(
            Duration::from_secs(30),
            move || Job::Ranked {
                run: id,
                ranked: input.map(|mut i| {
                    // Looked up here (once per process): a run answered from the cache
                    // alone has not learned them from a source's job.
                    i.runtimes = runtimes();
                    rank(&i)
                }),
            },
            move |_| Job::Ranked {
                run: id,
                ranked: None,
            },
        );
        if let Err(job) = submitted {
            self.on_job(cx, job);
        }
    }

    /// What ranking run `id` needs, shared or copied out of the room.
    fn rank_input(&self, id: u64) -> Option<RankInput> {
        let run = self.runs.get(&id)?;
        Some(RankInput {
            query: run.query.clone(),
            sources: run.sources.clone(),
            results: run.results.clone(),
            started: run.started,
            rules: self.rules.clone(),
            runtimes: self.runtimes.unwrap_or(Runtimes {
                node: true,
                python: true,
            }),
            now_ms: now_ms(),
        })
    }

    /// Run `id` was ranked: its event, its answer.
    fn finished(&mut self, cx: &mut RoomCx<'_, Self>, id: u64, ranked: Option<Ranked>) {
        // The worker did not rank it (stopped, busy or late): the loop does, once.
        let ranked = match ranked {
            Some(r) => r,
            None => match self.rank_input(id) {
                Some(input) => rank(&input),
                None => return,
            },
        };
        let Some(run) = self.runs.remove(&id) else {
            return;
        };
        cx.event(
            Channel::VarietyMonitoring,
            EventData::DiscoveryCompleted {
                run: id,
                trigger: run.trigger.name(),
                query: run.query.clone(),
                candidates: ranked.candidates,
                errors: ranked.errors,
                opportunities: ranked.opportunities,
            },
        );
        self.last = Some(Last {
            at: crate::state::rfc3339_utc_millis(SystemTime::now()),
        });
        if run.trigger == Trigger::Periodic {
            log::info!(
                "discovery: periodic run {id} found {} candidate(s), {} source error(s)",
                ranked.candidates,
                ranked.errors
            );
        }
        if let Some(reply) = run.reply {
            cx.reply(reply, ranked.answer);
        }
    }

    /// Writes the cache file on the worker: one write at a time, the latest state last.
    fn save(&mut self, cx: &mut RoomCx<'_, Self>) {
        if let Saving::Busy { .. } = self.saving {
            self.saving = Saving::Busy { dirty: true };
            return;
        }
        self.saving = Saving::Busy { dirty: false };
        let path = self.state_dir.join(cache::FILE);
        // Each answer is shared: the copy is the map of references.
        let cache = self.cache.clone();
        let submitted = cx.submit(
            Duration::from_secs(30),
            move || Job::CacheSaved(cache::save(&path, &cache)),
            |why| Job::CacheSaved(Err(why.to_string())),
        );
        if let Err(job) = submitted {
            self.on_job(cx, job);
        }
    }

    fn sources_for(&self, source: Option<&str>) -> Result<Vec<Source>, ApiError> {
        let Some(name) = source else {
            if self.sources.is_empty() {
                return Err(ApiError::field(
                    ErrorCode::Conflict,
                    "source",
                    "no discovery source is enabled (mcp_servers.discovery_sources is empty)",
                ));
            }
            return Ok(self.sources.clone());
        };
        match Source::parse(name) {
            Some(s) if self.sources.contains(&s) => Ok(vec![s]),
            Some(_) => Err(ApiError::field(
                ErrorCode::Conflict,
                "source",
                format!(
                    "source '{name}' is not enabled (mcp_servers.discovery_sources: {})",
                    self.sources
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            None => Err(ApiError::field(
                ErrorCode::InvalidParameter,
                "source",
                format!("'{name}' is not one of catalog, registry, npm, github"),
            )),
        }
    }
}

/// Checks a query: trimmed, at most [`source::MAX_QUERY_BYTES`], no control characters.
fn checked_query(query: &str) -> Result<String, ApiError> {
    let q = query.trim();
    if q.len() > source::MAX_QUERY_BYTES {
        return Err(ApiError::field(
            ErrorCode::InvalidParameter,
            "query",
            format!(
                "at most {} bytes (got {})",
                source::MAX_QUERY_BYTES,
                q.len()
            ),
        ));
    }
    if q.chars().any(char::is_control) {
        return Err(ApiError::field(
            ErrorCode::InvalidParameter,
            "query",
            "must not contain control characters",
        ));
    }
    Ok(q.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// What ranking a run needs (sent to the worker).
#[derive(Debug)]
struct RankInput {
    query: String,
    sources: Vec<Source>,
    results: BTreeMap<Source, Outcome>,
    started: Instant,
    rules: Vec<Rule>,
    runtimes: Runtimes,
    now_ms: u64,
}

/// Joins and ranks a finished run's findings into its answer and its event's opportunities.
fn rank(input: &RankInput) -> Ranked {
    let query = Query::new(&input.query, &input.rules);
    let mut skipped: BTreeMap<Source, Skipped> = input
        .results
        .iter()
        .map(|(s, o)| (*s, o.parsed.skipped))
        .collect();
    let findings = input
        .results
        .values()
        .flat_map(|o| o.parsed.found.iter().cloned());
    let today = i64::try_from(input.now_ms / 86_400_000).unwrap_or(0);
    let candidates: Vec<Candidate> = candidate::merge(
        findings,
        &query,
        &input.rules,
        input.runtimes,
        today,
        &mut skipped,
    );
    let sources: Vec<Value> = input
        .sources
        .iter()
        .filter_map(|s| input.results.get(s).map(|o| (s, o)))
        .map(|(s, o)| {
            json!({
                "source": s.name(),
                "status": o.status,
                "found": o.parsed.found.len(),
                "skipped": skipped.get(s).copied().unwrap_or_default(),
                "error": o.error,
                "elapsed_ms": o.elapsed_ms,
                "fetched_at": o.fetched_at_ms.map(|ms| crate::state::rfc3339_utc(
                    SystemTime::UNIX_EPOCH + Duration::from_millis(ms))),
            })
        })
        .collect();
    let opportunities = candidates
        .iter()
        .take(MAX_OPPORTUNITIES)
        .map(|c| Opportunity {
            id: c.id.clone(),
            package: c.package.reference.clone(),
            capabilities: c
                .capabilities
                .iter()
                .map(|b| b.capability.clone())
                .collect(),
            score: c.score,
            sources: c.sources.iter().map(|s| s.name()).collect(),
        })
        .collect();
    let errors = input.results.values().filter(|o| o.error.is_some()).count();
    let count = candidates.len();
    let data = json!({
        "query": input.query,
        "sources": sources,
        "count": count,
        "candidates": candidates,
        "runtimes": input.runtimes,
        "elapsed_ms": u64::try_from(input.started.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    let answered = input.results.values().any(|o| o.error.is_none());
    let answer = if answered {
        Ok(data)
    } else {
        let why: Vec<String> = input
            .results
            .iter()
            .filter_map(|(s, o)| o.error.as_ref().map(|e| format!("{}: {e}", s.name())))
            .collect();
        Err(ApiError::new(
            ErrorCode::UpstreamUnavailable,
            format!("no discovery source answered ({})", why.join("; ")),
        )
        .with_data(data))
    };
    Ranked {
        answer,
        opportunities,
        candidates: count,
        errors,
    }
}

/// Milliseconds since 1970 (the cache outlives the process, so wall-clock time).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The host's runtimes, looked up on PATH once per process (on the worker).
fn runtimes() -> Runtimes {
    static FOUND: std::sync::OnceLock<Runtimes> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        let has = |p: &str| crate::diagnostics::find_in_path(p).is_some();
        Runtimes {
            node: has("node") && has("npx"),
            python: has("python3"),
        }
    })
}

impl Room for Discovery {
    type Timer = Timer;
    type Job = Job;
    type Output = Effect;
    const NAME: &'static str = "discovery";

    /// Takes the configuration, reads the cache file (on the worker) and arms the periodic
    /// refresh.
    fn start(&mut self, cx: &mut RoomCx<'_, Self>, config: &Config) {
        self.take_config(config);
        self.load_and_arm(cx);
    }

    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, timer: Timer) {
        match timer {
            Timer::Refresh => {
                self.refresh = None;
                let busy = self.runs.values().any(|r| r.trigger == Trigger::Periodic);
                // Only the sources that have somewhere to ask: with the defaults (the catalog,
                // no catalog file) the refresh stays quiet instead of logging the same error
                // every interval. A request still names each unconfigured source's error.
                let sources: Vec<Source> = self
                    .sources
                    .iter()
                    .copied()
                    .filter(|s| self.endpoints.configured(*s))
                    .collect();
                if !busy && !sources.is_empty() && self.runs.len() < MAX_RUNS {
                    self.begin(cx, sources, String::new(), Trigger::Periodic, None, true);
                }
                self.arm(cx);
            }
        }
    }

    fn on_job(&mut self, cx: &mut RoomCx<'_, Self>, done: Job) {
        match done {
            Job::CacheLoaded(loaded) => {
                match loaded {
                    Ok(cache) => {
                        let n = cache.len();
                        self.cache.absorb(cache);
                        log::debug!("discovery: {n} cached answer(s) loaded");
                    }
                    Err(why) => {
                        log::warn!("discovery: cache not used ({why}); it will be rewritten");
                    }
                }
                for (sources, query, reply) in self.waiting.take().unwrap_or_default() {
                    // Before the cache file is read, a request waits for it (a worker job
                    // queued ahead of any source's).
                    if let Some(waiting) = &mut self.waiting {
                        if self.runs.len() + waiting.len() >= MAX_RUNS {
                            return cx.reply(
                                reply,
                                Err(ApiError::new(
                                    ErrorCode::Busy,
                                    format!(
                                        "{MAX_RUNS} discoveries are already waiting; try again"
                                    ),
                                )),
                            );
                        }
                        waiting.push((sources, query, reply));
                        return;
                    }
                    self.begin(cx, sources, query, Trigger::Request, Some(reply), false);
                }
            }
            Job::CacheSaved(result) => {
                if let Err(why) = result {
                    log::warn!("discovery: cache not written: {why}");
                }
                let again = self.saving == Saving::Busy { dirty: true };
                self.saving = Saving::Idle;
                if again {
                    self.save(cx);
                }
            }
            Job::Ranked { run, ranked } => self.finished(cx, run, ranked),
            Job::Fetched {
                source,
                query,
                result,
                runtimes,
                elapsed,
            } => {
                if runtimes.is_some() {
                    self.runtimes = runtimes;
                }
                let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                let now = now_ms();
                let outcome = match result {
                    Ok(parsed) => {
                        let parsed = Arc::new(parsed);
                        self.cache.put(source, &query, now, parsed.clone());
                        self.save(cx);
                        Outcome {
                            status: "ok",
                            parsed,
                            error: None,
                            elapsed_ms,
                            fetched_at_ms: Some(now),
                        }
                    }
                    Err(e) => {
                        log::debug!("discovery: {}: {e}", source.name());
                        Outcome {
                            status: "error",
                            parsed: Arc::new(Parsed::default()),
                            error: Some(e),
                            elapsed_ms,
                            fetched_at_ms: None,
                        }
                    }
                };
                let waiting = self.fetching.remove(&(source, query)).unwrap_or_default();
                let ids: BTreeSet<u64> = waiting.into_iter().collect();
                for id in ids {
                    self.record(cx, id, source, outcome.clone());
                    self.finish_if_done(cx, id);
                }
            }
        }
    }

    fn apply_config(&mut self, cx: &mut RoomCx<'_, Self>, config: &Config) {
        let every = self.every_ms;
        self.take_config(config);
        if every != self.every_ms {
            self.arm(cx);
        }
    }
}

impl Serve for Discovery {
    type Request = DiscoveryRequest;

    fn handle(&mut self, cx: &mut RoomCx<'_, Self>, request: DiscoveryRequest, reply: ReplyTo) {
        match request {
            DiscoveryRequest::Discover { source, query } => {
                let checked =
                    checked_query(&query).and_then(|q| Ok((self.sources_for(source)?, q)));
                let (sources, query) = match checked {
                    Ok(ok) => ok,
                    Err(e) => return cx.reply(reply, Err(e)),
                };
                // Nowhere to ask is the configuration's state, not a failure of the sources.
                if !sources.iter().any(|s| self.endpoints.configured(*s)) {
                    let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
                    return cx.reply(
                        reply,
                        Err(ApiError::new(
                            ErrorCode::Conflict,
                            format!(
                                "no discovery source has an address: {} (set mcp_servers.catalog_file, registry_url or github_api_url)",
                                names.join(", ")
                            ),
                        )),
                    );
                }
                if self.runs.len() >= MAX_RUNS {
                    return cx.reply(
                        reply,
                        Err(ApiError::new(
                            ErrorCode::Busy,
                            format!("{MAX_RUNS} discoveries are already running; try again"),
                        )),
                    );
                }
                self.begin(cx, sources, query, Trigger::Request, Some(reply), false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candidates are mapped with the configured rules too, and a change applies.
    #[test]
    fn configured_rules_extend_the_built_in_ones() {
        let mut config = Config::default();
        let room = Discovery::new(&config, PathBuf::from("/nonexistent"));
        assert_eq!(room.rules, capability::builtin());
        config
            .variety
            .rules
            .push(crate::variety::required::RuleSpec {
                capability: "weather".into(),
                keywords: vec!["forecast".into()],
            });
        let mut room = room;
        room.take_config(&config);
        assert_eq!(room.rules.len(), capability::builtin().len() + 1);
        assert!(room
            .rules
            .iter()
            .any(|r| r.capability == "weather" && r.keywords == ["forecast"]));
    }
}
