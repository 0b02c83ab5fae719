//! Health checks of the daemon's own components: one round at a time, results cached
//! for a second, and one place that turns failed checks into repairs.

use super::*;

impl Daemon {
    pub(super) fn health_component_names(&self) -> Vec<&'static str> {
        let mut names = COMPONENTS.to_vec();
        names.push("state");
        names
    }

    pub(super) fn start_health_round(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        waiter: Option<(ReplyTo, Option<String>)>,
    ) {
        if let Some(round) = &mut self.round {
            round.waiting.extend(waiter);
            return;
        }
        let now = SystemTime::now();
        let mut results = BTreeMap::new();
        let result = |healthy: bool, status: &'static str, message: String| HealthResult {
            healthy,
            status,
            message,
            checked_at: now,
        };
        let control = match &self.control {
            Some(c) if c.still_ours() => result(
                true,
                "running",
                format!("listening on {}", c.path.display()),
            ),
            Some(c) => result(
                false,
                "running",
                format!("socket file {} was removed or replaced", c.path.display()),
            ),
            None => result(false, "stopped", "control socket is not listening".into()),
        };
        results.insert("control".to_string(), control);
        // The state directory is probed (write, fsync, rename) on the worker: an fsync on a
        // slow SD card must never stall the loop. Until the worker answers, it is unchecked.
        // Read-only documents are known without I/O and are reported at once.
        let state = self.state_health(None, now);
        let state = if state.healthy {
            let why = "not checked: the worker is not running";
            result(true, "unchecked", why.into())
        } else {
            state
        };
        results.insert("state".to_string(), state);
        let monitor = if self.health_timer.is_some() {
            result(
                true,
                "running",
                format!(
                    "every {} ms",
                    self.config.effective.monitoring.health_check_interval_ms
                ),
            )
        } else {
            result(true, "stopped", "stopped by the operator".into())
        };
        results.insert("monitor".to_string(), monitor);
        let mut submit = false;
        match self.worker.as_mut() {
            None => {
                results.insert(
                    "worker".to_string(),
                    result(true, "stopped", "stopped by the operator".into()),
                );
            }
            Some(w) if !w.is_alive() => {
                results.insert(
                    "worker".to_string(),
                    result(false, "failing", "worker thread has died".into()),
                );
            }
            Some(_) => submit = true,
        }
        self.round = Some(HealthRound {
            results,
            worker_job: None,
            waiting: waiter.into_iter().collect(),
        });
        if !submit {
            self.finish_health_round(cx);
            return;
        }
        let dir = self.state.path().to_path_buf();
        let submitted = self.submit_job(
            cx,
            WORKER_PING_TIMEOUT,
            move || WorkResult::HealthPing(Ok(probe_state(&dir))),
            |why| WorkResult::HealthPing(Err(why.to_string())),
        );
        match submitted {
            Ok(()) => {
                if let Some(round) = &mut self.round {
                    round.worker_job = Some(Instant::now());
                }
            }
            // Recorded as the worker's result; that finishes the round.
            Err(failed) => self.on_job_done(cx, *failed),
        }
    }

    /// The state component's result from the worker's probe (if it ran) and the documents
    /// this daemon refuses to overwrite, each named.
    pub(super) fn state_health(
        &self,
        probe: Option<Result<Vec<Duration>, String>>,
        checked_at: SystemTime,
    ) -> HealthResult {
        let mut problems: Vec<String> = self
            .state
            .read_only()
            .map(|(name, why)| {
                let path = self.state.path().join(name);
                format!("state file {} is read-only: {why}", path.display())
            })
            .collect();
        let took = match probe {
            Some(Ok(t)) => t.first().copied(),
            Some(Err(e)) => {
                problems.push(e);
                None
            }
            None => None,
        };
        match (problems.is_empty(), took) {
            (false, _) => HealthResult {
                healthy: false,
                status: "failing",
                message: problems.join("; "),
                checked_at,
            },
            (true, took) => HealthResult {
                healthy: true,
                status: "ok",
                message: format!(
                    "writable, write+fsync took {:.1} ms",
                    took.map_or(0.0, |d| d.as_secs_f64() * 1000.0)
                ),
                checked_at,
            },
        }
    }

    /// Records a round's results, answers whoever asked, and decides on repairs.
    pub(super) fn finish_health_round(&mut self, cx: &mut Cx<'_, Timer>) {
        let Some(round) = self.round.take() else {
            return;
        };
        for (name, result) in &round.results {
            let was = self.health.get(name).map(|h| h.healthy);
            if was != Some(result.healthy) && (was.is_some() || !result.healthy) {
                if result.healthy {
                    log::info!("component {name} is healthy again: {}", result.message);
                } else {
                    log::warn!("component {name} is unhealthy: {}", result.message);
                }
            }
        }
        self.health = round.results.clone();
        self.health_at = Some(Instant::now());
        self.health_cache = None;
        for (reply, filter) in round.waiting {
            let answer = self.health_answer(filter.as_deref());
            self.answer(cx, reply, answer);
        }
        // Repairs: the one place that turns check results into actions.
        for name in ["control", "worker"] {
            let broken = self.health.get(name).is_some_and(|h| !h.healthy);
            if broken && self.stopping.is_none() {
                if let Some(c) = self.components.get_mut(name) {
                    c.last_error = self.health.get(name).map(|h| h.message.clone());
                }
                log::warn!("restarting component {name} after a failed health check");
                if let Err(e) = self.restart_component(cx, name) {
                    log::error!("cannot restart {name}: {e}");
                }
            }
        }
    }

    /// Answers `GET /api/v1/health` from the serialized answer of the last round (a monitor
    /// polling health costs an envelope, not a rebuilt report).
    pub(super) fn answer_cached_health(&mut self, cx: &mut Cx<'_, Timer>, reply: ReplyTo) {
        let ReplyTo::Http {
            conn,
            seq,
            started,
            request_id,
            route,
            method,
        } = reply
        else {
            let answer = self.health_answer(None);
            self.answer(cx, reply, answer);
            return;
        };
        if self.health_cache.is_none() {
            self.health_cache = Some(match self.health_answer(None) {
                Ok(v) => (None, serde_json::to_vec(&v).unwrap_or_default()),
                Err(mut e) => {
                    let data = e
                        .data
                        .take()
                        .map(|d| serde_json::to_vec(&d).unwrap_or_default());
                    (Some(e), data.unwrap_or_else(|| b"null".to_vec()))
                }
            });
        }
        let Some((error, data)) = &self.health_cache else {
            return;
        };
        let status = error.as_ref().map_or(200, |e| e.code.http_status());
        let mut bytes = Vec::with_capacity(data.len() + 200);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        api::write_envelope_raw(
            &mut bytes,
            error.as_ref(),
            data,
            request_id,
            ms,
            &now_string(),
            None,
        );
        bytes.push(b'\n');
        self.telemetry
            .http_request(route, method, status, started.elapsed().as_secs_f64());
        let response = http::Response::json(status, bytes);
        self.server.respond(
            &mut cx.narrow(Timer::Net).cx(),
            conn,
            seq,
            &response,
            false,
            &mut self.incoming,
        );
    }

    pub(super) fn health_answer(&self, filter: Option<&str>) -> Answer {
        let mut components = Map::new();
        let mut failing = Vec::new();
        for (name, h) in &self.health {
            if filter.is_some_and(|f| f != name) {
                continue;
            }
            if !h.healthy {
                failing.push(name.clone());
            }
            components.insert(
                name.clone(),
                json!({
                    "healthy": h.healthy,
                    "status": h.status,
                    "message": h.message,
                    "checked_at": state::rfc3339_utc_millis(h.checked_at),
                }),
            );
        }
        let data = json!({
            "status": if failing.is_empty() { "healthy" } else { "unhealthy" },
            "components": components,
            "failing": failing,
        });
        if failing.is_empty() {
            Ok(data)
        } else {
            Err(ApiError::new(
                ErrorCode::Unhealthy,
                format!("unhealthy: {}", failing.join(", ")),
            )
            .with_data(data))
        }
    }
}

/// The worker's probe of the state directory: the documents' paths first (a directory where
/// `servers.json` belongs makes every registration fail), then one write+fsync+rename cycle.
fn probe_state(dir: &Path) -> Result<Vec<Duration>, String> {
    let mut problems = state::check_documents(dir, STATE_DOCUMENTS);
    if !sys::writable(dir) {
        problems.insert(0, format!("state dir {} is not writable", dir.display()));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    diagnostics::fsync_latency(dir, 1)
}
