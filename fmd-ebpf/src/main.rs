//! fmd's BPF programs. Kept minimal by rule: they copy bytes, timestamps and ids into a ring buffer and do
//! no parsing; the daemon (`fmd-daemon/src/capture`) makes sense of them.
#![no_std]
#![no_main]

mod http;
mod maps;
mod process;
mod sampler;
mod usdt;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic, so this is never reached.
    unsafe { core::hint::unreachable_unchecked() }
}

// The helpers we use (`bpf_probe_read_user`, ring buffers from tracepoints) are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
