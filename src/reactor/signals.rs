//! Signals as loop events: SIGTERM and SIGINT (graceful stop), SIGHUP (reload) and SIGCHLD
//! (reap). signal-hook's handlers only write to a pipe; everything else happens on the loop.

use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io;

/// The signals the daemon reacts to.
pub const HANDLED: [i32; 4] = [SIGTERM, SIGINT, SIGHUP, SIGCHLD];

/// A registered source of pending signals.
pub struct SignalSource {
    signals: Signals,
}

impl SignalSource {
    /// Installs the handlers and registers the source under `token`.
    ///
    /// # Errors
    /// OS errors from sigaction or registration.
    pub fn new(registry: &mio::Registry, token: mio::Token) -> io::Result<Self> {
        let mut signals = Signals::new(HANDLED)?;
        registry.register(&mut signals, token, mio::Interest::READABLE)?;
        Ok(SignalSource { signals })
    }

    /// Signals that arrived since the last call (each kind at most once per call).
    pub fn pending(&mut self) -> impl Iterator<Item = i32> + '_ {
        self.signals.pending()
    }
}
