//! What discovery finds, and how the findings of several sources become one ranked list.
//!
//! A source's parser turns its answer into [`Found`] records: one package at an exact
//! version ([`PackageRef`]) with what that source says about it. [`merge`] filters them
//! (registry status, runtime present), joins the records of the same package from several
//! sources into one [`Candidate`] (the most trusted source's fields first: catalog, registry,
//! npm, GitHub), maps each to the capabilities it would bring (its name, title, description
//! and keywords through the capability rules, plus what the catalog declares), and ranks
//! them.
//!
//! Ranking is deterministic: the same findings, query and day give the same order. The score
//! is the sum of parts, each shown: capability match with the query, registry status,
//! ownership proof, recency, curation and corroboration by several sources; ties go by id.
//!
//! Bounds: every string a source gives is clipped ([`clip`]), lists are cut at fixed sizes,
//! and the merged list holds at most [`MAX_CANDIDATES`]. Cost: linear in the findings times
//! the capability rules.

use crate::variety::capability::{self, Reason, Rule, ToolText};
use crate::variety::package::{PackageRef, Registry};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most candidates one source contributes (the registry's largest page).
pub const MAX_PER_SOURCE: usize = 100;
/// Most candidates in one answer.
pub const MAX_CANDIDATES: usize = 100;
/// Most arguments of each kind, and environment variables, kept per package.
pub const MAX_ARGS: usize = 16;
/// Most keywords kept per package.
pub const MAX_KEYWORDS: usize = 32;

/// Where a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The operator's catalog file.
    Catalog,
    /// The official MCP registry.
    Registry,
    /// The npm registry's search.
    Npm,
    /// GitHub repository search.
    Github,
}

impl Source {
    /// Every source, most trusted first.
    pub const ALL: [Source; 4] = [
        Source::Catalog,
        Source::Registry,
        Source::Npm,
        Source::Github,
    ];

    /// Its name in configuration, queries and answers.
    pub const fn name(self) -> &'static str {
        match self {
            Source::Catalog => "catalog",
            Source::Registry => "registry",
            Source::Npm => "npm",
            Source::Github => "github",
        }
    }

    /// The source of that name.
    pub fn parse(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// An argument passed to the package or its runtime (the registry's `packageArguments` and
/// `runtimeArguments`; spawned without a shell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argument {
    /// `positional` or `named`.
    pub kind: String,
    /// The option name of a named argument (`--port`).
    pub name: Option<String>,
    /// A fixed value.
    pub value: Option<String>,
    /// What to put there, for people.
    pub value_hint: Option<String>,
    /// Whether the server needs it.
    pub is_required: bool,
    /// Its default.
    pub default: Option<String>,
}

/// An environment variable the server reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Whether the server needs it.
    pub is_required: bool,
    /// Whether it holds a secret (kept out of `servers.json` by acquisition).
    pub is_secret: bool,
    /// Its default.
    pub default: Option<String>,
}

/// What one source says about one package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FoundDoc", into = "FoundDoc")]
pub struct Found {
    /// Who said it.
    pub source: Source,
    /// The package at an exact version.
    pub package: PackageRef,
    /// How to run it (`npx`, `uvx`, `python3`...), when the source says.
    pub runtime_hint: Option<String>,
    /// Arguments to the runtime.
    pub runtime_arguments: Vec<Argument>,
    /// Arguments to the package.
    pub package_arguments: Vec<Argument>,
    /// Environment variables it reads.
    pub environment_variables: Vec<EnvVar>,
    /// The registry's server name (reverse-DNS), when listed there.
    pub server_name: Option<String>,
    /// Title for people.
    pub title: String,
    /// Description.
    pub description: String,
    /// Keywords or topics.
    pub keywords: Vec<String>,
    /// Source repository URL.
    pub repository: Option<String>,
    /// The registry's status (`active`, `deprecated`, ...), when listed there.
    pub status: Option<String>,
    /// When it was published (RFC 3339), when known.
    pub published_at: Option<String>,
    /// When it was last updated (RFC 3339), when known.
    pub updated_at: Option<String>,
    /// Capabilities the catalog declares for it.
    pub declared: Vec<String>,
    /// The registry checked at publish that the package names this server (npm `mcpName`,
    /// PyPI `mcp-name:`); acquisition checks it again on the installed package.
    pub ownership_proof: bool,
}

/// [`Found`] as stored in the cache: the package as text, parsed and checked again on load.
#[derive(Serialize, Deserialize)]
struct FoundDoc {
    source: Source,
    package: String,
    runtime_hint: Option<String>,
    runtime_arguments: Vec<Argument>,
    package_arguments: Vec<Argument>,
    environment_variables: Vec<EnvVar>,
    server_name: Option<String>,
    title: String,
    description: String,
    keywords: Vec<String>,
    repository: Option<String>,
    status: Option<String>,
    published_at: Option<String>,
    updated_at: Option<String>,
    declared: Vec<String>,
    ownership_proof: bool,
}

impl TryFrom<FoundDoc> for Found {
    type Error = String;
    fn try_from(d: FoundDoc) -> Result<Found, String> {
        let package = PackageRef::parse(&d.package)?;
        let f = Found {
            source: d.source,
            package,
            runtime_hint: d.runtime_hint,
            runtime_arguments: d.runtime_arguments,
            package_arguments: d.package_arguments,
            environment_variables: d.environment_variables,
            server_name: d.server_name,
            title: d.title,
            description: d.description,
            keywords: d.keywords,
            repository: d.repository,
            status: d.status,
            published_at: d.published_at,
            updated_at: d.updated_at,
            declared: d.declared,
            ownership_proof: d.ownership_proof,
        };
        // A cache file is outside input: the bounds hold for what it gives as for a source.
        Ok(f.bounded())
    }
}

impl From<Found> for FoundDoc {
    fn from(f: Found) -> FoundDoc {
        FoundDoc {
            source: f.source,
            package: f.package.to_string(),
            runtime_hint: f.runtime_hint,
            runtime_arguments: f.runtime_arguments,
            package_arguments: f.package_arguments,
            environment_variables: f.environment_variables,
            server_name: f.server_name,
            title: f.title,
            description: f.description,
            keywords: f.keywords,
            repository: f.repository,
            status: f.status,
            published_at: f.published_at,
            updated_at: f.updated_at,
            declared: f.declared,
            ownership_proof: f.ownership_proof,
        }
    }
}

impl Found {
    /// A finding with only its package known.
    pub fn new(source: Source, package: PackageRef) -> Found {
        Found {
            source,
            title: package.name.clone(),
            package,
            runtime_hint: None,
            runtime_arguments: Vec::new(),
            package_arguments: Vec::new(),
            environment_variables: Vec::new(),
            server_name: None,
            description: String::new(),
            keywords: Vec::new(),
            repository: None,
            status: None,
            published_at: None,
            updated_at: None,
            declared: Vec::new(),
            ownership_proof: false,
        }
    }

    /// The same finding with every string clipped and every list cut to its bound.
    pub fn bounded(mut self) -> Found {
        let opt = |o: &mut Option<String>, n: usize| {
            if let Some(s) = o {
                *s = clip(s, n);
            }
        };
        opt(&mut self.runtime_hint, 64);
        opt(&mut self.server_name, 200);
        opt(&mut self.repository, 500);
        opt(&mut self.status, 32);
        opt(&mut self.published_at, 40);
        opt(&mut self.updated_at, 40);
        self.title = clip(&self.title, 200);
        self.description = clip(&self.description, 1000);
        self.keywords.truncate(MAX_KEYWORDS);
        for k in &mut self.keywords {
            *k = clip(k, 64);
        }
        self.declared.truncate(MAX_KEYWORDS);
        for d in &mut self.declared {
            *d = clip(d, 64);
        }
        for args in [&mut self.runtime_arguments, &mut self.package_arguments] {
            args.truncate(MAX_ARGS);
            for a in args.iter_mut() {
                a.kind = clip(&a.kind, 16);
                for s in [&mut a.name, &mut a.value, &mut a.value_hint, &mut a.default] {
                    opt(s, 128);
                }
            }
        }
        self.environment_variables.truncate(MAX_ARGS);
        for e in &mut self.environment_variables {
            e.name = clip(&e.name, 128);
            e.description = clip(&e.description, 200);
            opt(&mut e.default, 128);
        }
        self
    }
}

impl Found {
    /// About how many bytes it takes (its strings plus a little per item), for the cache's
    /// byte budget.
    pub fn weight(&self) -> usize {
        let o = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let args = |a: &[Argument]| -> usize {
            a.iter()
                .map(|a| {
                    32 + a.kind.len() + o(&a.name) + o(&a.value) + o(&a.value_hint) + o(&a.default)
                })
                .sum()
        };
        256 + self.package.name.len()
            + self.package.version.len()
            + o(&self.runtime_hint)
            + o(&self.server_name)
            + o(&self.repository)
            + o(&self.status)
            + o(&self.published_at)
            + o(&self.updated_at)
            + self.title.len()
            + self.description.len()
            + self
                .keywords
                .iter()
                .chain(&self.declared)
                .map(|k| 16 + k.len())
                .sum::<usize>()
            + args(&self.runtime_arguments)
            + args(&self.package_arguments)
            + self
                .environment_variables
                .iter()
                .map(|e| 48 + e.name.len() + e.description.len() + o(&e.default))
                .sum::<usize>()
    }
}

/// At most `max` characters of `s`, control characters removed.
pub fn clip(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Which runtimes the host has (checked once on the worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtimes {
    /// `node` and `npx` are on PATH.
    pub node: bool,
    /// `python3` is on PATH.
    pub python: bool,
}

impl Runtimes {
    /// Whether packages of `registry` can run here.
    pub fn runs(self, registry: Registry) -> bool {
        match registry {
            Registry::Npm => self.node,
            Registry::Pypi => self.python,
        }
    }
}

/// What a source's findings lost to the filters, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Entries whose shape was wrong (a field of the wrong type, a name or version that is
    /// not valid for its registry).
    pub invalid: usize,
    /// Packages without a stdio transport.
    pub not_stdio: usize,
    /// Packages of other registries (nuget, cargo, oci, ...).
    pub other_registry: usize,
    /// Registry entries whose status is not `active`.
    pub inactive: usize,
    /// Packages whose runtime (node/npx, python3) the host lacks.
    pub no_runtime: usize,
    /// Entries beyond the per-source bound.
    pub over_limit: usize,
}

/// A capability a candidate would bring, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Brings {
    /// The capability.
    pub capability: String,
    /// Why: declared by the catalog, or a keyword found in its name, title, description or
    /// keywords.
    pub reason: Reason,
}

/// The package a candidate installs and how it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageView {
    /// `npm:NAME@VERSION` or `pypi:NAME==VERSION`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Its registry.
    pub registry: Registry,
    /// Its name.
    pub name: String,
    /// Its exact version.
    pub version: String,
    /// How to run it, when a source says.
    pub runtime_hint: Option<String>,
    /// Arguments to the runtime.
    pub runtime_arguments: Vec<Argument>,
    /// Arguments to the package.
    pub package_arguments: Vec<Argument>,
    /// Environment variables.
    pub environment_variables: Vec<EnvVar>,
}

/// The score and its parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Score {
    /// Capabilities it brings that the query names (40), and the query's words found in its
    /// name, title, description or keywords (20).
    pub capability_match: u32,
    /// Listed as `active` in the official registry (20).
    pub registry_status: u32,
    /// The registry checked at publish that the package names the server (15).
    pub ownership: u32,
    /// Updated within 90 days (10) or a year (5).
    pub recency: u32,
    /// In the operator's catalog (10).
    pub curated: u32,
    /// Found by more than one source (5 each beyond the first, at most 10).
    pub corroboration: u32,
}

impl Score {
    /// The sum of the parts.
    pub fn total(&self) -> u32 {
        self.capability_match
            + self.registry_status
            + self.ownership
            + self.recency
            + self.curated
            + self.corroboration
    }
}

/// One candidate server: a package, what it brings, who found it and how it ranks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// `REGISTRY:NAME`: one per package, whatever the version.
    pub id: String,
    /// 1 for the best.
    pub rank: usize,
    /// The score (the sum of `score_parts`).
    pub score: u32,
    /// The parts of the score.
    pub score_parts: Score,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// What to install and how to run it.
    pub package: PackageView,
    /// The registry's server name.
    pub server_name: Option<String>,
    /// Source repository.
    pub repository: Option<String>,
    /// The registry's status.
    pub status: Option<String>,
    /// Published (RFC 3339).
    pub published_at: Option<String>,
    /// Last updated (RFC 3339).
    pub updated_at: Option<String>,
    /// The registry checked ownership at publish.
    pub ownership_proof: bool,
    /// Capabilities it would bring.
    pub capabilities: Vec<Brings>,
    /// Sources that found it, most trusted first.
    pub sources: Vec<Source>,
}

/// What a query asks for: its words and the capabilities it names.
#[derive(Debug, Clone, Default)]
pub struct Query {
    words: Vec<String>,
    capabilities: BTreeSet<String>,
}

impl Query {
    /// The query `text` under `rules`: a word that is a capability's name names it, and so
    /// does text the rules map (`timezone` names `time`).
    pub fn new(text: &str, rules: &[Rule]) -> Query {
        let words = words(text);
        let mut capabilities: BTreeSet<String> = capability::map(
            &[],
            [ToolText {
                name: "",
                description: text,
            }],
            rules,
        )
        .into_keys()
        .collect();
        for rule in rules {
            let name = words_joined(&rule.capability);
            if words.iter().any(|w| *w == name || *w == rule.capability) {
                capabilities.insert(rule.capability.clone());
            }
        }
        Query {
            words,
            capabilities,
        }
    }
}

fn words_joined(s: &str) -> String {
    words(s).join("")
}

/// Lower-case alphanumeric words of `text`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `found` matches the query's words (all of them, in its name, title, description,
/// keywords or declared capabilities); an empty query matches everything. For sources that
/// do not search themselves (the catalog).
pub fn matches(found: &Found, query: &Query) -> bool {
    if query.words.is_empty() {
        return true;
    }
    let hay = haystack(found);
    query.words.iter().all(|w| hay.contains(w))
        || found
            .declared
            .iter()
            .any(|c| query.capabilities.contains(c))
}

fn haystack(found: &Found) -> BTreeSet<String> {
    let mut hay = BTreeSet::new();
    for text in [
        found.package.name.as_str(),
        found.title.as_str(),
        found.description.as_str(),
    ]
    .into_iter()
    .chain(found.keywords.iter().map(String::as_str))
    .chain(found.declared.iter().map(String::as_str))
    {
        hay.extend(words(text));
    }
    hay
}

/// Days since 1970-01-01 of an RFC 3339 date-time's date (`YYYY-MM-DD...`).
pub fn days_of(rfc3339: &str) -> Option<i64> {
    let d = rfc3339.get(..10)?;
    let b = d.as_bytes();
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = d[..4].parse().ok()?;
    let m: i64 = d[5..7].parse().ok()?;
    let day: i64 = d[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (proleptic Gregorian), after H. Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Filters, joins and ranks findings. `today` is days since 1970 (for recency); `skipped`
/// gets, per source, what the status and runtime filters took out.
pub fn merge(
    findings: impl IntoIterator<Item = Found>,
    query: &Query,
    rules: &[Rule],
    runtimes: Runtimes,
    today: i64,
    skipped: &mut BTreeMap<Source, Skipped>,
) -> Vec<Candidate> {
    let mut groups: BTreeMap<(Registry, String), Vec<Found>> = BTreeMap::new();
    for f in findings {
        let s = skipped.entry(f.source).or_default();
        if f.status.as_deref().is_some_and(|st| st != "active") {
            s.inactive += 1;
            continue;
        }
        if !runtimes.runs(f.package.registry) {
            s.no_runtime += 1;
            continue;
        }
        groups
            .entry((f.package.registry, f.package.name.clone()))
            .or_default()
            .push(f);
    }
    let mut out: Vec<Candidate> = groups
        .into_values()
        .map(|mut group| {
            group.sort_by_key(|f| f.source);
            join(group, query, rules, today)
        })
        .collect();
    out.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    out.truncate(MAX_CANDIDATES);
    for (i, c) in out.iter_mut().enumerate() {
        c.rank = i + 1;
    }
    out
}

/// One candidate from the findings of one package, most trusted source first (not empty).
fn join(group: Vec<Found>, query: &Query, rules: &[Rule], today: i64) -> Candidate {
    let mut sources: Vec<Source> = group.iter().map(|f| f.source).collect();
    sources.dedup();
    let mut it = group.into_iter();
    // `merge` never builds an empty group.
    let mut best = it.next().unwrap_or_else(|| {
        Found::new(
            Source::Catalog,
            PackageRef {
                registry: Registry::Npm,
                name: String::new(),
                version: String::new(),
            },
        )
    });
    for other in it {
        let fill = |a: &mut Option<String>, b: Option<String>| {
            if a.is_none() {
                *a = b;
            }
        };
        fill(&mut best.runtime_hint, other.runtime_hint);
        fill(&mut best.server_name, other.server_name);
        fill(&mut best.repository, other.repository);
        fill(&mut best.status, other.status);
        fill(&mut best.published_at, other.published_at);
        fill(&mut best.updated_at, other.updated_at);
        if best.description.is_empty() {
            best.description = other.description;
        }
        if best.environment_variables.is_empty() {
            best.environment_variables = other.environment_variables;
        }
        if best.package_arguments.is_empty() {
            best.package_arguments = other.package_arguments;
        }
        if best.runtime_arguments.is_empty() {
            best.runtime_arguments = other.runtime_arguments;
        }
        if best.keywords.len() < MAX_KEYWORDS {
            let room = MAX_KEYWORDS - best.keywords.len();
            best.keywords.extend(other.keywords.into_iter().take(room));
        }
        best.ownership_proof |= other.ownership_proof;
    }
    let f = best;
    let description = format!("{} {} {}", f.title, f.description, f.keywords.join(" "));
    let brings: Vec<Brings> = capability::map(
        &f.declared,
        [ToolText {
            name: &f.package.name,
            description: &description,
        }],
        rules,
    )
    .into_iter()
    .map(|(capability, reason)| Brings { capability, reason })
    .collect();
    let mut score = Score::default();
    if brings
        .iter()
        .any(|b| query.capabilities.contains(&b.capability))
    {
        score.capability_match += 40;
    }
    if !query.words.is_empty() {
        let hay = haystack(&f);
        if query.words.iter().all(|w| hay.contains(w)) {
            score.capability_match += 20;
        }
    }
    if f.status.as_deref() == Some("active") {
        score.registry_status = 20;
    }
    if f.ownership_proof {
        score.ownership = 15;
    }
    let age = f
        .updated_at
        .as_deref()
        .or(f.published_at.as_deref())
        .and_then(days_of)
        .map(|d| today - d);
    score.recency = match age {
        Some(a) if a <= 90 => 10,
        Some(a) if a <= 365 => 5,
        _ => 0,
    };
    if sources.contains(&Source::Catalog) {
        score.curated = 10;
    }
    score.corroboration = (5 * (sources.len().saturating_sub(1)) as u32).min(10);
    let p = &f.package;
    Candidate {
        id: format!("{}:{}", p.registry, p.name),
        rank: 0,
        score: score.total(),
        score_parts: score,
        title: f.title.clone(),
        description: f.description.clone(),
        package: PackageView {
            reference: p.to_string(),
            registry: p.registry,
            name: p.name.clone(),
            version: p.version.clone(),
            runtime_hint: f.runtime_hint.clone(),
            runtime_arguments: f.runtime_arguments.clone(),
            package_arguments: f.package_arguments.clone(),
            environment_variables: f.environment_variables.clone(),
        },
        server_name: f.server_name.clone(),
        repository: f.repository.clone(),
        status: f.status.clone(),
        published_at: f.published_at.clone(),
        updated_at: f.updated_at.clone(),
        ownership_proof: f.ownership_proof,
        capabilities: brings,
        sources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(source: Source, package: &str) -> Found {
        Found::new(source, PackageRef::parse(package).expect("package"))
    }

    const ALL: Runtimes = Runtimes {
        node: true,
        python: true,
    };

    #[test]
    fn same_package_from_several_sources_is_one_candidate() {
        let rules = capability::builtin();
        let mut reg = found(
            Source::Registry,
            "npm:@modelcontextprotocol/server-memory@2026.8.31",
        );
        reg.status = Some("active".into());
        reg.ownership_proof = true;
        reg.description = "Knowledge graph memory".into();
        reg.updated_at = Some("2026-11-20T00:00:00Z".into());
        let mut npm = found(
            Source::Npm,
            "npm:@modelcontextprotocol/server-memory@2026.8.30",
        );
        npm.keywords = vec!["mcp".into()];
        let time = found(Source::Npm, "pypi:mcp-server-time==2026.10.19");
        let mut skipped = BTreeMap::new();
        let today = days_of("2026-12-02").expect("day");
        let out = merge(
            [npm, time, reg],
            &Query::new("memory", &rules),
            &rules,
            ALL,
            today,
            &mut skipped,
        );
        assert_eq!(out.len(), 2);
        let m = &out[0];
        assert_eq!(m.id, "npm:@modelcontextprotocol/server-memory");
        assert_eq!(m.rank, 1);
        assert_eq!(m.sources, [Source::Registry, Source::Npm]);
        // The registry's version wins over npm's: it is the more trusted source.
        assert_eq!(m.package.version, "2026.8.31");
        assert_eq!(m.capabilities[0].capability, "memory");
        assert_eq!(
            m.score_parts,
            Score {
                capability_match: 60,
                registry_status: 20,
                ownership: 15,
                recency: 10,
                curated: 0,
                corroboration: 5,
            }
        );
        assert_eq!(m.score, 110);
        assert_eq!(out[1].rank, 2);
        assert_eq!(out[1].score, 0);
    }

    #[test]
    fn inactive_and_unrunnable_are_filtered_and_counted() {
        let rules = capability::builtin();
        let mut old = found(Source::Registry, "npm:old-server@1.0.0");
        old.status = Some("deprecated".into());
        let py = found(Source::Registry, "pypi:mcp-server-time==1.0");
        let mut skipped = BTreeMap::new();
        let out = merge(
            [old, py],
            &Query::default(),
            &rules,
            Runtimes {
                node: true,
                python: false,
            },
            0,
            &mut skipped,
        );
        assert!(out.is_empty());
        let s = skipped[&Source::Registry];
        assert_eq!((s.inactive, s.no_runtime), (1, 1));
    }

    #[test]
    fn ranking_is_deterministic_and_bounded() {
        let rules = capability::builtin();
        let many: Vec<Found> = (0..300)
            .map(|i| found(Source::Npm, &format!("npm:pkg-{:03}@1.0.{i}", 299 - i)))
            .collect();
        let mut skipped = BTreeMap::new();
        let a = merge(
            many.clone(),
            &Query::default(),
            &rules,
            ALL,
            0,
            &mut skipped,
        );
        let b = merge(
            many.into_iter().rev(),
            &Query::default(),
            &rules,
            ALL,
            0,
            &mut skipped,
        );
        assert_eq!(a.len(), MAX_CANDIDATES);
        assert_eq!(a, b);
        // Equal scores: by id.
        assert_eq!(a[0].id, "npm:pkg-000");
    }

    #[test]
    fn query_names_capabilities() {
        let rules = capability::builtin();
        let q = Query::new("current timezone", &rules);
        assert!(q.capabilities.contains("time"));
        let q = Query::new("file_system", &rules);
        assert!(q.capabilities.contains("file_system"), "{q:?}");
        let mut cat = found(Source::Catalog, "npm:x-server@1.0.0");
        cat.declared = vec!["memory".into()];
        assert!(matches(&cat, &Query::new("memory", &rules)));
        assert!(matches(&cat, &Query::new("x server", &rules)));
        assert!(!matches(&cat, &Query::new("weather", &rules)));
    }

    #[test]
    fn dates() {
        assert_eq!(days_of("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(days_of("2000-03-01"), Some(11_017));
        assert_eq!(days_of("2026-12-02T08:00:00Z"), Some(20_789));
        for bad in [
            "",
            "2026-13-01",
            "2026/12/02",
            "20261202",
            "2026-12-0x",
            "é2026-12-02",
        ] {
            assert_eq!(days_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn cached_findings_are_checked_again() {
        let f = found(Source::Npm, "npm:left-pad@1.3.0");
        let text = serde_json::to_string(&f).expect("json");
        let back: Found = serde_json::from_str(&text).expect("back");
        assert_eq!(back, f);
        let bad = text.replace("left-pad@1.3.0", "left-pad@latest");
        assert!(serde_json::from_str::<Found>(&bad).is_err());
        let long = text.replace(
            "\"title\":\"left-pad\"",
            &format!("\"title\":\"{}\"", "t".repeat(5000)),
        );
        let back: Found = serde_json::from_str(&long).expect("long");
        assert_eq!(back.title.len(), 200);
    }
}
