//! The event loop: one `mio::Poll`, the timer wheel, signals and the worker's waker.
//!
//! The reactor knows no business: it sleeps until the next readiness event or timer
//! deadline (never a periodic tick), then hands each event, expired timer, signal and
//! wake-up to the [`Handler`] (the daemon), which owns every other token.

pub mod signals;
pub mod timer;
pub mod worker;

use mio::{Events, Poll, Token, Waker};
use std::io;
use std::sync::Arc;
use std::time::Instant;
use timer::TimerWheel;

/// Token of the worker's waker.
pub const WAKER: Token = Token(usize::MAX - 1);
/// Token of the signal source.
pub const SIGNALS: Token = Token(usize::MAX - 2);

/// Counters about the loop itself, shown by `status --detailed`.
#[derive(Debug, Clone, Default)]
pub struct LoopStats {
    /// Returns from `poll`.
    pub wakeups: u64,
    /// Readiness events dispatched.
    pub events: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Signals received.
    pub signals: u64,
    /// Waker wake-ups (worker results, cross-thread logs).
    pub wakes: u64,
}

/// What handlers get to act on the loop: the registry and the timer wheel.
pub struct Cx<'a, T> {
    /// Where sources are (de)registered.
    pub registry: &'a mio::Registry,
    /// The timer wheel.
    pub timers: &'a mut TimerWheel<T>,
    /// Loop counters.
    pub stats: &'a LoopStats,
}

/// The owner of everything the loop drives.
pub trait Handler {
    /// Payload of this handler's timers.
    type Timer;
    /// A readiness event for a token the handler registered.
    fn on_event(&mut self, cx: &mut Cx<'_, Self::Timer>, event: &mio::event::Event);
    /// A timer came due.
    fn on_timer(&mut self, cx: &mut Cx<'_, Self::Timer>, timer: Self::Timer);
    /// A signal arrived (SIGTERM, SIGINT, SIGHUP, SIGCHLD).
    fn on_signal(&mut self, cx: &mut Cx<'_, Self::Timer>, signal: i32);
    /// The waker fired (worker results or cross-thread log records are ready).
    fn on_wake(&mut self, cx: &mut Cx<'_, Self::Timer>);
    /// End of one loop iteration: flush what accumulated (streams, deferred answers).
    fn after_dispatch(&mut self, cx: &mut Cx<'_, Self::Timer>);
    /// Whether the loop should return.
    fn finished(&self) -> bool;
}

/// Poll, timers, signals and waker.
pub struct Reactor<T> {
    poll: Poll,
    timers: TimerWheel<T>,
    signals: signals::SignalSource,
    waker: Arc<Waker>,
    stats: LoopStats,
}

impl<T> Reactor<T> {
    /// Creates the poll instance, registers signals and the waker.
    ///
    /// # Errors
    /// OS errors from epoll, eventfd or signal registration.
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let signals = signals::SignalSource::new(poll.registry(), SIGNALS)?;
        Ok(Reactor {
            poll,
            timers: TimerWheel::new(Instant::now()),
            signals,
            waker,
            stats: LoopStats::default(),
        })
    }

    /// The waker other threads use to interrupt `poll`.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Access for set-up before [`Reactor::run`].
    pub fn cx(&mut self) -> Cx<'_, T> {
        Cx {
            registry: self.poll.registry(),
            timers: &mut self.timers,
            stats: &self.stats,
        }
    }

    /// Runs until the handler says it is finished.
    ///
    /// # Errors
    /// A failing `poll` (other than EINTR).
    pub fn run<H: Handler<Timer = T>>(&mut self, handler: &mut H) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut fired = Vec::new();
        while !handler.finished() {
            let timeout = self.timers.timeout(Instant::now());
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.stats.wakeups += 1;
            let mut woke = false;
            let mut signalled = Vec::new();
            for event in events.iter() {
                match event.token() {
                    WAKER => woke = true,
                    SIGNALS => signalled.extend(self.signals.pending()),
                    _ => self.stats.events += 1,
                }
            }
            self.stats.signals += signalled.len() as u64;
            self.stats.wakes += u64::from(woke);
            let mut cx = Cx {
                registry: self.poll.registry(),
                timers: &mut self.timers,
                stats: &self.stats,
            };
            for event in events.iter() {
                if event.token() != WAKER && event.token() != SIGNALS {
                    handler.on_event(&mut cx, event);
                }
            }
            for signal in signalled {
                handler.on_signal(&mut cx, signal);
            }
            if woke {
                handler.on_wake(&mut cx);
            }
            cx.timers.expire(Instant::now(), &mut fired);
            let n_fired = fired.len() as u64;
            for (_, timer) in fired.drain(..) {
                handler.on_timer(&mut cx, timer);
            }
            handler.after_dispatch(&mut cx);
            self.stats.timers_fired += n_fired;
        }
        Ok(())
    }
}
