//! The components room's glue: carrying out its plans on the loop's sources (registering
//! the control listener, spawning and dropping the worker thread, the health room's
//! monitor schedule) and reporting each step's outcome back to the room, which owns the
//! decisions and the states (see [`crate::components::lifecycle`]); and graceful shutdown.

use super::*;
use crate::components::lifecycle::{Component, Output as ComponentsOutput, Plan, Step};

impl Daemon {
    /// The components room's outputs: plans carried out at once (their outcomes go back to
    /// the room), a shutdown begun, effects to the bus.
    pub(super) fn components_outputs(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        out: Vec<ComponentsOutput>,
    ) {
        for output in out {
            match output {
                ComponentsOutput::Effect(e) => self.effects.push(e),
                ComponentsOutput::Carry(plan) => self.carry_plan(cx, plan),
                ComponentsOutput::Shutdown { graceful } => self.begin_shutdown(cx, graceful),
            }
        }
    }

    /// Carries out `plan`'s steps in order up to the first failure, and reports them.
    fn carry_plan(&mut self, cx: &mut Cx<'_, Timer>, Plan { steps, then }: Plan) {
        let mut outcomes = Vec::with_capacity(steps.len());
        for step in steps {
            let outcome = match step {
                Step::Start(c) => self.start_component(cx, c),
                Step::Stop(c) => {
                    self.stop_component(cx, c);
                    Ok(())
                }
                Step::Restart(c) => self.restart_component(cx, c),
            };
            let failed = outcome.is_err();
            outcomes.push((step, outcome));
            if failed {
                break;
            }
        }
        self.with::<Components, _>(cx, |room, rcx| room.finished(rcx, then, outcomes));
    }

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
        Ok(())
    }

    fn stop_control(&mut self, cx: &mut Cx<'_, Timer>) {
        if let Some(mut control) = self.control.take() {
            let _ = cx.registry.deregister(&mut control.listener);
            control.remove_file();
        }
    }

    fn start_component(&mut self, cx: &mut Cx<'_, Timer>, c: Component) -> Result<(), String> {
        match c {
            Component::Control => self
                .start_control(cx)
                .map_err(|e| format!("control socket: {e}")),
            Component::Worker => {
                if self.worker.as_ref().is_some_and(Worker::is_alive) {
                    return Ok(());
                }
                let worker = Worker::spawn(self.waker.clone(), 16)
                    .map_err(|e| format!("worker thread: {e}"))?;
                self.worker = Some(worker);
                Ok(())
            }
            Component::Monitor => {
                let every = Duration::from_millis(
                    self.rooms
                        .settings
                        .config()
                        .monitoring
                        .health_check_interval_ms,
                );
                self.with::<crate::components::health::Health, _>(cx, |room, rcx| {
                    room.start_monitor(rcx, every)
                });
                Ok(())
            }
        }
    }

    fn stop_component(&mut self, cx: &mut Cx<'_, Timer>, c: Component) {
        match c {
            Component::Control => self.stop_control(cx),
            Component::Worker => {
                // Dropping the handle closes the job queue; the thread ends after its current job.
                self.worker = None;
                self.fail_pending_jobs(cx, "the worker was stopped");
            }
            Component::Monitor => {
                self.with::<crate::components::health::Health, _>(cx, |room, rcx| {
                    room.stop_monitor(rcx)
                });
            }
        }
    }

    fn restart_component(&mut self, cx: &mut Cx<'_, Timer>, c: Component) -> Result<(), String> {
        if c == Component::Control {
            // Rebind in place: the listener is replaced, open connections (this one too) stay.
            if let Some(mut old) = self.control.take() {
                let _ = cx.registry.deregister(&mut old.listener);
                old.remove_file();
            }
        } else {
            self.stop_component(cx, c);
        }
        self.start_component(cx, c)
    }

    pub(super) fn fail_pending_jobs(&mut self, cx: &mut Cx<'_, Timer>, why: &str) {
        for (timer, result) in self.jobs.fail_all(why) {
            cx.timers.cancel(timer);
            self.on_job_done(cx, result);
        }
    }

    pub(super) fn begin_shutdown(&mut self, cx: &mut Cx<'_, Timer>, graceful: bool) {
        if self.stopping.is_some() {
            return;
        }
        self.notify("STOPPING=1");
        self.rooms.mcp.stop_all(
            &mut cx.narrow(<Mcp as Wired>::timer).cx(),
            graceful,
            &mut self.outputs,
        );
        self.rooms_kill_children();
        // New connections are refused at once; open ones get their answers.
        self.with::<Components, _>(cx, |room, rcx| room.shutdown(rcx));
        let timeout = if graceful {
            Duration::from_millis(self.rooms.settings.config().daemon.shutdown_timeout_ms)
        } else {
            Duration::from_millis(500)
        };
        self.stopping = Some(Instant::now());
        cx.timers
            .insert(Instant::now() + timeout, Timer::ShutdownDeadline);
    }
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
