//! Configuration at run time: show, update (persisted overrides), reload, and applying
//! what can change live.

use super::*;

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

    pub(super) fn config_update(&mut self, cx: &mut Cx<'_, Timer>, patch: &Value) -> Answer {
        let mut overrides = self.config.overrides.clone();
        config::merge_patch(&mut overrides, patch);
        prune_empty(&mut overrides);
        let effective = self
            .config
            .base
            .with_overrides(&overrides)
            .map_err(|e| config_error(&e))?;
        let access = self.access_for(&effective)?;
        self.state.write(OVERRIDES_FILE, &overrides).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot persist the change: {e}"),
            )
        })?;
        self.config.overrides = overrides;
        self.config.overrides_problem = None;
        let report = self.apply_config(cx, effective, access);
        log::info!("configuration updated over the API: {}", report["changed"]);
        Ok(report)
    }

    pub(super) fn config_reload(&mut self, cx: &mut Cx<'_, Timer>) -> Answer {
        let base = match &self.config.file {
            Some(path) => Config::from_file(path).map_err(|e| config_error(&e))?,
            None => Config::default(),
        };
        let (effective, problem) = match base.with_overrides(&self.config.overrides) {
            Ok(c) => (c, None),
            Err(e) => {
                let msg = format!(
                    "stored overrides not applied (they conflict with the config file): {e}"
                );
                log::error!("{msg}");
                (base.clone(), Some(msg))
            }
        };
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

    /// Makes `new` the effective config, applying what can change live.
    /// The TCP access policy a config asks for; refused when the token file is unreadable or
    /// when it would leave a non-loopback listener without a token.
    pub(super) fn access_for(&self, config: &Config) -> Result<listener::TcpAccess, ApiError> {
        let token = api_token(config)
            .map_err(|m| ApiError::field(ErrorCode::ConfigInvalid, "security.api_token_file", m))?;
        let Some(bound) = self.tcp_addr else {
            return Ok(listener::TcpAccess::default());
        };
        if token.is_none() && !bound.ip().is_loopback() {
            return Err(ApiError::field(
                ErrorCode::ConfigInvalid,
                "security.api_token",
                format!("the API listens on {bound}, not a loopback address: it cannot run without a token"),
            ));
        }
        Ok(listener::TcpAccess::new(
            token,
            bound,
            &config.http.allowed_hosts,
        ))
    }

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
                    if let Some(t) = self.health_timer.take() {
                        cx.timers.cancel(t);
                        let every = Duration::from_millis(new.monitoring.health_check_interval_ms);
                        self.health_timer =
                            Some(cx.timers.insert(Instant::now() + every, Timer::HealthCheck));
                    }
                }
                k if k.starts_with("http.") => self.server.policy = conn_policy(&new),
                _ => {}
            }
        }
        self.mcp.settings.config = new.mcp_servers.clone();
        self.mcp.settings.sandbox_enabled = new.security.sandbox_enabled;
        if self.config.effective.servers != new.servers {
            self.mcp
                .sync_config_servers(cx, &new.servers, &mut self.outputs);
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
