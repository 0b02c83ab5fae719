//! Registering and unregistering MCP servers over the API, acknowledged only once durable.
//!
//! Every change runs validate → persist → apply, inside the MCP room. Validation is against
//! the registry as it will be once every pending change is saved; the new `servers.json` (the
//! specs registered now plus the pending changes, [`registry::with_added`],
//! [`registry::without`]) goes out as an `Effect::Persist` whose acknowledgement comes back to
//! this room ([`Mcp::registry_written`], through `Room::on_answer`), and only when that write
//! succeeded is each server registered in memory and started, or unregistered and stopped,
//! and each caller answered. A failed write answers its callers with the wiring's error (507
//! on a full disk, 409 for a document this daemon must not overwrite, 500 otherwise) and
//! changes nothing, so what a restart loads is exactly what was acknowledged.
//!
//! Invariants:
//! - At most one `servers.json` write is in flight; changes arriving meanwhile wait (bounded by
//!   [`MAX_WAITING`], then `busy`) and go out together in the next write ([`WriteQueue`]).
//! - At most one pending change per server id, so validating against "memory plus pending"
//!   stays simple; a second change to the same id is `conflict` until the first is saved.
//! - Memory changes only on an acknowledged write; every write is acknowledged exactly once
//!   (the wiring's writer reports "not run" when the worker stopped before running it).

use super::*;
use crate::room::{Room, RoomCx};
use crate::state::WriteQueue;

/// Changes that may wait behind the registry write in flight.
pub const MAX_WAITING: usize = 64;

/// One registry change and who waits for its answer.
#[derive(Debug)]
struct PendingChange {
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

/// The registry's writes: the changes waiting and the tag of the write in flight.
#[derive(Debug)]
pub struct Registrations {
    queue: WriteQueue<PendingChange>,
    /// Tag of the last write asked for; its acknowledgement carries it.
    tag: u64,
}

impl Default for Registrations {
    fn default() -> Self {
        Registrations {
            queue: WriteQueue::new(MAX_WAITING),
            tag: 0,
        }
    }
}

impl Mcp {
    /// Queues a registration (or an unregistration, with `spec` `None` and `id`); the answer
    /// goes to `reply` once it is saved (or refused).
    ///
    /// # Errors
    /// Refused at once: invalid spec, unknown id, id taken (now or by a pending change), too
    /// many, declared in the config file, busy.
    pub(super) fn queue_registry_change(
        &mut self,
        cx: &mut RoomCx<'_, Mcp>,
        request: McpRequest,
        reply: ReplyTo,
    ) -> Result<(), ApiError> {
        let change = match request {
            McpRequest::Register { spec } => Change::Register(spec),
            McpRequest::Unregister { id } => Change::Unregister(id),
            other => {
                return Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("not a registry change: {other:?}"),
                ))
            }
        };
        self.check_registry_change(&change)?;
        if !self.registrations.queue.in_flight().is_empty() {
            let id = change.id();
            log::debug!("the change to {id} waits for the {REGISTRY_FILE} write in flight");
        }
        self.registrations
            .queue
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
            Change::Register(spec) => self.check_register(spec)?,
            Change::Unregister(id) => self.check_unregister(id)?,
        }
        let id = change.id();
        let pending = || self.registrations.queue.pending();
        if pending().any(|p| p.change.id() == id) {
            return Err(ApiError::field(
                ErrorCode::Conflict,
                "id",
                format!("a change to MCP server '{id}' is being saved; try again"),
            ));
        }
        let adds = pending()
            .filter(|p| matches!(p.change, Change::Register(_)))
            .count();
        if matches!(change, Change::Register(_)) && self.counts().1 + adds >= MAX_REGISTERED {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{MAX_REGISTERED} MCP servers are registered or being registered: unregister one first"
                ),
            ));
        }
        Ok(())
    }

    /// Asks for the next registry write if none is in flight and changes are waiting.
    fn start_registry_write(&mut self, cx: &mut RoomCx<'_, Mcp>) {
        if !self.registrations.queue.start() {
            return;
        }
        let in_flight = self.registrations.queue.in_flight();
        let document = in_flight
            .iter()
            .fold(self.api_specs(), |doc, p| match &p.change {
                Change::Register(spec) => registry::with_added(doc, spec),
                Change::Unregister(id) => registry::without(doc, id),
            });
        log::debug!("saving {REGISTRY_FILE} ({} change(s))", in_flight.len());
        self.registrations.tag += 1;
        let me = ReplyTo::Room {
            room: <Mcp as Room>::NAME,
            tag: self.registrations.tag,
        };
        let document = serde_json::to_value(document).unwrap_or(Value::Null);
        cx.persist(REGISTRY_FILE, document, Some((me, Value::Null)));
    }

    /// The acknowledgement of registry write `tag`: applies (or refuses) its changes, answers
    /// their callers (each answer ahead of the events its change caused), and asks for the
    /// next write.
    pub(super) fn registry_written(&mut self, cx: &mut RoomCx<'_, Mcp>, tag: u64, result: Answer) {
        if tag != self.registrations.tag {
            log::error!("an acknowledgement of registry write {tag}, which is not in flight");
            return;
        }
        let done = self.registrations.queue.finish();
        match result {
            Ok(_) => {
                let mut consistent = true;
                for PendingChange { change, reply } in done {
                    let mut events = Vec::new();
                    let (mut lcx, out) = cx.split();
                    let answer = match change {
                        Change::Register(spec) => {
                            let autostart = spec.autostart;
                            self.register(&mut lcx, *spec, Source::Api, autostart, &mut events)
                        }
                        Change::Unregister(id) => self.unregister(&mut lcx, &id, &mut events),
                    };
                    // The checks passed when it was queued, so a refusal here is a bug (or a
                    // config reload in between): the disk must follow memory again.
                    consistent &= answer.is_ok();
                    out.push(Output::Reply(reply, answer));
                    out.extend(events);
                }
                if !consistent {
                    let document = serde_json::to_value(self.api_specs()).unwrap_or(Value::Null);
                    cx.persist(REGISTRY_FILE, document, None);
                }
            }
            Err(error) => {
                for PendingChange { reply, .. } in done {
                    cx.reply(reply, Err(error.clone()));
                }
                // Waiting changes were checked against a registry that included the failed
                // ones: check them again.
                for pending in self.registrations.queue.take_waiting() {
                    match self.check_registry_change(&pending.change) {
                        Ok(()) => {
                            // Room is certain: these came out of the same bounded queue.
                            if let Err(p) = self.registrations.queue.push(pending) {
                                let busy = ApiError::new(ErrorCode::Busy, "try again");
                                cx.reply(p.reply, Err(busy));
                            }
                        }
                        Err(refused) => cx.reply(pending.reply, Err(refused)),
                    }
                }
            }
        }
        self.start_registry_write(cx);
    }
}
