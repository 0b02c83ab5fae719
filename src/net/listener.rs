//! Listeners and who may call through them.
//!
//! The control socket lives in a directory only its owner can enter (created 0700 when we
//! create it), is bound with umask 0077 so it is born 0600 (no chmod race), and checks every
//! peer with SO_PEERCRED: the daemon's own uid or root. A socket left by a crashed daemon is
//! detected (nothing answers a connect) and replaced; a live one means "already running".

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

/// Who may call over TCP: the bearer token (when set) and the Host/Origin allow-list.
#[derive(Debug, Clone, Default)]
pub struct TcpAccess {
    /// The API token; `None` means no authentication.
    pub token: Option<String>,
    /// Accepted host names (lowercase, without port): loopback names, the bound IP, and the
    /// configured `http.allowed_hosts`.
    pub hosts: Vec<String>,
}

impl TcpAccess {
    /// The policy for a listener bound to `bound` with extra allowed names.
    pub fn new(token: Option<String>, bound: std::net::SocketAddr, extra: &[String]) -> Self {
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
        hosts.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
        TcpAccess { token, hosts }
    }

    fn name_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        // Strip a port: "[::1]:4000" -> "[::1]", "localhost:4000" -> "localhost".
        let name = if host.starts_with('[') {
            host.split_once(']')
                .map_or(host.clone(), |(h, _)| format!("{h}]"))
        } else if host.matches(':').count() == 1 {
            host.split(':').next().unwrap_or("").to_string()
        } else {
            host
        };
        self.hosts.contains(&name)
    }

    /// Whether the `Host` header names us (DNS-rebinding defence). A missing Host is refused.
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        host.is_some_and(|h| self.name_allowed(h))
    }

    /// Whether a WebSocket `Origin` is acceptable: absent (not a browser) or one of our names.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => {
                let rest = o.split_once("://").map_or(o, |(_, r)| r);
                self.name_allowed(rest.split('/').next().unwrap_or(""))
            }
        }
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
        given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
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

    #[test]
    fn tcp_access_checks_host_origin_and_token() {
        let bound: std::net::SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        let a = TcpAccess::new(Some("s3cret".into()), bound, &["edge.example".into()]);
        for ok in [
            "localhost",
            "localhost:4000",
            "127.0.0.1:4000",
            "[::1]:4000",
            "EDGE.example",
        ] {
            assert!(a.host_allowed(Some(ok)), "{ok}");
        }
        for bad in ["evil.example", "evil.example:4000", "127.0.0.2"] {
            assert!(!a.host_allowed(Some(bad)), "{bad}");
        }
        assert!(!a.host_allowed(None));
        assert!(a.origin_allowed(None));
        assert!(a.origin_allowed(Some("http://localhost:3000")));
        assert!(!a.origin_allowed(Some("https://evil.example")));
        assert!(a.token_ok(Some("Bearer s3cret"), None));
        assert!(a.token_ok(None, Some("s3cret")));
        assert!(!a.token_ok(Some("Bearer s3cre"), None));
        assert!(!a.token_ok(Some("Bearer s3cret2"), None));
        assert!(!a.token_ok(None, None));
        assert!(TcpAccess::new(None, bound, &[]).token_ok(None, None));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
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
