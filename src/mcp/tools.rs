//! A server's lists without I/O: gathering `tools/list` pages (and those of
//! `resources/list`, `resources/templates/list` and `prompts/list`, see [`Kind`]) under
//! bounds, deciding when to list again after `notifications/*/list_changed`, and telling a
//! burst of those notifications from a flood.
//!
//! Invariants: a [`Listing`] (of any kind) never holds more than `max_bytes` of tools (counted as their
//! JSON size), more than one JSON value per [`BYTES_PER_VALUE`] of `max_bytes` (a parsed value
//! takes 32 bytes or more, so `[0,0,...]` would otherwise hold 16 times its JSON size), nor
//! more than `max_tools` tools or pages; the page that would cross a bound is
//! refused whole and the caller fails the server with the reason (never a silent
//! truncation). [`Relist`] keeps at most one listing in flight per server and starts
//! re-listings at most once per [`RELIST_INTERVAL`]. [`Flood`] holds at most `limit + 1`
//! instants.

use serde_json::Value;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Shortest time between the starts of two listings of one server.
pub const RELIST_INTERVAL: Duration = Duration::from_secs(1);
/// `notifications/tools/list_changed` per minute that are still a burst; each one beyond
/// counts as a protocol error.
pub const LIST_CHANGED_PER_MINUTE: usize = 100;

/// JSON bytes of the bound per JSON value allowed. The real servers in `.test-peers/` spend
/// 21-26 bytes per value (`"type":"string"`), so this only stops lists made of tiny values,
/// whose parsed form would be many times larger than their text.
pub const BYTES_PER_VALUE: usize = 8;

/// Which of a server's lists: tools, and the resources, resource templates and prompts it
/// may offer as well. Each list has the bounds of the tool list ([`Limits`]) on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `tools/list`.
    Tools,
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    ResourceTemplates,
    /// `prompts/list`.
    Prompts,
}

impl Kind {
    /// The lists besides tools, listed after the tools when the server's capabilities say
    /// it offers them.
    pub const EXTRAS: [Kind; 3] = [Kind::Resources, Kind::ResourceTemplates, Kind::Prompts];

    /// The JSON-RPC method that lists it.
    pub fn method(self) -> &'static str {
        match self {
            Kind::Tools => "tools/list",
            Kind::Resources => "resources/list",
            Kind::ResourceTemplates => "resources/templates/list",
            Kind::Prompts => "prompts/list",
        }
    }

    /// The result's field holding a page's items.
    pub fn field(self) -> &'static str {
        match self {
            Kind::Tools => "tools",
            Kind::Resources => "resources",
            Kind::ResourceTemplates => "resourceTemplates",
            Kind::Prompts => "prompts",
        }
    }

    /// The server capability (in its `initialize` answer) that says it offers the list.
    pub fn capability(self) -> &'static str {
        match self {
            Kind::Tools => "tools",
            Kind::Resources | Kind::ResourceTemplates => "resources",
            Kind::Prompts => "prompts",
        }
    }

    /// Its name in events and the REST answers (`resource_templates`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tools => "tools",
            Kind::Resources => "resources",
            Kind::ResourceTemplates => "resource_templates",
            Kind::Prompts => "prompts",
        }
    }

    /// One item, in messages.
    fn noun(self) -> &'static str {
        match self {
            Kind::Tools => "tool",
            Kind::Resources => "resource",
            Kind::ResourceTemplates => "resource template",
            Kind::Prompts => "prompt",
        }
    }

    /// The notification that says the list changed.
    pub fn from_list_changed(method: &str) -> &'static [Kind] {
        match method {
            "notifications/tools/list_changed" => &[Kind::Tools],
            "notifications/resources/list_changed" => &[Kind::Resources, Kind::ResourceTemplates],
            "notifications/prompts/list_changed" => &[Kind::Prompts],
            _ => &[],
        }
    }
}

/// Bounds of one server's tool list (`[mcp_servers]` `max_tool_list_bytes`, `max_tools`),
/// and of each of its other lists alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sum of the tools' JSON sizes.
    pub max_bytes: usize,
    /// Tools, and pages.
    pub max_tools: usize,
}

/// The pages of one listing gathered so far (of tools unless made with [`Listing::new`]).
#[derive(Debug, PartialEq)]
pub struct Listing {
    kind: Kind,
    tools: Vec<Value>,
    bytes: usize,
    values: usize,
    pages: usize,
}

impl Default for Listing {
    fn default() -> Self {
        Listing::new(Kind::Tools)
    }
}

impl Listing {
    /// An empty listing of `kind`.
    pub fn new(kind: Kind) -> Listing {
        Listing {
            kind,
            tools: Vec::new(),
            bytes: 0,
            values: 0,
            pages: 0,
        }
    }

    /// What it lists.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Adds a page's items.
    ///
    /// # Errors
    /// Why the listing is over its bounds; the page was not added.
    pub fn add_page(&mut self, page: Vec<Value>, limits: Limits) -> Result<(), String> {
        let noun = self.kind.noun();
        let pages = self.pages + 1;
        if pages > limits.max_tools {
            return Err(format!(
                "{noun} list of more than {} pages (mcp_servers.max_tools)",
                limits.max_tools
            ));
        }
        let count = self.tools.len() + page.len();
        if count > limits.max_tools {
            return Err(format!(
                "more than {} {noun}s listed (mcp_servers.max_tools): {count} after {pages} pages",
                limits.max_tools
            ));
        }
        let bytes = self.bytes + page.iter().map(json_size).sum::<usize>();
        if bytes > limits.max_bytes {
            return Err(format!(
                "{noun} list larger than {} bytes (mcp_servers.max_tool_list_bytes): {bytes} bytes of {count} {noun}s after {pages} pages",
                limits.max_bytes
            ));
        }
        let values = self.values + page.iter().map(json_values).sum::<usize>();
        let max_values = limits.max_bytes / BYTES_PER_VALUE;
        if values > max_values {
            return Err(format!(
                "{noun} list of more than {max_values} JSON values (one per {BYTES_PER_VALUE} bytes of mcp_servers.max_tool_list_bytes): {values} in {count} {noun}s after {pages} pages"
            ));
        }
        self.tools.extend(page);
        self.bytes = bytes;
        self.values = values;
        self.pages = pages;
        Ok(())
    }

    /// The tools, in listing order.
    pub fn into_tools(self) -> Vec<Value> {
        self.tools
    }

    /// JSON bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Takes a page's `tools` out of a `tools/list` result (moved, not copied: a page may hold
/// megabytes). Anything but an array is no tools.
pub fn take_page(result: &mut Value) -> Vec<Value> {
    take_items(result, Kind::Tools)
}

/// Takes a page's items of `kind` out of its listing's result, as [`take_page`] does.
pub fn take_items(result: &mut Value, kind: Kind) -> Vec<Value> {
    match result.get_mut(kind.field()).map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// Size of a value as compact JSON, without building the text.
pub fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value to a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Number of JSON values in a value (itself included), without recursion: nesting depth
/// is the peer's choice.
pub fn json_values(value: &Value) -> usize {
    let mut stack = vec![value];
    let mut n = 0;
    while let Some(v) = stack.pop() {
        n += 1;
        match v {
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    n
}

/// What to do about listing, as [`Relist`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start a listing now (and tell [`Relist::started`]).
    ListNow,
    /// Arm a timer for then; call [`Relist::timer_fired`] when it fires.
    WaitUntil(Instant),
    /// Nothing to do.
    Nothing,
}

/// When to list a server's tools again: coalesces `list_changed` notifications into at most
/// one listing in flight plus one to follow, and rate-limits listing starts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Relist {
    in_flight: bool,
    again: bool,
    timer_armed: bool,
    last_start: Option<Instant>,
}

impl Relist {
    /// A listing was sent.
    pub fn started(&mut self, now: Instant) {
        self.in_flight = true;
        self.last_start = Some(now);
    }

    /// `notifications/tools/list_changed` arrived while the server serves.
    pub fn changed(&mut self, now: Instant) -> Next {
        if self.in_flight {
            self.again = true;
            return Next::Nothing;
        }
        self.due(now)
    }

    /// The listing in flight ended (complete or refused).
    pub fn finished(&mut self, now: Instant) -> Next {
        self.in_flight = false;
        if std::mem::take(&mut self.again) {
            self.due(now)
        } else {
            Next::Nothing
        }
    }

    /// Whether a listing is in flight.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// The timer from [`Next::WaitUntil`] fired.
    pub fn timer_fired(&mut self) -> Next {
        self.timer_armed = false;
        if self.in_flight {
            self.again = true;
            Next::Nothing
        } else {
            Next::ListNow
        }
    }

    fn due(&mut self, now: Instant) -> Next {
        if self.timer_armed {
            return Next::Nothing;
        }
        match self.last_start.map(|t| t + RELIST_INTERVAL) {
            Some(at) if now < at => {
                self.timer_armed = true;
                Next::WaitUntil(at)
            }
            _ => Next::ListNow,
        }
    }
}

/// Counts events in a sliding minute; beyond `limit` they are a flood.
#[derive(Debug, Default, Clone)]
pub struct Flood {
    recent: VecDeque<Instant>,
}

impl Flood {
    /// Records one event; returns whether it is beyond `limit` within the last minute.
    pub fn hit(&mut self, now: Instant, limit: usize) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) > Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let over = self.recent.len() > limit;
        while self.recent.len() > limit + 1 {
            self.recent.pop_front();
        }
        over
    }

    /// Events within the last minute (up to `limit + 1`).
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// Whether none were counted.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const L: Limits = Limits {
        max_bytes: 1000,
        max_tools: 4,
    };

    fn tool(name: &str, description_bytes: usize) -> Value {
        json!({"name": name, "description": "d".repeat(description_bytes)})
    }

    #[test]
    fn json_size_is_the_compact_encoding() {
        for v in [
            json!(null),
            json!({"a": [1, "x\"y", {"b": 2.5}]}),
            tool("t", 300),
        ] {
            assert_eq!(json_size(&v), serde_json::to_vec(&v).map_or(0, |b| b.len()));
        }
    }

    #[test]
    fn lists_of_tiny_values_are_refused_before_they_cost_many_times_their_size() {
        assert_eq!(json_values(&json!({"a": [1, 2, {"b": null}], "c": "x"})), 7);
        // Within the bytes (about 2 bytes per value), far beyond one value per 8 bytes.
        let zeros = json!({"name": "z", "inputSchema": {"enum": vec![0; 300]}});
        assert!(json_size(&zeros) < L.max_bytes);
        let e = Listing::default()
            .add_page(vec![zeros], L)
            .expect_err("too many values");
        assert!(e.contains("JSON values"), "{e}");
        // An ordinary schema passes.
        let tool = json!({"name": "echo", "description": "Echoes.", "inputSchema": {
            "type": "object", "properties": {"message": {"type": "string"}},
            "required": ["message"]}});
        Listing::default()
            .add_page(vec![tool], L)
            .expect("ordinary tool");
    }

    #[test]
    fn pages_are_taken_not_copied_and_bad_pages_are_empty() {
        let mut page = json!({"tools": [tool("a", 1)], "nextCursor": "c"});
        assert_eq!(take_page(&mut page).len(), 1);
        assert_eq!(page["tools"], Value::Null);
        assert!(take_page(&mut json!({"tools": "nope"})).is_empty());
        assert!(take_page(&mut json!(7)).is_empty());
    }

    #[test]
    fn listing_refuses_the_page_that_crosses_a_bound() {
        let mut l = Listing::default();
        l.add_page(vec![tool("a", 100), tool("b", 100)], L)
            .expect("fits");
        let held = l.bytes();
        assert!(held > 200 && held < 400, "{held}");
        // Bytes: refused whole, nothing kept of it.
        let e = l.add_page(vec![tool("c", 900)], L).expect_err("too big");
        assert!(e.contains("max_tool_list_bytes"), "{e}");
        assert_eq!(l.bytes(), held);
        // Tools.
        let e = l
            .add_page(vec![tool("c", 1), tool("d", 1), tool("e", 1)], L)
            .expect_err("too many");
        assert!(e.contains("more than 4 tools"), "{e}");
        // Pages: empty pages with a cursor forever end too.
        let mut l = Listing::default();
        for _ in 0..4 {
            l.add_page(Vec::new(), L).expect("page");
        }
        let e = l.add_page(Vec::new(), L).expect_err("too many pages");
        assert!(e.contains("pages"), "{e}");
        let mut l = Listing::default();
        l.add_page(vec![tool("a", 1)], L).expect("page");
        l.add_page(vec![tool("b", 1)], L).expect("page");
        let names: Vec<Value> = l
            .into_tools()
            .into_iter()
            .map(|t| t["name"].clone())
            .collect();
        assert_eq!(names, [json!("a"), json!("b")]);
    }

    #[test]
    fn relist_coalesces_and_rate_limits() {
        let t0 = Instant::now();
        let s = Duration::from_millis;
        let mut r = Relist::default();
        // The first listing of a run.
        r.started(t0);
        // Notifications during it: one listing to follow, however many arrive.
        for i in 0..1000 {
            assert_eq!(r.changed(t0 + s(i / 10)), Next::Nothing);
        }
        // It ends before the interval: wait, do not list at once.
        let at = t0 + RELIST_INTERVAL;
        assert_eq!(r.finished(t0 + s(200)), Next::WaitUntil(at));
        // More notifications while the timer is armed change nothing.
        assert_eq!(r.changed(t0 + s(300)), Next::Nothing);
        assert_eq!(r.timer_fired(), Next::ListNow);
        r.started(at);
        // Done, nothing new: nothing to do.
        assert_eq!(r.finished(at + s(10)), Next::Nothing);
        // A notification long after: list at once.
        assert_eq!(r.changed(at + s(5000)), Next::ListNow);
        r.started(at + s(5000));
        // The timer firing while a listing runs makes it list once more afterwards.
        let mut r = Relist::default();
        r.started(t0);
        assert_eq!(r.finished(t0 + s(1)), Next::Nothing);
        assert_eq!(r.changed(t0 + s(2)), Next::WaitUntil(at));
        r.started(t0 + s(3)); // e.g. a new listing started by someone else
        assert_eq!(r.timer_fired(), Next::Nothing);
        assert_eq!(r.finished(t0 + s(500)), Next::WaitUntil(t0 + s(1003)));
    }

    #[test]
    fn flood_counts_a_sliding_minute_and_stays_bounded() {
        let t0 = Instant::now();
        let mut f = Flood::default();
        for i in 0..100 {
            assert!(!f.hit(t0 + Duration::from_millis(i), 100), "{i}");
        }
        assert!(f.hit(t0 + Duration::from_millis(100), 100));
        for i in 0..10_000 {
            f.hit(t0 + Duration::from_millis(200 + i), 100);
            assert!(f.len() <= 101);
        }
        // A minute later the burst is forgotten.
        assert!(!f.hit(t0 + Duration::from_secs(200), 100));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn other_lists_have_the_tool_lists_bounds_and_say_what_they_list() {
        let mut page = json!({"resourceTemplates": [{"uriTemplate": "x://{n}"}], "tools": [1]});
        let items = take_items(&mut page, Kind::ResourceTemplates);
        assert_eq!(items.len(), 1);
        assert_eq!(page["tools"], json!([1]), "only the kind's field is taken");
        let mut l = Listing::new(Kind::Prompts);
        let five: Vec<Value> = (0..5).map(|i| json!({"name": format!("p{i}")})).collect();
        let e = l.add_page(five, L).expect_err("too many");
        assert!(
            e.contains("more than 4 prompts listed (mcp_servers.max_tools)"),
            "{e}"
        );
        let mut l = Listing::new(Kind::Resources);
        let big = json!({"uri": "x://1", "description": "d".repeat(2000)});
        let e = l.add_page(vec![big], L).expect_err("too big");
        assert!(e.starts_with("resource list larger than 1000 bytes"), "{e}");
        assert_eq!(
            Kind::from_list_changed("notifications/resources/list_changed"),
            [Kind::Resources, Kind::ResourceTemplates]
        );
        assert!(Kind::from_list_changed("notifications/other").is_empty());
        assert_eq!(Kind::ResourceTemplates.method(), "resources/templates/list");
        assert_eq!(Kind::ResourceTemplates.capability(), "resources");
    }
}
