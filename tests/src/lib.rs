//! Fixtures for fmd's end-to-end tests: real gunicorn masters and workers in venvs built by
//! `cargo xtask setup`, the real daemon binary, a raw HTTP/1.1 client that measures each request, and
//! `require_bpf()`, the one gate for tests that need to load BPF programs.

pub mod client;
pub mod fixtures;

pub use fixtures::{require_bpf, Daemon, Gunicorn, Venv};
