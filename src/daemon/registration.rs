//! Registering and unregistering MCP servers over the API, acknowledged only once durable.
//!
//! Every change runs validate → persist → apply. Validation is against the registry as it will
//! be once every pending change is saved; the new `servers.json` (the specs registered now plus
//! the pending changes, [`registry::with_added`], [`registry::without`]) is written on the
//! worker thread, and only when that write succeeded is each server registered in memory and
//! started, or unregistered and stopped, and each caller answered. A failed write answers its
//! callers with the error ([`persist_error`]: 507 on a full disk, 409 for a document this
//! daemon must not overwrite, 500 otherwise) and changes nothing, so what a restart loads is
//! exactly what was acknowledged.
//!
//! Invariants:
//! - At most one `servers.json` write is in flight; changes arriving meanwhile wait (bounded by
//!   [`MAX_WAITING`], then `busy`) and go out together in the next write ([`state::WriteQueue`]).
//! - At most one pending change per server id, so validating against "memory plus pending"
//!   stays simple; a second change to the same id is `conflict` until the first is saved.
//! - Every write reports exactly once ([`WriteTicket`]): its result, or "not run" when the
//!   worker stopped before running it (then the file was not touched). Memory changes only on
//!   a reported success.
//! - Without a worker (stopped by the operator, or its queue full) the write runs on the loop,
//!   as it would have before the worker took it.

use super::persist::WriteTicket;
use super::*;
use crate::mcp::registry;

/// Changes that may wait behind the registry write in flight.
pub(super) const MAX_WAITING: usize = 64;

/// One registry change and who waits for its answer.
#[derive(Debug)]
pub(super) struct PendingChange {
    change: Change,
    reply: ReplyTo,
}

#[derive(Debug)]
enum Change {
    Register(Box<ServerSpec>),
    Unregister(String),
}

impl Change {
    fn id(&self) -> &str {
        match self {
            Change::Register(spec) => &spec.id,
            Change::Unregister(id) => id,
        }
    }
}

impl Daemon {
    /// Queues a registration; the answer goes to `reply` once it is saved (or refused).
    ///
    /// # Errors
    /// Refused at once: invalid spec, id taken (now or by a pending change), too many, busy.
    pub(super) fn mcp_register(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        spec: ServerSpec,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        self.queue_registry_change(cx, Change::Register(Box::new(spec)), reply)
    }

    /// Queues an unregistration; the server is stopped only once its removal is saved.
    ///
    /// # Errors
    /// Refused at once: unknown id, declared in the config file, a pending change, busy.
    pub(super) fn mcp_unregister(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        id: String,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        self.queue_registry_change(cx, Change::Unregister(id), reply)
    }

    fn queue_registry_change(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        change: Change,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        self.check_registry_change(&change)?;
        if self.registry_write.is_some() {
            let id = change.id();
            log::debug!("the change to {id} waits for the {REGISTRY_FILE} write in flight");
        }
        self.registry_writes
            .push(PendingChange { change, reply })
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::Busy,
                    format!("{MAX_WAITING} registry changes are waiting to be saved; try again"),
                )
            })?;
        self.start_registry_write(cx);
        Ok(())
    }

    /// Validation against the registry as it will be: memory plus the pending changes.
    fn check_registry_change(&self, change: &Change) -> Result<(), ApiError> {
        match change {
            Change::Register(spec) => self.rooms.mcp.check_register(spec)?,
            Change::Unregister(id) => self.rooms.mcp.check_unregister(id)?,
        }
        let id = change.id();
        if self.registry_writes.pending().any(|p| p.change.id() == id) {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "id",
                format!("a change to MCP server '{id}' is being saved; try again"),
            ));
        }
        let adds = self
            .registry_writes
            .pending()
            .filter(|p| matches!(p.change, Change::Register(_)))
            .count();
        if matches!(change, Change::Register(_))
            && self.rooms.mcp.counts().1 + adds >= mcp::MAX_REGISTERED
        {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{} MCP servers are registered or being registered: unregister one first",
                    mcp::MAX_REGISTERED
                ),
            ));
        }
        Ok(())
    }

    /// Starts the next registry write if none is in flight and changes are waiting.
    fn start_registry_write(&mut self, cx: &mut Cx<'_, Timer>) {
        if !self.registry_writes.start() {
            return;
        }
        let document =
            self.registry_writes
                .in_flight()
                .iter()
                .fold(self.rooms.mcp.api_specs(), |doc, p| match &p.change {
                    Change::Register(spec) => registry::with_added(doc, spec),
                    Change::Unregister(id) => registry::without(doc, id),
                });
        log::debug!(
            "saving {REGISTRY_FILE} ({} change(s))",
            self.registry_writes.in_flight().len()
        );
        let prepared = match self.state.prepare(REGISTRY_FILE, &document) {
            Ok(p) => p,
            Err(e) => return self.finish_registry_write(cx, Err(e)),
        };
        match self.dispatch_write(prepared) {
            Ok(ticket) => self.registry_write = Some(ticket),
            Err(result) => self.finish_registry_write(cx, result),
        }
    }

    /// Called on every wake: finishes the registry write once the worker reported it.
    pub(super) fn poll_registry_write(&mut self, cx: &mut Cx<'_, Timer>) {
        let Some(outcome) = self.registry_write.as_ref().and_then(WriteTicket::take) else {
            return;
        };
        self.registry_write = None;
        let result = outcome.into_result(&self.state.path().join(REGISTRY_FILE));
        self.finish_registry_write(cx, result);
    }

    /// Applies (or refuses) the changes of the write that just finished, answers their
    /// callers, and starts the next write.
    fn finish_registry_write(&mut self, cx: &mut Cx<'_, Timer>, result: Result<(), StateError>) {
        let done = self.registry_writes.finish();
        match result {
            Ok(()) => {
                let mut consistent = true;
                for PendingChange { change, reply } in done {
                    let answer = match change {
                        Change::Register(spec) => {
                            let autostart = spec.autostart;
                            let warning = capability_warning(&spec, &self.config.effective);
                            self.rooms
                                .mcp
                                .register(
                                    &mut cx.narrow(<Mcp as Wired>::timer).cx(),
                                    *spec,
                                    Source::Api,
                                    autostart,
                                    &mut self.outputs,
                                )
                                .map(|answer| with_warning(answer, warning))
                        }
                        Change::Unregister(id) => self.rooms.mcp.unregister(
                            &mut cx.narrow(<Mcp as Wired>::timer).cx(),
                            &id,
                            &mut self.outputs,
                        ),
                    };
                    // The checks passed when it was queued, so a refusal here is a bug (or a
                    // config reload in between): the disk must follow memory again.
                    consistent &= answer.is_ok();
                    self.answer(cx, reply, answer);
                }
                if !consistent {
                    self.rewrite_registry();
                }
            }
            Err(e) => {
                let error = persist_error(&e);
                for PendingChange { reply, .. } in done {
                    self.answer(cx, reply, Err(error.clone()));
                }
                // Waiting changes were checked against a registry that included the failed
                // ones: check them again.
                for pending in self.registry_writes.take_waiting() {
                    match self.check_registry_change(&pending.change) {
                        Ok(()) => {
                            // Room is certain: these came out of the same bounded queue.
                            if let Err(p) = self.registry_writes.push(pending) {
                                let busy = ApiError::new(ErrorCode::Busy, "try again");
                                self.answer(cx, p.reply, Err(busy));
                            }
                        }
                        Err(refused) => self.answer(cx, pending.reply, Err(refused)),
                    }
                }
            }
        }
        self.start_registry_write(cx);
    }

    /// Writes what memory holds, on the loop; only after an apply step failed its own check.
    fn rewrite_registry(&self) {
        if let Err(e) = self.state.write(REGISTRY_FILE, &self.rooms.mcp.api_specs()) {
            log::error!("cannot save registered MCP servers: {e}");
        }
    }
}

/// Adds the capability-policy warning (if any) to a registration's answer, and logs it.
pub(super) fn with_warning(mut answer: Value, warning: Option<String>) -> Value {
    if let Some(w) = warning {
        log::warn!("MCP server {}: {w}", answer["id"].as_str().unwrap_or(""));
        answer["warnings"] = json!([w]);
    }
    answer
}

/// The capability policy's objection to a spec, if any (the policy is not enforced yet).
pub(super) fn capability_warning(spec: &ServerSpec, config: &Config) -> Option<String> {
    registry::capability_policy_warning(&spec.capabilities, &config.security.blocked_capabilities)
}
