//! Events: what happened, with a type, a timestamp and data, kept in a bounded history ring
//! for `GET /api/v1/events` and the reflection analysers, and fanned out to subscribers
//! (WebSocket clients, SSE streams) by the transports.
//!
//! Events are typed: each goes on one [`Channel`] (the WebSocket channels, one enum, so a
//! subscription and a producer cannot disagree on a name) and carries an [`EventData`]
//! variant, whose fields are the event's `data`. An event is serialized at most once, when
//! something first reads it ([`Event::wire`]: a WebSocket subscriber when it is published, a
//! history query, an SSE stream), and that text is kept beside the typed data: most events
//! (a tool call's, on a daemon nobody watches) are never serialized at all.
//!
//! Invariant: the history holds at most `capacity` events; every event gets a sequence number
//! so a reader that fell behind knows how many it missed. The servers' chatter (progress, log
//! messages, resource updates: [`EventData::is_chatter`], up to 50 a second per server) is
//! kept apart, at most [`CHATTER_HISTORY`] of it, so that a busy server cannot push the
//! events an operator looks back at (status changes, alerts, acquisitions) out of the history;
//! readers see both, in sequence order, and "missed" counts only the main history.

use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::time::SystemTime;

macro_rules! channels {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, silent: $silent:literal; )*) => {
        /// A channel a WebSocket client subscribes to, and that every event belongs to.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Channel {
            $( $(#[$doc])* $variant, )*
        }

        impl Channel {
            /// Every channel, in the order the `connected` message lists them.
            pub const ALL: &'static [Channel] = &[$( Channel::$variant, )*];

            /// Its name on the wire.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Channel::$variant => $name, )*
                }
            }

            /// No producer publishes on it yet (the `connected` message says so, so that a
            /// quiet subscription is not mistaken for a quiet system). Take the mark off in
            /// the change that makes it carry events.
            pub const fn silent(self) -> bool {
                match self {
                    $( Channel::$variant => $silent, )*
                }
            }

            /// The channel of that name.
            pub fn parse(name: &str) -> Option<Channel> {
                match name {
                    $( $name => Some(Channel::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

channels! {
    /// MCP servers: registration, status changes, tools, progress.
    McpServers = "mcp_servers", silent: false;
    /// Performance measurements and their alerts.
    Performance = "performance", silent: false;
    /// Health of the daemon's components and the host.
    Health = "health", silent: false;
    /// Security signals.
    Security = "security", silent: false;
    /// The variety model: gaps, acquisitions.
    VarietyMonitoring = "variety_monitoring", silent: false;
    /// The daemon's log records (sent from the log ring, not the event history).
    Logs = "logs", silent: false;
    /// Reflection's insights.
    Consciousness = "consciousness", silent: false;
}

impl Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What happened: one variant per kind of event; its fields are the event's `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventData {
    /// `mcp_server_registered`.
    McpServerRegistered {
        /// The server.
        server_id: String,
        /// `api` or `config`.
        source: &'static str,
    },
    /// `mcp_server_unregistered`.
    McpServerUnregistered {
        /// The server.
        server_id: String,
    },
    /// `mcp_server_status_change`.
    McpServerStatusChange {
        /// The server.
        server_id: String,
        /// Status before.
        old_status: &'static str,
        /// Status now.
        new_status: &'static str,
        /// Why (bounded).
        reason: String,
        /// The capabilities the server declares (what a gap analysis needs to know went).
        capabilities: Vec<String>,
    },
    /// `mcp_server_tools_changed`.
    McpServerToolsChanged {
        /// The server.
        server_id: String,
        /// The first tool names, bounded and truncated.
        tools: Vec<String>,
        /// How many tools it has.
        count: usize,
    },
    /// `mcp_server_list_changed`: a complete listing changed one of a server's other lists
    /// (its resources, resource templates or prompts).
    McpServerListChanged {
        /// The server.
        server_id: String,
        /// `resources`, `resource_templates` or `prompts`.
        list: &'static str,
        /// How many items it has now.
        count: usize,
    },
    /// `mcp_tool_progress`: a server reported progress on one of our calls.
    McpToolProgress {
        /// The server.
        server_id: String,
        /// The call's progress token.
        progress_token: String,
        /// Progress so far (a JSON number, or null).
        progress: Value,
        /// Total, when known (a JSON number, or null).
        total: Value,
        /// The server's message, bounded.
        message: Option<String>,
    },
    /// `mcp_server_log`: a server's `notifications/message` (rate-limited per server; its
    /// `data` bounded), which `/mcp` passes on to the client sessions that asked for its level.
    McpServerLog {
        /// The server.
        server_id: String,
        /// One of the eight RFC 5424 level names.
        level: &'static str,
        /// The server's logger name, bounded, if it gave one.
        logger: Option<String>,
        /// The message's data, as the server sent it when small, otherwise a truncated text.
        data: Value,
    },
    /// `mcp_resource_updated`: a server's `notifications/resources/updated`, which `/mcp`
    /// passes on to the client sessions subscribed to that URI.
    McpResourceUpdated {
        /// The server.
        server_id: String,
        /// The resource's URI, bounded.
        uri: String,
    },
    /// `capability_acquisition_progress`: a step of an acquisition ended.
    CapabilityAcquisitionProgress {
        /// The acquisition (`acq-N`).
        acquisition_id: String,
        /// The package.
        package: String,
        /// The step that ended.
        step: &'static str,
        /// The step that starts.
        next_step: &'static str,
        /// Share of the steps done, 0–1.
        progress: f64,
        /// What the step found.
        message: String,
    },
    /// `capability_acquired`: a package was installed, vetted, registered and is active.
    CapabilityAcquired {
        /// The acquisition.
        acquisition_id: String,
        /// The package.
        package: String,
        /// The server it became.
        server_id: String,
        /// Its first capability (the seed's single `capability`).
        capability: Option<String>,
        /// Every capability it provides.
        capabilities: Vec<String>,
        /// Its tools.
        tools: usize,
        /// Its security score (absent when scoring is off).
        security_score: Option<u64>,
    },
    /// `capability_acquisition_failed`: an acquisition failed or was refused; nothing of it
    /// stays installed or registered.
    CapabilityAcquisitionFailed {
        /// The acquisition.
        acquisition_id: String,
        /// The package.
        package: String,
        /// The step it failed at.
        step: &'static str,
        /// Why.
        reason: String,
        /// Every refusal reason (empty for a failure).
        reasons: Vec<String>,
    },
    /// `acquisition_decision`: the assessment's verdict (kept as a decision record).
    AcquisitionDecision {
        /// The decision record's id.
        decision_id: u64,
        /// The acquisition.
        acquisition_id: String,
        /// The package.
        package: String,
        /// `approved` or `refused`.
        verdict: &'static str,
        /// The score (absent when scoring is off).
        score: Option<u8>,
        /// Why it was refused.
        reasons: Vec<String>,
    },
    /// `discovery_progress`: one discovery source finished for a run.
    DiscoveryProgress {
        /// The run.
        run: u64,
        /// The source (`catalog`, `registry`, `npm`, `github`).
        source: &'static str,
        /// `ok` (asked now), `cached` or `error`.
        status: &'static str,
        /// Findings it gave.
        found: usize,
        /// Why it gave none.
        error: Option<String>,
        /// How long it took.
        elapsed_ms: u64,
    },
    /// `discovery_completed`: a discovery run ended; its best candidates are the
    /// opportunities other rooms follow.
    DiscoveryCompleted {
        /// The run.
        run: u64,
        /// `request` or `periodic`.
        trigger: &'static str,
        /// What was looked for (empty: everything).
        query: String,
        /// Candidates found.
        candidates: usize,
        /// Sources that failed.
        errors: usize,
        /// The best candidates, ranked (bounded).
        opportunities: Vec<Opportunity>,
    },
    /// `tool_call_blocked`: a tool call was refused by the capability policy.
    ToolCallBlocked {
        /// The server.
        server_id: String,
        /// The tool (bounded).
        tool: String,
        /// The blocked capabilities it maps to.
        capabilities: Vec<String>,
    },
    /// `variety_updated`: an analysis ran.
    VarietyUpdated {
        /// The ratio.
        variety_ratio: f64,
        /// Open gaps.
        gap_count: usize,
        /// Their capabilities, most severe first.
        gaps: Vec<String>,
        /// Those of them no registered server could close (their remedy is acquiring one),
        /// in the same order: what the autonomous cycle may act on.
        acquirable: Vec<String>,
        /// Required capabilities.
        required_count: usize,
        /// Required capabilities with an active provider.
        provided_count: usize,
        /// Threats.
        threat_count: usize,
        /// What ran it: `start`, `timer`, `servers`, `request`.
        trigger: &'static str,
    },
    /// `variety_gap_detected`: a required capability lost its last active provider (or was
    /// required without one), with the seed's fields.
    VarietyGapDetected {
        /// `capability`.
        gap_type: &'static str,
        /// low, medium, high or critical.
        severity: &'static str,
        /// For people.
        description: String,
        /// `start_mcp_server`, `reset_mcp_server` or `acquire_mcp_server`.
        recommended_action: &'static str,
        /// The capability.
        capability: String,
        /// What would close it.
        closes_with: String,
    },
    /// `mcp_tool_call`: a tool call ended (answered, failed or timed out), with how long it
    /// took. What the VSM room counts as System 1's operations and the reflection room reads
    /// latencies and error bursts from.
    McpToolCall {
        /// The server.
        server_id: String,
        /// The tool.
        tool: String,
        /// `ok`, `tool_error`, `mcp_error`, `timeout`, `cancelled` (by its caller: a `/mcp`
        /// client) or `server_exited`.
        outcome: &'static str,
        /// From the request going out to its end, in milliseconds.
        latency_ms: f64,
    },
    /// `mcp_server_start_refused`: a start was refused because
    /// `mcp_servers.max_concurrent_servers` servers run already (one of System 2's damping
    /// acts).
    McpServerStartRefused {
        /// The server.
        server_id: String,
        /// Why.
        reason: String,
    },
    /// `monitoring_cycle_completed`: one of the built-in audit cycles (the health round's or
    /// the performance cycle's readings) was taken and judged.
    MonitoringCycleCompleted {
        /// `health` or `performance`.
        cycle: &'static str,
        /// Readings judged.
        readings: usize,
        /// Loop time it held, in milliseconds.
        took_ms: f64,
    },
    /// `sandbox_denied`: an MCP server running under Landlock wrote a line to stderr saying
    /// an operation was refused (`Permission denied`, `Operation not permitted`): its sandbox
    /// kept it from something. At most one per server per 10 s.
    SandboxDenied {
        /// The server.
        server_id: String,
        /// The evidence: the stderr line (bounded).
        line: String,
        /// Further denial lines of the server held back by the rate limit since the last one.
        suppressed: u64,
    },
    /// An event a room publishes in the untyped form (`RoomCx::publish`) until it gives the
    /// kind a variant here: its type and data as given.
    Other {
        /// The event type.
        #[serde(skip)]
        kind: &'static str,
        /// Its data.
        #[serde(flatten)]
        data: Value,
    },
}

/// Chatter events kept at most (see [`EventData::is_chatter`]).
pub const CHATTER_HISTORY: usize = 256;

impl EventData {
    /// Whether it is a server's chatter: frequent, live, and worth little once old (progress
    /// of a call, a log message, a resource changed). Kept apart from the main history.
    pub fn is_chatter(&self) -> bool {
        matches!(
            self,
            EventData::McpToolProgress { .. }
                | EventData::McpServerLog { .. }
                | EventData::McpResourceUpdated { .. }
        )
    }

    /// The event type on the wire (`type`).
    pub fn kind(&self) -> &'static str {
        match self {
            EventData::McpServerRegistered { .. } => "mcp_server_registered",
            EventData::McpServerUnregistered { .. } => "mcp_server_unregistered",
            EventData::McpServerStatusChange { .. } => "mcp_server_status_change",
            EventData::McpServerToolsChanged { .. } => "mcp_server_tools_changed",
            EventData::McpToolProgress { .. } => "mcp_tool_progress",
            EventData::McpServerListChanged { .. } => "mcp_server_list_changed",
            EventData::McpServerLog { .. } => "mcp_server_log",
            EventData::McpResourceUpdated { .. } => "mcp_resource_updated",
            EventData::CapabilityAcquisitionProgress { .. } => "capability_acquisition_progress",
            EventData::CapabilityAcquired { .. } => "capability_acquired",
            EventData::CapabilityAcquisitionFailed { .. } => "capability_acquisition_failed",
            EventData::AcquisitionDecision { .. } => "acquisition_decision",
            EventData::DiscoveryProgress { .. } => "discovery_progress",
            EventData::DiscoveryCompleted { .. } => "discovery_completed",
            EventData::ToolCallBlocked { .. } => "tool_call_blocked",
            EventData::VarietyUpdated { .. } => "variety_updated",
            EventData::VarietyGapDetected { .. } => "variety_gap_detected",
            EventData::McpToolCall { .. } => "mcp_tool_call",
            EventData::McpServerStartRefused { .. } => "mcp_server_start_refused",
            EventData::MonitoringCycleCompleted { .. } => "monitoring_cycle_completed",
            EventData::SandboxDenied { .. } => "sandbox_denied",
            EventData::Other { kind, .. } => kind,
        }
    }
}

/// A candidate server a discovery run found, as its `discovery_completed` event names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Opportunity {
    /// `REGISTRY:NAME`.
    pub id: String,
    /// The exact package (`npm:NAME@VERSION`, `pypi:NAME==VERSION`).
    pub package: String,
    /// Capabilities it would bring.
    pub capabilities: Vec<String>,
    /// Its rank score.
    pub score: u32,
    /// Sources that found it.
    pub sources: Vec<&'static str>,
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Sequence number, strictly increasing.
    pub seq: u64,
    /// Event type such as `mcp_server_status_change` (`data.kind()`).
    pub kind: &'static str,
    /// The channel it belongs to.
    pub channel: Channel,
    /// When it happened.
    pub time: SystemTime,
    /// What happened.
    data: EventData,
    /// The wire form, made when it is first asked for.
    wire: std::cell::OnceCell<String>,
}

/// The wire form of the seed (`{"type", "timestamp", "data"}`) plus `seq` and `channel`.
#[derive(Serialize)]
struct Wire<'a> {
    seq: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    channel: Channel,
    timestamp: &'a str,
    data: &'a EventData,
}

impl Event {
    fn new(seq: u64, channel: Channel, data: EventData) -> Event {
        Event {
            seq,
            kind: data.kind(),
            channel,
            time: SystemTime::now(),
            data,
            wire: std::cell::OnceCell::new(),
        }
    }

    /// The event as it goes out (one JSON object), serialized the first time it is asked for.
    pub fn wire(&self) -> &str {
        self.wire.get_or_init(|| {
            let wire = Wire {
                seq: self.seq,
                kind: self.kind,
                channel: self.channel,
                timestamp: &crate::state::rfc3339_utc_millis(self.time),
                data: &self.data,
            };
            // Strings, numbers and JSON values only: serializing cannot fail. `Other` data
            // that is not an object would, so it is checked where it is made
            // (`EventLog::publish`).
            serde_json::to_string(&wire).unwrap_or_default()
        })
    }

    /// What happened, typed.
    pub fn data(&self) -> &EventData {
        &self.data
    }

    /// The wire form as a JSON value (for answers that embed events).
    pub fn to_json(&self) -> Value {
        serde_json::from_str(self.wire()).unwrap_or(Value::Null)
    }
}

/// Bounded history of events.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Event>,
    /// The chatter, newest last (at most [`CHATTER_HISTORY`], and never more than `capacity`).
    chatter: VecDeque<Event>,
    capacity: usize,
    next_seq: u64,
}

impl EventLog {
    /// An empty log holding at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        EventLog {
            events: VecDeque::new(),
            chatter: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    /// Records an event and returns it.
    pub fn publish(&mut self, channel: Channel, data: EventData) -> &Event {
        let data = match data {
            // Flattened data must be an object; anything else goes under `value`.
            EventData::Other { kind, data } if !data.is_object() => EventData::Other {
                kind,
                data: serde_json::json!({ "value": data }),
            },
            data => data,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let (ring, capacity) = if data.is_chatter() {
            (&mut self.chatter, CHATTER_HISTORY.min(self.capacity))
        } else {
            (&mut self.events, self.capacity)
        };
        while ring.len() >= capacity {
            ring.pop_front();
        }
        ring.push_back(Event::new(seq, channel, data));
        &ring[ring.len() - 1]
    }

    /// Event `seq` while it is the newest of its history (`None` once a later one was
    /// recorded there).
    pub fn newest(&self, seq: u64) -> Option<&Event> {
        [&self.events, &self.chatter]
            .into_iter()
            .find_map(|ring| ring.back().filter(|e| e.seq == seq))
    }

    /// Sequence number of the newest event (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Sequence number of the oldest event of the main history (chatter is not counted: a
    /// reader behind it has not missed what matters).
    pub fn first_seq(&self) -> u64 {
        self.events.front().map_or(self.next_seq, |e| e.seq)
    }

    /// Events with `seq > after` that pass `keep`, the newest `limit` of them, oldest first.
    /// Both histories are read newest first and merged by sequence number.
    pub fn query(&self, after: u64, limit: usize, keep: impl Fn(&Event) -> bool) -> Vec<&Event> {
        let mut main = self
            .events
            .iter()
            .rev()
            .take_while(|e| e.seq > after)
            .peekable();
        let mut chatter = self
            .chatter
            .iter()
            .rev()
            .take_while(|e| e.seq > after)
            .peekable();
        let mut out: Vec<&Event> = Vec::new();
        while out.len() < limit {
            let next = match (main.peek(), chatter.peek()) {
                (Some(a), Some(b)) if a.seq > b.seq => main.next(),
                (Some(_), Some(_)) | (None, Some(_)) => chatter.next(),
                (Some(_), None) => main.next(),
                (None, None) => break,
            };
            if let Some(e) = next.filter(|e| keep(e)) {
                out.push(e);
            }
        }
        out.reverse();
        out
    }

    /// Changes the capacity, dropping the oldest events if it shrinks.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.events.len() > self.capacity {
            self.events.pop_front();
        }
        while self.chatter.len() > CHATTER_HISTORY.min(self.capacity) {
            self.chatter.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    fn other(i: u64) -> EventData {
        EventData::Other {
            kind: "x",
            data: json!({ "i": i }),
        }
    }

    fn progress(i: u64) -> EventData {
        EventData::McpToolProgress {
            server_id: "s".into(),
            progress_token: "t".into(),
            progress: json!(i),
            total: Value::Null,
            message: None,
        }
    }

    /// The rooms read an event just published from the history, in either ring, as long
    /// as nothing was recorded after it there.
    #[test]
    fn the_newest_event_is_found_in_its_own_history() {
        let mut log = EventLog::new(1);
        let seq = log.publish(Channel::McpServers, other(1)).seq;
        assert_eq!(log.newest(seq).map(Event::data), Some(&other(1)));
        let chatter = log.publish(Channel::McpServers, progress(1)).seq;
        assert_eq!(
            log.newest(chatter).map(|e| e.kind),
            Some("mcp_tool_progress")
        );
        assert!(log.newest(seq).is_some(), "chatter is kept apart");
        log.publish(Channel::McpServers, other(2));
        assert!(log.newest(seq).is_none());
        assert!(log.newest(chatter + 1).is_some());
    }

    #[test]
    fn chatter_is_kept_apart_and_read_in_sequence_with_the_rest() {
        let mut log = EventLog::new(CHATTER_HISTORY + 4);
        log.publish(Channel::McpServers, other(1));
        for i in 0..(CHATTER_HISTORY as u64 + 10) {
            log.publish(Channel::McpServers, progress(i));
        }
        log.publish(Channel::McpServers, other(2));
        // The two ordinary events are still there, however much chatter came between them.
        let kept = log.query(0, usize::MAX, |e| e.kind == "x");
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].seq, 1);
        assert_eq!(log.first_seq(), 1, "missed counts the main history only");
        let all = log.query(0, usize::MAX, |_| true);
        assert_eq!(all.len(), 2 + CHATTER_HISTORY);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "in sequence");
        assert_eq!(all.last().map(|e| e.kind), Some("x"));
        // The newest `limit`, oldest first, across both.
        let newest = log.query(0, 3, |_| true);
        let seqs: Vec<u64> = newest.iter().map(|e| e.seq).collect();
        let last = log.last_seq();
        assert_eq!(seqs, vec![last - 2, last - 1, last]);
        assert_eq!(log.query(last - 1, 10, |_| true).len(), 1);
        log.set_capacity(2);
        assert_eq!(
            log.query(0, usize::MAX, |_| true).len(),
            4,
            "2 + 2 of chatter"
        );
    }

    #[test]
    fn bounded_and_sequenced() {
        let mut log = EventLog::new(2);
        for i in 0..3 {
            log.publish(Channel::McpServers, other(i));
        }
        assert_eq!(log.last_seq(), 3);
        let all = log.query(0, 10, |_| true);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(log.query(2, 10, |_| true).len(), 1);
        assert_eq!(all[0].to_json()["type"], "x");
    }

    #[test]
    fn an_event_goes_out_as_the_seed_says_serialized_once() {
        let mut log = EventLog::new(4);
        let event = log.publish(
            Channel::McpServers,
            EventData::McpServerStatusChange {
                server_id: "t".into(),
                old_status: "starting",
                new_status: "active",
                reason: "ready".into(),
                capabilities: vec!["time".into()],
            },
        );
        assert!(event.wire.get().is_none(), "not serialized until asked for");
        let v: Value = serde_json::from_str(event.wire()).expect("json");
        assert!(std::ptr::eq(event.wire(), event.wire()), "serialized once");
        assert_eq!(v["type"], "mcp_server_status_change");
        assert_eq!(v["channel"], "mcp_servers");
        assert_eq!(v["seq"], 1);
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{v}"
        );
        assert_eq!(
            v["data"],
            json!({"server_id": "t", "old_status": "starting", "new_status": "active",
                   "reason": "ready", "capabilities": ["time"]})
        );
        assert_eq!(event.to_json(), v);
        // Untyped data keeps its type and fields; a bare value is wrapped.
        let v = log.publish(Channel::Health, other(7)).to_json();
        assert_eq!(
            (&v["type"], &v["channel"], &v["data"]),
            (&json!("x"), &json!("health"), &json!({"i": 7}))
        );
        let bare = EventData::Other {
            kind: "y",
            data: json!(3),
        };
        assert_eq!(
            log.publish(Channel::Health, bare).to_json()["data"],
            json!({"value": 3})
        );
    }

    #[test]
    fn every_channel_has_one_name() {
        let mut names: Vec<&str> = Channel::ALL.iter().map(|c| c.name()).collect();
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.name()), Some(*c));
            assert_eq!(serde_json::to_value(c).expect("name"), json!(c.name()));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Channel::ALL.len());
        assert_eq!(Channel::parse("system"), None);
    }
}
