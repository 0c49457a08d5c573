//! Userspace-only glue: the `aya::Pod` impls that let the daemon read these types out of BPF maps.

use crate::{
    http::{Conn, ConnKey, EventHeader},
    profile::{OffCpu, PyLayout, SamplerConfig},
    BpfConfig,
};

// SAFETY: all of them are `repr(C)`, `Copy`, made of integers only, with explicit padding.
unsafe impl aya::Pod for EventHeader {}
unsafe impl aya::Pod for Conn {}
unsafe impl aya::Pod for ConnKey {}
unsafe impl aya::Pod for BpfConfig {}
unsafe impl aya::Pod for PyLayout {}
unsafe impl aya::Pod for SamplerConfig {}
unsafe impl aya::Pod for OffCpu {}

impl EventHeader {
    /// Splits a ring-buffer record into its header and payload; `None` when it is shorter than it claims.
    pub fn parse(record: &[u8]) -> Option<(Self, &[u8])> {
        let head = record.get(..crate::http::EVENT_HEADER_SIZE)?;
        // SAFETY: `head` has exactly `size_of::<EventHeader>()` bytes and every bit pattern is a valid
        // `EventHeader` (integers only); `read_unaligned` because ring-buffer records are only 8-aligned.
        let header = unsafe { core::ptr::read_unaligned(head.as_ptr().cast::<EventHeader>()) };
        let end = crate::http::EVENT_HEADER_SIZE.checked_add(header.copied as usize)?;
        let payload = record.get(crate::http::EVENT_HEADER_SIZE..end)?;
        Some((header, payload))
    }
}
