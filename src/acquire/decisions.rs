//! Decision records: every verdict of the acquisition pipeline (approved or refused), with
//! every criterion and reason, the package, the time and who asked, kept for
//! `GET /api/v1/decisions` and persisted in a state file of their own ([`DECISIONS_FILE`]).
//!
//! Invariants: at most [`MAX_DECISIONS`] records, oldest dropped first and counted (the count
//! is persisted too, so a restart does not forget that history was lost); ids increase and
//! are never reused, also across restarts.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::VecDeque;

/// The state file.
pub const DECISIONS_FILE: &str = "decisions.json";
/// Records kept at most.
pub const MAX_DECISIONS: usize = 256;

/// One verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Increasing id.
    pub id: u64,
    /// RFC 3339 UTC.
    pub at: String,
    /// `approved` or `refused`.
    pub verdict: String,
    /// The package (`npm:NAME@VERSION`, `pypi:NAME==VERSION`).
    pub package: String,
    /// The acquisition it belongs to.
    pub acquisition_id: String,
    /// Who asked (`api`, `cli`, `ws`, or a room's name).
    pub requested_by: String,
    /// The score (absent when scanning is off).
    pub score: Option<u8>,
    /// The threshold applied.
    pub min_score: u8,
    /// Every criterion with points and verdict.
    pub criteria: Value,
    /// The capabilities found, each with its reason.
    pub capabilities: Value,
    /// Why it was refused.
    pub reasons: Vec<String>,
}

/// The records.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Decisions {
    records: VecDeque<Decision>,
    /// Records dropped for the bound, ever.
    dropped: u64,
    next_id: u64,
}

impl Decisions {
    /// Records from the state file's document (a document this version does not understand
    /// gives an error and is left alone by the caller).
    ///
    /// # Errors
    /// The document is not a decisions document.
    pub fn from_document(v: Value) -> Result<Decisions, String> {
        let mut d: Decisions = serde_json::from_value(v).map_err(|e| e.to_string())?;
        while d.records.len() > MAX_DECISIONS {
            d.records.pop_front();
            d.dropped += 1;
        }
        let max = d.records.iter().map(|r| r.id).max().unwrap_or(0);
        d.next_id = d.next_id.max(max + 1);
        Ok(d)
    }

    /// The document to persist.
    pub fn document(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Adds a record (its id is assigned here) and returns the id.
    pub fn push(&mut self, mut d: Decision) -> u64 {
        self.next_id = self.next_id.max(1);
        d.id = self.next_id;
        self.next_id += 1;
        if self.records.len() >= MAX_DECISIONS {
            self.records.pop_front();
            self.dropped += 1;
        }
        self.records.push_back(d);
        self.next_id - 1
    }

    /// How many of the kept records have `verdict`.
    pub fn count(&self, verdict: &str) -> usize {
        self.records.iter().filter(|d| d.verdict == verdict).count()
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `GET /api/v1/decisions`: records with an id above `since` and of `verdict`, oldest
    /// first.
    pub fn list(&self, since: Option<u64>, verdict: Option<&str>) -> Value {
        let records: Vec<&Decision> = self
            .records
            .iter()
            .filter(|d| since.is_none_or(|s| d.id > s))
            .filter(|d| verdict.is_none_or(|v| d.verdict == v))
            .collect();
        json!({"decisions": records, "kept": self.records.len(), "dropped": self.dropped,
               "max_kept": MAX_DECISIONS})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(verdict: &str) -> Decision {
        Decision {
            id: 0,
            at: "2026-12-02T00:00:00Z".into(),
            verdict: verdict.into(),
            package: "npm:x@1.0.0".into(),
            acquisition_id: "acq-1".into(),
            requested_by: "api".into(),
            score: Some(80),
            min_score: 70,
            criteria: json!([]),
            capabilities: json!({}),
            reasons: Vec::new(),
        }
    }

    #[test]
    fn records_are_bounded_filtered_and_survive_a_round_trip() {
        let mut d = Decisions::default();
        for i in 0..MAX_DECISIONS + 3 {
            d.push(record(if i % 2 == 0 { "approved" } else { "refused" }));
        }
        assert_eq!(d.len(), MAX_DECISIONS);
        let all = d.list(None, None);
        assert_eq!(all["dropped"], 3);
        assert_eq!(all["decisions"][0]["id"], 4, "the oldest went first");
        let refused = d.list(Some(250), Some("refused"));
        let ids: Vec<u64> = refused["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [252, 254, 256, 258]);
        let back = Decisions::from_document(d.document()).unwrap();
        assert_eq!(back.list(None, None), d.list(None, None));
        let mut back = back;
        assert_eq!(back.push(record("approved")), 260, "ids are never reused");
        assert!(Decisions::from_document(json!([1, 2])).is_err());
    }
}
