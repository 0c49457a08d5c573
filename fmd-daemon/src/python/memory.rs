//! Reading another process's memory without stopping it (`process_vm_readv`), behind a trait so the object
//! readers can run on in-memory fixtures and random bytes too.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    sync::Mutex,
};

use super::Error;

const PAGE: u64 = 4096;

/// A read-only view of an address space. Reads are all-or-nothing.
pub trait Memory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Error>;

    fn read_array<const N: usize>(&self, addr: u64) -> Result<[u8; N], Error> {
        let mut b = [0u8; N];
        self.read(addr, &mut b)?;
        Ok(b)
    }
    fn read_u8(&self, addr: u64) -> Result<u8, Error> {
        Ok(self.read_array::<1>(addr)?[0])
    }
    fn read_u16(&self, addr: u64) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.read_array(addr)?))
    }
    fn read_u32(&self, addr: u64) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.read_array(addr)?))
    }
    fn read_i32(&self, addr: u64) -> Result<i32, Error> {
        Ok(i32::from_le_bytes(self.read_array(addr)?))
    }
    fn read_u64(&self, addr: u64) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.read_array(addr)?))
    }
    fn read_i64(&self, addr: u64) -> Result<i64, Error> {
        Ok(i64::from_le_bytes(self.read_array(addr)?))
    }
    /// A pointer-sized value (x86_64).
    fn read_ptr(&self, addr: u64) -> Result<u64, Error> {
        self.read_u64(addr)
    }
    /// `len` bytes, refusing lengths over `max` (a garbage length must not allocate gigabytes).
    fn read_bytes(&self, addr: u64, len: u64, max: u64) -> Result<Vec<u8>, Error> {
        if len > max {
            return Err(Error::TooLarge {
                what: "byte string",
                addr,
                len,
                max,
            });
        }
        let mut v = vec![
            0u8;
            usize::try_from(len).map_err(|_| Error::TooLarge {
                what: "byte string",
                addr,
                len,
                max
            })?
        ];
        self.read(addr, &mut v)?;
        Ok(v)
    }
    /// A NUL-terminated string of at most `max` bytes, read page by page so it never reads past a mapping.
    fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < max {
            let to_page_end = PAGE - at % PAGE;
            let n = to_page_end.min(64).min((max - out.len()) as u64) as usize;
            let mut chunk = [0u8; 64];
            let chunk = &mut chunk[..n];
            if let Err(e) = self.read(at, chunk) {
                // The string may end just before unreadable memory: go byte by byte.
                let mut got = 0;
                for (i, b) in chunk.iter_mut().enumerate() {
                    match self.read_u8(at + i as u64) {
                        Ok(v) => {
                            *b = v;
                            got += 1;
                            if v == 0 {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
                if !chunk[..got].contains(&0) {
                    return Err(e);
                }
            }
            if let Some(z) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..z]);
                return Ok(out);
            }
            out.extend_from_slice(chunk);
            at = at.checked_add(n as u64).ok_or(Error::Invalid {
                what: "C string",
                addr,
            })?;
        }
        Err(Error::TooLarge {
            what: "C string",
            addr,
            len: out.len() as u64,
            max: max as u64,
        })
    }
}

impl<M: Memory + ?Sized> Memory for &M {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
        (**self).read(addr, buf)
    }
}

/// Another process's memory, read with `process_vm_readv` (needs ptrace access: root or CAP_SYS_PTRACE). The
/// target keeps running, so multi-step reads can see torn data: the readers validate instead of trusting.
#[derive(Clone, Copy, Debug)]
pub struct ProcessMemory {
    pub pid: u32,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }
}

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len();
        if addr.checked_add(len as u64).is_none() {
            return Err(Error::Invalid {
                what: "address range",
                addr,
            });
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: `local` describes `buf`, which we exclusively borrow for the call; the kernel only writes
        // into it and checks `remote` against the target's mappings.
        let n =
            unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(Error::Read {
                addr,
                len,
                source: io::Error::last_os_error(),
            });
        }
        if n as usize != len {
            return Err(Error::ShortRead {
                addr,
                len,
                got: n as usize,
            });
        }
        Ok(())
    }
}

/// A page cache over another [`Memory`], for one burst of many small reads (a whole `sys.modules` scan is
/// ~100k reads; pymalloc packs objects densely, so whole pages cut the syscalls by orders of magnitude). The
/// snapshot goes stale as the target runs: drop it (or [`PageCache::clear`]) after each burst.
pub struct PageCache<M> {
    inner: M,
    pages: Mutex<HashMap<u64, Box<[u8]>>>,
    max_pages: usize,
}

impl<M: Memory> PageCache<M> {
    /// Caches at most `max_pages` pages (4 KiB each); when full it starts over.
    pub fn new(inner: M, max_pages: usize) -> Self {
        Self {
            inner,
            pages: Mutex::new(HashMap::new()),
            max_pages,
        }
    }
    pub fn clear(&self) {
        self.pages.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

impl<M: Memory> Memory for PageCache<M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
        let len = buf.len() as u64;
        let end = addr.checked_add(len).ok_or(Error::Invalid {
            what: "address range",
            addr,
        })?;
        // Large reads go straight through.
        if len > 4 * PAGE {
            return self.inner.read(addr, buf);
        }
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        let mut at = addr;
        while at < end {
            let page = at & !(PAGE - 1);
            if !pages.contains_key(&page) {
                let mut data = vec![0u8; PAGE as usize].into_boxed_slice();
                if self.inner.read(page, &mut data).is_err() {
                    // Not a whole readable page (SliceMemory fixtures): read the bytes asked for directly.
                    drop(pages);
                    return self.inner.read(addr, buf);
                }
                if pages.len() >= self.max_pages {
                    pages.clear();
                }
                pages.insert(page, data);
            }
            let data = pages.get(&page).ok_or(Error::Invalid {
                what: "page cache",
                addr,
            })?;
            let from = (at - page) as usize;
            let n = (PAGE - (at - page)).min(end - at) as usize;
            let dst = (at - addr) as usize;
            buf[dst..dst + n].copy_from_slice(&data[from..from + n]);
            at += n as u64;
        }
        Ok(())
    }
}

/// An address space made of a few byte regions: fixtures for unit tests and fuzzing. Reads must fall inside
/// one region.
#[derive(Clone, Debug, Default)]
pub struct SliceMemory {
    regions: BTreeMap<u64, Vec<u8>>,
}

impl SliceMemory {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_region(mut self, base: u64, bytes: Vec<u8>) -> Self {
        self.regions.insert(base, bytes);
        self
    }
    pub fn insert(&mut self, base: u64, bytes: Vec<u8>) {
        self.regions.insert(base, bytes);
    }
}

impl Memory for SliceMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
        let len = buf.len();
        let fault = || Error::Read {
            addr,
            len,
            source: io::Error::from_raw_os_error(libc::EFAULT),
        };
        let (base, bytes) = self.regions.range(..=addr).next_back().ok_or_else(fault)?;
        let start = usize::try_from(addr - base).map_err(|_| fault())?;
        let src = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(fault)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mem: &SliceMemory, addr: u64, max: usize, expect: Result<&[u8], ()>) {
        let got = mem.read_cstr(addr, max);
        assert_eq!(got.as_deref().map_err(|_| ()), expect, "cstr at {addr:#x}");
    }

    #[test]
    fn slice_memory_and_cstr() {
        let mut page = vec![b'a'; 4096];
        page[10] = 0;
        let mem = SliceMemory::new()
            .with_region(0x1000, page)
            .with_region(0x3000, b"hi\0".to_vec());
        check(&mem, 0x1000, 100, Ok(b"aaaaaaaaaa"));
        check(&mem, 0x1005, 100, Ok(b"aaaaa"));
        check(&mem, 0x3000, 100, Ok(b"hi"));
        // Runs off the end of the region without a NUL: an error, not a panic.
        check(&mem, 0x1010, 10_000, Err(()));
        // Bounded.
        check(&mem, 0x1010, 5, Err(()));
        check(&mem, 0x2000, 5, Err(()));
        assert_eq!(mem.read_u32(0x3000).ok(), None);
        assert!(mem.read_bytes(0x1000, u64::MAX, 1 << 20).is_err());
        assert_eq!(mem.read_u16(0x3000).ok(), Some(u16::from_le_bytes(*b"hi")));
    }

    #[test]
    fn page_cache_reads_like_its_inner_memory() {
        let bytes: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let plain = SliceMemory::new()
            .with_region(0x10000, bytes)
            .with_region(0x20000, vec![1, 2, 3]);
        let cached = PageCache::new(plain.clone(), 2);
        let check = |addr: u64, len: usize| {
            let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
            let (ra, rb) = (plain.read(addr, &mut a), cached.read(addr, &mut b));
            // The buffer's content is unspecified after a failed read.
            assert_eq!(ra.is_ok(), rb.is_ok(), "{addr:#x}+{len}");
            if ra.is_ok() {
                assert_eq!(a, b, "{addr:#x}+{len}");
            }
        };
        for (addr, len) in [
            (0x10000, 8),
            (0x10ffc, 8),
            (0x11000, 4096),
            (0x10010, 3 * 4096 - 16),
            (0x12ff8, 16),
            (0x20000, 3),
            (0x20002, 2),
            (0x30000, 1),
        ] {
            check(addr, len);
        }
        let value: u64 = 0x0102_0304_0506_0708;
        let own = PageCache::new(ProcessMemory::new(std::process::id()), 16);
        assert_eq!(
            own.read_u64(std::ptr::addr_of!(value) as u64).ok(),
            Some(value)
        );
    }

    #[test]
    fn process_memory_reads_self() {
        let value: u64 = 0x1122_3344_5566_7788;
        let mem = ProcessMemory::new(std::process::id());
        assert_eq!(
            mem.read_u64(std::ptr::addr_of!(value) as u64).ok(),
            Some(value)
        );
        assert!(mem.read_u64(8).is_err());
        assert!(mem.read_u64(u64::MAX - 3).is_err());
    }
}
