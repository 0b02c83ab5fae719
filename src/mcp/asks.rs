//! A server's requests of its client (`sampling/createMessage`, `elicitation/create`) that
//! the daemon relays to the `/mcp` client whose tool call caused them (`gateway.client_requests`,
//! see `gateway/ask.rs`): the ones waiting for that client's answer, each tied to the tool
//! calls that were in flight on the server when it came.
//!
//! Invariants: at most [`MAX_ASKS`] wait per server (one more is refused at once); each is
//! answered to the server exactly once, with the server's own request id: with the client's
//! answer, or with an error when every call it was tied to has ended (answered, timed out,
//! cancelled), or when the gateway refuses it. A run's end forgets them (the server that
//! asked is gone).

use super::jsonrpc;
use crate::api::Answer;
use serde_json::Value;
use std::collections::HashMap;

/// Requests of one server waiting for a client's answer at once.
pub const MAX_ASKS: usize = 16;

/// The methods relayed to a `/mcp` client (`roots/list` is not: see [`relayed`]).
pub const RELAYED: [&str; 2] = ["sampling/createMessage", "elicitation/create"];

/// The server's notification that a URL-mode elicitation it asked for is complete: passed to
/// the client that was asked (the gateway knows which), like the request.
pub const ELICITATION_COMPLETE: &str = "notifications/elicitation/complete";

/// Longest `elicitationId` passed on.
pub const ELICITATION_ID_MAX: usize = 256;

/// JSON-RPC code of the errors the daemon answers a relayed request with when no client
/// answers it (no client to ask, the call ended, bounds): the code the SDK clients use for a
/// request they do not support.
pub const NO_CLIENT: i64 = -32600;

/// Whether `method` is relayed. `roots/list` is not: roots name the client's filesystem
/// boundaries, and a `/mcp` client's are paths on its own machine, not on the daemon's host
/// where the server runs; and a server asks for them at any time, not only during a call.
pub fn relayed(method: &str) -> bool {
    RELAYED.contains(&method)
}

/// One request waiting for its client's answer.
#[derive(Debug)]
struct Asked {
    /// The server's request id.
    rpc: Value,
    /// The tool calls (our request ids) in flight when it came.
    calls: Vec<u64>,
}

/// The requests of one server's run waiting for a client's answer.
#[derive(Debug, Default)]
pub struct Asks {
    waiting: HashMap<u64, Asked>,
    next: u64,
}

impl Asks {
    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Takes the server's request `rpc`, made while tool calls `calls` were in flight: its
    /// id among this server's waiting requests.
    ///
    /// # Errors
    /// Why it is refused (no call in flight, too many waiting), for the error answer.
    pub fn take(&mut self, rpc: Value, calls: Vec<u64>) -> Result<u64, String> {
        if calls.is_empty() {
            return Err("no tool call is in flight on this server, so there is no client to ask (vsm-daemon relays sampling and elicitation only to the /mcp client whose tools/call is in flight)".into());
        }
        if self.waiting.len() >= MAX_ASKS {
            return Err(format!(
                "{MAX_ASKS} requests of this server already wait for a client's answer"
            ));
        }
        self.next += 1;
        self.waiting.insert(self.next, Asked { rpc, calls });
        Ok(self.next)
    }

    /// The client's answer to waiting request `ask` (or the gateway's refusal: an error whose
    /// `data.code` is the JSON-RPC code, `data.data` its data): the bytes for the server, or
    /// `None` when it no longer waits (answered already, its calls ended).
    pub fn answer(&mut self, ask: u64, answer: Answer) -> Option<Vec<u8>> {
        let asked = self.waiting.remove(&ask)?;
        Some(match answer {
            Ok(result) => jsonrpc::response(&asked.rpc, result),
            Err(e) => {
                let data = e.data.as_ref();
                let code = data
                    .and_then(|d| d.get("code"))
                    .and_then(Value::as_i64)
                    .unwrap_or(NO_CLIENT);
                let mut error = serde_json::Map::with_capacity(3);
                error.insert("code".into(), code.into());
                error.insert("message".into(), Value::String(e.message.clone()));
                if let Some(d) = data.and_then(|d| d.get("data")).filter(|d| !d.is_null()) {
                    error.insert("data".into(), d.clone());
                }
                let message =
                    serde_json::json!({"jsonrpc": "2.0", "id": asked.rpc, "error": error});
                let mut bytes = message.to_string().into_bytes();
                bytes.push(b'\n');
                bytes
            }
        })
    }

    /// Tool calls ended: every waiting request none of whose calls is still in flight
    /// (`in_flight` tells) is answered with an error; the bytes for the server.
    pub fn settle(&mut self, in_flight: impl Fn(u64) -> bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.waiting.retain(|_, a| {
            a.calls.retain(|c| in_flight(*c));
            if a.calls.is_empty() {
                out.push(jsonrpc::error_response(
                    &a.rpc,
                    NO_CLIENT,
                    "the tool call during which this request was made ended before its client answered",
                ));
                false
            } else {
                true
            }
        });
        out
    }

    /// The run ended: nothing waits any more (the server that asked is gone).
    pub fn clear(&mut self) {
        self.waiting = HashMap::new();
    }
}

/// The MCP room's relayed requests in flight to the gateway: the tag of each (what its
/// answer comes back with) names the server and its request there. Tags start at
/// [`Relays::FIRST_TAG`], above any tag of the room's registry writes.
#[derive(Debug)]
pub struct Relays {
    tags: HashMap<u64, (String, u64)>,
    next: u64,
    /// `gateway.client_requests`: whether runs starting now offer and relay them.
    pub enabled: bool,
}

impl Default for Relays {
    fn default() -> Self {
        Relays {
            tags: HashMap::new(),
            next: Self::FIRST_TAG,
            enabled: true,
        }
    }
}

impl Relays {
    /// The first tag (registry writes count up from 1).
    pub const FIRST_TAG: u64 = 1 << 62;

    /// A tag for server `id`'s request `ask`.
    pub fn tag(&mut self, id: &str, ask: u64) -> u64 {
        self.next += 1;
        self.tags.insert(self.next, (id.to_string(), ask));
        self.next
    }

    /// The server and request of `tag`, forgotten (`None`: not a relayed request's tag).
    pub fn take(&mut self, tag: u64) -> Option<(String, u64)> {
        self.tags.remove(&tag)
    }

    /// The tag of relayed notifications (their acknowledgement is not waited for).
    pub const NOTE_TAG: u64 = Self::FIRST_TAG;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiError, ErrorCode};
    use serde_json::json;

    fn parsed(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("JSON")
    }

    #[test]
    fn a_request_is_answered_once_with_the_servers_id() {
        let mut asks = Asks::default();
        let a = asks.take(json!("s-1"), vec![7]).expect("taken");
        let b = asks.take(json!(2), vec![7, 8]).expect("taken");
        assert_ne!(a, b);
        let ok = asks
            .answer(a, Ok(json!({"action": "accept"})))
            .expect("waiting");
        assert_eq!(
            parsed(&ok),
            json!({"jsonrpc": "2.0", "id": "s-1", "result": {"action": "accept"}})
        );
        assert!(asks.answer(a, Ok(json!({}))).is_none(), "answered once");
        // A client's error keeps its code and data; the daemon's own have NO_CLIENT.
        let e = ApiError::new(ErrorCode::McpError, "user said no")
            .with_data(json!({"code": -1, "data": {"why": "x"}}));
        let err = parsed(&asks.answer(b, Err(e)).expect("waiting"));
        assert_eq!(err["id"], 2);
        assert_eq!(
            err["error"],
            json!({"code": -1, "message": "user said no", "data": {"why": "x"}})
        );
        let c = asks.take(json!(3), vec![1]).expect("taken");
        let own = ApiError::new(ErrorCode::Conflict, "no client");
        let err = parsed(&asks.answer(c, Err(own)).expect("waiting"));
        assert_eq!(err["error"]["code"], NO_CLIENT);
        assert!(asks.is_empty());
    }

    #[test]
    fn requests_are_bounded_and_refused_without_a_call() {
        let mut asks = Asks::default();
        assert!(asks.take(json!(1), vec![]).is_err());
        for n in 0..MAX_ASKS {
            asks.take(json!(n), vec![1]).expect("room");
        }
        let why = asks.take(json!(99), vec![1]).expect_err("full");
        assert!(why.contains("already wait"), "{why}");
        asks.clear();
        assert!(asks.is_empty());
    }

    #[test]
    fn a_request_ends_with_the_last_of_its_calls() {
        let mut asks = Asks::default();
        let a = asks.take(json!(1), vec![5, 6]).expect("taken");
        asks.take(json!(2), vec![6]).expect("taken");
        // Call 6 ended: request 2 is answered with an error; request 1 still has call 5.
        let out = asks.settle(|c| c == 5);
        assert_eq!(out.len(), 1);
        let err = parsed(&out[0]);
        assert_eq!(err["id"], 2);
        assert_eq!(err["error"]["code"], NO_CLIENT);
        assert_eq!(asks.len(), 1);
        // Call 5 ended too.
        let out = asks.settle(|_| false);
        assert_eq!(parsed(&out[0])["id"], 1);
        assert!(asks.answer(a, Ok(json!({}))).is_none());
    }
}
