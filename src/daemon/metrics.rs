//! Metrics: loop statistics, the JSON views and the Prometheus exposition, built from the
//! daemon's state at request time.

use super::*;
use crate::net::slots::Reason;
use crate::snapshot;

/// Per-reason connection counters as a JSON object.
fn reasons(counts: &[u64; 2]) -> Value {
    let mut m = Map::new();
    for r in Reason::ALL {
        m.insert(r.label().to_string(), json!(counts[r.index()]));
    }
    Value::Object(m)
}

impl Daemon {
    pub(super) fn loop_stats(&self, stats: &LoopStats, timers: usize) -> Value {
        let rss = monitor::performance::own_rss_bytes();
        let (voluntary, nonvoluntary) = monitor::performance::own_ctxt_switches();
        let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
        json!({
            "wakeups": stats.wakeups,
            "events": stats.events,
            "timers_fired": stats.timers_fired,
            "timers_armed": timers,
            "signals": stats.signals,
            "wakes": stats.wakes,
            "connections": self.server.open_connections(),
            "connections_accepted": self.server.accepted,
            "connections_refused_over_limit": self.server.refused_over_limit,
            "connections_tcp": self.server.open_on(net::Via::Tcp),
            "connections_unix": self.server.open_on(net::Via::Unix),
            "connections_evicted": reasons(&self.server.evicted),
            "connections_refused": reasons(&self.server.refused),
            "connections_unsent_peak_bytes": self.server.unsent_peak,
            "log_followers": self.followers.len(),
            "pending_jobs": self.jobs.len(),
            "children_reaped": self.reaped,
            "rss_bytes": rss,
            "open_fds": fds,
            "voluntary_ctxt_switches": voluntary,
            "nonvoluntary_ctxt_switches": nonvoluntary,
        })
    }

    /// `GET /api/v1/metrics[/performance|/health]`: the wiring's entries (the process, the
    /// host, request telemetry, the loop, connections) and the rooms' ([`Room::view`]).
    pub(super) fn metrics(&self, cx: &Cx<'_, Timer>, view: &str) -> Value {
        let performance = || {
            let mut out = Map::new();
            out.insert(
                "process".into(),
                monitor::performance::own_process().to_json(),
            );
            out.insert("host".into(), monitor::performance::host().to_json());
            out.insert("requests".into(), self.telemetry.performance_json());
            out.insert(
                "event_loop".into(),
                json!({"wakeups": cx.stats.wakeups, "events": cx.stats.events,
                       "timers_armed": cx.timers.len()}),
            );
            self.rooms_view(crate::room::View::Performance, &mut out);
            Value::Object(out)
        };
        let health = || {
            let mut out = Map::new();
            self.rooms_view(crate::room::View::Health, &mut out);
            Value::Object(out)
        };
        match view {
            "performance" => performance(),
            "health" => health(),
            _ => json!({
                "uptime_seconds": self.started.elapsed().as_secs(),
                "performance": performance(),
                "health": health(),
                "connections": {"open": self.server.open_connections(), "websocket_clients": self.server.ws_clients()},
                "events": {"last_seq": self.events.last_seq()},
            }),
        }
    }

    /// `GET /metrics`: Prometheus text exposition.
    pub(super) fn prometheus(&self, cx: &Cx<'_, Timer>) -> String {
        use crate::telemetry::Exposition;
        let process = monitor::performance::own_process();
        let host = monitor::performance::host_full();
        let mut e = Exposition::new();
        monitor::performance::write_prometheus(
            &host,
            self.rooms.alerts.firing_by_severity(),
            &mut e,
        );
        let none: &[(&str, &str)] = &[];
        e.gauge("vsm_up", "1 while the daemon runs.", &[(none, 1.0)]);
        e.gauge(
            "vsm_uptime_seconds",
            "Seconds since the daemon started.",
            &[(none, self.started.elapsed().as_secs_f64())],
        );
        e.gauge(
            "vsm_process_resident_memory_bytes",
            "Resident memory of the daemon.",
            &[(none, process.rss_bytes as f64)],
        );
        e.counter(
            "vsm_process_cpu_seconds_total",
            "CPU time of the daemon (user + system).",
            &[(none, process.cpu_seconds)],
        );
        e.gauge(
            "vsm_process_open_fds",
            "Open file descriptors of the daemon.",
            &[(none, process.open_fds as f64)],
        );
        e.gauge(
            "vsm_host_load1",
            "Host 1-minute load average.",
            &[(none, host.load[0])],
        );
        e.gauge(
            "vsm_host_memory_available_bytes",
            "Host available memory.",
            &[(none, host.mem_available_bytes as f64)],
        );
        e.gauge(
            "vsm_host_memory_total_bytes",
            "Host total memory.",
            &[(none, host.mem_total_bytes as f64)],
        );
        e.counter(
            "vsm_event_loop_wakeups_total",
            "Returns from the event loop's poll.",
            &[(none, cx.stats.wakeups as f64)],
        );
        e.gauge(
            "vsm_timers_armed",
            "Timers armed on the timer wheel.",
            &[(none, cx.timers.len() as f64)],
        );
        e.gauge(
            "vsm_connections",
            "Open HTTP and WebSocket connections.",
            &[(none, self.server.open_connections() as f64)],
        );
        let slot_labels = Reason::ALL.map(|r| [("reason", r.label())]);
        for (name, help, counts) in [
            (
                "vsm_http_connections_evicted_total",
                "Waiting connections closed to make room for a new one, by reason (peer_limit, listener_full).",
                &self.server.evicted,
            ),
            (
                "vsm_http_connections_refused_total",
                "New connections refused with 503, by reason (peer_limit, listener_full).",
                &self.server.refused,
            ),
        ] {
            let samples: Vec<(&[(&str, &str)], f64)> = Reason::ALL
                .iter()
                .map(|r| (&slot_labels[r.index()][..], counts[r.index()] as f64))
                .collect();
            e.counter(name, help, &samples);
        }
        e.gauge(
            "vsm_ws_clients",
            "Connected WebSocket clients.",
            &[(none, self.server.ws_clients() as f64)],
        );
        // The rooms' own series (components, MCP servers, checks, ...), from the room list.
        self.rooms_metrics(&mut e);
        self.telemetry.write_prometheus(&mut e);
        e.finish()
    }
}

/// `GET /api/v1/status`.
impl Daemon {
    /// `GET /api/v1/status` composed from the rooms' typed parts ([`rooms::Status`]): over HTTP
    /// it is serialized once, straight into the answer.
    pub(super) fn answer_status(&mut self, cx: &mut Cx<'_, Timer>, reply: ReplyTo, detailed: bool) {
        let snapshot = self.status(cx, detailed);
        let http = matches!(reply, ReplyTo::Http { .. });
        let encoded = http.then(|| serde_json::to_vec(&snapshot).ok()).flatten();
        let answer = encoded.is_none().then(|| {
            serde_json::to_value(&snapshot)
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("status: {e}")))
        });
        drop(snapshot);
        let reply = match encoded {
            Some(data) => self.answer_serialized(cx, reply, &data),
            None => Some(reply),
        };
        if let (Some(reply), Some(answer)) = (reply, answer) {
            self.answer(cx, reply, answer);
        }
    }

    fn status(&self, cx: &Cx<'_, Timer>, detailed: bool) -> rooms::Status<'_> {
        let daemon = snapshot::Daemon {
            auth: self
                .access
                .token
                .as_ref()
                .map_or("none", |t| t.source.kind()),
            config_source: self.rooms.settings.source().into(),
            config_warning: self.rooms.settings.problem(),
            http_listen: self.tcp_addr.map(|a| a.to_string()),
            pid: std::process::id(),
            pid_file: self.pid_file.to_string_lossy(),
            socket: self.socket_path.to_string_lossy(),
            started_at: state::rfc3339_utc(self.started_at),
            state_dir: self.state.path().to_string_lossy(),
            status: if self.stopping.is_some() {
                "stopping"
            } else {
                "running"
            },
            uptime_seconds: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION"),
        };
        let loop_stats = detailed.then(|| self.loop_stats(cx.stats, cx.timers.len()));
        self.rooms_status(daemon, loop_stats)
    }
}
