//! Connection slots: who gets one when a listener or a peer is at its limit. Pure policy
//! (no sockets): the server describes its connections, [`admit`] decides.
//!
//! Rules:
//! - Each listener has its own slots (`http.max_connections`), so TCP load can never take
//!   the control socket's and many control-socket clients cannot take TCP's.
//! - On TCP one peer ([`PeerKey`]: an IPv4 address or an IPv6 /64, which one holder usually
//!   has whole) holds at most `http.max_connections_per_peer`.
//! - A connection that waits on its client (nothing received yet, a head or body still
//!   arriving, idle keep-alive, or an answer the client does not read) can be evicted to make
//!   room; the one waiting longest goes first. A connection with a request in progress, an
//!   event stream or a WebSocket is never evicted for idleness, but it is counted.
//! - A peer at its limit evicts only its own waiting connections. On loopback every local
//!   client is the same peer: a local flood of idle sockets then pushes out its own oldest
//!   sockets instead of locking other local clients out, and the limit still leaves
//!   `max_connections - max_connections_per_peer` slots to everyone else.
//! - A new connection is refused (503) only when no waiting connection can make room.
//!
//! Deciding costs one pass over the listener's connections, and only when a limit is reached.

use std::net::IpAddr;
use std::time::Instant;

/// The unit a per-peer limit counts: an IPv4 address, or the /64 prefix of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// An IPv4 address.
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
}

impl PeerKey {
    /// The key of a peer address (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn of(ip: IpAddr) -> PeerKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => PeerKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => PeerKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// What a connection is doing, as far as its slot is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Waiting on its client since this instant: evictable.
    Waiting(Instant),
    /// A request in progress, an event stream or a WebSocket: kept.
    Busy,
}

/// Why a connection was evicted or refused (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The peer holds `max_connections_per_peer` connections.
    PeerLimit,
    /// The listener holds `max_connections` connections.
    ListenerFull,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 2] = [Reason::PeerLimit, Reason::ListenerFull];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::PeerLimit => "peer_limit",
            Reason::ListenerFull => "listener_full",
        }
    }

    /// Index into per-reason counters.
    pub fn index(self) -> usize {
        match self {
            Reason::PeerLimit => 0,
            Reason::ListenerFull => 1,
        }
    }
}

/// The decision for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission<Id> {
    /// There is room.
    Admit,
    /// Close `victim` first, then admit.
    Evict(Id, Reason),
    /// No room and nobody to evict: answer 503.
    Refuse(Reason),
}

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections on the listener.
    pub max_connections: usize,
    /// Connections per peer (TCP only).
    pub max_per_peer: usize,
}

/// Decides whether a new connection from `peer` (`None` on the control socket) gets a slot.
/// `open` is the listener's connection count and `peer_open` the peer's; `conns` lists the
/// listener's connections with their peer and activity.
pub fn admit<Id: Copy>(
    limits: Limits,
    open: usize,
    peer: Option<(PeerKey, usize)>,
    conns: impl Iterator<Item = (Id, Option<PeerKey>, Activity)>,
) -> Admission<Id> {
    let reason = match peer {
        Some((_, peer_open)) if peer_open >= limits.max_per_peer => Reason::PeerLimit,
        _ if open >= limits.max_connections => Reason::ListenerFull,
        _ => return Admission::Admit,
    };
    let own = |k: Option<PeerKey>| reason == Reason::ListenerFull || k == peer.map(|p| p.0);
    let victim = conns
        .filter(|(_, k, _)| own(*k))
        .filter_map(|(id, _, a)| match a {
            Activity::Waiting(since) => Some((since, id)),
            Activity::Busy => None,
        })
        .min_by_key(|(since, _)| *since);
    match victim {
        Some((_, id)) => Admission::Evict(id, reason),
        None => Admission::Refuse(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: Limits = Limits {
        max_connections: 4,
        max_per_peer: 2,
    };

    fn key(s: &str) -> PeerKey {
        PeerKey::of(s.parse().expect("ip"))
    }

    #[test]
    fn peer_keys_group_ipv6_by_64_and_fold_mapped_ipv4() {
        assert_eq!(key("127.0.0.1"), key("::ffff:127.0.0.1"));
        assert_ne!(key("127.0.0.1"), key("127.0.0.2"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("::1"), key("0.0.0.1"));
    }

    #[test]
    fn admits_below_the_limits() {
        let none = std::iter::empty::<(u32, Option<PeerKey>, Activity)>();
        assert_eq!(
            admit(LIMITS, 3, Some((key("10.0.0.1"), 1)), none),
            Admission::Admit
        );
    }

    #[test]
    fn a_peer_at_its_limit_evicts_its_own_oldest_waiting_connection() {
        let t = Instant::now();
        let (a, b) = (key("10.0.0.1"), key("10.0.0.2"));
        let conns = [
            (1, Some(b), Activity::Waiting(t)), // older, but another peer's
            (2, Some(a), Activity::Waiting(t + Duration::from_secs(2))),
            (3, Some(a), Activity::Waiting(t + Duration::from_secs(1))),
        ];
        assert_eq!(
            admit(LIMITS, 3, Some((a, 2)), conns.into_iter()),
            Admission::Evict(3, Reason::PeerLimit)
        );
    }

    #[test]
    fn busy_connections_are_kept_and_counted() {
        let a = key("10.0.0.1");
        let conns = [(1, Some(a), Activity::Busy), (2, Some(a), Activity::Busy)];
        assert_eq!(
            admit(LIMITS, 2, Some((a, 2)), conns.into_iter()),
            Admission::Refuse(Reason::PeerLimit)
        );
        let full = [
            (1, Some(a), Activity::Busy),
            (2, Some(key("10.0.0.2")), Activity::Busy),
        ];
        assert_eq!(
            admit(LIMITS, 4, Some((key("10.0.0.3"), 0)), full.into_iter()),
            Admission::Refuse(Reason::ListenerFull)
        );
    }

    #[test]
    fn a_full_listener_evicts_the_longest_waiting_of_anyone() {
        let t = Instant::now();
        let conns = [
            (1, Some(key("10.0.0.1")), Activity::Busy),
            (
                2,
                Some(key("10.0.0.2")),
                Activity::Waiting(t + Duration::from_secs(5)),
            ),
            (3, Some(key("10.0.0.3")), Activity::Waiting(t)),
            (4, Some(key("10.0.0.3")), Activity::Busy),
        ];
        assert_eq!(
            admit(LIMITS, 4, Some((key("10.0.0.9"), 0)), conns.into_iter()),
            Admission::Evict(3, Reason::ListenerFull)
        );
        // The control socket has no peers: only the listener limit applies.
        let unix = [(7, None, Activity::Waiting(t)), (8, None, Activity::Busy)];
        assert_eq!(
            admit(LIMITS, 4, None, unix.into_iter()),
            Admission::Evict(7, Reason::ListenerFull)
        );
        assert_eq!(admit(LIMITS, 3, None, unix.into_iter()), Admission::Admit);
    }
}
