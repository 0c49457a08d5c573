//! Empty on the host: fmd-daemon depends on this crate only so that cargo rebuilds the embedded object
//! when the programs in `main.rs` change.
#![no_std]
