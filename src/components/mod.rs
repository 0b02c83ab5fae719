//! The daemon's own components as rooms (see [`crate::room`]): [`diagnostics`], the
//! [`health`] rounds with the monitor's schedule, the configuration ([`settings`]), and the
//! components' lifecycle ([`lifecycle`]: the control socket, the worker thread and the
//! monitor: their states and every decision to start, stop or restart them, carried out by
//! the wiring on the loop's sources).

pub mod diagnostics;
pub mod health;
pub mod lifecycle;
pub mod ops;
pub mod settings;
