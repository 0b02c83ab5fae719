//! Events: what happened, with a type, a timestamp and data, kept in a bounded history ring
//! for `GET /api/v1/events` and the reflection analysers, and fanned out to subscribers
//! (WebSocket clients, SSE streams) by the transports.
//!
//! Invariant: the history holds at most `capacity` events; every event gets a sequence number
//! so a reader that fell behind knows how many it missed.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::SystemTime;

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Sequence number, strictly increasing.
    pub seq: u64,
    /// Event type such as `mcp_server_status_change`.
    pub kind: &'static str,
    /// The channel it belongs to (`mcp_servers`, `performance`, ...).
    pub channel: &'static str,
    /// When it happened.
    pub time: SystemTime,
    /// Its data.
    pub data: Value,
}

impl Event {
    /// The wire form of the seed (`{"type", "timestamp", "data"}`) plus `seq` and `channel`.
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "type": self.kind,
            "channel": self.channel,
            "timestamp": crate::state::rfc3339_utc_millis(self.time),
            "data": self.data,
        })
    }
}

/// Bounded history of events.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Event>,
    capacity: usize,
    next_seq: u64,
}

impl EventLog {
    /// An empty log holding at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        EventLog {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    /// Records an event and returns its sequence number.
    pub fn publish(&mut self, channel: &'static str, kind: &'static str, data: Value) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.events.len() >= self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            seq,
            kind,
            channel,
            time: SystemTime::now(),
            data,
        });
        seq
    }

    /// Sequence number of the newest event (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Sequence number of the oldest event held.
    pub fn first_seq(&self) -> u64 {
        self.events.front().map_or(self.next_seq, |e| e.seq)
    }

    /// Events with `seq > after` that pass `keep`, the newest `limit` of them, oldest first.
    pub fn query(&self, after: u64, limit: usize, keep: impl Fn(&Event) -> bool) -> Vec<&Event> {
        let mut out: Vec<&Event> = self
            .events
            .iter()
            .rev()
            .take_while(|e| e.seq > after)
            .filter(|e| keep(e))
            .take(limit)
            .collect();
        out.reverse();
        out
    }

    /// Changes the capacity, dropping the oldest events if it shrinks.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.events.len() > self.capacity {
            self.events.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_sequenced() {
        let mut log = EventLog::new(2);
        for i in 0..3 {
            log.publish("mcp_servers", "x", json!(i));
        }
        assert_eq!(log.last_seq(), 3);
        let all = log.query(0, 10, |_| true);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(log.query(2, 10, |_| true).len(), 1);
        assert_eq!(all[0].to_json()["type"], "x");
    }
}
