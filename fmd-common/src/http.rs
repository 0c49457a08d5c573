//! Records the syscall tracepoints emit for the sockets a worker accepted. The BPF side copies bytes and
//! timestamps only; all HTTP parsing happens in the daemon (`capture::http`).

/// Most payload bytes copied out of one read or write. Enough for the request line and headers of nearly
/// every request and for a response's status line and headers; body bytes past it are only counted.
pub const MAX_DATA: usize = 4096;

/// Largest socket address copied from `accept` (`sockaddr_in6` is 28 bytes; a unix peer is unnamed).
pub const MAX_SOCKADDR: usize = 28;

/// What an [`EventHeader`] announces.
pub mod kind {
    /// A worker accepted a connection; payload: the peer's raw `sockaddr` (`len` = its length).
    pub const ACCEPT: u32 = 1;
    /// Bytes read from an accepted socket; `len` = syscall result, payload = first `copied` bytes.
    pub const READ: u32 = 2;
    /// Bytes written to an accepted socket; as [`READ`]. `sendfile` writes carry no payload.
    pub const WRITE: u32 = 3;
    /// The worker closed the socket.
    pub const CLOSE: u32 = 4;
    /// The worker shut the socket down (it will close it later).
    pub const SHUTDOWN: u32 = 5;
    /// A watched master forked: `len` = the child's pid, which is now watched as a worker.
    pub const FORK: u32 = 6;
    /// A watched process exited (its main thread did).
    pub const EXIT: u32 = 7;
    /// A Python stack sample (`crate::profile`): `fd` = flags, `len` = weight in ns, payload = `RawFrame`s.
    pub const SAMPLE: u32 = 8;
    /// A thread whose off-CPU stack was sent runs again: `len` = how long it was off CPU, in ns.
    pub const WAKE: u32 = 9;
    /// A garbage collection ran on this thread (USDT `gc__start`/`gc__done`): `len` = its length in ns.
    pub const GC: u32 = 10;
    /// Bytes a thread serving a request wrote to a log descriptor (`FMD_LOG_FDS`: stdout, stderr, a log
    /// file, a syslog socket): `len` = the syscall's byte count, `conn_ts` = the offset of this record's
    /// payload in the write (a write is sent as up to [`super::MAX_LOG_CHUNKS`] records).
    pub const LOG: u32 = 11;
}

/// Records one log write is copied into at most: a traceback longer than `MAX_LOG_CHUNKS * MAX_DATA`
/// bytes (32 KiB) in one write is cut, and counted (`stats::LOG_TRUNCATED`).
pub const MAX_LOG_CHUNKS: usize = 8;

/// What a log descriptor is (the value of `FMD_LOG_FDS`; BPF only tests presence).
pub mod log_fd {
    /// stdout or stderr.
    pub const STDIO: u32 = 1;
    /// A regular file opened for appending (a `logging.FileHandler`, gunicorn's `--error-logfile`).
    pub const FILE: u32 = 2;
    /// A unix datagram socket (a `logging.handlers.SysLogHandler` on `/dev/log`).
    pub const SYSLOG: u32 = 3;
}

/// Fixed head of every ring-buffer record; `copied` payload bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the syscall returned.
    pub ts_ns: u64,
    /// Identity of the connection: the monotonic time of its `accept` (0 when unknown). With `(tgid, fd)` it
    /// tells a reused fd from the old one.
    pub conn_ts: u64,
    /// Per [`kind`]: byte count of the syscall, sockaddr length, or child pid.
    pub len: u64,
    /// Payload bytes after the header (at most [`MAX_DATA`]).
    pub copied: u32,
    pub _pad: u32,
}

pub const EVENT_HEADER_SIZE: usize = core::mem::size_of::<EventHeader>();
const _: () = assert!(EVENT_HEADER_SIZE == 48);

/// A record as the BPF side assembles it before sending only `EVENT_HEADER_SIZE + copied` bytes of it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent {
    pub header: EventHeader,
    pub data: [u8; MAX_DATA],
}
const _: () = assert!(core::mem::size_of::<DataEvent>() == 48 + MAX_DATA);

/// The connection table's value: what BPF remembers of a socket a worker accepted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Conn {
    pub conn_ts: u64,
}
const _: () = assert!(core::mem::size_of::<Conn>() == 8);

/// The connection table's key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: i32,
}
const _: () = assert!(core::mem::size_of::<ConnKey>() == 8);
