//! Streams: log records and events to SSE followers and WebSocket subscribers, with
//! per-reader cursors so a slow reader learns how many it missed.

use super::*;

/// Log records copied out of the ring at a time for a follower.
const FOLLOW_BATCH: usize = 256;

impl Daemon {
    pub(super) fn logs(&self, query: &LogQuery) -> Value {
        let ring = &self.logging.ring;
        let records: Vec<Value> = ring
            .query(
                query.since.unwrap_or(0),
                query.lines,
                Self::log_filter(query),
            )
            .iter()
            .map(LogRecord::to_json)
            .collect();
        json!({"records": records, "first_seq": ring.first_seq(), "last_seq": ring.last_seq()})
    }

    pub(super) fn event_filter(query: &EventQuery) -> impl Fn(&Event) -> bool + '_ {
        move |e: &Event| {
            query.kind.as_deref().is_none_or(|k| k == e.kind)
                && query
                    .channel
                    .as_deref()
                    .is_none_or(|c| c == e.channel.name())
        }
    }

    pub(super) fn event_history(&self, query: &EventQuery) -> Value {
        let events: Vec<Value> = self
            .events
            .query(
                query.since.unwrap_or(0),
                query.limit,
                Self::event_filter(query),
            )
            .into_iter()
            .map(Event::to_json)
            .collect();
        json!({"events": events, "last_seq": self.events.last_seq()})
    }

    pub(super) fn log_filter(query: &LogQuery) -> impl Fn(&LogRecord) -> bool + '_ {
        move |r: &LogRecord| {
            r.level <= query.level
                && query
                    .component
                    .as_deref()
                    .is_none_or(|c| r.target.starts_with(c) || r.target.contains(&format!("::{c}")))
        }
    }

    pub(super) fn follow_logs(&mut self, cx: &mut Cx<'_, Timer>, reply: ReplyTo, query: LogQuery) {
        self.follow(cx, reply, Feed::Logs(query));
    }

    /// Turns a request into a stream that starts with the newest backlog (like `tail -f`).
    pub(super) fn follow(&mut self, cx: &mut Cx<'_, Timer>, reply: ReplyTo, feed: Feed) {
        let ReplyTo::Http { conn, seq, .. } = reply else {
            let e = ApiError::new(
                ErrorCode::BadRequest,
                "streams are HTTP only: subscribe to a channel instead",
            );
            self.answer(cx, reply, Err(e));
            return;
        };
        let cursor = match &feed {
            Feed::Logs(q) => self
                .logging
                .ring
                .first_of_newest(q.since.unwrap_or(0), q.lines, Self::log_filter(q))
                .map_or(self.logging.ring.last_seq(), |seq| seq - 1),
            Feed::Events(q) => self
                .events
                .query(q.since.unwrap_or(0), q.limit, Self::event_filter(q))
                .first()
                .map_or(self.events.last_seq(), |e| e.seq - 1),
        };
        self.server.start_stream(
            &mut cx.narrow(Timer::Net).cx(),
            conn,
            seq,
            &mut self.incoming,
        );
        self.followers.push(Follower { conn, feed, cursor });
        self.update_follower_count();
    }

    pub(super) fn update_follower_count(&self) {
        let logs = self
            .followers
            .iter()
            .filter(|f| matches!(f.feed, Feed::Logs(_)))
            .count();
        self.logging
            .set_followers(logs + self.server.ws_subscribers("logs").len());
    }

    /// Sends new log records to WebSocket clients subscribed to the `logs` channel.
    pub(super) fn flush_ws_logs(&mut self, cx: &mut Cx<'_, Timer>) {
        let subscribers = self.server.ws_subscribers("logs");
        if subscribers.is_empty() {
            return;
        }
        let last = self.logging.ring.last_seq();
        for conn in subscribers {
            let Some(cursor) = self.server.ws_mut(conn).map(|w| w.log_cursor) else {
                continue;
            };
            if cursor >= last {
                continue;
            }
            for r in self.logging.ring.query(cursor, 1000, |_| true) {
                let msg = json!({"type": "log", "channel": "logs", "timestamp": state::rfc3339_utc_millis(r.time), "data": r.to_json()});
                self.server.ws_send(
                    &mut cx.narrow(Timer::Net).cx(),
                    conn,
                    msg.to_string().into(),
                );
            }
            if let Some(w) = self.server.ws_mut(conn) {
                w.log_cursor = last;
            }
        }
        self.update_follower_count();
    }

    /// Sends new records and events to the streams that follow them.
    pub(super) fn flush_followers(&mut self, cx: &mut Cx<'_, Timer>) {
        self.flush_ws_logs(cx);
        if self.followers.is_empty() {
            return;
        }
        let mut followers = std::mem::take(&mut self.followers);
        followers.retain(|f| self.server.is_open(f.conn));
        for f in &mut followers {
            // In chunks of what the stream takes (its 1 MiB backlog bound), at least one record
            // each: a follower far behind (a `since` at the start of a 100 000-line buffer, or a
            // client that paused) would otherwise be handed the whole buffer at once. What does
            // not fit waits for the stream to drain (its writable event runs this again).
            while !self.server.stream_full(f.conn) && self.server.is_streaming(f.conn) {
                let (first, last) = match f.feed {
                    Feed::Logs(_) => (self.logging.ring.first_seq(), self.logging.ring.last_seq()),
                    Feed::Events(_) => (self.events.first_seq(), self.events.last_seq()),
                };
                if f.cursor >= last {
                    break;
                }
                let budget = self
                    .server
                    .backlog(f.conn)
                    .map_or(0, |n| crate::net::STREAM_BACKLOG_LIMIT.saturating_sub(n));
                let mut out = Vec::new();
                if f.cursor + 1 < first {
                    let missed = first - f.cursor - 1;
                    out.extend_from_slice(
                        format!("event: dropped\ndata: {{\"count\":{missed}}}\n\n").as_bytes(),
                    );
                }
                let mut cursor = last;
                match &f.feed {
                    Feed::Logs(q) => {
                        // In batches from the cursor: the ring copies records out under its
                        // lock, so a batch costs what is sent, not the whole buffer. Records
                        // logged (by another thread) after `last` wait for the next round.
                        let mut after = f.cursor;
                        'fill: loop {
                            let batch = self.logging.ring.next_after(
                                after,
                                FOLLOW_BATCH,
                                Self::log_filter(q),
                            );
                            if batch.is_empty() {
                                break;
                            }
                            for r in &batch {
                                if r.seq > last {
                                    break 'fill;
                                }
                                if out.len() >= budget && !out.is_empty() {
                                    cursor = r.seq - 1;
                                    break 'fill;
                                }
                                out.extend_from_slice(
                                    format!("id: {}\nevent: log\ndata: {}\n\n", r.seq, r.to_json())
                                        .as_bytes(),
                                );
                                after = r.seq;
                            }
                        }
                    }
                    Feed::Events(q) => {
                        for e in self
                            .events
                            .query(f.cursor, usize::MAX, Self::event_filter(q))
                        {
                            if out.len() >= budget && !out.is_empty() {
                                cursor = e.seq - 1;
                                break;
                            }
                            out.extend_from_slice(
                                format!("id: {}\nevent: {}\ndata: {}\n\n", e.seq, e.kind, e.wire())
                                    .as_bytes(),
                            );
                        }
                    }
                }
                f.cursor = cursor;
                if !out.is_empty() {
                    let _ = self.server.push_stream(
                        &mut cx.narrow(Timer::Net).cx(),
                        f.conn,
                        &out,
                        &mut self.incoming,
                    );
                }
            }
        }
        followers.retain(|f| self.server.is_open(f.conn));
        self.followers = followers;
        self.update_follower_count();
    }
}
