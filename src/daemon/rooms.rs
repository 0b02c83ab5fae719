//! The room list and how rooms are wired into the loop.
//!
//! [`rooms!`] takes the list (one line per room: its variant name, its field, its type,
//! where its outputs go and, with `serve`, the method its requests go to) and generates the
//! [`Rooms`] struct, the typed wrappers of each room's timer keys and job results inside the
//! daemon's ([`RoomTimer`], [`RoomJob`]), their [`Wired`] impls, and the dispatch of timers,
//! job results, requests (`api::Request::<Variant>`), live configuration and the answers to
//! a room's own requests (`ReplyTo::Room`) to the room they belong to. [`enter`] is the one
//! generic way into a room: it lends it a [`RoomCx`] over the daemon's wheel and worker.
//! `[serve]` routes the room's requests to its [`crate::room::Serve::handle`];
//! `[serve METHOD]` to a `Daemon` method, for a room whose requests still need the wiring
//! (health's cached answer, diagnostics' facts). `[status KEY]` puts the room's
//! [`Report`] part under KEY in `GET /api/v1/status` ([`Status`], composed by
//! [`Daemon::rooms_status`]). `[follows servers]` hands the room the MCP room's server
//! catalogue ([`crate::room::Follows`]) whenever it may have changed
//! ([`Daemon::rooms_servers_changed`]). `[owns children]` marks a room that runs child
//! processes ([`crate::room::Parent`]): readiness on its tokens
//! ([`Daemon::rooms_ready`]), the exits the daemon reaps ([`Daemon::rooms_child_exit`]) and the
//! shutdown kill go to it, and after every delivery of its outputs the MCP room's orphan sweep
//! learns its children's pids. Every room starts through [`Daemon::rooms_start`]. Adding a
//! room is a line here.

use super::*;
use crate::components::diagnostics::Diagnostics;
use crate::components::health::Health;
use crate::monitor::room::Alerts;
use crate::reactor::timer::TimerId;
use crate::reactor::Timers;
use crate::room::{Report, RoomCx, Wiring};
use crate::snapshot;

/// Capacity up to which a room's emptied output vector is kept (see [`Kept`]).
pub(super) const KEPT_OUT: usize = 16;

/// Where a room's outputs are collected on each entry. A type whose delivery gives its
/// emptied vector back (the gateway's: two entries per `/mcp` call, each of which grew a new
/// vector) lends that one; the others start empty, which allocates only when the room says
/// something. Used where the outputs are delivered whatever they are: an entry whose
/// outputs may be dropped undelivered would drop the kept vector with them.
pub(super) trait Kept: Sized {
    /// An empty vector for a room's outputs.
    fn vec(_daemon: &mut Daemon) -> Vec<Self> {
        Vec::new()
    }
}

impl Kept for crate::gateway::Output {
    fn vec(daemon: &mut Daemon) -> Vec<Self> {
        std::mem::take(&mut daemon.gateway_out)
    }
}
impl Kept for Effect {}
impl Kept for Output {}
impl Kept for crate::components::health::Output {}
impl Kept for crate::monitor::room::Output {}
impl Kept for crate::monitor::security::Output {}
impl Kept for crate::monitor::checks::room::Output {}
impl<A> Kept for crate::components::settings::Output<A> {}
impl Kept for crate::components::lifecycle::Output {}

/// A room as wired into this daemon: its timers travel inside [`Timer::Room`], its job
/// results inside [`WorkResult::Room`].
pub(super) trait Wired: Room<Output: Kept> {
    /// The room's timer key as the daemon's.
    fn timer(t: Self::Timer) -> Timer;
    /// The room's job result as the worker's.
    fn job(j: Self::Job) -> WorkResult;
    /// The room in the list.
    fn field(rooms: &mut Rooms) -> &mut Self;
    /// Where its outputs go (its line's delivery method).
    fn deliver(daemon: &mut Daemon, cx: &mut Cx<'_, Timer>, out: Vec<Self::Output>);
}

/// One room's request arm: `[serve]` hands it to the room's `Serve::handle` and its outputs to
/// `deliver`; `[serve METHOD]` to a `Daemon` method (a room whose requests need the wiring).
macro_rules! serve {
    ($daemon:ident, $cx:ident, $request:ident, $reply:ident, $field:ident, $ty:ty) => {{
        let mut out = <<$ty as Room>::Output as Kept>::vec($daemon);
        enter(
            &mut $daemon.rooms.$field,
            $cx,
            &mut $daemon.worker,
            &mut $daemon.jobs,
            &mut out,
            |room, rcx| crate::room::Serve::handle(room, rcx, $request, $reply),
        );
        <$ty as Wired>::deliver($daemon, $cx, out);
    }};
    ($daemon:ident, $cx:ident, $request:ident, $reply:ident, $field:ident, $ty:ty,
     $serve:ident) => {
        $daemon.$serve($cx, $request, $reply)
    };
}

macro_rules! rooms {
    ($( $(#[$doc:meta])* $variant:ident($field:ident: $ty:ty) => $deliver:ident
        $([serve $($serve:ident)?])? $([status $key:ident])? $([follows $follows:ident])?
        $([owns $children:ident])?, )*) => {
        /// `GET /api/v1/status`: the wiring's parts (`daemon`, `loop`) and each reporting
        /// room's (`[status KEY]`), serialized as one object in key order (the order
        /// `serde_json`'s map gave the `Value` builder this replaced).
        pub(super) struct Status<'a> {
            /// The daemon itself.
            pub(super) daemon: snapshot::Daemon<'a>,
            /// Loop statistics (`?detailed=true` only).
            pub(super) loop_stats: Option<Value>,
            $($( pub(super) $key: <$ty as Report>::Status<'a>, )?)*
        }

        /// The keys of [`Status`]: the wiring's, then the rooms' in list order.
        pub(super) const STATUS_KEYS: &[&str] = &["daemon", "loop", $($(stringify!($key),)?)*];

        impl serde::Serialize for Status<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                // Sorted once: sorting on every request cost about 300 instructions of ~76k.
                static SORTED: std::sync::OnceLock<[&str; STATUS_KEYS.len()]> =
                    std::sync::OnceLock::new();
                let keys = SORTED.get_or_init(|| {
                    let mut keys = [""; STATUS_KEYS.len()];
                    keys.copy_from_slice(STATUS_KEYS);
                    keys.sort_unstable();
                    keys
                });
                let len = keys.len() - usize::from(self.loop_stats.is_none());
                let mut map = s.serialize_map(Some(len))?;
                for &key in keys {
                    match key {
                        "daemon" => map.serialize_entry(key, &self.daemon)?,
                        "loop" => if let Some(l) = &self.loop_stats {
                            map.serialize_entry(key, l)?
                        },
                        $($( k if k == stringify!($key) => map.serialize_entry(k, &self.$key)?, )?)*
                        _ => {}
                    }
                }
                map.end()
            }
        }

        /// The rooms, one field each.
        pub(super) struct Rooms {
            $( $(#[$doc])* pub(super) $field: $ty, )*
        }

        /// A room's timer key inside the daemon's.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum RoomTimer {
            $( $(#[$doc])* $variant(<$ty as Room>::Timer), )*
        }

        /// A room's job result inside the worker's.
        #[derive(Debug)]
        pub enum RoomJob {
            $( $(#[$doc])* $variant(<$ty as Room>::Job), )*
        }

        $(
            impl Wired for $ty {
                fn timer(t: <$ty as Room>::Timer) -> Timer {
                    Timer::Room(RoomTimer::$variant(t))
                }
                fn job(j: <$ty as Room>::Job) -> WorkResult {
                    WorkResult::Room(RoomJob::$variant(j))
                }
                fn field(rooms: &mut Rooms) -> &mut Self {
                    &mut rooms.$field
                }
                fn deliver(daemon: &mut Daemon, cx: &mut Cx<'_, Timer>,
                           out: Vec<<$ty as Room>::Output>) {
                    daemon.$deliver(cx, out);
                    $( let _ = stringify!($children); daemon.spare_children(); )?
                }
            }
        )*

        impl Daemon {
            /// A room's timer came due: to the room, then its outputs to where they go.
            pub(super) fn room_timer(&mut self, cx: &mut Cx<'_, Timer>, timer: RoomTimer) {
                match timer {
                    $( RoomTimer::$variant(t) => {
                        let mut out = <<$ty as Room>::Output as Kept>::vec(self);
                        enter(&mut self.rooms.$field, cx, &mut self.worker, &mut self.jobs,
                              &mut out, |room, rcx| Room::on_timer(room, rcx, t));
                        <$ty as Wired>::deliver(self, cx, out);
                    } )*
                }
            }

            /// Routes a request to the room it belongs to (the wiring's own to
            /// [`Daemon::handle_daemon`]).
            pub(super) fn route(&mut self, cx: &mut Cx<'_, Timer>, request: Request, reply: ReplyTo) {
                match request {
                    Request::Daemon(r) => self.handle_daemon(cx, r, reply),
                    $( $( Request::$variant(r) => serve!(self, cx, r, reply, $field, $ty
                                                          $(, $serve)?), )? )*
                }
            }

            /// `GET /api/v1/status` composed: the wiring's parts and every reporting
            /// room's, each borrowed from its state.
            pub(super) fn rooms_status<'a>(&'a self, daemon: snapshot::Daemon<'a>,
                                           loop_stats: Option<Value>) -> Status<'a> {
                let facts = snapshot::Facts { health: &self.rooms.health };
                Status {
                    daemon,
                    loop_stats,
                    $($( $key: Report::status(&self.rooms.$field, &facts), )?)*
                }
            }

            /// Every room's entries in JSON metrics view `view`, added to the wiring's.
            pub(super) fn rooms_view(&self, view: crate::room::View, out: &mut Map<String, Value>) {
                $( Room::view(&self.rooms.$field, view, out); )*
            }

            /// Every room's Prometheus series, in room-list order.
            pub(super) fn rooms_metrics(&self, out: &mut crate::telemetry::Exposition) {
                $( Room::metrics(&self.rooms.$field, out); )*
            }

            /// The daemon starts: every room, in list order, arms its timers and begins its
            /// cycles ([`Room::start`]) with the effective configuration.
            pub(super) fn rooms_start(&mut self, cx: &mut Cx<'_, Timer>, config: &Config) {
                $( {
                    let mut out = Vec::new();
                    enter(&mut self.rooms.$field, cx, &mut self.worker, &mut self.jobs,
                          &mut out, |room, rcx| Room::start(room, rcx, config));
                    <$ty as Wired>::deliver(self, cx, out);
                } )*
            }

            /// The configuration changed: every room takes what it can change live, then the
            /// rooms that follow the server catalogue get it again (what they derive from it
            /// may depend on the configuration, e.g. the capability policy).
            pub(super) fn rooms_apply_config(&mut self, cx: &mut Cx<'_, Timer>, config: &Config) {
                $( {
                    let mut out = Vec::new();
                    enter(&mut self.rooms.$field, cx, &mut self.worker, &mut self.jobs,
                          &mut out, |room, rcx| Room::apply_config(room, rcx, config));
                    <$ty as Wired>::deliver(self, cx, out);
                } )*
                self.rooms_servers_changed(cx);
            }

            /// The server catalogue may have changed: every room that follows it
            /// (`[follows servers]`) gets the MCP room's view, borrowed; their outputs are
            /// delivered once the view is given back.
            pub(super) fn rooms_servers_changed(&mut self, cx: &mut Cx<'_, Timer>) {
                let servers = self.rooms.mcp.catalogue();
                $($(
                    let $field = {
                        let mut out = Vec::new();
                        enter(&mut self.rooms.$field, cx, &mut self.worker, &mut self.jobs,
                              &mut out, |room, rcx| crate::room::Follows::$follows(room, rcx, &servers));
                        out
                    };
                )?)*
                drop(servers);
                $($(
                    let _ = stringify!($follows);
                    <$ty as Wired>::deliver(self, cx, $field);
                )?)*
            }

            /// The answer to a request room `room` asked (`Effect::Request`) goes back to it.
            pub(super) fn room_answer(&mut self, cx: &mut Cx<'_, Timer>, room: &'static str,
                                      tag: u64, answer: Answer) {
                $( if room == <$ty as Room>::NAME {
                    let mut out = <<$ty as Room>::Output as Kept>::vec(self);
                    enter(&mut self.rooms.$field, cx, &mut self.worker, &mut self.jobs,
                          &mut out, |r, rcx| Room::on_answer(r, rcx, tag, answer));
                    <$ty as Wired>::deliver(self, cx, out);
                    return;
                } )*
                log::error!("an answer for room {room}, which is not in the room list");
            }

            /// [`Daemon::room_answer`] for a tool call answered with the server's
            /// result bytes (`Room::on_raw_answer`).
            pub(super) fn room_raw_answer(&mut self, cx: &mut Cx<'_, Timer>, room: &'static str,
                                          tag: u64, raw: crate::api::RawCall) {
                $( if room == <$ty as Room>::NAME {
                    let mut out = <<$ty as Room>::Output as Kept>::vec(self);
                    enter(&mut self.rooms.$field, cx, &mut self.worker, &mut self.jobs,
                          &mut out, |r, rcx| Room::on_raw_answer(r, rcx, tag, raw));
                    <$ty as Wired>::deliver(self, cx, out);
                    return;
                } )*
                log::error!("an answer for room {room}, which is not in the room list");
            }

            /// Event `seq`, just published, the newest of the history: every room sees it
            /// (`Room::on_event`), in list order; what they say goes where their lines send
            /// it. The rooms read it from the history; it is copied out only when a room's
            /// outputs are to be delivered before the next room sees it (they may publish
            /// events of their own, after which it may no longer be the newest). `published`:
            /// the data as it was published, when the history keeps it otherwise.
            #[allow(unused_assignments)] // `data` after the last room
            pub(super) fn rooms_event(&mut self, cx: &mut Cx<'_, Timer>, seq: u64,
                                      channel: Channel, published: Option<EventData>) {
                let mut copy = published;
                let mut data = match (&copy, self.events.newest(seq)) {
                    (Some(data), _) => data,
                    (None, Some(event)) => event.data(),
                    // Not reached: nothing was recorded since it was.
                    (None, None) => return,
                };
                $( {
                    let mut out = Vec::new();
                    enter(&mut self.rooms.$field, cx, &mut self.worker, &mut self.jobs,
                          &mut out, |room, rcx| Room::on_event(room, rcx, seq, channel, data));
                    if !out.is_empty() {
                        if copy.is_none() {
                            copy = Some(data.clone());
                        }
                        <$ty as Wired>::deliver(self, cx, out);
                        let Some(copied) = &copy else { return };
                        data = copied;
                    }
                } )*
            }

            /// Readiness on a token of a room that owns children (`[owns children]`):
            /// `true` when one of them took it.
            pub(super) fn rooms_ready(&mut self, cx: &mut Cx<'_, Timer>, token: mio::Token) -> bool {
                $($(
                    let _ = stringify!($children);
                    if crate::room::Parent::owns(&self.rooms.$field, token) {
                        self.with::<$ty, _>(cx, |room, rcx| crate::room::Parent::on_ready(room, rcx, token));
                        return true;
                    }
                )?)*
                false
            }

            /// The daemon reaped `pid`: the first room that owns children and claims it ends
            /// its run. `false`: no room's child.
            pub(super) fn rooms_child_exit(&mut self, cx: &mut Cx<'_, Timer>, pid: i32,
                                           status: i32) -> bool {
                $($(
                    let _ = stringify!($children);
                    if self.with::<$ty, _>(cx, |room, rcx| {
                        crate::room::Parent::on_child_exit(room, rcx, pid, status)
                    }) {
                        return true;
                    }
                )?)*
                false
            }

            /// The running children of every room that owns children.
            pub(super) fn rooms_child_pids(&self) -> Vec<i32> {
                let mut pids = Vec::new();
                $($(
                    let _ = stringify!($children);
                    pids.extend(crate::room::Parent::child_pids(&self.rooms.$field));
                )?)*
                pids
            }

            /// At shutdown: every room that owns children kills their process groups.
            pub(super) fn rooms_kill_children(&mut self) {
                $($(
                    let _ = stringify!($children);
                    crate::room::Parent::kill_children(&mut self.rooms.$field);
                )?)*
            }

            /// A room's job came back (or failed): to the room, then its outputs.
            pub(super) fn room_job(&mut self, cx: &mut Cx<'_, Timer>, job: RoomJob) {
                match job {
                    $( RoomJob::$variant(j) => {
                        let mut out = Vec::new();
                        enter(&mut self.rooms.$field, cx, &mut self.worker, &mut self.jobs,
                              &mut out, |room, rcx| Room::on_job(room, rcx, j));
                        <$ty as Wired>::deliver(self, cx, out);
                    } )*
                }
            }
        }
    };
}

rooms! {
    /// The daemon's own components (first: their series lead the rooms' part of the
    /// Prometheus exposition).
    Control(components: Components) => components_outputs [serve] [status components],
    /// The MCP servers.
    Mcp(mcp: Mcp) => deliver_outputs [serve] [status mcp_servers],
    /// `diagnostics run`.
    Diagnostics(diagnostics: Diagnostics) => deliver_effects [serve serve_diagnostics],
    /// The health rounds.
    Health(health: Health) => health_outputs [serve serve_health],
    /// The configuration.
    Config(settings: Settings<listener::TcpAccess>) => settings_outputs [serve],
    /// The declared checks.
    Checks(checks: crate::monitor::checks::room::Checks) => checks_outputs [serve serve_checks] [owns children],
    /// The webhook and exec actions.
    Actions(actions: crate::monitor::actions::Actions) => deliver_effects [owns children],
    /// The security signals.
    Security(security: crate::monitor::security::Security) => security_outputs,
    /// Alerts and the built-in performance and health cycles.
    Alerts(alerts: Alerts) => alerts_outputs [serve serve_alerts],
    /// The `/mcp` endpoint.
    Gateway(gateway: crate::gateway::Gateway) => gateway_outputs [serve] [follows servers],
    /// Discovery of MCP servers to install.
    Discovery(discovery: crate::discovery::Discovery) => deliver_effects [serve],
    /// Variety: required capabilities against what the servers provide.
    Variety(variety: crate::variety::room::Variety) => deliver_effects [serve] [status variety] [follows servers],
    /// The five VSM systems.
    Vsm(vsm: crate::vsm::Vsm) => deliver_effects [serve] [status vsm_systems],
    /// Reflection: the record, insights, queries, decision support.
    Reflect(reflect: crate::reflect::Reflect) => deliver_effects [serve],
    /// The acquisition pipeline and its decision records.
    Acquire(acquire: crate::acquire::Acquire) => deliver_effects [serve] [owns children],
}

impl Daemon {
    /// Tells the MCP room's orphan sweep (and the reaper) which children belong to the rooms
    /// that own children (`[owns children]`), after every call into one of them.
    fn spare_children(&mut self) {
        let pids = self.rooms_child_pids();
        self.rooms.mcp.spare(pids);
    }

    /// Runs `f` on room `R` with its [`RoomCx`], then delivers what it said where its line
    /// in the list sends it: the one way the wiring calls a room's own methods.
    pub(super) fn with<R: Wired, X>(
        &mut self,
        cx: &mut Cx<'_, Timer>,
        f: impl FnOnce(&mut R, &mut RoomCx<'_, R>) -> X,
    ) -> X {
        let mut out = R::Output::vec(self);
        let x = enter(
            R::field(&mut self.rooms),
            cx,
            &mut self.worker,
            &mut self.jobs,
            &mut out,
            f,
        );
        R::deliver(self, cx, out);
        x
    }

    /// Outputs of rooms that only say the common effects go on the effect bus.
    pub(super) fn deliver_effects(&mut self, _cx: &mut Cx<'_, Timer>, out: Vec<Effect>) {
        append(&mut self.effects, out);
    }

    /// MCP's outputs go on the effect bus as they are.
    pub(super) fn deliver_outputs(&mut self, _cx: &mut Cx<'_, Timer>, out: Vec<Output>) {
        append(&mut self.outputs, out);
    }
}

/// Puts `out` at the end of `bus`. An empty bus without room for it takes `out`'s vector
/// itself, without allocating and copying.
fn append<T>(bus: &mut Vec<T>, out: Vec<T>) {
    if bus.is_empty() && bus.capacity() < out.len() {
        *bus = out;
    } else {
        bus.extend(out);
    }
}

/// Queues `work` on the worker; `Err`: why it was not taken.
pub(super) fn submit_work(
    worker: Option<&mut Worker<WorkResult>>,
    work: crate::reactor::worker::Job<WorkResult>,
) -> Result<u64, &'static str> {
    match worker {
        Some(w) => w.submit(work).map_err(|e| match e {
            SubmitError::Busy => "worker queue is full",
            SubmitError::Gone => "worker thread has died",
        }),
        None => Err("worker is not running"),
    }
}

/// One room's view of the daemon's wheel and worker.
struct Bind<'a, T, J> {
    timers: &'a mut dyn Timers<Timer>,
    worker: Option<&'a mut Worker<WorkResult>>,
    jobs: &'a mut Waiting<WorkResult>,
    wrap_timer: fn(T) -> Timer,
    wrap_job: fn(J) -> WorkResult,
}

impl<T, J> Timers<T> for Bind<'_, T, J> {
    fn insert(&mut self, deadline: Instant, key: T) -> TimerId {
        self.timers.insert(deadline, (self.wrap_timer)(key))
    }
    fn cancel(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }
    fn len(&self) -> usize {
        self.timers.len()
    }
}

impl<T, J: Send + 'static> Wiring<T, J> for Bind<'_, T, J> {
    fn timers(&mut self) -> &mut dyn Timers<T> {
        self
    }

    fn submit(
        &mut self,
        timeout: Duration,
        work: Box<dyn FnOnce() -> J + Send>,
        fail: Box<dyn FnOnce(&str) -> J>,
    ) -> Result<(), J> {
        let wrap = self.wrap_job;
        match submit_work(self.worker.as_deref_mut(), Box::new(move || wrap(work()))) {
            Ok(id) => {
                let timer = self.timers.insert(Instant::now() + timeout, Timer::Job(id));
                self.jobs.wait(id, timer, move |why| wrap(fail(why)));
                Ok(())
            }
            Err(why) => Err(fail(why)),
        }
    }
}

/// Runs `f` on `room` with its [`RoomCx`]: its timers and jobs go through the daemon's wheel
/// and worker, its outputs to `out`.
pub(super) fn enter<R: Wired, X>(
    room: &mut R,
    cx: &mut Cx<'_, Timer>,
    worker: &mut Option<Worker<WorkResult>>,
    jobs: &mut Waiting<WorkResult>,
    out: &mut Vec<R::Output>,
    f: impl FnOnce(&mut R, &mut RoomCx<'_, R>) -> X,
) -> X {
    let mut bind = Bind {
        timers: &mut *cx.timers,
        worker: worker.as_mut(),
        jobs,
        wrap_timer: R::timer,
        wrap_job: R::job,
    };
    let mut rcx = RoomCx::new(cx.registry, cx.stats, &mut bind, out);
    f(room, &mut rcx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Component, Daemon, McpCounts};
    use serde_json::json;
    use std::collections::BTreeMap;

    /// The status composed from the room list, against the `Value` builder it replaced, on
    /// the same facts: the bytes must not change.
    #[test]
    fn the_composed_status_is_byte_for_byte_the_value_builders() {
        for (detailed, warning, listen) in [
            (false, None, None),
            (
                true,
                Some("overrides.json: bad \"x\""),
                Some("127.0.0.1:8080"),
            ),
        ] {
            let mut components = BTreeMap::new();
            let mut old_components = serde_json::Map::new();
            for (name, running, error, health) in [
                ("worker", true, None, Some((true, "alive"))),
                (
                    "http",
                    false,
                    Some("bind: in use\n"),
                    Some((false, "stopped ✗")),
                ),
                ("control", true, None, None),
            ] {
                components.insert(
                    name,
                    Component {
                        health_message: health.map(|h| h.1),
                        healthy: health.map(|h| h.0),
                        last_error: error,
                        restarts: 3,
                        since: "2026-12-02T03:00:00Z".into(),
                        status: if running { "running" } else { "stopped" },
                    },
                );
                old_components.insert(
                    name.to_string(),
                    json!({
                        "status": if running { "running" } else { "stopped" },
                        "since": "2026-12-02T03:00:00Z",
                        "restarts": 3,
                        "last_error": error,
                        "healthy": health.map(|h| h.0),
                        "health_message": health.map(|h| h.1.to_string()),
                    }),
                );
            }
            let loop_stats = detailed.then(|| json!({"wakeups": 5, "rss_bytes": null}));
            let vsm = crate::vsm::Vsm::default();
            let typed = Status {
                components,
                daemon: Daemon {
                    auth: "file",
                    config_source: "embedded defaults".into(),
                    config_warning: warning,
                    http_listen: listen.map(String::from),
                    pid: 42,
                    pid_file: "/run/x.pid".into(),
                    socket: "/run/s".into(),
                    started_at: "2026-12-02T03:00:00Z".into(),
                    state_dir: "/var/lib/vsm".into(),
                    status: "running",
                    uptime_seconds: 7,
                    version: "0.1.0",
                },
                loop_stats: loop_stats.clone(),
                mcp_servers: McpCounts {
                    active_count: 1,
                    total_registered: 2,
                    last_discovery: listen.map(|_| "2026-12-02T03:00:00Z"),
                },
                variety: crate::variety::room::Status {
                    current_ratio: 0.5,
                    gap_count: 1,
                    last_assessed: listen.map(|_| "2026-12-02T03:00:00.000Z"),
                    threshold: 0.7,
                },
                vsm_systems: vsm.status_block(),
            };
            let mut old = json!({
                "daemon": {
                    "status": "running",
                    "version": "0.1.0",
                    "pid": 42,
                    "started_at": "2026-12-02T03:00:00Z",
                    "uptime_seconds": 7,
                    "config_source": "embedded defaults",
                    "config_warning": warning.map(String::from),
                    "state_dir": "/var/lib/vsm",
                    "socket": "/run/s",
                    "pid_file": "/run/x.pid",
                    "http_listen": listen,
                    "auth": "file",
                },
                "components": old_components,
                "mcp_servers": {"active_count": 1, "total_registered": 2,
                                "last_discovery": listen.map(|_| "2026-12-02T03:00:00Z")},
                "variety": {"current_ratio": 0.5, "gap_count": 1, "threshold": 0.7,
                            "last_assessed": listen.map(|_| "2026-12-02T03:00:00.000Z")},
                "vsm_systems": serde_json::to_value(vsm.status_block()).expect("vsm"),
            });
            if let Some(l) = loop_stats {
                old["loop"] = l;
            }
            assert_eq!(
                String::from_utf8(serde_json::to_vec(&typed).expect("typed")).expect("utf-8"),
                old.to_string()
            );
            assert_eq!(serde_json::to_value(&typed).expect("value"), old);
        }
    }

    /// Each key of the status object comes from one place only.
    #[test]
    fn status_keys_are_unique() {
        let mut keys = STATUS_KEYS.to_vec();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), STATUS_KEYS.len(), "{STATUS_KEYS:?}");
    }
}
