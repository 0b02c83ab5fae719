//! Listeners and who may call through them.
//!
//! TCP callers pass [`TcpAccess::check`]: Host allow-list (DNS rebinding), Origin with the bound
//! port and `Sec-Fetch-Site` (cross-site requests from browsers), the bearer token, and JSON
//! bodies only (a browser cannot send `application/json` cross-site without a CORS preflight,
//! which the daemon never grants). Control-socket callers are checked by uid instead.
//!
//! The control socket lives in a directory only its owner can enter (created 0700 when we
//! create it), is bound with umask 0077 so it is born 0600 (no chmod race), and checks every
//! peer with SO_PEERCRED: the daemon's own uid or root. A socket left by a crashed daemon is
//! detected (nothing answers a connect) and replaced; a live one means "already running".

use crate::config;
use crate::net::http;
use crate::net::token::ApiToken;
use crate::sys;
use mio::net::UnixListener;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the control socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// Another daemon answers on this socket.
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way.
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// An OS error, with the path it concerns.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::AlreadyRunning { path } => write!(
                f,
                "vsm-daemon is already running (socket {} answers)",
                path.display()
            ),
            BindError::NotASocket { path } => write!(
                f,
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
            BindError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for BindError {}

/// The bound control socket.
pub struct ControlListener {
    /// The listening socket.
    pub listener: UnixListener,
    /// Its path.
    pub path: PathBuf,
    /// Device and inode of the socket file we created (to tell if it was removed or replaced).
    pub identity: (u64, u64),
}

impl ControlListener {
    /// Creates the parent directory if needed, replaces a stale socket, and binds.
    ///
    /// # Errors
    /// [`BindError`] naming the path.
    pub fn bind(path: &Path) -> Result<ControlListener, BindError> {
        let io_err = |source| BindError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err)?;
            } else if let Ok(meta) = dir.metadata() {
                let mode = meta.permissions().mode();
                if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                    log::warn!(
                        "control socket directory {} is world-writable; anyone could replace the socket",
                        dir.display()
                    );
                }
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => {
                        return Err(BindError::AlreadyRunning {
                            path: path.to_path_buf(),
                        })
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        log::info!("removing stale control socket {}", path.display());
                        std::fs::remove_file(path).map_err(io_err)?;
                    }
                    Err(e) => return Err(io_err(e)),
                }
            }
            Ok(_) => {
                return Err(BindError::NotASocket {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let old = sys::umask(0o177);
        let bound = UnixListener::bind(path);
        sys::umask(old);
        let listener = bound.map_err(io_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
        Ok(ControlListener {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// Whether the socket file on disk is still the one we bound.
    pub fn still_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity)
    }

    /// Removes the socket file if it is still ours.
    pub fn remove_file(&self) {
        if self.still_ours() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the TCP listener.
///
/// # Errors
/// The bind error (address in use, permission).
pub fn bind_tcp(addr: std::net::SocketAddr) -> io::Result<mio::net::TcpListener> {
    mio::net::TcpListener::bind(addr)
}

/// Why a request was refused before it reached the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` does not name the daemon (DNS rebinding).
    Host,
    /// `Origin` is present and not one of ours.
    Origin,
    /// `Sec-Fetch-Site: cross-site`/`same-site` without an allowed `Origin`.
    CrossSite,
    /// Missing or wrong bearer token.
    Token,
    /// A body (or, over TCP, a state-changing method) without `Content-Type: application/json`.
    MediaType,
}

impl Refusal {
    /// The `reason` label of `vsm_auth_failures_total` and of the throttled log line.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::Origin => "origin",
            Refusal::CrossSite => "cross_site",
            Refusal::Token => "token",
            Refusal::MediaType => "content_type",
        }
    }
}

/// Whether a `Content-Type` value is JSON: `application/json`, any case, parameters such as
/// `; charset=utf-8` allowed.
pub fn is_json_media_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        // As clients send it, compared at once (splitting and trimming cost ~20 times more);
        // any other spelling taken apart.
        if c == "application/json" {
            return true;
        }
        let media = c.split_once(';').map_or(c, |(media, _)| media).trim();
        media.eq_ignore_ascii_case("application/json")
    })
}

/// The media-type rule of both listeners: a non-empty body must be declared JSON, and over TCP
/// every `POST`/`PUT`/`PATCH`/`DELETE` must declare it even when empty. A browser can send
/// `text/plain`, form bodies and body-less requests cross-site without a CORS preflight;
/// it cannot send `application/json` without one.
pub fn media_type_ok(request: &http::Request, tcp: bool) -> bool {
    // The MCP transport's DELETE (end a session) has no body and its clients send no
    // Content-Type; a cross-site DELETE needs a CORS preflight anyway, and Origin and the
    // token are checked as for every route.
    let bodiless_mcp_delete = request.method == "DELETE" && request.path == "/mcp";
    let must = !request.body.is_empty()
        || (tcp
            && !bodiless_mcp_delete
            && matches!(request.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"));
    !must || is_json_media_type(request.header("content-type"))
}

/// Who may call over TCP: the bearer token, the Host allow-list and the allowed origins.
#[derive(Debug, Clone, Default)]
pub struct TcpAccess {
    /// The API token; `None` only when there is no TCP listener to protect.
    pub token: Option<ApiToken>,
    /// Accepted host names (lowercase, without port): loopback names, the bound IP, and the
    /// configured `http.allowed_hosts`.
    pub hosts: Vec<String>,
    /// The bound port: our own origins are `http(s)://<host>:<port>` with exactly this port.
    pub port: u16,
    /// `http.allowed_origins`, canonical (see [`config::normalize_origin`]).
    pub origins: Vec<String>,
}

impl TcpAccess {
    /// The policy for a listener bound to `bound` with extra allowed names and origins
    /// (origins that do not parse were refused by config validation and are skipped here).
    pub fn new(
        token: Option<ApiToken>,
        bound: std::net::SocketAddr,
        extra_hosts: &[String],
        extra_origins: &[String],
    ) -> Self {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !bound.ip().is_unspecified() {
            hosts.push(bound.ip().to_string());
            if bound.is_ipv6() {
                hosts.push(format!("[{}]", bound.ip()));
            }
        }
        hosts.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        let origins = extra_origins
            .iter()
            .filter_map(|o| config::normalize_origin(o).ok())
            .collect();
        TcpAccess {
            token,
            hosts,
            port: bound.port(),
            origins,
        }
    }

    fn name_allowed(&self, host: &str) -> bool {
        let host = host.trim();
        let bytes = host.as_bytes();
        // Strip a port: "[::1]:4000" -> "[::1]", "localhost:4000" -> "localhost"; a name with
        // more than one colon (a bare IPv6 address) is kept whole.
        let name = if bytes.first() == Some(&b'[') {
            host.split_once(']')
                .map_or(host, |(h, _)| &host[..h.len() + 1])
        } else {
            match bytes.iter().position(|&b| b == b':') {
                Some(i) if !bytes[i + 1..].contains(&b':') => &host[..i],
                _ => host,
            }
        };
        // The allowed names are lowercase: compared as sent first (clients send them so),
        // then without making a lowercase copy (one allocation fewer per request).
        self.hosts.iter().any(|h| h == name)
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Whether the `Host` header names us (DNS-rebinding defence). A missing Host is refused.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        host.is_some_and(|h| self.name_allowed(h))
    }

    /// Whether an `Origin` is acceptable: absent (not a browser, or a same-origin GET), one of
    /// `http.allowed_origins`, or `http(s)://<allowed host>:<bound port>`. The port matters:
    /// `http://localhost:8080` is another program's site. `null` and anything unparsable are
    /// refused.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let Ok(canonical) = config::normalize_origin(origin) else {
            return false;
        };
        if self.origins.contains(&canonical) {
            return true;
        }
        let rest = canonical.split_once("://").map_or("", |(_, r)| r);
        let Some((host, port)) = rest.rsplit_once(':') else {
            return false;
        };
        port.parse::<u16>().is_ok_and(|p| p == self.port) && self.hosts.iter().any(|h| h == host)
    }

    /// Whether the request carries the token (`Authorization: Bearer T`, or `?token=T` for
    /// WebSocket clients that cannot set headers). Constant-time comparison.
    pub fn token_ok(&self, authorization: Option<&str>, query_token: Option<&str>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let given = authorization
            .and_then(|a| {
                a.strip_prefix("Bearer ")
                    .or_else(|| a.strip_prefix("bearer "))
            })
            .map(str::trim)
            .or(query_token);
        given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.value.as_bytes()))
    }

    /// Every TCP rule, in order: Host, Origin, Sec-Fetch-Site, token (all but
    /// `GET /api/v1/health`), then the media type. The first failing rule is the answer.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn check(&self, request: &http::Request) -> Result<(), Refusal> {
        if !self.host_allowed(request.header("host")) {
            return Err(Refusal::Host);
        }
        let origin = request.header("origin");
        if !self.origin_allowed(origin) {
            return Err(Refusal::Origin);
        }
        // A browser that hides Origin (or sends none on a no-cors GET) still says where the
        // request comes from; without an allowed Origin, another site may not act.
        let site = request.header("sec-fetch-site").unwrap_or("");
        if (site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site"))
            && origin.is_none()
        {
            return Err(Refusal::CrossSite);
        }
        let exempt = super::routes::is_public(&request.method, &request.path);
        let query_token = (request.path == "/ws/monitor")
            .then(|| {
                request
                    .query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
            })
            .flatten();
        if !exempt && !self.token_ok(request.header("authorization"), query_token) {
            return Err(Refusal::Token);
        }
        if !media_type_ok(request, true) {
            return Err(Refusal::MediaType);
        }
        Ok(())
    }
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// Decides whether a Unix peer may use the daemon: same uid as the daemon, or root.
pub fn unix_peer_allowed(stream: &mio::net::UnixStream) -> (bool, Option<sys::PeerCred>) {
    match sys::peer_cred(stream.as_raw_fd()) {
        Ok(cred) => (cred.uid == sys::euid() || cred.uid == 0, Some(cred)),
        Err(e) => {
            log::warn!("cannot read peer credentials: {e}");
            (false, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str) -> Option<ApiToken> {
        Some(ApiToken {
            value: value.into(),
            source: crate::net::token::TokenSource::Config,
        })
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> http::Request {
        http::Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase().into(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        }
    }

    #[test]
    fn tcp_access_checks_host_origin_and_token() {
        let bound: std::net::SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        let a = TcpAccess::new(
            token("s3cret"),
            bound,
            &["edge.example".into()],
            &["https://app.example".into()],
        );
        for ok in [
            "localhost",
            "localhost:4000",
            "127.0.0.1:4000",
            "[::1]:4000",
            "EDGE.example",
            "LocalHost:4000",
            " localhost ",
            "::1",
            "[::1]",
        ] {
            assert!(a.host_allowed(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:4000",
            "127.0.0.2",
            "localhost:4000:1",
            "::2",
            "[::1",
            ":4000",
            "",
        ] {
            assert!(!a.host_allowed(Some(bad)), "{bad}");
        }
        assert!(!a.host_allowed(None));
        assert!(a.origin_allowed(None));
        for ok in [
            "http://localhost:4000",
            "https://127.0.0.1:4000",
            "http://[::1]:4000",
            "http://edge.example:4000",
            "https://app.example",
            "https://APP.example:443",
        ] {
            assert!(a.origin_allowed(Some(ok)), "{ok}");
        }
        for bad in [
            "http://localhost:3000",
            "http://localhost",
            "http://127.0.0.1:40000",
            "https://evil.example",
            "http://evil.example:4000",
            "http://app.example",
            "null",
            "localhost:4000",
            "file://",
        ] {
            assert!(!a.origin_allowed(Some(bad)), "{bad}");
        }
        assert!(a.token_ok(Some("Bearer s3cret"), None));
        assert!(a.token_ok(None, Some("s3cret")));
        assert!(!a.token_ok(Some("Bearer s3cre"), None));
        assert!(!a.token_ok(Some("Bearer s3cret2"), None));
        assert!(!a.token_ok(None, None));
        assert!(TcpAccess::new(None, bound, &[], &[]).token_ok(None, None));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
    }

    #[test]
    fn check_applies_the_rules_in_order() {
        let bound: std::net::SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        let a = TcpAccess::new(token("s3cret"), bound, &[], &[]);
        let auth = ("Authorization", "Bearer s3cret");
        let json = ("Content-Type", "application/json; charset=UTF-8");
        let host = ("Host", "127.0.0.1:4000");
        let check = |m: &str, p: &str, h: &[(&str, &str)], b: &str| a.check(&request(m, p, h, b));
        assert_eq!(check("GET", "/api/v1/health", &[host], ""), Ok(()));
        assert_eq!(
            check("GET", "/api/v1/status", &[host], ""),
            Err(Refusal::Token)
        );
        assert_eq!(check("GET", "/api/v1/status", &[host, auth], ""), Ok(()));
        assert_eq!(
            check("GET", "/api/v1/health", &[("Host", "evil.example")], ""),
            Err(Refusal::Host)
        );
        let evil = ("Origin", "http://evil.example");
        assert_eq!(
            check("GET", "/api/v1/health", &[host, evil], ""),
            Err(Refusal::Origin)
        );
        let attack = [
            host,
            evil,
            ("Content-Type", "text/plain;charset=UTF-8"),
            ("Sec-Fetch-Site", "cross-site"),
        ];
        assert_eq!(
            check("POST", "/api/v1/mcp/servers", &attack, "{}"),
            Err(Refusal::Origin)
        );
        let hidden = [host, auth, ("Sec-Fetch-Site", "cross-site")];
        assert_eq!(
            check("GET", "/api/v1/status", &hidden, ""),
            Err(Refusal::CrossSite)
        );
        let ours = [
            host,
            auth,
            ("Sec-Fetch-Site", "same-site"),
            ("Origin", "http://localhost:4000"),
        ];
        assert_eq!(check("GET", "/api/v1/status", &ours, ""), Ok(()));
        let same_origin = [host, auth, ("Sec-Fetch-Site", "same-origin")];
        assert_eq!(check("GET", "/api/v1/status", &same_origin, ""), Ok(()));
        let text = ("Content-Type", "text/plain");
        assert_eq!(
            check("POST", "/api/v1/control/stop", &[host, auth, text], "{}"),
            Err(Refusal::MediaType)
        );
        assert_eq!(
            check("POST", "/api/v1/control/stop", &[host, auth], ""),
            Err(Refusal::MediaType)
        );
        assert_eq!(
            check("POST", "/api/v1/control/stop", &[host, auth, json], ""),
            Ok(())
        );
        assert_eq!(
            check("DELETE", "/api/v1/mcp/servers/x", &[host, auth, json], ""),
            Ok(())
        );
    }

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;x",
            "\u{a0}application/json\t",
            "APPLICATION/JSON;",
        ] {
            assert!(is_json_media_type(Some(ok)), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "",
            ";application/json",
            "application/json x",
            "application/jso",
        ] {
            assert!(!is_json_media_type(Some(bad)), "{bad}");
        }
        assert!(!is_json_media_type(None));
        // The control socket: only bodies need the header.
        assert!(media_type_ok(
            &request("POST", "/api/v1/control/stop", &[], ""),
            false
        ));
        assert!(!media_type_ok(&request("POST", "/x", &[], "{}"), false));
        assert!(!media_type_ok(
            &request("GET", "/x", &[("Content-Type", "text/plain")], "{}"),
            false
        ));
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vsm-listener-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn binds_0600_in_a_new_0700_dir_and_detects_live_and_stale() {
        let dir = temp_dir("bind");
        let path = dir.join("sub/control.sock");
        let first = ControlListener::bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(dir.join("sub"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert!(matches!(
            ControlListener::bind(&path),
            Err(BindError::AlreadyRunning { .. })
        ));
        drop(first);
        // The file is left behind, as after a crash: it is stale now.
        let second = ControlListener::bind(&path).expect("stale socket replaced");
        assert!(second.still_ours());
        second.remove_file();
        assert!(!path.exists());
        std::fs::write(&path, b"x").expect("write");
        assert!(matches!(
            ControlListener::bind(&path),
            Err(BindError::NotASocket { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
