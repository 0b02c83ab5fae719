//! The daemon's own components (control socket, worker, monitor): starting, stopping and
//! restarting them in-process, and graceful shutdown.

use super::*;

impl Daemon {
    pub(super) fn start_control(&mut self, cx: &mut Cx<'_, Timer>) -> std::io::Result<()> {
        if self.control.is_none() {
            let bound = ControlListener::bind(&self.socket_path)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.control = Some(bound);
        }
        if let Some(control) = &mut self.control {
            cx.registry.register(
                &mut control.listener,
                self.listeners.control,
                mio::Interest::READABLE,
            )?;
        }
        self.mark(cx, "control", true);
        Ok(())
    }

    pub(super) fn stop_control(&mut self, cx: &mut Cx<'_, Timer>) {
        if let Some(mut control) = self.control.take() {
            let _ = cx.registry.deregister(&mut control.listener);
            control.remove_file();
        }
        self.mark(cx, "control", false);
    }

    pub(super) fn mark(&mut self, _cx: &mut Cx<'_, Timer>, name: &'static str, running: bool) {
        if let Some(c) = self.components.get_mut(name) {
            if c.running != running {
                c.since = SystemTime::now();
            }
            c.running = running;
            if running {
                c.last_error = None;
            }
        }
    }

    pub(super) fn start_component(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        name: &str,
    ) -> Result<(), ApiError> {
        match name {
            "control" => self
                .start_control(cx)
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("control socket: {e}"))),
            "worker" => {
                if self.worker.as_ref().is_some_and(Worker::is_alive) {
                    return Ok(());
                }
                let worker = Worker::spawn(self.waker.clone(), 16).map_err(|e| {
                    ApiError::new(ErrorCode::Internal, format!("worker thread: {e}"))
                })?;
                self.worker = Some(worker);
                self.mark(cx, "worker", true);
                Ok(())
            }
            "monitor" => {
                let every = Duration::from_millis(
                    self.config.effective.monitoring.health_check_interval_ms,
                );
                self.with_health(cx, |room, rcx| room.start_monitor(rcx, every));
                self.mark(cx, "monitor", true);
                Ok(())
            }
            other => Err(unknown_component(other)),
        }
    }

    pub(super) fn stop_component(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        name: &str,
    ) -> Result<(), ApiError> {
        match name {
            "control" => {
                self.stop_control(cx);
                Ok(())
            }
            "worker" => {
                // Dropping the handle closes the job queue; the thread ends after its current job.
                self.worker = None;
                self.fail_pending_jobs(cx, "the worker was stopped");
                self.mark(cx, "worker", false);
                Ok(())
            }
            "monitor" => {
                self.with_health(cx, |room, rcx| room.stop_monitor(rcx));
                self.mark(cx, "monitor", false);
                Ok(())
            }
            other => Err(unknown_component(other)),
        }
    }

    pub(super) fn restart_component(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        name: &str,
    ) -> Result<(), ApiError> {
        if !COMPONENTS.contains(&name) {
            return Err(unknown_component(name));
        }
        if name == "control" {
            // Rebind in place: the listener is replaced, open connections (this one too) stay.
            if let Some(mut old) = self.control.take() {
                let _ = cx.registry.deregister(&mut old.listener);
                old.remove_file();
            }
        } else {
            self.stop_component(cx, name)?;
        }
        self.start_component(cx, name)?;
        if let Some(c) = self.components.get_mut(name) {
            c.restarts += 1;
        }
        log::info!("component {name} restarted");
        Ok(())
    }

    pub(super) fn fail_pending_jobs(&mut self, cx: &mut Cx<'_, Timer>, why: &str) {
        for (timer, result) in self.jobs.fail_all(why) {
            cx.timers.cancel(timer);
            self.on_job_done(cx, result);
        }
    }

    pub(super) fn control_start(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        service: Option<String>,
    ) -> Answer {
        let names: Vec<&'static str> = match &service {
            Some(s) => vec![component_name(s)?],
            None => COMPONENTS.to_vec(),
        };
        let mut started = Vec::new();
        for name in names {
            if !self.components[name].running {
                self.start_component(cx, name)?;
                log::info!("component {name} started");
                started.push(name);
            }
        }
        Ok(json!({"started": started}))
    }

    pub(super) fn control_stop(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        service: Option<String>,
        shutdown: bool,
        graceful: bool,
    ) -> Answer {
        if shutdown {
            log::info!(
                "shutdown requested over the API ({})",
                if graceful { "graceful" } else { "immediate" }
            );
            self.begin_shutdown(cx, graceful);
            return Ok(json!({"shutdown": true, "graceful": graceful, "pid": std::process::id()}));
        }
        let names: Vec<&'static str> = match &service {
            Some(s) => vec![component_name(s)?],
            None => COMPONENTS
                .iter()
                .copied()
                .filter(|c| *c != "control")
                .collect(),
        };
        if names.contains(&"control") {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "service",
                "refusing to stop the control socket: it is the only way to reach the daemon (use `restart --service control`)",
            ));
        }
        let mut stopped = Vec::new();
        for name in names {
            if self.components[name].running {
                self.stop_component(cx, name)?;
                log::info!("component {name} stopped");
                stopped.push(name);
            }
        }
        Ok(json!({"stopped": stopped}))
    }

    pub(super) fn control_restart(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        service: Option<String>,
    ) -> Answer {
        match service {
            Some(s) => {
                let name = component_name(&s)?;
                self.restart_component(cx, name)?;
                Ok(json!({"restarted": [name]}))
            }
            None => {
                let reload = self.config_reload(cx)?;
                for name in COMPONENTS {
                    self.restart_component(cx, name)?;
                }
                Ok(json!({"restarted": COMPONENTS, "config": reload}))
            }
        }
    }

    pub(super) fn begin_shutdown(&mut self, cx: &mut Cx<'_, Timer>, graceful: bool) {
        if self.stopping.is_some() {
            return;
        }
        self.notify("STOPPING=1");
        // New connections are refused at once; open ones get their answers.
        self.stop_control(cx);
        self.rooms.mcp.stop_all(
            &mut cx.narrow(<Mcp as Wired>::timer).cx(),
            graceful,
            &mut self.outputs,
        );
        self.kill_exec_children();
        let _ = self.stop_component(cx, "monitor");
        let _ = self.stop_component(cx, "worker");
        let timeout = if graceful {
            Duration::from_millis(self.config.effective.daemon.shutdown_timeout_ms)
        } else {
            Duration::from_millis(500)
        };
        self.stopping = Some(Instant::now());
        cx.timers
            .insert(Instant::now() + timeout, Timer::ShutdownDeadline);
    }
}

pub(super) fn component_name(name: &str) -> Result<&'static str, ApiError> {
    COMPONENTS
        .iter()
        .copied()
        .find(|c| *c == name)
        .ok_or_else(|| unknown_component(name))
}

pub(super) fn unknown_component(name: &str) -> ApiError {
    ApiError::field(
        ErrorCode::ComponentNotFound,
        "service",
        format!(
            "no component '{name}' (components: {})",
            COMPONENTS.join(", ")
        ),
    )
}

pub(super) fn unknown_health_component(name: &str) -> ApiError {
    ApiError::field(
        ErrorCode::ComponentNotFound,
        "component",
        format!(
            "no component '{name}' (components: {}, state)",
            COMPONENTS.join(", ")
        ),
    )
}
