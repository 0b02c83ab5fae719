//! The daemon's own components as rooms (see [`crate::room`]).
//!
//! Ported so far: [`diagnostics`], the [`health`] rounds with the monitor's schedule, and
//! the configuration ([`settings`]). The
//! control socket and the worker thread still live in `daemon/` (the wiring accepts on the
//! listener and lends the worker to every room); they move here next, each with its own
//! timers, jobs and snapshot of the facts it needs.

pub mod diagnostics;
pub mod health;
pub mod settings;
