//! The room interface: one concern that owns its state, its timers, its worker jobs and what
//! it says to the rest of the daemon.
//!
//! A room sees the loop only through its [`RoomCx`]: timers keyed by its own
//! [`Room::Timer`] (the wiring wraps them into its own key, see
//! [`crate::reactor::Cx::narrow`]), worker jobs whose results are its own [`Room::Job`]
//! (typed: the work closure moves in what the owner needs, and a job that does not come back
//! yields the result its failure closure builds, so nothing pairs a result with a waiting
//! entry at run time), and an effect sink of its own [`Room::Output`] type, which every
//! room's output type can build from the common [`Effect`]s: answer a client, publish an
//! event, ask another room ([`Effect::Request`]: the answer comes back to
//! [`Room::on_answer`] with the asker's tag), write a state document ([`Effect::Persist`]:
//! the acknowledgement is sent only once the write is on disk).
//!
//! A room that answers requests of its own also implements [`Serve`]: its slice of
//! [`crate::api::Request`] (the request types live in `api`, on the ground floor, so the
//! transports build them without importing rooms) and `handle`. Live configuration reaches
//! every room through [`Room::apply_config`] (a no-op unless the room reads configuration).
//!
//! Invariants: a room never holds a reference into another room; what it needs of another
//! comes as a typed snapshot handed over by the wiring, and what it asks of another goes
//! through the command layer. The wiring (`daemon/`) owns the loop, dispatch, reply encoding
//! and the effect bus.
//!
//! **Adding a room** takes:
//! 1. a module implementing [`Room`] (timers, jobs, outputs; `start`, `apply_config`,
//!    `on_answer`, `metrics` and `view` when it needs them), publishing typed events ([`RoomCx::event`] with an
//!    [`EventData`] variant of its own in `events.rs`) and following others' in
//!    [`Room::on_event`];
//! 2. one line in the `rooms!` list (`daemon/rooms.rs`): its variant, field, type and where
//!    its outputs go (`deliver_effects` when its output is [`Effect`]);
//! 3. its initial value where `Rooms` is built (`daemon/startup.rs`, one line);
//! 4. if it answers requests: [`Serve`], a variant of `api::Request` with its request type,
//!    its rows in its own `ops.rs` (`pub const OPS`, one line in `crate::ops::GROUPS`), and `[serve]` on its `rooms!` line (MCP's, the settings' and the
//!    components' requests go that way; `[serve METHOD]` names a `Daemon` method instead,
//!    for rooms whose requests still need the wiring's facts);
//! 5. if it shows something in `GET /api/v1/status`: [`Report`] and `[status KEY]` on its
//!    line; if it needs to know the MCP servers and their tools: [`Follows`] and
//!    `[follows servers]`;
//! 6. if it runs child processes: [`Parent`] and `[owns children]` on its line (its token
//!    range comes from the reactor where `Rooms` is built);
//! 7. only if its outputs ask for more than the common effects (a plan to carry out on the
//!    loop's sources, readings for another room): the delivery method its line names, in a
//!    small glue file in `daemon/`.
//!
//! Timer keys, job results, the start, live configuration, answers to its own requests, request
//! routing, Prometheus series, JSON metrics views, status parts and the wiring's way into the room
//! (`Daemon::with::<R>`) are generated from the list: no arm is added anywhere else.

use crate::api::{Answer, ReplyTo, Request};
use crate::config::Config;
use crate::events::{Channel, EventData};
use crate::reactor::{LoopStats, Timers};
use serde_json::Value;
use std::time::Duration;

/// What any room may ask of the wiring.
#[derive(Debug)]
pub enum Effect {
    /// Answer a request (now or later: the reply slot was kept).
    Reply(ReplyTo, Answer),
    /// Publish a typed event to the history and its channel's subscribers.
    Event(Channel, EventData),
    /// A reading for the alerts room (see [`crate::monitor::observation`]): the seam from the
    /// rooms that measure to the room that decides.
    Observe(crate::monitor::observation::Observation),
    /// Publish an event in the untyped form: (channel name, type, data). For kinds not yet
    /// given an [`EventData`] variant. An unknown channel name is a bug: the wiring logs
    /// it as an error and drops the event.
    Publish(&'static str, &'static str, Value),
    /// Ask another room through the command layer, exactly as a client would. The answer
    /// comes back to the asking room `from` (its [`Room::NAME`]) as
    /// [`Room::on_answer`]`(tag, answer)`. Build it with [`RoomCx::ask`].
    Request {
        /// The asking room.
        from: &'static str,
        /// The asker's own tag for the answer.
        tag: u64,
        /// What it asks (boxed: a request can be large, an effect should not be).
        request: Box<Request>,
    },
    /// Write a state document through the coalescing writer on the worker.
    Persist(Persist),
}

/// A state document to write (the whole document: writes of the same file coalesce, and the
/// last one queued is what lands) and the answer to send once it is on disk. If the write
/// fails, the answer is replaced by the failure (`persist_failed`, `insufficient_storage`
/// or `state_read_only`): a 2xx means the change is on disk.
#[derive(Debug)]
pub struct Persist {
    /// File name inside the state directory.
    pub file: &'static str,
    /// The document.
    pub document: Value,
    /// Who to answer, and with what, once it is written.
    pub ack: Option<(ReplyTo, Value)>,
}

/// A concern of the daemon.
pub trait Room {
    /// The room's own timer keys.
    type Timer;
    /// Results of the room's worker jobs (each carries what the room needs to act on it).
    type Job: Send + 'static;
    /// What the room hands to the wiring (at least the common [`Effect`]s).
    type Output: From<Effect>;
    /// Name in logs, status and metrics.
    const NAME: &'static str;

    /// One of the room's timers came due.
    fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, timer: Self::Timer);
    /// One of the room's worker jobs came back, or failed (then its failure's result).
    fn on_job(&mut self, cx: &mut RoomCx<'_, Self>, done: Self::Job);

    /// The daemon starts: arm the room's timers, load what it keeps, begin its cycles.
    /// Called once for every room, in room-list order, when the loop's sources are set up and
    /// the stored servers are registered, with the effective configuration. By default the
    /// room takes that configuration as it would a change ([`Room::apply_config`]), so a
    /// room whose timers follow the configuration arms them the same way at start and on a
    /// reload.
    fn start(&mut self, cx: &mut RoomCx<'_, Self>, config: &Config) {
        self.apply_config(cx, config);
    }

    /// The effective configuration changed (or was reloaded): take what can change live.
    /// Called on every configuration change; a room compares with what it runs.
    fn apply_config(&mut self, _cx: &mut RoomCx<'_, Self>, _config: &Config) {}

    /// Writes the room's own Prometheus series for `GET /metrics` (none by default). The
    /// wiring calls every room's, in room-list order (generated from the list), after its
    /// own series and before the request telemetry.
    fn metrics(&self, _out: &mut crate::telemetry::Exposition) {}

    /// Adds the room's entries to a JSON metrics view (`GET /api/v1/metrics/performance`,
    /// `/health`, and both inside `/api/v1/metrics`; none by default). The wiring adds its
    /// own and every room's, generated from the list; keys are the room's and unique.
    fn view(&self, _view: View, _out: &mut serde_json::Map<String, Value>) {}

    /// An event was published (by any room, this one included: a room ignores its own).
    /// `seq` is its sequence number in the history. The wiring hands every event to every
    /// room, in room-list order, once it is recorded and sent; what a room says in answer
    /// comes after it. This is how a room follows what happens elsewhere
    /// (servers coming and going, tools changing, alerts) without glue in `daemon/`. Keep it
    /// cheap: most rooms look at the variant and return.
    fn on_event(
        &mut self,
        _cx: &mut RoomCx<'_, Self>,
        _seq: u64,
        _channel: Channel,
        _data: &EventData,
    ) {
    }

    /// A tool call's success for a request this room asked with [`RoomCx::ask`], with the
    /// server's result bytes as they came ([`crate::api::RawCall`]). By default it is read
    /// into the ordinary answer for [`Room::on_answer`]; a room that can use the bytes as
    /// they are (the gateway) takes them here.
    fn on_raw_answer(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64, raw: crate::api::RawCall) {
        self.on_answer(cx, tag, raw.into_answer());
    }

    /// The answer to a request this room asked with [`RoomCx::ask`]. A room that never asks
    /// never gets one, so the default only reports it.
    fn on_answer(&mut self, _cx: &mut RoomCx<'_, Self>, tag: u64, _answer: Answer) {
        log::warn!(
            "room {} got an answer (tag {tag}) it did not ask for",
            Self::NAME
        );
    }
}

/// A JSON metrics view a room may add entries to ([`Room::view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `GET /api/v1/metrics/performance`.
    Performance,
    /// `GET /api/v1/metrics/health`.
    Health,
}

/// A room with a part of its own in `GET /api/v1/status` (its line in the `rooms!` list
/// says `[status KEY]`, the key its part goes under). The wiring composes the answer from the
/// rooms' parts and its own, in key order, serialized straight into the answer's bytes: the
/// part is a typed value borrowed from the room's state (no `serde_json::Value` tree), so a
/// status request stays cheap.
pub trait Report: Room {
    /// The room's part, borrowed from its state.
    type Status<'a>: serde::Serialize
    where
        Self: 'a;
    /// The room's part now; `facts` are what other rooms know that it shows.
    fn status<'a>(&'a self, facts: &crate::snapshot::Facts<'a>) -> Self::Status<'a>;
}

/// A room that follows the server catalogue (`[follows servers]` on its line in the `rooms!`
/// list): whenever a server event may have changed the catalogue (registration, status,
/// tools) and after every configuration change, the wiring hands it the MCP room's view of
/// every server, borrowed for the call. The one typed snapshot of another room's state a
/// room gets; what it keeps of it, it copies.
pub trait Follows: Room {
    /// The servers now, in id order.
    fn servers(&mut self, cx: &mut RoomCx<'_, Self>, servers: &[crate::snapshot::ServerView<'_>]);
}

/// A room that runs child processes of its own (`[owns children]` on its line in the `rooms!`
/// list; MCP's servers are the MCP room's, wired apart). The wiring hands it readiness on its
/// tokens and the exit of every child it reaps (the first room that claims a pid has it),
/// tells the MCP room's orphan sweep and reaper which pids are its after every call into it,
/// and kills its children at shutdown: a room that spawns children adds no glue in `daemon/`.
pub trait Parent: Room {
    /// Whether `token` is one of the room's (its children's pipes, its sockets).
    fn owns(&self, token: mio::Token) -> bool;
    /// Readiness on one of the room's tokens.
    fn on_ready(&mut self, cx: &mut RoomCx<'_, Self>, token: mio::Token);
    /// The daemon reaped `pid` with wait status `status`: `true` when it was the room's child
    /// (its run ends), `false` to let the next room look.
    fn on_child_exit(&mut self, cx: &mut RoomCx<'_, Self>, pid: i32, status: i32) -> bool;
    /// Pids of the room's running children, each the leader of its own process group.
    fn child_pids(&self) -> Vec<i32>;
    /// At shutdown: every child's process group is killed, grandchildren included (a parent
    /// death signal reaches only the leader). A pid here is a child not yet reaped, so its
    /// group id cannot have been reused.
    fn kill_children(&mut self) {
        for pgid in self.child_pids() {
            if let Err(e) = crate::sys::kill_group(pgid, libc::SIGKILL) {
                log::debug!("{}: process group {pgid} at shutdown: {e}", Self::NAME);
            }
        }
    }
}

/// A room that answers requests: its own slice of [`crate::api::Request`].
pub trait Serve: Room {
    /// Its requests.
    type Request;
    /// Handles one request; the answer goes to `reply`, now or later (keep `reply`).
    fn handle(&mut self, cx: &mut RoomCx<'_, Self>, request: Self::Request, reply: ReplyTo);
}

/// The wiring's side of a [`RoomCx`]: the room's view of the timer wheel and of the worker.
pub trait Wiring<T, J> {
    /// The timer wheel, keyed by the room's timers.
    fn timers(&mut self) -> &mut dyn Timers<T>;
    /// Hands `work` to the worker, waiting for it until `timeout`; `fail` builds its result if
    /// it does not come back. `Err`: the worker did not take it, with `fail`'s result.
    ///
    /// # Errors
    /// The worker is stopped, dead or its queue is full.
    fn submit(
        &mut self,
        timeout: Duration,
        work: Box<dyn FnOnce() -> J + Send>,
        fail: Box<dyn FnOnce(&str) -> J>,
    ) -> Result<(), J>;
}

/// What a room gets to act: the registry, its own timers and jobs, and its effect sink.
pub struct RoomCx<'a, R: Room + ?Sized> {
    /// Where the room (de)registers its sources.
    pub registry: &'a mio::Registry,
    /// Loop counters.
    pub stats: &'a LoopStats,
    wiring: &'a mut dyn Wiring<R::Timer, R::Job>,
    out: &'a mut Vec<R::Output>,
}

impl<'a, R: Room + ?Sized> RoomCx<'a, R> {
    /// A context over the wiring's loop for room `R`.
    pub fn new(
        registry: &'a mio::Registry,
        stats: &'a LoopStats,
        wiring: &'a mut dyn Wiring<R::Timer, R::Job>,
        out: &'a mut Vec<R::Output>,
    ) -> Self {
        RoomCx {
            registry,
            stats,
            wiring,
            out,
        }
    }

    /// The room's timers.
    pub fn timers(&mut self) -> &mut dyn Timers<R::Timer> {
        self.wiring.timers()
    }

    /// The loop as a floor below the rooms sees it (registry and the room's timers), with the
    /// room's effect sink beside it, for rooms whose internals take those two.
    pub fn split(&mut self) -> (crate::reactor::Cx<'_, R::Timer>, &mut Vec<R::Output>) {
        (
            crate::reactor::Cx {
                registry: self.registry,
                timers: self.wiring.timers(),
                stats: self.stats,
            },
            &mut *self.out,
        )
    }

    /// Runs `work` on the worker (see [`Wiring::submit`]). `Err`: it was not taken, and the
    /// result `fail` built for that; the room handles it as it would a late one.
    ///
    /// # Errors
    /// The worker is stopped, dead or its queue is full.
    pub fn submit(
        &mut self,
        timeout: Duration,
        work: impl FnOnce() -> R::Job + Send + 'static,
        fail: impl FnOnce(&str) -> R::Job + 'static,
    ) -> Result<(), R::Job> {
        self.wiring.submit(timeout, Box::new(work), Box::new(fail))
    }

    /// Hands an output to the wiring.
    pub fn emit(&mut self, output: R::Output) {
        self.out.push(output);
    }

    /// Answers a client.
    pub fn reply(&mut self, to: ReplyTo, answer: Answer) {
        self.out.push(Effect::Reply(to, answer).into());
    }

    /// Publishes a typed event.
    pub fn event(&mut self, channel: Channel, data: EventData) {
        self.out.push(Effect::Event(channel, data).into());
    }

    /// Publishes an event in the untyped form (see [`Effect::Publish`]).
    pub fn publish(&mut self, channel: &'static str, kind: &'static str, data: Value) {
        self.out.push(Effect::Publish(channel, kind, data).into());
    }

    /// Reports a reading to the alerts room.
    pub fn observe(&mut self, observation: crate::monitor::observation::Observation) {
        self.out.push(Effect::Observe(observation).into());
    }

    /// Asks another room through the command layer; the answer comes back to
    /// [`Room::on_answer`] with `tag`.
    pub fn ask(&mut self, tag: u64, request: Request) {
        self.out.push(
            Effect::Request {
                from: R::NAME,
                tag,
                request: Box::new(request),
            }
            .into(),
        );
    }

    /// Writes `document` as `file` in the state directory; `ack` is answered once it is on
    /// disk (or with the failure).
    pub fn persist(&mut self, file: &'static str, document: Value, ack: Option<(ReplyTo, Value)>) {
        self.out.push(
            Effect::Persist(Persist {
                file,
                document,
                ack,
            })
            .into(),
        );
    }
}

/// A wiring for rooms' unit tests: a real timer wheel, and a worker that runs each job at
/// once (its result waits in `done`) or refuses it (`refuse` set: the room gets its failure).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::reactor::timer::TimerWheel;
    use std::time::Instant;

    pub(crate) struct Inline<T, J> {
        pub(crate) wheel: TimerWheel<T>,
        pub(crate) done: Vec<J>,
        pub(crate) refuse: Option<&'static str>,
        pub(crate) stats: LoopStats,
        pub(crate) poll: mio::Poll,
    }

    impl<T, J> Inline<T, J> {
        pub(crate) fn new() -> Self {
            Inline {
                wheel: TimerWheel::new(Instant::now()),
                done: Vec::new(),
                refuse: None,
                stats: LoopStats::default(),
                poll: mio::Poll::new().expect("poll"),
            }
        }
    }

    /// Runs `f` on `room` with a [`RoomCx`] over `wiring`, collecting its outputs in `out`.
    pub(crate) fn enter<R: Room, X>(
        room: &mut R,
        wiring: &mut Inline<R::Timer, R::Job>,
        out: &mut Vec<R::Output>,
        f: impl FnOnce(&mut R, &mut RoomCx<'_, R>) -> X,
    ) -> X
    where
        R::Timer: 'static,
    {
        let Inline {
            wheel,
            done,
            refuse,
            stats,
            poll,
        } = wiring;
        let mut jobs = Jobs {
            wheel,
            done,
            refuse: *refuse,
        };
        let mut cx = RoomCx::new(poll.registry(), stats, &mut jobs, out);
        f(room, &mut cx)
    }

    struct Jobs<'a, T, J> {
        wheel: &'a mut TimerWheel<T>,
        done: &'a mut Vec<J>,
        refuse: Option<&'static str>,
    }

    impl<T, J> Wiring<T, J> for Jobs<'_, T, J> {
        fn timers(&mut self) -> &mut dyn Timers<T> {
            self.wheel
        }
        fn submit(
            &mut self,
            _timeout: Duration,
            work: Box<dyn FnOnce() -> J + Send>,
            fail: Box<dyn FnOnce(&str) -> J>,
        ) -> Result<(), J> {
            if let Some(why) = self.refuse {
                return Err(fail(why));
            }
            self.done.push(work());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::timer::{TimerId, TimerWheel};
    use std::time::Instant;

    /// A room that counts down on its timer and asks the worker to double each number.
    struct Counter {
        left: u32,
        seen: Vec<u64>,
    }

    impl Room for Counter {
        type Timer = u32;
        type Job = Result<u64, String>;
        type Output = Effect;
        const NAME: &'static str = "counter";

        fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, n: u32) {
            self.left = n;
            if n > 0 {
                cx.timers().insert(Instant::now(), n - 1);
            }
            let submitted = cx.submit(
                Duration::from_secs(1),
                move || Ok(u64::from(n) * 2),
                |why| Err(why.to_string()),
            );
            if let Err(failed) = submitted {
                self.on_job(cx, failed);
            }
        }

        fn on_job(&mut self, cx: &mut RoomCx<'_, Self>, done: Result<u64, String>) {
            match done {
                Ok(v) => self.seen.push(v),
                Err(why) => cx.publish("system", "job_failed", Value::String(why)),
            }
        }
    }

    /// Runs jobs at once (their results wait in `done`), refusing every second one.
    struct Inline {
        wheel: TimerWheel<u32>,
        done: Vec<Result<u64, String>>,
        refuse: bool,
    }

    impl Wiring<u32, Result<u64, String>> for Inline {
        fn timers(&mut self) -> &mut dyn Timers<u32> {
            &mut self.wheel
        }
        fn submit(
            &mut self,
            _timeout: Duration,
            work: Box<dyn FnOnce() -> Result<u64, String> + Send>,
            fail: Box<dyn FnOnce(&str) -> Result<u64, String>>,
        ) -> Result<(), Result<u64, String>> {
            self.refuse = !self.refuse;
            if self.refuse {
                return Err(fail("busy"));
            }
            self.done.push(work());
            Ok(())
        }
    }

    #[test]
    fn a_room_gets_its_own_timers_jobs_and_effects() {
        let poll = mio::Poll::new().expect("poll");
        let stats = LoopStats::default();
        let mut wiring = Inline {
            wheel: TimerWheel::new(Instant::now()),
            done: Vec::new(),
            refuse: false,
        };
        let mut out = Vec::new();
        let mut room = Counter {
            left: 9,
            seen: Vec::new(),
        };
        let mut fired: Vec<(TimerId, u32)> = Vec::new();
        let mut next = Some(3);
        while let Some(n) = next.take() {
            room.on_timer(
                &mut RoomCx::new(poll.registry(), &stats, &mut wiring, &mut out),
                n,
            );
            for done in std::mem::take(&mut wiring.done) {
                room.on_job(
                    &mut RoomCx::new(poll.registry(), &stats, &mut wiring, &mut out),
                    done,
                );
            }
            wiring
                .wheel
                .expire(Instant::now() + Duration::from_secs(1), &mut fired);
            next = fired.pop().map(|(_, n)| n);
        }
        assert_eq!(room.left, 0);
        // Timers 3, 2, 1, 0: every second submission is refused, and reported as failed.
        assert_eq!(room.seen, vec![4, 0]);
        assert_eq!(out.len(), 2);
        assert!(out
            .iter()
            .all(|e| matches!(e, Effect::Publish("system", "job_failed", _))));
    }

    /// Asks the other room for a server by name and keeps the answers it gets.
    struct Asker {
        answers: Vec<(u64, Answer)>,
    }

    impl Room for Asker {
        type Timer = u64;
        type Job = ();
        type Output = Effect;
        const NAME: &'static str = "asker";

        fn on_timer(&mut self, cx: &mut RoomCx<'_, Self>, tag: u64) {
            let id = format!("s{tag}");
            cx.ask(tag, Request::Mcp(crate::api::McpRequest::Show { id }));
        }
        fn on_job(&mut self, _cx: &mut RoomCx<'_, Self>, (): ()) {}
        fn on_answer(&mut self, _cx: &mut RoomCx<'_, Self>, tag: u64, answer: Answer) {
            self.answers.push((tag, answer));
        }
    }

    /// Serves `Show` for the one server it knows.
    struct Shower;

    impl Room for Shower {
        type Timer = ();
        type Job = ();
        type Output = Effect;
        const NAME: &'static str = "shower";

        fn on_timer(&mut self, _cx: &mut RoomCx<'_, Self>, (): ()) {}
        fn on_job(&mut self, _cx: &mut RoomCx<'_, Self>, (): ()) {}
    }

    impl Serve for Shower {
        type Request = crate::api::McpRequest;

        fn handle(&mut self, cx: &mut RoomCx<'_, Self>, request: Self::Request, reply: ReplyTo) {
            let answer = match request {
                crate::api::McpRequest::Show { id } if id == "s1" => {
                    Ok(serde_json::json!({"id": id}))
                }
                other => Err(crate::api::ApiError::new(
                    crate::api::ErrorCode::ServerNotFound,
                    format!("{other:?}"),
                )),
            };
            cx.reply(reply, answer);
        }
    }

    #[test]
    fn a_room_asks_another_through_the_command_layer_and_gets_its_answer_back() {
        use testing::{enter, Inline};
        let (mut asker, mut shower) = (
            Asker {
                answers: Vec::new(),
            },
            Shower,
        );
        let (mut a_wiring, mut s_wiring) = (Inline::new(), Inline::new());
        let (mut a_out, mut s_out) = (Vec::new(), Vec::new());
        for tag in [1, 2] {
            enter(&mut asker, &mut a_wiring, &mut a_out, |r, cx| {
                r.on_timer(cx, tag)
            });
        }
        // The wiring's part: a request goes to the room its variant names, answered to the
        // asker by name and tag (`ReplyTo::Room`).
        for effect in std::mem::take(&mut a_out) {
            let Effect::Request { from, tag, request } = effect else {
                panic!("only requests: {effect:?}");
            };
            assert_eq!(
                from, "asker",
                "the context names the asker, not the room's code"
            );
            let Request::Mcp(request) = *request else {
                panic!("an MCP request");
            };
            enter(&mut shower, &mut s_wiring, &mut s_out, |r, cx| {
                r.handle(cx, request, ReplyTo::Room { room: from, tag })
            });
        }
        for effect in std::mem::take(&mut s_out) {
            let Effect::Reply(ReplyTo::Room { room, tag }, answer) = effect else {
                panic!("only answers to a room: {effect:?}");
            };
            assert_eq!(room, Asker::NAME);
            enter(&mut asker, &mut a_wiring, &mut a_out, |r, cx| {
                r.on_answer(cx, tag, answer)
            });
        }
        assert_eq!(asker.answers.len(), 2);
        assert_eq!(asker.answers[0], (1, Ok(serde_json::json!({"id": "s1"}))));
        assert_eq!(asker.answers[1].0, 2);
        assert_eq!(
            asker.answers[1].1.as_ref().err().map(|e| e.code),
            Some(crate::api::ErrorCode::ServerNotFound)
        );
        assert!(a_out.is_empty());
    }
}
