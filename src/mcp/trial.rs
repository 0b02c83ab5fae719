//! A sandboxed trial of a spec that is not registered: the acquisition pipeline's test of a
//! freshly installed package, run by the same machinery as every server (spawn in the
//! sandbox, handshake, tool listing, stderr kept), so there is one MCP client, not two.
//!
//! A trial registers its spec in memory only ([`Source::Trial`]: never in `servers.json`,
//! never offered by the gateway), starts it, and settles at the first of: the server became
//! `active` (handshake done, tools listed), its start failed (`backoff`, `failed`, `stopped`:
//! no retry is waited for), it was unregistered by someone else, or its deadline passed. The
//! answer is what the server showed (tools, server info, stderr tail, Landlock status, history,
//! errors) and how the trial ended; then the server is unregistered (stopped gracefully when it
//! runs). A trial's answer is always `Ok`: the asker judges what the child did.
//!
//! Invariants: at most [`MAX_TRIALS`] trials at once; each settles exactly once (its entry is
//! removed before anything else is done); the settling is driven by the room's own status
//! events ([`Mcp::trial_event`]), so it never re-enters the supervisor.

use super::*;

/// Trials at once at most.
pub const MAX_TRIALS: usize = 4;

/// A trial waiting to settle.
#[derive(Debug)]
pub struct Trial {
    reply: ReplyTo,
    timer: Option<TimerId>,
    started: Instant,
    timeout_ms: u64,
}

/// Trials in flight, by server id.
pub type Trials = BTreeMap<String, Trial>;

impl Mcp {
    /// Starts a trial of `spec` within `timeout_ms`; the answer goes to `reply` when it settles.
    ///
    /// # Errors
    /// An invalid spec or a taken id (as registration), too many trials (`busy`).
    pub(super) fn begin_trial(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        mut spec: ServerSpec,
        timeout_ms: u64,
        reply: ReplyTo,
        out: &mut Vec<Output>,
    ) -> Result<(), ApiError> {
        if self.trials.len() >= MAX_TRIALS {
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!("{MAX_TRIALS} sandbox trials are running already"),
            ));
        }
        spec.autostart = true;
        let id = spec.id.clone();
        self.register(cx, spec, Source::Trial, true, out)?;
        let Some(server) = self.servers.get(&id) else {
            return Err(ApiError::new(ErrorCode::Internal, "trial server vanished"));
        };
        let timer = cx.timers.insert(
            Instant::now() + Duration::from_millis(timeout_ms),
            Timer {
                slot: server.slot,
                run: 0,
                kind: TimerKind::Trial,
            },
        );
        let status = server.status;
        self.trials.insert(
            id.clone(),
            Trial {
                reply,
                timer: Some(timer),
                started: Instant::now(),
                timeout_ms,
            },
        );
        // A start refused at once (at the concurrency limit, a missing command) leaves it
        // `registered` or already ended: settle now rather than wait for the deadline.
        if !matches!(
            status,
            Status::Starting | Status::Initializing | Status::Active
        ) {
            let reason = self
                .servers
                .get(&id)
                .and_then(|s| s.last_errors.back().map(|(_, e)| e.clone()))
                .unwrap_or_else(|| format!("not started ({})", status.as_str()));
            self.settle_trial(cx, &id, "failed", &reason, out);
        } else if status == Status::Active {
            self.settle_trial(cx, &id, "active", "handshake done, tools listed", out);
        }
        Ok(())
    }

    /// One of the room's events: a trial server that reached a settling state settles.
    pub(super) fn trial_event(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        data: &EventData,
        out: &mut Vec<Output>,
    ) {
        match data {
            EventData::McpServerStatusChange {
                server_id,
                new_status,
                reason,
                ..
            } if self.trials.contains_key(server_id) => {
                let outcome = match *new_status {
                    "active" => "active",
                    "backoff" | "failed" | "stopped" => "failed",
                    _ => return,
                };
                self.settle_trial(cx, server_id, outcome, reason, out);
            }
            EventData::McpServerUnregistered { server_id }
                if self.trials.contains_key(server_id) =>
            {
                self.settle_trial(
                    cx,
                    server_id,
                    "failed",
                    "unregistered during the trial",
                    out,
                );
            }
            _ => {}
        }
    }

    /// A trial's deadline passed.
    pub(super) fn trial_deadline(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(t) = self.trials.get_mut(id) else {
            return;
        };
        t.timer = None;
        let ms = t.timeout_ms;
        self.settle_trial(
            cx,
            id,
            "timeout",
            &format!("did not become active within mcp_servers.sandbox_timeout_ms ({ms} ms)"),
            out,
        );
    }

    /// Answers the trial of `id` with what its server showed, then unregisters the server.
    fn settle_trial(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: &str,
        outcome: &str,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(trial) = self.trials.remove(id) else {
            return;
        };
        if let Some(t) = trial.timer {
            cx.timers.cancel(t);
        }
        let elapsed_ms = trial.started.elapsed().as_millis() as u64;
        let mut answer = match self.servers.get(id) {
            Some(s) => {
                let mut d = s.details();
                json!({
                    "tools": d["tools"].take(),
                    "server_info": d["server_info"].take(),
                    "stderr_tail": d["stderr_tail"].take(),
                    "landlock": d["landlock"].take(),
                    "history": d["history"].take(),
                    "last_errors": d["last_errors"].take(),
                    "protocol_errors": d["protocol_errors"].take(),
                })
            }
            None => json!({"tools": []}),
        };
        answer["id"] = json!(id);
        answer["outcome"] = json!(outcome);
        answer["reason"] = json!(truncate(reason.to_string(), server::TEXT_MAX));
        answer["elapsed_ms"] = json!(elapsed_ms);
        out.push(Output::Reply(trial.reply, Ok(answer)));
        if self.servers.contains_key(id) {
            self.supervise(cx, id, supervisor::Event::Unregister, "trial over", out);
        }
    }
}
