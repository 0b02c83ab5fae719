//! The rooms wired into the loop: how each room's timer keys and job results are wrapped into
//! the daemon's ([`Wired`], one impl per room), and the one generic way into a room
//! ([`enter`]), which lends it a [`RoomCx`] over the daemon's wheel, worker and effect bus.

use super::*;
use crate::components::diagnostics::{self, Diagnostics};
use crate::components::health::{self, Health};
use crate::reactor::timer::TimerId;
use crate::reactor::Timers;
use crate::room::{RoomCx, Wiring};
use std::convert::Infallible;

/// A room as wired into this daemon: its timers travel as a [`Timer`] variant, its job
/// results as a [`WorkResult`] variant.
pub(super) trait Wired: Room {
    /// The room's timer key as the daemon's.
    fn timer(t: Self::Timer) -> Timer;
    /// The room's job result as the worker's.
    fn job(j: Self::Job) -> WorkResult;
}

// The room list: one impl per room.

impl Wired for Diagnostics {
    fn timer(t: Infallible) -> Timer {
        match t {}
    }
    fn job(j: diagnostics::Job) -> WorkResult {
        WorkResult::Diagnostics(j)
    }
}

impl Wired for Health {
    fn timer(t: Infallible) -> Timer {
        match t {}
    }
    fn job(j: health::Job) -> WorkResult {
        WorkResult::Health(j)
    }
}

impl Wired for Mcp {
    fn timer(t: mcp::Timer) -> Timer {
        Timer::Mcp(t)
    }
    fn job(j: Infallible) -> WorkResult {
        match j {}
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
