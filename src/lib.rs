//! printgate: a printer gateway for 3D-print farms.
//!
//! One process per gateway board. The main parts, each in its own module:
//!
//! - [`protocol`]: the Marlin host protocol as a sans-IO state machine (bytes
//!   and time in; bytes, events and deadlines out). No tokio, no port, no clock.
//! - `printer`: one tokio task per printer, driving the protocol over a serial port.
//! - `sim`: a virtual Marlin printer on a pseudo-terminal, the tests' oracle.
//! - `store`: SQLite behind one writer thread (jobs, printers, outbox).
//! - `farm`: the supervisor owning job and printer state machines.
//! - `mqtt`: the farm's topic contract and the broker link.
//! - `source`: the queue manager client and model downloads.
//! - [`notify`]: systemd readiness and watchdog notifications.
//! - `demo`: `printgate demo`, the whole farm in one process (simulated
//!   printers, embedded broker, sample queue manager, robot).
//!
//! `main.rs` is a thin clap front end over [`cli`].

pub mod backoff;
pub mod bench;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod cli;
pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
#[cfg(feature = "embedded-broker")]
pub mod demo;
pub mod farm;
pub mod iostats;
pub mod jobspec;
pub mod lifecycle;
pub mod mqtt;
pub mod notify;
pub mod printer;
pub mod protocol;
pub mod rng;
pub mod sim;
pub mod source;
pub mod store;
pub mod timescale;
