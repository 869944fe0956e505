//! Marlin host protocol, sans-IO. Filled in by the protocol work.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
