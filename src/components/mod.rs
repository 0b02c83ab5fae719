//! The daemon's own components as rooms (see [`crate::room`]).
//!
//! Ported so far: [`diagnostics`]. The control socket, the worker thread and the health
//! rounds still live in `daemon/` (they share the listener, the worker handle and the state
//! directory with the wiring); they move here one at a time, each with its own timers, jobs
//! and snapshot of the facts it needs.

pub mod diagnostics;
