//! fmd-daemon: attaches fmd's BPF programs to gunicorn workers, turns what they see into request records,
//! stores them in DuckDB and serves them (JSON API, CLI queries). See ARCHITECTURE.md for the map.

pub mod api;
pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod exceptions;
pub mod flask;
pub mod identity;
pub mod levels;
pub mod outliers;
pub mod profile;
pub mod python;
pub mod request;
pub mod security;
pub mod store;
pub mod version;
