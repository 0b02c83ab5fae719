//! vsm-daemon
