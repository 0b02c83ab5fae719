//! Checks run from the timer wheel and the samples they read. Checks report; the daemon
//! decides what to do about them.

pub mod performance;
