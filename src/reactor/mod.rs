//! The event loop: one `mio::Poll`, the timer wheel, signals and the worker's waker.
//!
//! The reactor knows no business: it sleeps until the next readiness event or timer
//! deadline (never a periodic tick), then hands each event, expired timer, signal and
//! wake-up to the [`Handler`] (the daemon).
//!
//! Floors below the wiring never name the wiring's types: each owns its own timer key and
//! sees the wheel through [`Cx::narrow`], which wraps its keys into the wiring's; each gets
//! its tokens as a [`TokenRange`] allocated here ([`Reactor::tokens`]), so no floor knows
//! another's token numbers. Invariant: ranges never overlap, and none reaches [`SIGNALS`] or
//! [`WAKER`].

pub mod signals;
pub mod timer;
pub mod worker;

use mio::{Events, Poll, Token, Waker};
use std::io;
use std::sync::Arc;
use std::time::Instant;
use timer::{TimerId, TimerWheel};

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

/// A contiguous block of `mio` tokens owned by one floor (listeners, connections, MCP pipes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRange {
    start: usize,
    len: usize,
}

impl TokenRange {
    /// Whether `token` is in this range.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.start && token.0 - self.start < self.len
    }

    /// The `i`-th token of the range, if the range has one.
    pub fn token(&self, i: usize) -> Option<Token> {
        (i < self.len).then(|| Token(self.start + i))
    }

    /// Position of `token` in the range.
    pub fn index(&self, token: Token) -> Option<usize> {
        self.owns(token).then(|| token.0 - self.start)
    }

    /// How many tokens the range holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range holds no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Hands out [`TokenRange`]s from 0 upwards, never reaching the reactor's own tokens.
#[derive(Debug, Default)]
pub struct TokenAllocator {
    next: usize,
}

impl TokenAllocator {
    /// The next `len` tokens, or fewer when the token space runs out (never overlapping the
    /// reactor's own tokens; a range may be empty then).
    pub fn take(&mut self, len: usize) -> TokenRange {
        let end = self.next.saturating_add(len).min(SIGNALS.0.min(WAKER.0));
        let range = TokenRange {
            start: self.next,
            len: end.saturating_sub(self.next),
        };
        self.next = end;
        range
    }
}

/// Where timers are armed with keys of type `T`: the wheel itself, or a view of it that
/// wraps a floor's own keys into the wiring's ([`Cx::narrow`]).
pub trait Timers<T> {
    /// Arms a timer that fires `key` at `deadline`.
    fn insert(&mut self, deadline: Instant, key: T) -> TimerId;
    /// Disarms a timer; false when it already fired or was cancelled.
    fn cancel(&mut self, id: TimerId) -> bool;
    /// Timers armed (all floors together).
    fn len(&self) -> usize;
    /// Whether no timer is armed.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Timers<T> for TimerWheel<T> {
    fn insert(&mut self, deadline: Instant, key: T) -> TimerId {
        TimerWheel::insert(self, deadline, key)
    }
    fn cancel(&mut self, id: TimerId) -> bool {
        TimerWheel::cancel(self, id).is_some()
    }
    fn len(&self) -> usize {
        TimerWheel::len(self)
    }
}

/// A floor's view of the wheel: its keys `U` go in wrapped as the wiring's `T`.
pub struct Wrapped<'a, T, U> {
    inner: &'a mut dyn Timers<T>,
    wrap: fn(U) -> T,
}

impl<T, U> Timers<U> for Wrapped<'_, T, U> {
    fn insert(&mut self, deadline: Instant, key: U) -> TimerId {
        self.inner.insert(deadline, (self.wrap)(key))
    }
    fn cancel(&mut self, id: TimerId) -> bool {
        self.inner.cancel(id)
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
}

/// What handlers get to act on the loop: the registry and their view of the timer wheel.
pub struct Cx<'a, T> {
    /// Where sources are (de)registered.
    pub registry: &'a mio::Registry,
    /// The timer wheel, keyed by this floor's own timer type.
    pub timers: &'a mut dyn Timers<T>,
    /// Loop counters.
    pub stats: &'a LoopStats,
}

impl<'a, T> Cx<'a, T> {
    /// The loop as seen by a floor whose timer keys are `U`, wrapped into `T` by `wrap`
    /// (typically an enum variant of the wiring's timer type). Use as
    /// `floor.on_x(&mut cx.narrow(Timer::Floor).cx(), ...)`.
    pub fn narrow<U>(&mut self, wrap: fn(U) -> T) -> Narrowed<'_, T, U> {
        Narrowed {
            registry: self.registry,
            stats: self.stats,
            timers: Wrapped {
                inner: &mut *self.timers,
                wrap,
            },
        }
    }
}

/// A [`Cx`] narrowed to a floor's timer keys; [`Narrowed::cx`] lends it out.
pub struct Narrowed<'a, T, U> {
    registry: &'a mio::Registry,
    stats: &'a LoopStats,
    timers: Wrapped<'a, T, U>,
}

impl<T, U> Narrowed<'_, T, U> {
    /// The context to hand to the floor.
    pub fn cx(&mut self) -> Cx<'_, U> {
        Cx {
            registry: self.registry,
            timers: &mut self.timers,
            stats: self.stats,
        }
    }
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
    tokens: TokenAllocator,
}

impl<T: 'static> Reactor<T> {
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
            tokens: TokenAllocator::default(),
        })
    }

    /// Allocates `len` tokens for one floor (see [`TokenAllocator::take`]).
    pub fn tokens(&mut self, len: usize) -> TokenRange {
        self.tokens.take(len)
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
            self.timers.expire(Instant::now(), &mut fired);
            let mut cx = Cx {
                registry: self.poll.registry(),
                timers: &mut self.timers,
                stats: &self.stats,
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_ranges_do_not_overlap_and_stop_below_the_reactor_tokens() {
        let mut alloc = TokenAllocator::default();
        let a = alloc.take(2);
        let b = alloc.take(10);
        assert_eq!(
            (a.token(0), a.token(1), a.token(2)),
            (Some(Token(0)), Some(Token(1)), None)
        );
        assert!(!a.owns(Token(2)) && b.owns(Token(2)) && !b.owns(Token(12)));
        assert_eq!(b.index(Token(5)), Some(3));
        assert_eq!(b.index(Token(1)), None);
        let rest = alloc.take(usize::MAX);
        assert!(!rest.owns(SIGNALS) && !rest.owns(WAKER));
        assert!(rest.owns(Token(SIGNALS.0 - 1)));
        assert!(alloc.take(1).is_empty());
    }

    #[derive(Debug, PartialEq)]
    enum Root {
        Floor(u8),
        Own,
    }

    #[test]
    fn a_narrowed_cx_wraps_the_floor_keys_into_the_wiring_keys() {
        let poll = Poll::new().expect("poll");
        let now = Instant::now();
        let mut wheel: TimerWheel<Root> = TimerWheel::new(now);
        let stats = LoopStats::default();
        let mut cx = Cx {
            registry: poll.registry(),
            timers: &mut wheel,
            stats: &stats,
        };
        cx.timers.insert(now + Duration::from_millis(5), Root::Own);
        let id = {
            let mut narrowed = cx.narrow(Root::Floor);
            let floor: Cx<'_, u8> = narrowed.cx();
            floor.timers.insert(now + Duration::from_millis(10), 7);
            floor.timers.insert(now + Duration::from_millis(20), 8)
        };
        assert!(cx.timers.cancel(id));
        assert!(!cx.timers.cancel(id));
        let mut fired = Vec::new();
        wheel.expire(now + Duration::from_secs(1), &mut fired);
        let keys: Vec<Root> = fired.into_iter().map(|(_, k)| k).collect();
        assert_eq!(keys, vec![Root::Own, Root::Floor(7)]);
    }
}
