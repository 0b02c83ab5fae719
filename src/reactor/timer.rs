//! Hierarchical timer wheel for the single-threaded reactor.
//!
//! Resolution is 1 ms; time is counted in whole milliseconds since the `epoch`
//! passed to [`TimerWheel::new`]. Deadlines are rounded *up* to the next whole
//! millisecond and `expire(now)` rounds `now` *down*, so a timer never fires early.
//! There are 6 levels of 64 slots (levels cover 64^(L+1) ms each, 64^6 ms ≈ 2.2
//! years in total) plus a "far" list for anything further out. Entries live in a
//! slab (`Vec` + free list threaded through `next`) and are linked into per-slot
//! intrusive doubly-linked lists, so insert and cancel are O(1) and allocation-free
//! once the slab has grown.
//!
//! Invariants (with `elapsed` = the wheel's current time in ms):
//! 1. Every armed entry has `deadline >= elapsed`; a deadline already in the past
//!    is stored as `elapsed` ("fire on next expire"), and reported as such.
//! 2. Let `b` = the highest bit in which `elapsed ^ deadline` differs (at least 5).
//!    The entry sits at level `b / 6`, slot `(deadline >> 6*level) & 63`, or in
//!    the far list when `b >= 36`. Hence every entry at a level shares all bits
//!    above that level's digit with `elapsed`, its slot is at or after the level's
//!    cursor `(elapsed >> 6*level) & 63`, every entry of a lower level is due
//!    before every entry of a higher level (and of the far list), and all entries
//!    of one level-0 slot share the same deadline.
//! 3. `elapsed` only moves to the start of the earliest occupied slot (which is
//!    then cascaded or fired), or to a time before every such start, so (2) keeps
//!    holding; the far list is re-filed only once the wheel is empty.
//! 4. Bit `s` of `occupied[L]` is set iff slot `s` of level `L` is non-empty.
//! 5. A slab entry is armed iff its `value` is `Some`; freeing bumps `generation`,
//!    so stale [`TimerId`]s never match (until a 2^32 wrap on the same slot).
//! 6. `epoch + deadline` is representable as an `Instant` for every entry.
use std::time::{Duration, Instant};

const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Milliseconds covered by the whole wheel, as a bit count (64^6 = 2^36).
const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;
/// List index of the far-future list; wheel slot lists are `level * SLOTS + slot`.
const FAR: usize = LEVELS * SLOTS;
const NIL: u32 = u32::MAX;

/// Handle of an armed timer; stale handles are detected by generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

struct Entry<T> {
    value: Option<T>,
    generation: u32,
    deadline: u64,
    list: usize,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// Hierarchical timer wheel with exact `next_deadline`, generic over the payload.
pub struct TimerWheel<T> {
    epoch: Instant,
    elapsed: u64,
    entries: Vec<Entry<T>>,
    free: u32,
    lists: Vec<List>,
    occupied: [u64; LEVELS],
    len: usize,
    #[cfg(test)]
    visits: usize,
}

impl<T> std::fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerWheel")
            .field("elapsed_ms", &self.elapsed)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<T> TimerWheel<T> {
    /// Creates an empty wheel whose time 0 is `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            elapsed: 0,
            entries: Vec::new(),
            free: NIL,
            lists: vec![EMPTY; FAR + 1],
            occupied: [0; LEVELS],
            len: 0,
            #[cfg(test)]
            visits: 0,
        }
    }

    /// Arms a timer; returns its handle.
    ///
    /// A deadline at or before the wheel's current time fires on the next [`expire`](Self::expire).
    ///
    /// # Panics
    /// If more than `u32::MAX - 1` timers are armed at once.
    pub fn insert(&mut self, deadline: Instant, value: T) -> TimerId {
        let since = deadline.saturating_duration_since(self.epoch);
        let floor = millis(since);
        let ceil = floor.saturating_add(u64::from(since.subsec_nanos() % 1_000_000 != 0));
        // Rounding up can only leave `Instant`'s range within 1 ms of its maximum.
        let fits = self
            .epoch
            .checked_add(Duration::from_millis(ceil))
            .is_some();
        let deadline = if fits { ceil } else { floor }.max(self.elapsed);
        if self.free == NIL {
            // Grow the slab by one free entry (amortised; no allocation once grown).
            let index = u32::try_from(self.entries.len()).ok().filter(|&i| i != NIL);
            self.free = index.expect("TimerWheel: too many armed timers");
            let (value, generation, list, prev, next) = (None, 0, FAR, NIL, NIL);
            self.entries.push(Entry {
                value,
                generation,
                deadline,
                list,
                prev,
                next,
            });
        }
        let index = self.free;
        let e = &mut self.entries[index as usize];
        (self.free, e.value, e.deadline) = (e.next, Some(value), deadline);
        self.len += 1;
        self.file(index);
        self.id(index)
    }

    /// Disarms; returns the payload if it was still armed.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        if !self.is_armed(id) {
            return None;
        }
        self.unlink(id.index);
        self.release(id.index)
    }

    /// Exact earliest deadline of all armed timers, or None when empty.
    ///
    /// Cost: O(levels + entries of one slot). A deadline that was already past when
    /// inserted is reported as the wheel time at insertion (see invariant 1).
    pub fn next_deadline(&self) -> Option<Instant> {
        let ms = match self.next_slot() {
            // All entries of a level-0 slot share one deadline.
            Some((0, slot, _)) => Some(self.entries[self.lists[slot].head as usize].deadline),
            Some((level, slot, _)) => self.min_deadline(level * SLOTS + slot),
            None => self.min_deadline(FAR),
        };
        ms.map(|ms| self.instant(ms))
    }

    /// Time from `now` until the next deadline (Duration::ZERO if already due), None when empty.
    /// This is what the loop passes to mio::Poll::poll.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.next_deadline()
            .map(|d| d.saturating_duration_since(now))
    }

    /// Advance to `now`, pushing expired timers (deadline order) into `out`. Returns how many fired.
    ///
    /// Timers with equal deadlines fire in insertion order. The work done is
    /// proportional to the occupied slots visited, not to the time elapsed.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<(TimerId, T)>) -> usize {
        let now_ms = millis(now.saturating_duration_since(self.epoch));
        let before = out.len();
        loop {
            let list = if let Some((level, slot, start)) = self.next_slot() {
                if start > now_ms {
                    break;
                }
                self.elapsed = start;
                level * SLOTS + slot
            } else if self.lists[FAR].head != NIL && far_start(self.elapsed) <= now_ms {
                // The wheel is empty: jump straight to the earliest far entry (or `now`).
                let min = self.min_deadline(FAR);
                self.elapsed = min.map_or(now_ms, |m| m.min(now_ms));
                FAR
            } else {
                break;
            };
            #[cfg(test)]
            {
                self.visits += 1;
            }
            let mut cur = self.detach(list);
            while cur != NIL {
                let next = self.entries[cur as usize].next;
                if self.entries[cur as usize].deadline <= self.elapsed {
                    let id = self.id(cur);
                    out.push((id, self.release(cur).expect("linked entries are armed")));
                } else {
                    self.file(cur); // cascade to a lower level (or stay far)
                }
                cur = next;
            }
        }
        self.elapsed = self.elapsed.max(now_ms);
        out.len() - before
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if `id` is still armed (not fired, not cancelled).
    pub fn is_armed(&self, id: TimerId) -> bool {
        let e = self.entries.get(id.index as usize);
        e.is_some_and(|e| e.generation == id.generation && e.value.is_some())
    }

    fn instant(&self, ms: u64) -> Instant {
        self.epoch
            .checked_add(Duration::from_millis(ms))
            .expect("invariant 6: epoch + deadline is representable")
    }

    /// Lowest occupied level, its first occupied slot at/after the cursor, and that slot's start time.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        let level = self.occupied.iter().position(|&o| o != 0)?;
        let shift = SLOT_BITS * level as u32;
        let cursor = ((self.elapsed >> shift) & (SLOTS as u64 - 1)) as u32;
        let slot =
            (self.occupied[level].rotate_right(cursor).trailing_zeros() + cursor) as usize % SLOTS;
        debug_assert!(
            slot >= cursor as usize,
            "invariant 2: no slot behind the cursor"
        );
        let start =
            (self.elapsed & !((1u64 << (shift + SLOT_BITS)) - 1)) | ((slot as u64) << shift);
        Some((level, slot, start))
    }

    fn id(&self, index: u32) -> TimerId {
        let generation = self.entries[index as usize].generation;
        TimerId { index, generation }
    }

    /// Earliest deadline in `list`, by walking it.
    fn min_deadline(&self, list: usize) -> Option<u64> {
        let (mut cur, mut min) = (self.lists[list].head, None);
        while cur != NIL {
            let e = &self.entries[cur as usize];
            min = Some(min.map_or(e.deadline, |m: u64| m.min(e.deadline)));
            cur = e.next;
        }
        min
    }

    /// Links entry `index` at the tail of the list its deadline belongs to (invariant 2).
    fn file(&mut self, index: u32) {
        let deadline = self.entries[index as usize].deadline;
        let bit = 63 - ((self.elapsed ^ deadline) | (SLOTS as u64 - 1)).leading_zeros();
        let level = (bit / SLOT_BITS) as usize;
        let list = if level < LEVELS {
            let slot = (deadline >> (level as u32 * SLOT_BITS)) as usize % SLOTS;
            self.occupied[level] |= 1 << slot;
            level * SLOTS + slot
        } else {
            FAR
        };
        let tail = self.lists[list].tail;
        let e = &mut self.entries[index as usize];
        (e.list, e.prev, e.next) = (list, tail, NIL);
        match tail {
            NIL => self.lists[list].head = index,
            t => self.entries[t as usize].next = index,
        }
        self.lists[list].tail = index;
    }

    fn unlink(&mut self, index: u32) {
        let e = &self.entries[index as usize];
        let (list, prev, next) = (e.list, e.prev, e.next);
        match prev {
            NIL => self.lists[list].head = next,
            p => self.entries[p as usize].next = next,
        }
        match next {
            NIL => self.lists[list].tail = prev,
            n => self.entries[n as usize].prev = prev,
        }
        if self.lists[list].head == NIL && list < FAR {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
    }

    /// Empties `list`, returning the head of the detached chain.
    fn detach(&mut self, list: usize) -> u32 {
        let head = self.lists[list].head;
        self.lists[list] = EMPTY;
        if list < FAR {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
        head
    }

    /// Returns an unlinked entry to the free list, invalidating its ids.
    fn release(&mut self, index: u32) -> Option<T> {
        let e = &mut self.entries[index as usize];
        e.generation = e.generation.wrapping_add(1);
        e.next = self.free;
        self.free = index;
        self.len -= 1;
        e.value.take()
    }
}

/// First time at which the far list can hold something due: the next 2^36 ms boundary.
fn far_start(elapsed: u64) -> u64 {
    (elapsed | ((1u64 << WHEEL_BITS) - 1)).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    /// xorshift64: deterministic, no dependencies.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        /// Log-uniform magnitude below 2^bits, so every wheel level gets traffic.
        fn span(&mut self, bits: u64) -> u64 {
            let b = self.below(bits + 1);
            self.below(1 << b)
        }
    }

    fn at(epoch: Instant, ms: u64) -> Instant {
        epoch + Duration::from_millis(ms)
    }

    #[test]
    fn fires_in_deadline_order_exactly_once() {
        let epoch = Instant::now();
        let mut w = TimerWheel::new(epoch);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut now, mut seq, mut out, mut fired) = (0, 0, Vec::new(), Vec::new());
        for _ in 0..300 {
            for _ in 0..20 {
                let d = now + rng.span(30);
                w.insert(at(epoch, d), (d, seq));
                seq += 1;
            }
            now += rng.span(22);
            w.expire(at(epoch, now), &mut out);
            for (_, (d, s)) in out.drain(..) {
                assert!(d <= now, "fired early: {d} > {now}");
                fired.push((d, s));
            }
            assert!(w.next_deadline().is_none_or(|n| n > at(epoch, now)));
        }
        w.expire(at(epoch, now + (1 << 31)), &mut out);
        fired.extend(out.drain(..).map(|(_, v)| v));
        assert_eq!(fired.len() as u64, seq);
        // Strictly increasing (deadline, seq): deadline order, ties by insertion, each once.
        assert!(fired.windows(2).all(|p| p[0] < p[1]));
        assert!(w.is_empty());
    }

    #[test]
    fn never_fires_early() {
        let epoch = Instant::now();
        let mut w = TimerWheel::new(epoch);
        let id = w.insert(epoch + Duration::from_micros(1_500), ());
        assert_eq!(w.next_deadline(), Some(at(epoch, 2)));
        assert_eq!(w.timeout(at(epoch, 1)), Some(Duration::from_millis(1)));
        let mut out = Vec::new();
        assert_eq!(w.expire(epoch + Duration::from_micros(1_999), &mut out), 0);
        assert_eq!(w.timeout(at(epoch, 3)), Some(Duration::ZERO));
        assert_eq!(w.expire(at(epoch, 2), &mut out), 1);
        assert_eq!(out.pop().map(|(i, _)| i), Some(id));
        assert_eq!(w.timeout(at(epoch, 2)), None);
        // A deadline in the past fires on the next expire, even if time has not moved.
        w.insert(epoch, ());
        assert_eq!(w.next_deadline(), Some(at(epoch, 2)));
        assert_eq!(w.expire(at(epoch, 2), &mut out), 1);
    }

    #[test]
    fn cancel_semantics() {
        let epoch = Instant::now();
        let mut w = TimerWheel::new(epoch);
        let a = w.insert(at(epoch, 10), 'a');
        let b = w.insert(at(epoch, 10), 'b');
        let c = w.insert(at(epoch, 5_000), 'c');
        assert_eq!(w.cancel(a), Some('a'));
        assert_eq!(w.cancel(a), None);
        assert!(!w.is_armed(a) && w.is_armed(b));
        assert_eq!(w.cancel(c), Some('c'));
        assert_eq!(w.next_deadline(), Some(at(epoch, 10)));
        let mut out = Vec::new();
        assert_eq!(w.expire(at(epoch, 10_000), &mut out), 1);
        assert_eq!(out, vec![(b, 'b')]);
        assert_eq!(w.cancel(b), None);
        let d = w.insert(at(epoch, 20_000), 'd'); // reuses a freed slab slot
        assert!([a, b, c].iter().any(|s| s.index == d.index));
        for stale in [a, b, c] {
            assert_eq!(w.cancel(stale), None);
        }
        assert!(w.is_armed(d));
        assert_eq!((w.len(), w.cancel(d), w.len()), (1, Some('d'), 0));
    }

    #[test]
    fn hundred_thousand_timers() {
        let epoch = Instant::now();
        let mut w = TimerWheel::new(epoch);
        let mut rng = Rng(42);
        let mut ids = Vec::new();
        for i in 0..100_000 {
            let d = rng.below(3_600_000);
            ids.push(w.insert(at(epoch, d), (d, i)));
        }
        let cancelled: HashSet<u64> = (0..100_000).filter(|_| rng.below(3) == 0).collect();
        for &i in &cancelled {
            assert!(w.cancel(ids[i as usize]).is_some());
        }
        let live = 100_000 - cancelled.len();
        assert_eq!(w.len(), live);
        let (mut now, mut out) = (0, Vec::new());
        while !w.is_empty() {
            now += rng.below(120_000);
            w.expire(at(epoch, now), &mut out);
        }
        assert_eq!(out.len(), live);
        assert!(out.windows(2).all(|p| p[0].1 < p[1].1));
        assert!(out
            .iter()
            .all(|(id, (_, i))| !cancelled.contains(i) && ids[*i as usize] == *id));
    }

    #[test]
    fn far_future_deadlines() {
        let epoch = Instant::now();
        let mut w = TimerWheel::new(epoch);
        const DAY: u64 = 86_400_000;
        let far = [
            DAY,
            365 * DAY,
            5 * 365 * DAY,
            100 * 365 * DAY,
            u64::from(u32::MAX) * 1000,
        ];
        for (i, &d) in far.iter().enumerate().rev() {
            w.insert(at(epoch, d), i);
        }
        w.insert(epoch + Duration::from_secs(u32::MAX.into()), 9); // same ms as far[4]
        let mut out = Vec::new();
        for (i, &d) in far.iter().enumerate() {
            assert_eq!(w.next_deadline(), Some(at(epoch, d)));
            assert_eq!(w.expire(at(epoch, d - 1), &mut out), 0);
            assert_eq!(w.next_deadline(), Some(at(epoch, d)));
            assert_eq!(w.expire(at(epoch, d), &mut out), if i == 4 { 2 } else { 1 });
        }
        let fired: Vec<usize> = out.into_iter().map(|(_, v)| v).collect();
        assert_eq!((fired, w.len()), (vec![0, 1, 2, 3, 4, 9], 0));
    }

    #[test]
    fn next_deadline_matches_model() {
        let epoch = Instant::now();
        let mut w = TimerWheel::new(epoch);
        let mut rng = Rng(7);
        let mut model: BTreeMap<(u64, u64), TimerId> = BTreeMap::new();
        let (mut handles, mut out) = (Vec::new(), Vec::new());
        let (mut now, mut seq) = (0u64, 0u64);
        for _ in 0..6_000 {
            match rng.below(10) {
                0..=4 => {
                    let d = match rng.below(8) {
                        0 => now.saturating_sub(rng.below(100)), // already due
                        _ => now + rng.span(40),                 // every level + far list
                    };
                    let id = w.insert(at(epoch, d), seq);
                    let key = (d.max(now), seq);
                    model.insert(key, id);
                    handles.push((key, id));
                    seq += 1;
                }
                5..=6 if !handles.is_empty() => {
                    let (key, id) = handles.swap_remove(rng.below(handles.len() as u64) as usize);
                    assert_eq!(w.cancel(id), model.remove(&key).map(|_| key.1));
                }
                _ => {
                    now += rng.span(38);
                    let rest = model.split_off(&(now + 1, 0));
                    let due: Vec<_> = std::mem::replace(&mut model, rest)
                        .into_iter()
                        .map(|(k, id)| (id, k.1))
                        .collect();
                    out.clear();
                    assert_eq!(w.expire(at(epoch, now), &mut out), due.len());
                    assert_eq!(out, due);
                }
            }
            assert_eq!(
                w.next_deadline(),
                model.keys().next().map(|&(d, _)| at(epoch, d))
            );
            assert_eq!(w.len(), model.len());
        }
    }

    #[test]
    fn big_jump_visits_few_slots() {
        let epoch = Instant::now();
        let mut w = TimerWheel::new(epoch);
        let three_hours = 3 * 3_600_000;
        let id = w.insert(at(epoch, three_hours), ());
        let mut out = Vec::new();
        assert_eq!(w.expire(at(epoch, three_hours - 1), &mut out), 0);
        assert_eq!(w.expire(at(epoch, three_hours + 600_000), &mut out), 1);
        assert_eq!(out[0].0, id);
        assert!(w.visits <= LEVELS, "{} slot visits", w.visits);
    }
}
