//! printgate's MQTT side: the farm's topic contract ([`topics`]), the
//! payload shapes ([`payload`]), validation of everything heard
//! ([`inbound`]), Home Assistant discovery ([`discovery`]) and the broker
//! link with ordered store-and-forward ([`link`]).
//!
//! Only [`link`] does network I/O; the rest is pure and clock-free. Nothing
//! here touches SQLite: the daemon feeds the link from the store's outbox and
//! deletes a row when the link reports it delivered.
//!
//! Broker data and payloads are untrusted: no unwrap, expect, panic or
//! unchecked indexing outside tests (denied below).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod discovery;
pub mod inbound;
pub mod link;
pub mod payload;
pub mod settings;
pub mod topics;
