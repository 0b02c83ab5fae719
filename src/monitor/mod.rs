//! Checks run from the timer wheel and the samples they read. Checks report
//! ([`observation::Observation`]); one place decides what to do about them.

pub mod actions;
pub mod alerts;
pub mod checks;
pub mod child;
pub mod observation;
pub mod ops;
pub mod performance;
pub mod room;
pub mod security;
