//! Configuration at run time: show, update (persisted overrides), reload, and applying
//! what can change live.
//!
//! An update (`config set`, `PUT /api/v1/config`) is validate → persist → apply, like a
//! registration (see `registration`): the patch is checked alone, then against the overrides
//! as they will be once every pending patch is saved; `overrides.json` is written on the
//! worker (at most one write in flight; later patches wait, at most [`MAX_WAITING_PATCHES`],
//! and are checked again when the write before them failed); the change is applied and
//! answered only once its write reported success. Patches saved by one write get the same
//! report. The effective config is computed again at apply time: a reload in between may have
//! changed the file layer.

use super::*;
use crate::monitor::room::Cycle;

/// Configuration changes that may wait behind the overrides write in flight.
pub(super) const MAX_WAITING_PATCHES: usize = 16;

/// A merge patch waiting for its `overrides.json` write, with the document it leads to.
#[derive(Debug)]
pub(super) struct PendingPatch {
    patch: Value,
    overrides: Value,
    reply: ReplyTo,
}

impl Daemon {
    pub(super) fn config_show(&self, section: Option<&str>) -> Answer {
        let effective = &self.config.effective;
        let config = match section {
            None => effective.to_json_redacted(),
            Some(s) => effective.section_json(s).ok_or_else(|| {
                ApiError::field(
                    ErrorCode::ConfigKeyNotFound,
                    "section",
                    format!("no configuration section '{s}'"),
                )
            })?,
        };
        let not_enforced: Vec<&str> = config::not_enforced_keys()
            .filter(|k| section.is_none_or(|s| k.starts_with(s) && k[s.len()..].starts_with('.')))
            .collect();
        Ok(json!({
            "source": self.config_source(),
            "section": section,
            "config": config,
            "not_enforced": not_enforced,
            "overrides": self.config.overrides,
            "overrides_warning": self.config.overrides_problem,
        }))
    }

    /// Queues a merge patch of the overrides; the answer goes to `reply` once the new
    /// `overrides.json` is saved (and the change applied), or the save failed (nothing
    /// changed). Writes are coalesced like the registry's (see `registration`): at most one in
    /// flight, later patches validated against the overrides as they will be.
    ///
    /// # Errors
    /// Refused at once: an invalid patch, a result that does not validate, busy.
    pub(super) fn config_update(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        patch: Value,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        // The patch alone first: a bad value is refused before anything is cloned. It may not
        // add a key this build does not know, but may remove one (null); unknown keys already
        // stored (from a newer daemon) neither block it nor get lost.
        Config::check_patch(&patch).map_err(|e| config_error(&e))?;
        let overrides = self.overrides_after(&patch)?;
        if self.overrides_write.is_some() {
            log::debug!("a configuration patch waits for the {OVERRIDES_FILE} write in flight");
        }
        let pending = PendingPatch {
            patch,
            overrides,
            reply,
        };
        self.overrides_writes.push(pending).map_err(|_| {
            ApiError::new(
                ErrorCode::Busy,
                format!("{MAX_WAITING_PATCHES} configuration changes are waiting to be saved; try again"),
            )
        })?;
        self.start_overrides_write(cx);
        Ok(())
    }

    /// The stored overrides once every pending patch and `patch` are applied, checked: the
    /// effective config validates and its TCP access policy can be built.
    fn overrides_after(&self, patch: &Value) -> Result<Value, ApiError> {
        let mut overrides = self
            .overrides_writes
            .pending()
            .last()
            .map_or(&self.config.overrides, |p| &p.overrides)
            .clone();
        config::merge_patch(&mut overrides, patch);
        prune_empty(&mut overrides);
        let split = config::StoredOverrides::split(&overrides);
        let effective = self
            .config
            .base
            .with_overrides(&split.known)
            .map_err(|e| config_error(&e))?;
        self.access_for(&effective)?;
        Ok(overrides)
    }

    fn start_overrides_write(&mut self, cx: &mut Cx<'_, Timer>) {
        if !self.overrides_writes.start() {
            return;
        }
        // The last pending document holds every earlier patch too.
        let Some(document) = self
            .overrides_writes
            .in_flight()
            .last()
            .map(|p| &p.overrides)
        else {
            return;
        };
        log::debug!(
            "saving {OVERRIDES_FILE} ({} change(s))",
            self.overrides_writes.in_flight().len()
        );
        let prepared = match self.state.prepare(OVERRIDES_FILE, document) {
            Ok(p) => p,
            Err(e) => return self.finish_overrides_write(cx, Err(e)),
        };
        match self.dispatch_write(prepared) {
            Ok(ticket) => self.overrides_write = Some(ticket),
            Err(result) => self.finish_overrides_write(cx, result),
        }
    }

    /// Called on every wake: finishes the overrides write once the worker reported it.
    pub(super) fn poll_overrides_write(&mut self, cx: &mut Cx<'_, Timer>) {
        let Some(outcome) = self.overrides_write.as_ref().and_then(|t| t.take()) else {
            return;
        };
        self.overrides_write = None;
        let result = outcome.into_result(&self.state.path().join(OVERRIDES_FILE));
        self.finish_overrides_write(cx, result);
    }

    fn finish_overrides_write(&mut self, cx: &mut Cx<'_, Timer>, result: Result<(), StateError>) {
        let done = self.overrides_writes.finish();
        match result {
            Ok(()) => {
                let Some(last) = done.last() else {
                    return self.start_overrides_write(cx);
                };
                self.config.overrides = last.overrides.clone();
                // Computed again: a reload may have changed the file layer meanwhile.
                let (effective, mut problem) =
                    apply_stored_overrides(&self.config.base, &self.config.overrides);
                let access = match self.access_for(&effective) {
                    Ok(access) => access,
                    Err(e) => {
                        let msg =
                            format!("saved, but the TCP access policy was kept: {}", e.message);
                        log::error!("{msg}");
                        problem = Some(problem.map_or(msg.clone(), |p| format!("{p}; {msg}")));
                        self.access.clone()
                    }
                };
                self.config.overrides_problem = problem;
                let report = self.apply_config(cx, effective, access);
                log::info!("configuration updated over the API: {}", report["changed"]);
                for p in done {
                    self.answer(cx, p.reply, Ok(report.clone()));
                }
            }
            Err(e) => {
                let error = persist_error(&e);
                for p in done {
                    self.answer(cx, p.reply, Err(error.clone()));
                }
                // Waiting patches were checked on top of the failed ones: check them again.
                for p in self.overrides_writes.take_waiting() {
                    let checked = self.overrides_after(&p.patch).and_then(|overrides| {
                        let again = PendingPatch { overrides, ..p };
                        self.overrides_writes
                            .push(again)
                            .map_err(|_| ApiError::new(ErrorCode::Busy, "try again"))
                    });
                    if let Err(refused) = checked {
                        self.answer(cx, p.reply, Err(refused));
                    }
                }
            }
        }
        self.start_overrides_write(cx);
    }

    pub(super) fn config_reload(&mut self, cx: &mut Cx<'_, Timer>) -> Answer {
        let base = match &self.config.file {
            Some(path) => Config::from_file(path).map_err(|e| config_error(&e))?,
            None => Config::default(),
        };
        let (effective, problem) = apply_stored_overrides(&base, &self.config.overrides);
        let access = self.access_for(&effective)?;
        self.config.base = base;
        self.config.overrides_problem = problem;
        let report = self.apply_config(cx, effective, access);
        log::info!(
            "configuration reloaded from {}: {}",
            self.config_source(),
            report["changed"]
        );
        Ok(report)
    }

    /// The TCP access policy a config asks for; refused when the token (or its file) is
    /// unusable, or when a generated token would guard a non-loopback listener.
    pub(super) fn access_for(&self, config: &Config) -> Result<listener::TcpAccess, ApiError> {
        let Some(bound) = self.tcp_addr else {
            return Ok(listener::TcpAccess::default());
        };
        let key = if config.security.api_token_file.is_empty() {
            "security.api_token"
        } else {
            "security.api_token_file"
        };
        let token = api_token(config, self.state.path())
            .map_err(|m| ApiError::field(ErrorCode::ConfigInvalid, key, m))?;
        token_fits_listener(&token, bound)
            .map_err(|m| ApiError::field(ErrorCode::ConfigInvalid, "security.api_token", m))?;
        Ok(listener::TcpAccess::new(
            Some(token),
            bound,
            &config.http.allowed_hosts,
            &config.http.allowed_origins,
        ))
    }

    /// Makes `new` the effective config, applying what can change live.
    pub(super) fn apply_config(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        new: Config,
        access: listener::TcpAccess,
    ) -> Value {
        // Token and allowed hosts apply to the next request.
        self.access = access;
        let changed = self.config.effective.changed_keys(&new);
        let restart_required: Vec<&String> = changed
            .iter()
            .filter(|k| config::requires_restart(k))
            .collect();
        for key in &changed {
            match key.as_str() {
                "daemon.log_level" => self.logging.set_level(level_of(&new)),
                "daemon.log_buffer_lines" => {
                    self.logging.ring.set_capacity(new.daemon.log_buffer_lines)
                }
                "monitoring.health_check_interval_ms" => {
                    let every = Duration::from_millis(new.monitoring.health_check_interval_ms);
                    self.with_health(cx, |room, rcx| room.set_interval(rcx, every));
                    self.with_alerts(cx, |room, rcx| room.schedule(rcx, Cycle::Health, every));
                }
                "monitoring.performance_check_interval_ms" => {
                    let every = Duration::from_millis(new.monitoring.performance_check_interval_ms);
                    self.with_alerts(cx, |room, rcx| {
                        room.schedule(rcx, Cycle::Performance, every)
                    });
                }
                k if k.starts_with("http.") => self.server.policy = conn_policy(&new),
                _ => {}
            }
        }
        self.rooms.mcp.settings.config = new.mcp_servers.clone();
        self.rooms.mcp.settings.sandbox_enabled = new.security.sandbox_enabled;
        if self.config.effective.servers != new.servers {
            self.rooms.mcp.sync_config_servers(
                &mut cx.narrow(<Mcp as Wired>::timer).cx(),
                &new.servers,
                &mut self.outputs,
            );
        }
        // No silent promises: a change to a key nothing reads yet is said out loud.
        let promised = new.not_enforced_set();
        let not_enforced: Vec<&String> = changed.iter().filter(|k| promised.contains(k)).collect();
        for key in &not_enforced {
            log::warn!(
                "{key} is set but {}: it has no effect",
                config::NOT_ENFORCED
            );
        }
        let report = json!({
            "changed": changed,
            "restart_required": restart_required,
            "not_enforced": not_enforced,
            "warning": self.config.overrides_problem,
        });
        self.config.effective = new;
        report
    }
}
