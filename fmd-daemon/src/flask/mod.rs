//! Flask applications seen from outside the process: finding the app object in a worker and reading its
//! route table (`app.rs`).

pub mod app;
