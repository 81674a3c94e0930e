//! Test-only crate: see `tests/agree.rs` and this crate's Cargo.toml.
