//! vsm-daemon: an edge agent that keeps MCP servers alive and useful on small Linux hosts.
//!
//! One thread runs one `mio` event loop ([`reactor`]) that drives timers, connections,
//! signals and (later) child processes; one worker thread takes the blocking work. Every way
//! in (REST, WebSocket, CLI) becomes an [`api::Request`] handled by [`daemon::Daemon`].
//! `main.rs` only parses argv ([`cli`]) and either runs the daemon or acts as a client.

#![deny(missing_docs)]

pub mod acquire;
pub mod api;
pub mod cli;
pub mod client;
pub mod components;
pub mod config;
pub mod daemon;
pub mod diagnostics;
pub mod discovery;
pub mod events;
pub mod gateway;
pub mod logs;
pub mod mcp;
pub mod monitor;
pub mod musl;
pub mod net;
pub mod openapi;
pub mod ops;
pub mod outbound;
pub mod page;
pub mod reactor;
pub mod reflect;
pub mod room;
pub mod snapshot;
pub mod spec;
pub mod state;
pub mod sys;
pub mod telemetry;
pub mod text;
pub mod variety;
pub mod vsm;
