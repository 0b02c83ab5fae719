//! The sources: what each is asked and how its answer becomes [`Found`] records.
//!
//! Parsers are pure functions over the bytes of an answer ([`registry`], [`npm`],
//! [`github_search`], [`github_package`], [`catalog`]); each answer's outer shape must be
//! right (else the whole answer is garbage, a per-source error), while an entry of the wrong
//! shape is skipped and counted. At most [`MAX_PER_SOURCE`] findings are kept per answer.
//!
//! [`fetch`] runs on the worker: one source, all its requests within one deadline (each
//! request gets what is left of it), bodies read up to [`MAX_BODY_BYTES`], no redirects
//! followed. The npm registry's URL, when not configured, is the `registry=` of the npm
//! config files npm itself reads ([`npm_registry_from_config`]); no registry host is written
//! in this code.

use super::candidate::{
    clip, matches, Argument, EnvVar, Found, Query, Skipped, Source, MAX_ARGS, MAX_PER_SOURCE,
};
use crate::variety::package::{PackageRef, Registry};
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest answer read from a source, in bytes (a 100-entry registry page is about 150 KB).
pub const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
/// Largest catalog file, in bytes.
pub const MAX_CATALOG_BYTES: u64 = 1024 * 1024;
/// Largest npm config file read, in bytes.
const MAX_NPMRC_BYTES: u64 = 64 * 1024;
/// GitHub repositories whose package file is fetched per search (one request each).
pub const MAX_GITHUB_REPOS: usize = 10;
/// Longest query sent to a source, in bytes.
pub const MAX_QUERY_BYTES: usize = 200;
/// Registry pages read per search at most (each up to [`MAX_PER_SOURCE`] entries).
pub const MAX_REGISTRY_PAGES: usize = 5;
/// Longest registry cursor followed, in bytes.
const MAX_CURSOR_BYTES: usize = 1024;

/// What a source's answer gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// The findings, at most [`MAX_PER_SOURCE`].
    pub found: Vec<Found>,
    /// What was left out, by reason.
    pub skipped: Skipped,
    /// The registry's cursor of the next page, when there is one.
    pub next_cursor: Option<String>,
}

impl Parsed {
    /// Adds a later page's findings (bounded as every push is) and what it skipped.
    fn extend(&mut self, page: Parsed) {
        for f in page.found {
            self.push(f);
        }
        let (a, b) = (&mut self.skipped, page.skipped);
        a.invalid += b.invalid;
        a.not_stdio += b.not_stdio;
        a.other_registry += b.other_registry;
        a.inactive += b.inactive;
        a.no_runtime += b.no_runtime;
        a.over_limit += b.over_limit;
        self.next_cursor = page.next_cursor;
    }

    fn push(&mut self, f: Found) {
        if self.found.len() < MAX_PER_SOURCE {
            self.found.push(f.bounded());
        } else {
            self.skipped.over_limit += 1;
        }
    }
}

// ----- the official MCP registry, API v0.1 ----------------------------------------------------

#[derive(Deserialize)]
struct RegistryPage {
    servers: Vec<Value>,
    #[serde(default)]
    metadata: Option<RegistryMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryMetadata {
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct RegEntry {
    server: RegServer,
    #[serde(rename = "_meta", default)]
    meta: Option<RegMeta>,
}

#[derive(Deserialize)]
struct RegServer {
    name: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    repository: Option<RegRepo>,
    #[serde(default)]
    packages: Vec<RegPackage>,
}

#[derive(Deserialize)]
struct RegRepo {
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegPackage {
    registry_type: String,
    identifier: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    runtime_hint: Option<String>,
    #[serde(default)]
    transport: Option<RegTransport>,
    #[serde(default)]
    runtime_arguments: Vec<RegArg>,
    #[serde(default)]
    package_arguments: Vec<RegArg>,
    #[serde(default)]
    environment_variables: Vec<RegEnv>,
}

#[derive(Deserialize)]
struct RegTransport {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegArg {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_hint: Option<String>,
    #[serde(default)]
    is_required: Option<bool>,
    #[serde(default)]
    default: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegEnv {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    is_required: Option<bool>,
    #[serde(default)]
    is_secret: Option<bool>,
    #[serde(default)]
    default: Option<String>,
}

#[derive(Deserialize)]
struct RegMeta {
    #[serde(rename = "io.modelcontextprotocol.registry/official", default)]
    official: Option<RegOfficial>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegOfficial {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    published_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

fn args(list: Vec<RegArg>) -> Vec<Argument> {
    list.into_iter()
        .take(MAX_ARGS)
        .map(|a| Argument {
            kind: a.kind.unwrap_or_else(|| "positional".into()),
            name: a.name,
            value: a.value,
            value_hint: a.value_hint,
            is_required: a.is_required.unwrap_or(false),
            default: a.default,
        })
        .collect()
}

/// A page of `GET {registry}/v0.1/servers`: every npm or PyPI package with a stdio transport
/// and an exact version, one finding each, with the entry's status and times. Entries
/// without the official status are kept with no status (the filters then treat them as not
/// listed as active).
///
/// # Errors
/// The answer is not a registry page (not JSON, no `servers` array).
pub fn registry(body: &[u8]) -> Result<Parsed, String> {
    let page: RegistryPage = serde_json::from_slice(body)
        .map_err(|e| format!("not a registry v0.1 answer: {}", clip(&e.to_string(), 200)))?;
    let mut out = Parsed {
        next_cursor: page
            .metadata
            .and_then(|m| m.next_cursor)
            .filter(|c| !c.is_empty() && c.len() <= MAX_CURSOR_BYTES),
        ..Parsed::default()
    };
    for entry in page.servers {
        if out.found.len() >= MAX_PER_SOURCE {
            out.skipped.over_limit += 1;
            continue;
        }
        let Ok(entry) = serde_json::from_value::<RegEntry>(entry) else {
            out.skipped.invalid += 1;
            continue;
        };
        let official = entry.meta.and_then(|m| m.official);
        let (status, published_at, updated_at) = match official {
            Some(o) => (o.status, o.published_at, o.updated_at),
            None => (None, None, None),
        };
        let s = entry.server;
        for p in s.packages.into_iter().take(8) {
            let registry = match p.registry_type.as_str() {
                "npm" => Registry::Npm,
                "pypi" => Registry::Pypi,
                _ => {
                    out.skipped.other_registry += 1;
                    continue;
                }
            };
            if p.transport.as_ref().map(|t| t.kind.as_str()) != Some("stdio") {
                out.skipped.not_stdio += 1;
                continue;
            }
            let version = p.version.as_deref().or(s.version.as_deref()).unwrap_or("");
            let Ok(package) = PackageRef::new(registry, &p.identifier, version) else {
                out.skipped.invalid += 1;
                continue;
            };
            let mut f = Found::new(Source::Registry, package);
            f.server_name = Some(s.name.clone());
            f.title = s.title.clone().unwrap_or_else(|| s.name.clone());
            f.description = s.description.clone().unwrap_or_default();
            f.repository = s.repository.as_ref().and_then(|r| r.url.clone());
            f.status = status.clone();
            f.published_at = published_at.clone();
            f.updated_at = updated_at.clone();
            f.runtime_hint = p.runtime_hint;
            f.runtime_arguments = args(p.runtime_arguments);
            f.package_arguments = args(p.package_arguments);
            f.environment_variables = p
                .environment_variables
                .into_iter()
                .take(MAX_ARGS)
                .map(|e| EnvVar {
                    name: e.name,
                    description: e.description.unwrap_or_default(),
                    is_required: e.is_required.unwrap_or(false),
                    is_secret: e.is_secret.unwrap_or(false),
                    default: e.default,
                })
                .collect();
            // Listed in the official registry: it checked at publish that the package names
            // this server (npm `mcpName`, PyPI `mcp-name:`).
            f.ownership_proof = true;
            out.push(f);
        }
    }
    Ok(out)
}

// ----- npm search -----------------------------------------------------------------------------

#[derive(Deserialize)]
struct NpmPage {
    objects: Vec<Value>,
}

#[derive(Deserialize)]
struct NpmObject {
    package: NpmPackage,
}

#[derive(Deserialize)]
struct NpmPackage {
    name: String,
    version: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    keywords: Vec<Value>,
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    links: Option<NpmLinks>,
}

#[derive(Deserialize)]
struct NpmLinks {
    #[serde(default)]
    repository: Option<String>,
}

/// An answer of `GET {npm}/-/v1/search`: each package at its latest version.
///
/// # Errors
/// The answer is not an npm search answer (not JSON, no `objects` array).
pub fn npm(body: &[u8]) -> Result<Parsed, String> {
    let page: NpmPage = serde_json::from_slice(body)
        .map_err(|e| format!("not an npm search answer: {}", clip(&e.to_string(), 200)))?;
    let mut out = Parsed::default();
    for object in page.objects {
        if out.found.len() >= MAX_PER_SOURCE {
            out.skipped.over_limit += 1;
            continue;
        }
        let Ok(NpmObject { package: p }) = serde_json::from_value::<NpmObject>(object) else {
            out.skipped.invalid += 1;
            continue;
        };
        let Ok(package) = PackageRef::new(Registry::Npm, &p.name, &p.version) else {
            out.skipped.invalid += 1;
            continue;
        };
        let mut f = Found::new(Source::Npm, package);
        f.description = p.description.unwrap_or_default();
        f.keywords = p
            .keywords
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        f.updated_at = p.date;
        f.repository = p.links.and_then(|l| l.repository);
        out.push(f);
    }
    Ok(out)
}

// ----- GitHub ---------------------------------------------------------------------------------

/// A repository from GitHub's search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// `owner/name`.
    pub full_name: String,
    /// Its page.
    pub html_url: Option<String>,
    /// Its description.
    pub description: String,
    /// Its topics.
    pub topics: Vec<String>,
    /// Last push (RFC 3339).
    pub pushed_at: Option<String>,
}

#[derive(Deserialize)]
struct GithubPage {
    items: Vec<Value>,
}

#[derive(Deserialize)]
struct GithubItem {
    full_name: String,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    topics: Vec<Value>,
    #[serde(default)]
    pushed_at: Option<String>,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    disabled: bool,
}

/// Whether `full_name` is `owner/name` in GitHub's characters (it goes into a URL path).
fn repo_name_ok(full_name: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    full_name
        .split_once('/')
        .is_some_and(|(o, n)| ok(o) && ok(n))
}

/// An answer of `GET {github}/search/repositories`: the repositories that are neither
/// archived nor disabled, at most [`MAX_GITHUB_REPOS`].
///
/// # Errors
/// The answer is not a search answer (not JSON, no `items` array).
pub fn github_search(body: &[u8], skipped: &mut Skipped) -> Result<Vec<Repo>, String> {
    let page: GithubPage = serde_json::from_slice(body)
        .map_err(|e| format!("not a GitHub search answer: {}", clip(&e.to_string(), 200)))?;
    let mut out = Vec::new();
    for item in page.items {
        if out.len() >= MAX_GITHUB_REPOS {
            skipped.over_limit += 1;
            continue;
        }
        let Ok(item) = serde_json::from_value::<GithubItem>(item) else {
            skipped.invalid += 1;
            continue;
        };
        if item.archived || item.disabled || !repo_name_ok(&item.full_name) {
            skipped.invalid += 1;
            continue;
        }
        out.push(Repo {
            full_name: item.full_name,
            html_url: item.html_url,
            description: item.description.unwrap_or_default(),
            topics: item
                .topics
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            pushed_at: item.pushed_at,
        });
    }
    Ok(out)
}

/// The package a repository names: `package.json` (`name` and `version`, not `private`) for
/// npm, or `pyproject.toml` (`[project]` `name` and a static `version`) for PyPI. `None`
/// when the file does not name one exactly: such a repository is not a candidate.
pub fn github_package(repo: &Repo, file: &str, body: &[u8]) -> Option<Found> {
    let package = match file {
        "package.json" => {
            let v: Value = serde_json::from_slice(body).ok()?;
            if v["private"] == true {
                return None;
            }
            PackageRef::new(Registry::Npm, v["name"].as_str()?, v["version"].as_str()?).ok()?
        }
        _ => {
            let text = std::str::from_utf8(body).ok()?;
            let v: toml::Table = toml::from_str(text).ok()?;
            let project = v.get("project")?.as_table()?;
            let name = project.get("name")?.as_str()?;
            let version = project.get("version")?.as_str()?;
            PackageRef::new(Registry::Pypi, name, version).ok()?
        }
    };
    let mut f = Found::new(Source::Github, package);
    f.description = repo.description.clone();
    f.keywords = repo.topics.clone();
    f.repository = repo.html_url.clone();
    f.updated_at = repo.pushed_at.clone();
    Some(f.bounded())
}

// ----- the operator's catalog -----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    servers: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogEntry {
    package: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    runtime_hint: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<CatalogEnv>,
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogEnv {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    #[serde(default)]
    default: Option<String>,
}

/// The catalog file: `[[servers]]` entries (`package = "npm:NAME@VERSION"` or
/// `"pypi:NAME==VERSION"`, optional `title`, `description`, `capabilities`, `keywords`,
/// `repository`, `runtime_hint`, `args`, `[[servers.env]]` with `name`, `description`,
/// `required`, `secret`, `default`, and `updated_at`), those matching `query`. An entry
/// with an unknown field or a package that is not exact is skipped and counted.
///
/// # Errors
/// The file is not TOML (with line and column) or has a top-level key other than `servers`.
pub fn catalog(body: &[u8], query: &Query) -> Result<Parsed, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the catalog is not UTF-8".to_string())?;
    let file: CatalogFile = toml::from_str(text)
        .map_err(|e| format!("the catalog is not valid: {}", clip(&e.to_string(), 300)))?;
    let mut out = Parsed::default();
    for entry in file.servers {
        let Ok(e) = entry.try_into::<CatalogEntry>() else {
            out.skipped.invalid += 1;
            continue;
        };
        let Ok(package) = PackageRef::parse(&e.package) else {
            out.skipped.invalid += 1;
            continue;
        };
        let mut f = Found::new(Source::Catalog, package);
        if let Some(t) = e.title {
            f.title = t;
        }
        f.description = e.description.unwrap_or_default();
        f.declared = e.capabilities;
        f.keywords = e.keywords;
        f.repository = e.repository;
        f.runtime_hint = e.runtime_hint;
        f.updated_at = e.updated_at;
        f.package_arguments = e
            .args
            .into_iter()
            .take(MAX_ARGS)
            .map(|v| Argument {
                kind: "positional".into(),
                name: None,
                value: Some(v),
                value_hint: None,
                is_required: true,
                default: None,
            })
            .collect();
        f.environment_variables = e
            .env
            .into_iter()
            .take(MAX_ARGS)
            .map(|v| EnvVar {
                name: v.name,
                description: v.description.unwrap_or_default(),
                is_required: v.required,
                is_secret: v.secret,
                default: v.default,
            })
            .collect();
        if matches(&f, query) {
            out.push(f);
        }
    }
    Ok(out)
}

// ----- npm configuration ----------------------------------------------------------------------

/// The `registry=` value of one npm config file's text (the last one wins, as in npm;
/// `;` and `#` start comments; scoped `@scope:registry` lines are not the default registry).
pub fn npmrc_registry(text: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with([';', '#']) {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "registry" {
            let v = value.trim().trim_matches('"').trim();
            if !v.is_empty() {
                found = Some(v.to_string());
            }
        }
    }
    found
}

/// The npm registry the user's npm config names, looked up as npm does, first found wins:
/// `$npm_config_registry` / `$NPM_CONFIG_REGISTRY`, `./.npmrc` (the project: the daemon's
/// working directory), the user's (`$NPM_CONFIG_USERCONFIG`, else `~/.npmrc`), the global one
/// (`$NPM_CONFIG_GLOBALCONFIG`, else `$PREFIX/etc/npmrc`, `/usr/local/etc/npmrc`,
/// `/etc/npmrc`). On the worker: it reads files.
///
/// # Errors
/// None of them names a registry, or the one named is not an http(s) URL.
pub fn npm_registry_from_config() -> Result<String, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let Some(v) = env("npm_config_registry").or_else(|| env("NPM_CONFIG_REGISTRY")) {
        return checked_registry(&v, "the environment (NPM_CONFIG_REGISTRY)");
    }
    let mut files: Vec<PathBuf> = vec![PathBuf::from(".npmrc")];
    match env("NPM_CONFIG_USERCONFIG").or_else(|| env("npm_config_userconfig")) {
        Some(p) => files.push(PathBuf::from(p)),
        None => {
            if let Some(home) = env("HOME") {
                files.push(Path::new(&home).join(".npmrc"));
            }
        }
    }
    match env("NPM_CONFIG_GLOBALCONFIG").or_else(|| env("npm_config_globalconfig")) {
        Some(p) => files.push(PathBuf::from(p)),
        None => {
            if let Some(prefix) = env("PREFIX") {
                files.push(Path::new(&prefix).join("etc/npmrc"));
            }
            files.push(PathBuf::from("/usr/local/etc/npmrc"));
            files.push(PathBuf::from("/etc/npmrc"));
        }
    }
    for file in &files {
        let Ok(bytes) = crate::state::read_small_file(file, MAX_NPMRC_BYTES) else {
            continue;
        };
        if let Some(v) = npmrc_registry(&String::from_utf8_lossy(&bytes)) {
            return checked_registry(&v, &file.display().to_string());
        }
    }
    let looked: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Err(format!(
        "no npm registry configured: set mcp_servers.npm_registry_url, or registry= in an npm config file (looked in NPM_CONFIG_REGISTRY, {})",
        looked.join(", ")
    ))
}

fn checked_registry(url: &str, from: &str) -> Result<String, String> {
    crate::monitor::checks::spec::check_http_url(url)
        .map(|()| url.trim_end_matches('/').to_string())
        .map_err(|e| format!("the npm registry {url:?} from {from}: {e}"))
}

// ----- fetching (worker) ----------------------------------------------------------------------

/// Where each source is, as configured (URLs without a trailing `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// The official registry's base URL, or empty.
    pub registry: String,
    /// The npm registry's base URL, or empty (then the npm config's).
    pub npm: String,
    /// GitHub's API base URL, or empty.
    pub github: String,
    /// A file holding the token sent to GitHub's API, or empty.
    pub github_token_file: String,
    /// The catalog file, or empty.
    pub catalog: String,
    /// `security.ca_file`: CA certificates trusted besides the bundled roots, or empty.
    pub ca_file: String,
}

impl Endpoints {
    /// Whether `source` has somewhere to ask (npm always may: the npm config is read when
    /// it is asked).
    pub fn configured(&self, source: Source) -> bool {
        match source {
            Source::Catalog => !self.catalog.is_empty(),
            Source::Registry => !self.registry.is_empty(),
            Source::Npm => true,
            Source::Github => !self.github.is_empty(),
        }
    }
}

/// Percent-encodes `s` for a query string (space as `+`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One GET within `deadline`: the body of a 200 answer, at most [`MAX_BODY_BYTES`].
/// `Ok(None)` for a 404 (a file a repository does not have).
/// `https://` trusts the bundled roots plus `ca_file` ([`crate::outbound`]).
fn get(
    ca_file: &str,
    url: &str,
    accept: &str,
    token: Option<&str>,
    deadline: Instant,
) -> Result<Option<Vec<u8>>, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(format!("timed out before GET {url}"));
    }
    let agent = crate::outbound::agent(ca_file, left).map_err(|e| format!("GET {url}: {e}"))?;
    let mut request = agent.get(url).header("Accept", accept);
    if let Some(t) = token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let mut response = request
        .call()
        .map_err(|e| format!("GET {url}: {}", clip(&crate::outbound::describe(&e), 300)))?;
    let status = response.status().as_u16();
    if status == 404 {
        return Ok(None);
    }
    if status != 200 {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(MAX_BODY_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            format!(
                "GET {url}: reading the answer: {}",
                clip(&e.to_string(), 300)
            )
        })?;
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(format!(
            "GET {url}: the answer is larger than {MAX_BODY_BYTES} bytes"
        ));
    }
    Ok(Some(body))
}

fn needed(body: Option<Vec<u8>>, url: &str) -> Result<Vec<u8>, String> {
    body.ok_or_else(|| format!("GET {url}: HTTP 404"))
}

/// Asks `source` for `query` (its words as given; the catalog matches them itself), all
/// requests within `timeout`. On the worker.
///
/// # Errors
/// The source is not configured, down, slow or answered garbage: one sentence.
pub fn fetch(
    source: Source,
    endpoints: &Endpoints,
    query: &str,
    parsed_query: &Query,
    timeout: Duration,
) -> Result<Parsed, String> {
    let deadline = Instant::now() + timeout;
    let q = encode(query);
    match source {
        Source::Catalog => {
            if endpoints.catalog.is_empty() {
                return Err("not configured: set mcp_servers.catalog_file".into());
            }
            let bytes =
                crate::state::read_small_file(Path::new(&endpoints.catalog), MAX_CATALOG_BYTES)
                    .map_err(|e| format!("{}: {e}", endpoints.catalog))?;
            catalog(&bytes, parsed_query).map_err(|e| format!("{}: {e}", endpoints.catalog))
        }
        Source::Registry => {
            if endpoints.registry.is_empty() {
                return Err("not configured: set mcp_servers.registry_url".into());
            }
            let mut base = format!(
                "{}/v0.1/servers?limit={}&version=latest",
                endpoints.registry, MAX_PER_SOURCE
            );
            if !q.is_empty() {
                base.push_str(&format!("&search={q}"));
            }
            // Pages are followed (`metadata.nextCursor`) until enough was found, the pages
            // run out, or the bound; a later page that fails ends with what was found.
            let mut out = Parsed::default();
            for n in 0..MAX_REGISTRY_PAGES {
                let url = match &out.next_cursor {
                    None if n > 0 => break,
                    None => base.clone(),
                    Some(cursor) => format!("{base}&cursor={}", encode(cursor)),
                };
                let page = get(&endpoints.ca_file, &url, "application/json", None, deadline)
                    .and_then(|body| needed(body, &url))
                    .and_then(|body| registry(&body));
                match page {
                    Ok(page) => out.extend(page),
                    Err(e) if n == 0 => return Err(e),
                    Err(e) => {
                        log::warn!(
                            "discovery: registry page {}: {e}; kept the first {n}",
                            n + 1
                        );
                        out.next_cursor = None;
                        break;
                    }
                }
                if out.found.len() >= MAX_PER_SOURCE {
                    break;
                }
            }
            out.next_cursor = None;
            Ok(out)
        }
        Source::Npm => {
            let base = if endpoints.npm.is_empty() {
                npm_registry_from_config()?
            } else {
                endpoints.npm.clone()
            };
            let mut text = "keywords:mcp".to_string();
            if !q.is_empty() {
                text.push('+');
                text.push_str(&q);
            }
            let url = format!("{base}/-/v1/search?text={text}&size={MAX_PER_SOURCE}");
            npm(&needed(
                get(&endpoints.ca_file, &url, "application/json", None, deadline)?,
                &url,
            )?)
        }
        Source::Github => {
            if endpoints.github.is_empty() {
                return Err("not configured: set mcp_servers.github_api_url".into());
            }
            let mut terms = "topic:mcp-server".to_string();
            if !q.is_empty() {
                terms.push('+');
                terms.push_str(&q);
            }
            let url = format!(
                "{}/search/repositories?q={terms}&sort=stars&order=desc&per_page={MAX_GITHUB_REPOS}",
                endpoints.github
            );
            let accept = "application/vnd.github+json";
            let token = if endpoints.github_token_file.is_empty() {
                None
            } else {
                Some(crate::outbound::bearer_from_file(
                    &endpoints.github_token_file,
                )?)
            };
            let token = token.as_deref();
            let mut out = Parsed::default();
            let repos = github_search(
                &needed(
                    get(&endpoints.ca_file, &url, accept, token, deadline)?,
                    &url,
                )?,
                &mut out.skipped,
            )?;
            for repo in repos {
                // Each repository costs one or two requests: a slow one ends the source with
                // what it found so far only if nothing was found (the rest is still useful).
                let mut named = None;
                for file in ["package.json", "pyproject.toml"] {
                    let url = format!(
                        "{}/repos/{}/contents/{file}",
                        endpoints.github, repo.full_name
                    );
                    match get(
                        &endpoints.ca_file,
                        &url,
                        "application/vnd.github.raw+json",
                        token,
                        deadline,
                    ) {
                        Ok(Some(body)) => {
                            named = github_package(&repo, file, &body);
                            if named.is_some() {
                                break;
                            }
                        }
                        Ok(None) => {}
                        Err(e) if out.found.is_empty() => return Err(e),
                        Err(_) => return Ok(out),
                    }
                }
                match named {
                    Some(f) => out.push(f),
                    None => out.skipped.invalid += 1,
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variety::capability;

    fn registry_entry(
        name: &str,
        kind: &str,
        id: &str,
        version: &str,
        transport: &str,
        status: &str,
    ) -> Value {
        serde_json::json!({
            "server": {
                "name": name, "title": "T", "description": "D", "version": version,
                "repository": {"url": "https://example.invalid/r", "source": "github"},
                "packages": [{
                    "registryType": kind, "identifier": id, "version": version,
                    "runtimeHint": "npx", "transport": {"type": transport},
                    "packageArguments": [{"type": "positional", "value": "/data", "isRequired": true}],
                    "environmentVariables": [
                        {"name": "API_KEY", "description": "key", "isRequired": true, "isSecret": true},
                        {"name": "MODE", "default": "fast"}
                    ]
                }]
            },
            "_meta": {"io.modelcontextprotocol.registry/official": {
                "status": status, "publishedAt": "2026-11-01T00:00:00Z",
                "updatedAt": "2026-11-02T00:00:00Z", "isLatest": true}}
        })
    }

    #[test]
    fn registry_keeps_stdio_npm_and_pypi_with_exact_versions() {
        let page = serde_json::json!({"servers": [
            registry_entry("io.github.a/memory", "npm", "@modelcontextprotocol/server-memory", "2026.8.31", "stdio", "active"),
            registry_entry("io.github.a/time", "pypi", "mcp-server-time", "2026.10.19", "stdio", "active"),
            registry_entry("io.github.a/remote", "npm", "remote-x", "1.0.0", "streamable-http", "active"),
            registry_entry("io.github.a/dotnet", "nuget", "X.Y", "1.0.0", "stdio", "active"),
            registry_entry("io.github.a/range", "npm", "ranged", "^1.0.0", "stdio", "active"),
            registry_entry("io.github.a/old", "npm", "old-x", "1.0.0", "stdio", "deprecated"),
            {"server": {"name": 7}},
            "garbage"
        ], "metadata": {"count": 8}});
        let p = registry(page.to_string().as_bytes()).expect("page");
        let names: Vec<String> = p.found.iter().map(|f| f.package.to_string()).collect();
        assert_eq!(
            names,
            [
                "npm:@modelcontextprotocol/server-memory@2026.8.31",
                "pypi:mcp-server-time==2026.10.19",
                "npm:old-x@1.0.0"
            ]
        );
        assert_eq!(
            p.skipped,
            Skipped {
                invalid: 3,
                not_stdio: 1,
                other_registry: 1,
                ..Skipped::default()
            }
        );
        let m = &p.found[0];
        assert_eq!(m.status.as_deref(), Some("active"));
        assert_eq!(m.server_name.as_deref(), Some("io.github.a/memory"));
        assert!(m.ownership_proof);
        assert_eq!(m.environment_variables[0].name, "API_KEY");
        assert!(m.environment_variables[0].is_secret && m.environment_variables[0].is_required);
        assert_eq!(m.environment_variables[1].default.as_deref(), Some("fast"));
        assert_eq!(m.package_arguments[0].value.as_deref(), Some("/data"));
        // The status filter is the merge's: the deprecated one is still found here.
        assert_eq!(p.found[2].status.as_deref(), Some("deprecated"));
    }

    #[test]
    fn garbage_truncation_and_wrong_types_are_errors_not_panics() {
        let good = serde_json::json!({"servers": [registry_entry("n", "npm", "x-y", "1.0.0", "stdio", "active")]}).to_string();
        for cut in 0..good.len() {
            // Every truncation either fails cleanly or (never, here) parses.
            let _ = registry(&good.as_bytes()[..cut]);
        }
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"<html>502 Bad Gateway</html>",
            b"null",
            b"[]",
            b"{\"servers\": {}}",
            b"{\"servers\": \"x\"}",
            b"{\"objects\": 5}",
        ] {
            assert!(registry(bad).is_err(), "{bad:?}");
            assert!(npm(bad).is_err(), "{bad:?}");
            assert!(
                github_search(bad, &mut Skipped::default()).is_err(),
                "{bad:?}"
            );
        }
        assert!(catalog(b"servers = 5", &Query::default()).is_err());
        assert!(catalog(b"[[servers]\n", &Query::default()).is_err());
        assert!(catalog(b"other = 1", &Query::default()).is_err());
    }

    #[test]
    fn huge_arrays_are_bounded() {
        let entries: Vec<Value> = (0..5000)
            .map(|i| registry_entry("n", "npm", &format!("pkg-{i}"), "1.0.0", "stdio", "active"))
            .collect();
        let p = registry(
            serde_json::json!({"servers": entries})
                .to_string()
                .as_bytes(),
        )
        .expect("page");
        assert_eq!(p.found.len(), MAX_PER_SOURCE);
        assert_eq!(p.skipped.over_limit, 5000 - MAX_PER_SOURCE);
        let objects: Vec<Value> = (0..1000)
            .map(|i| serde_json::json!({"package": {"name": format!("p{i}"), "version": "1.0.0", "keywords": (0..500).map(|k| format!("k{k}")).collect::<Vec<_>>()}}))
            .collect();
        let p = npm(serde_json::json!({"objects": objects})
            .to_string()
            .as_bytes())
        .expect("npm");
        assert_eq!(p.found.len(), MAX_PER_SOURCE);
        assert!(p.found.iter().all(|f| f.keywords.len() <= 32));
    }

    #[test]
    fn npm_search_answers() {
        let body = serde_json::json!({"objects": [
            {"package": {"name": "@modelcontextprotocol/server-filesystem", "version": "2026.8.31",
                "description": "MCP server for filesystem access", "keywords": ["mcp", 5],
                "date": "2026-08-31T00:00:00Z", "links": {"repository": "https://example.invalid/s"}}},
            {"package": {"name": "Bad Name", "version": "1.0.0"}},
            {"package": {"name": "x", "version": "latest"}},
            {"package": {"name": "y"}}
        ], "total": 4});
        let p = npm(body.to_string().as_bytes()).expect("npm");
        assert_eq!(p.found.len(), 1);
        assert_eq!(p.skipped.invalid, 3);
        assert_eq!(p.found[0].keywords, ["mcp"]);
        assert_eq!(p.found[0].source, Source::Npm);
    }

    #[test]
    fn github_repositories_need_a_named_package() {
        let body = serde_json::json!({"total_count": 3, "items": [
            {"full_name": "a/memory", "html_url": "https://example.invalid/a/memory", "description": "mem", "topics": ["mcp-server"], "pushed_at": "2026-11-30T00:00:00Z"},
            {"full_name": "a/old", "archived": true},
            {"full_name": "../etc", "description": "x"}
        ]});
        let mut skipped = Skipped::default();
        let repos = github_search(body.to_string().as_bytes(), &mut skipped).expect("search");
        assert_eq!(repos.len(), 1);
        assert_eq!(skipped.invalid, 2);
        let r = &repos[0];
        let f = github_package(
            r,
            "package.json",
            br#"{"name": "@a/memory", "version": "1.2.3"}"#,
        )
        .expect("npm");
        assert_eq!(f.package.to_string(), "npm:@a/memory@1.2.3");
        assert_eq!(f.keywords, ["mcp-server"]);
        assert!(github_package(
            r,
            "package.json",
            br#"{"name": "@a/memory", "version": "1.2.3", "private": true}"#
        )
        .is_none());
        assert!(github_package(
            r,
            "package.json",
            br#"{"name": "@a/memory", "version": "^1"}"#
        )
        .is_none());
        assert!(github_package(r, "package.json", b"garbage").is_none());
        let py = github_package(
            r,
            "pyproject.toml",
            b"[project]\nname = \"mcp-server-x\"\nversion = \"0.3.1\"\n",
        )
        .expect("pypi");
        assert_eq!(py.package.to_string(), "pypi:mcp-server-x==0.3.1");
        assert!(github_package(
            r,
            "pyproject.toml",
            b"[project]\nname = \"x\"\ndynamic = [\"version\"]\n"
        )
        .is_none());
    }

    #[test]
    fn catalog_entries() {
        let text = r#"
[[servers]]
package = "npm:@modelcontextprotocol/server-memory@2026.8.31"
title = "Memory"
capabilities = ["memory"]
[[servers.env]]
name = "MEMORY_FILE_PATH"
required = true

[[servers]]
package = "pypi:mcp-server-time==2026.10.19"
description = "time and timezone conversion"
args = ["--local-timezone", "UTC"]

[[servers]]
package = "npm:ranged@^1"

[[servers]]
package = "npm:typo@1.0.0"
titel = "x"
"#;
        let rules = capability::builtin();
        let all = catalog(text.as_bytes(), &Query::default()).expect("catalog");
        assert_eq!(all.found.len(), 2);
        assert_eq!(all.skipped.invalid, 2);
        assert_eq!(all.found[0].declared, ["memory"]);
        assert!(all.found[0].environment_variables[0].is_required);
        assert_eq!(all.found[1].package_arguments.len(), 2);
        let mem = catalog(text.as_bytes(), &Query::new("memory", &rules)).expect("q");
        assert_eq!(mem.found.len(), 1);
        let tz = catalog(text.as_bytes(), &Query::new("timezone", &rules)).expect("q");
        assert_eq!(tz.found[0].package.name, "mcp-server-time");
    }

    #[test]
    fn npmrc() {
        assert_eq!(
            npmrc_registry(
                "; c\n# c\n@s:registry=http://s/\nregistry = http://a/\nregistry=\"http://b/\"\n"
            ),
            Some("http://b/".into())
        );
        assert_eq!(npmrc_registry("//host/:_authToken=x\n"), None);
        assert_eq!(npmrc_registry(""), None);
        assert!(checked_registry("file:///x", "t").is_err());
        assert_eq!(
            checked_registry("http://h:1/r/", "t"),
            Ok("http://h:1/r".into())
        );
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode("knowledge graph"), "knowledge+graph");
        assert_eq!(encode("a&b=c/é"), "a%26b%3Dc%2F%C3%A9");
    }
}
