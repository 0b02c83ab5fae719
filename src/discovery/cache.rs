//! The cache of sources' answers: per (source, query), the findings and when they were
//! fetched. Kept in memory (each answer shared, so a cached answer and a copy handed to the
//! worker cost a reference count, not a copy) and written whole to [`FILE`] in the state
//! directory by [`save`] on the worker (the state envelope: `{"version", "written_at",
//! "data"}`; a temporary file renamed over the old one, without fsync: a cache that is lost
//! or torn by a crash is only asked again, since a torn file does not parse).
//!
//! The file is outside input when it is read back: it is read once, on the worker, with a
//! size cap; anything that does not parse is ignored (and replaced at the next write); each
//! finding goes through the same checks as a source's ([`Found`]'s deserializer parses and
//! bounds it); entries fetched "in the future" are dropped. At most [`MAX_ENTRIES`] entries
//! (the oldest go first), each at most a source's bound of findings.

use super::candidate::{Found, Skipped, Source, MAX_PER_SOURCE};
use super::source::Parsed;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The cache's file name in the state directory.
pub const FILE: &str = "discovery-cache.json";
/// Answers kept (source and query each).
pub const MAX_ENTRIES: usize = 32;
/// About how many bytes the kept answers may take together ([`Found::weight`]); the oldest
/// go first beyond it.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Largest cache file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// One cached answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When it was fetched (ms since 1970).
    pub fetched_at_ms: u64,
    /// What it gave.
    pub parsed: Arc<Parsed>,
    /// About how many bytes it takes ([`Found::weight`]).
    weight: usize,
}

/// The cached answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cache {
    entries: BTreeMap<(Source, String), Entry>,
}

#[derive(Serialize, Deserialize)]
struct EntryDoc {
    source: Source,
    query: String,
    fetched_at_ms: u64,
    skipped: Skipped,
    found: Vec<Value>,
}

#[derive(Serialize, Deserialize)]
struct Document {
    entries: Vec<EntryDoc>,
}

impl Cache {
    /// How many answers it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The answer of `source` for `query` if fetched less than `ttl_ms` before `now_ms`.
    pub fn fresh(&self, source: Source, query: &str, now_ms: u64, ttl_ms: u64) -> Option<&Entry> {
        self.entries
            .get(&(source, query.to_string()))
            .filter(|e| e.fetched_at_ms <= now_ms && now_ms - e.fetched_at_ms < ttl_ms)
    }

    /// Keeps an answer, dropping the oldest beyond [`MAX_ENTRIES`].
    pub fn put(&mut self, source: Source, query: &str, now_ms: u64, parsed: Arc<Parsed>) {
        let weight = parsed.found.iter().map(Found::weight).sum();
        self.entries.insert(
            (source, query.to_string()),
            Entry {
                fetched_at_ms: now_ms,
                parsed,
                weight,
            },
        );
        while self.entries.len() > MAX_ENTRIES || self.weight() > MAX_BYTES {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(k, e)| (e.fetched_at_ms, (*k).clone()))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => break,
            };
        }
    }

    /// About how many bytes the kept answers take.
    fn weight(&self) -> usize {
        self.entries.values().map(|e| e.weight).sum()
    }

    /// Takes in what `older` holds that this cache does not (answers loaded from the file
    /// after some were fetched).
    pub fn absorb(&mut self, older: Cache) {
        for ((source, query), entry) in older.entries {
            if !self.entries.contains_key(&(source, query.clone())) {
                self.put(source, &query, entry.fetched_at_ms, entry.parsed);
            }
        }
    }

    /// The document written to [`FILE`].
    pub fn document(&self) -> Value {
        let entries = self
            .entries
            .iter()
            .map(|((source, query), e)| EntryDoc {
                source: *source,
                query: query.clone(),
                fetched_at_ms: e.fetched_at_ms,
                skipped: e.parsed.skipped,
                found: e
                    .parsed
                    .found
                    .iter()
                    .filter_map(|f| serde_json::to_value(f).ok())
                    .collect(),
            })
            .collect();
        serde_json::to_value(Document { entries }).unwrap_or(Value::Null)
    }

    /// A cache from the bytes of [`FILE`] (the state envelope around [`Cache::document`]).
    ///
    /// # Errors
    /// The bytes are not such a document.
    pub fn parse(bytes: &[u8], now_ms: u64) -> Result<Cache, String> {
        #[derive(Deserialize)]
        struct Envelope {
            version: u32,
            data: Document,
        }
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|e| format!("not a discovery cache: {e}"))?;
        if env.version != crate::state::STATE_FORMAT_VERSION {
            return Err(format!("format version {}", env.version));
        }
        let mut cache = Cache::default();
        for e in env.data.entries.into_iter().take(MAX_ENTRIES) {
            if e.fetched_at_ms > now_ms || e.query.len() > super::source::MAX_QUERY_BYTES {
                continue;
            }
            let found: Vec<Found> = e
                .found
                .into_iter()
                .take(MAX_PER_SOURCE)
                .filter_map(|v| serde_json::from_value::<Found>(v).ok())
                .filter(|f| f.source == e.source)
                .collect();
            let parsed = Parsed {
                found,
                skipped: e.skipped,
                next_cursor: None,
            };
            cache.put(e.source, &e.query, e.fetched_at_ms, Arc::new(parsed));
        }
        Ok(cache)
    }
}

/// Writes `cache` to `path` (on the worker): the envelope into `<path>.tmp` (mode 0600), then
/// renamed over `path`.
///
/// # Errors
/// The write or the rename failed (the old file, if any, is left as it was).
pub fn save(path: &Path, cache: &Cache) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let envelope = serde_json::json!({
        "version": crate::state::STATE_FORMAT_VERSION,
        "written_at": crate::state::rfc3339_utc_millis(std::time::SystemTime::now()),
        "data": cache.document(),
    });
    let bytes = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

/// Reads the cache file (on the worker). A missing file is an empty cache.
///
/// # Errors
/// The file cannot be read or does not parse.
pub fn load(path: &Path, now_ms: u64) -> Result<Cache, String> {
    match crate::state::read_small_file(path, MAX_FILE_BYTES) {
        Ok(bytes) => Cache::parse(&bytes, now_ms).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Cache::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variety::package::PackageRef;

    fn parsed(n: usize) -> Arc<Parsed> {
        Arc::new(Parsed {
            found: (0..n)
                .map(|i| {
                    Found::new(
                        Source::Npm,
                        PackageRef::parse(&format!("npm:p{i}@1.0.0")).expect("p"),
                    )
                })
                .collect(),
            skipped: Skipped {
                invalid: 2,
                ..Skipped::default()
            },
            next_cursor: None,
        })
    }

    fn envelope(doc: &Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"version": 1, "written_at": "x", "data": doc}))
            .expect("json")
    }

    #[test]
    fn saved_and_loaded() {
        let dir = std::env::temp_dir().join(format!("vsm-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(FILE);
        let mut c = Cache::default();
        c.put(Source::Npm, "", 5, parsed(2));
        save(&path, &c).expect("save");
        assert_eq!(load(&path, 10).expect("load"), c);
        assert!(load(&dir.join("missing.json"), 10)
            .expect("empty")
            .is_empty());
        std::fs::write(&path, b"{\"version\": 1, \"data\": {\"entr").expect("torn");
        assert!(load(&path, 10).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn round_trip_and_ttl() {
        let mut c = Cache::default();
        c.put(Source::Npm, "memory", 1000, parsed(3));
        let back = Cache::parse(&envelope(&c.document()), 2000).expect("parse");
        assert_eq!(back, c);
        assert!(back.fresh(Source::Npm, "memory", 1500, 1000).is_some());
        assert!(back.fresh(Source::Npm, "memory", 2000, 1000).is_none());
        assert!(back.fresh(Source::Npm, "other", 1500, 1000).is_none());
        assert!(back.fresh(Source::Registry, "memory", 1500, 1000).is_none());
        // Fetched after "now": the clock went back; not trusted as fresh, dropped on load.
        assert!(back.fresh(Source::Npm, "memory", 500, 1000).is_none());
        assert!(Cache::parse(&envelope(&c.document()), 999)
            .expect("p")
            .is_empty());
    }

    #[test]
    fn bounded() {
        let mut c = Cache::default();
        for i in 0..100u64 {
            c.put(Source::Npm, &format!("q{i}"), i, parsed(1));
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert!(c.fresh(Source::Npm, "q99", 99, 10).is_some());
        assert!(c.fresh(Source::Npm, "q0", 1, 10).is_none());
        // Heavy answers: the byte budget, not the count, decides.
        let mut heavy = (*parsed(100)).clone();
        for f in &mut heavy.found {
            f.description = "d".repeat(3000);
        }
        let heavy = Arc::new(heavy);
        let one: usize = heavy.found.iter().map(Found::weight).sum();
        let mut c = Cache::default();
        for i in 0..32u64 {
            c.put(Source::Npm, &format!("q{i}"), i, heavy.clone());
        }
        assert_eq!(c.len(), MAX_BYTES / one);
        assert!(c.weight() <= MAX_BYTES);
        assert!(c.fresh(Source::Npm, "q31", 31, 10).is_some());
    }

    #[test]
    fn corrupt_or_tampered_files_are_not_trusted() {
        for bad in [
            &b""[..],
            b"{",
            b"null",
            b"{\"version\": 2, \"data\": {\"entries\": []}}",
        ] {
            assert!(Cache::parse(bad, 0).is_err(), "{bad:?}");
        }
        let mut c = Cache::default();
        c.put(Source::Npm, "q", 10, parsed(2));
        let tamper = |f: &dyn Fn(&mut Value)| {
            let mut doc = c.document();
            f(&mut doc["entries"][0]["found"][0]);
            let back = Cache::parse(&envelope(&doc), 20).expect("parse");
            back.fresh(Source::Npm, "q", 20, 100)
                .expect("entry")
                .parsed
                .found
                .len()
        };
        assert_eq!(tamper(&|_| {}), 2);
        // A finding whose package is not exact is dropped, the rest kept.
        assert_eq!(tamper(&|f| f["package"] = "npm:p0@latest".into()), 1);
        // A finding filed under another source is dropped.
        assert_eq!(tamper(&|f| f["source"] = "catalog".into()), 1);
        // A finding of the wrong shape is dropped.
        assert_eq!(tamper(&|f| f["title"] = 5.into()), 1);
    }
}
