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
