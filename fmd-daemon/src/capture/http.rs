//! Turns the per-syscall records of `fmd_common::http` into HTTP/1.x [`Request`]s: reassembles each accepted
//! connection's byte streams, parses request and response heads, follows body framing (also through bytes
//! the BPF side counted but did not copy) and pairs responses with requests in order. Pure logic, no I/O,
//! so that every odd stream a worker can produce is unit-testable from hand-built records.
//!
//! Bounded by design: every connection buffers at most one request head and one response head of
//! [`Limits::max_head`] bytes plus [`MAX_PIPELINE`] parsed requests; the number of connections is capped,
//! the least recently active one is evicted first; anything that is not HTTP/1.x stops being followed.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use fmd_common::http::{kind, EventHeader};

use crate::{
    identity::{self, Forwarded, Identify, RequestParts},
    request::Request,
};

/// Most requests of one connection parsed and still waiting for their responses (pipelining). Past it the
/// connection is no longer followed: a real client pipelines a handful at most.
pub const MAX_PIPELINE: usize = 32;

/// Most headers in one head; gunicorn refuses more than 100 request fields (`limit_request_fields`).
const MAX_HEADERS: usize = 128;

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// What the assembler may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request or response head buffered while it arrives; a longer one is unparseable.
    pub max_head: usize,
    /// Most connections followed at once; the least recently active one is evicted past it.
    pub max_connections: usize,
    /// A connection without any record for this long is finished by [`Assembler::expire`].
    pub idle_timeout_ns: u64,
    /// How many of a request's first bytes are kept in [`Request::head`].
    pub keep_head: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // gunicorn caps the request line at 4 KiB and fields at 8 KiB each; real heads are far below.
            max_head: 64 * 1024,
            // A quarter of the BPF connection table (65536): beyond that the workers are in trouble anyway,
            // and a full table of 64 KiB heads would already be a GiB.
            max_connections: 16 * 1024,
            // Longer than gunicorn's default worker timeout (30 s) and keep-alive (2 s): a connection this
            // quiet lost its close record (ring-buffer drop) or its process.
            idle_timeout_ns: 300 * 1_000_000_000,
            // The BPF side copies at most 4096 bytes per syscall; the same is enough to show a head.
            keep_head: 4096,
        }
    }
}

/// What the assembler did, for logs and the status API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Requests emitted, `aborted` ones included.
    pub requests: u64,
    /// Connections that stopped being followed because their bytes were not HTTP/1.x (TLS, HTTP/2,
    /// garbage, heads over the limit, too deep a pipeline).
    pub unparseable: u64,
    /// Requests emitted with status 0: their connection ended before any response.
    pub aborted: u64,
    /// Connections that stopped being followed because a head fell in bytes the BPF side did not copy.
    pub desynced: u64,
    /// Connections finished early because [`Limits::max_connections`] was reached.
    pub evicted: u64,
    /// Reads and writes for connections never seen (and not starting with a request line).
    pub orphan_events: u64,
}

/// Why a connection (or one direction of it) stopped being followed.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{side} head is not HTTP/1.x")]
    Syntax {
        side: Side,
        #[source]
        source: httparse::Error,
    },
    #[error("{side} head has an invalid {header} header")]
    Framing { side: Side, header: &'static str },
    #[error("{side} head is longer than {max} bytes")]
    HeadTooLong { side: Side, max: usize },
    #[error("{side} body has a malformed chunk")]
    Chunk { side: Side },
    #[error("more than {max} pipelined requests wait for their responses")]
    Pipeline { max: usize },
    #[error("{side} framing lies in bytes the BPF side did not copy")]
    Uncopied { side: Side },
}

impl Error {
    fn side(&self) -> Side {
        match self {
            Self::Syntax { side, .. }
            | Self::Framing { side, .. }
            | Self::HeadTooLong { side, .. }
            | Self::Chunk { side }
            | Self::Uncopied { side } => *side,
            Self::Pipeline { .. } => Side::Request,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Request => "request",
            Self::Response => "response",
        })
    }
}

/// Reassembles the HTTP/1.x exchanges of every followed connection.
pub struct Assembler {
    limits: Limits,
    clock_offset_ns: i64,
    conns: HashMap<Key, Conn>,
    /// Activity order for eviction: `Conn::seq -> key`, oldest first.
    lru: BTreeMap<u64, Key>,
    seq: u64,
    counters: Counters,
    /// Users and client addresses behind trusted proxies (config `[users]`, `[proxies]`).
    identify: Identify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    tgid: u32,
    fd: i32,
}

impl Assembler {
    /// `clock_offset_ns` is `CLOCK_REALTIME - CLOCK_MONOTONIC`, turning record times into wall-clock times.
    pub fn new(limits: Limits, clock_offset_ns: i64) -> Self {
        Self {
            limits,
            clock_offset_ns,
            conns: HashMap::new(),
            lru: BTreeMap::new(),
            seq: 0,
            counters: Counters::default(),
            identify: Identify::default(),
        }
    }

    /// Identifies users and clients as `identify` says (the defaults otherwise).
    #[must_use]
    pub fn with_identify(mut self, identify: Identify) -> Self {
        self.identify = identify;
        self
    }

    /// Feeds one ring-buffer record (in ring-buffer order); finished requests are appended to `out`.
    pub fn push(&mut self, header: &EventHeader, payload: &[u8], out: &mut Vec<Request>) {
        let key = Key {
            tgid: header.tgid,
            fd: header.fd,
        };
        match header.kind {
            kind::ACCEPT => {
                if self.current(key, header.conn_ts, out) {
                    return; // the same accept twice: nothing new
                }
                let conn = Conn::new(
                    header.conn_ts,
                    decode_peer(header.len, payload),
                    header.ts_ns,
                );
                self.insert(key, conn, out);
            }
            kind::READ | kind::WRITE => self.data(key, header, payload, out),
            // The worker is done with the socket: what is in flight is finished now, and later records
            // (there should be none but the close) are ignored until the close forgets it.
            kind::SHUTDOWN if self.current(key, header.conn_ts, out) => {
                let Self {
                    conns,
                    counters,
                    limits,
                    clock_offset_ns,
                    identify,
                    ..
                } = self;
                if let Some(conn) = conns.get_mut(&key) {
                    let mut ctx = Ctx {
                        limits,
                        identify,
                        offset: *clock_offset_ns,
                        counters,
                        out,
                        key,
                    };
                    conn.flush(Flush::Ended(header.ts_ns), &mut ctx);
                    conn.rx = Rx::Lost;
                    conn.tx = Tx::Lost;
                }
                self.touch(key, header.ts_ns);
            }
            kind::CLOSE if self.current(key, header.conn_ts, out) => {
                self.remove(key, Flush::Ended(header.ts_ns), out);
            }
            kind::EXIT => {
                for key in self.keys_where(|k, _| k.tgid == header.tgid) {
                    self.remove(key, Flush::Ended(header.ts_ns), out);
                }
            }
            // FORK (and anything newer) concerns processes, which the daemon tracks itself.
            _ => {}
        }
    }

    /// Finishes the connections without any record for longer than [`Limits::idle_timeout_ns`].
    pub fn expire(&mut self, now_mono_ns: u64, out: &mut Vec<Request>) {
        let timeout = self.limits.idle_timeout_ns;
        let idle = self.keys_where(|_, c| now_mono_ns.saturating_sub(c.last_ts) > timeout);
        for key in idle {
            self.remove(key, Flush::Idle, out);
        }
    }

    /// Daemon shutdown: emits the requests whose responses have begun (ending at their last write so far)
    /// and forgets everything else, without counting the unanswered requests as aborted.
    pub fn finish_all(&mut self, out: &mut Vec<Request>) {
        for key in self.keys_where(|_, _| true) {
            self.remove(key, Flush::Shutdown, out);
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// The newest request of connection `(tgid, fd)` whose head has been parsed and whose response is not
    /// finished, with its start (monotonic ns): what a thread reading from that connection now serves.
    pub fn latest_request(&self, tgid: u32, fd: i32) -> Option<(u64, &Request)> {
        let ex = self.conns.get(&Key { tgid, fd })?.exchanges.back()?;
        Some((ex.start_ts, &ex.req))
    }

    /// Calls `visit(start_ns, start_us, request)` for every request still running (head parsed, response
    /// not finished): its start in monotonic ns and in wall-clock µs (what `Request::ts_us` will be).
    pub fn in_flight(&self, mut visit: impl FnMut(u64, i64, &Request)) {
        for conn in self.conns.values() {
            for ex in &conn.exchanges {
                visit(
                    ex.start_ts,
                    wall_us(ex.start_ts, self.clock_offset_ns),
                    &ex.req,
                );
            }
        }
    }

    /// The connections matching `pick`, least recently active first (a stable order for the output).
    fn keys_where(&self, pick: impl Fn(&Key, &Conn) -> bool) -> Vec<Key> {
        self.lru
            .values()
            .filter(|k| self.conns.get(k).is_some_and(|c| pick(k, c)))
            .copied()
            .collect()
    }

    /// Whether a connection `(key, conn_ts)` is followed; a followed one with another `conn_ts` had its fd
    /// reused (its close was lost) and is finished here.
    fn current(&mut self, key: Key, conn_ts: u64, out: &mut Vec<Request>) -> bool {
        match self.conns.get(&key) {
            Some(c) if c.conn_ts == conn_ts => true,
            Some(_) => {
                self.remove(key, Flush::Idle, out);
                false
            }
            None => false,
        }
    }

    fn data(&mut self, key: Key, h: &EventHeader, payload: &[u8], out: &mut Vec<Request>) {
        let copied = payload
            .get(..usize::try_from(h.len).unwrap_or(usize::MAX))
            .unwrap_or(payload);
        let gap = h.len.saturating_sub(copied.len() as u64);
        if !self.current(key, h.conn_ts, out) {
            // A connection accepted before fmd attached (or whose accept record was dropped): follow it from
            // the first read that visibly starts a request, never from the middle of a stream.
            if h.kind == kind::READ && starts_request(copied) {
                self.insert(key, Conn::new(h.conn_ts, Peer::Unknown, h.ts_ns), out);
            } else {
                self.counters.orphan_events += 1;
                return;
            }
        }
        self.touch(key, h.ts_ns);
        let Self {
            conns,
            counters,
            limits,
            clock_offset_ns,
            identify,
            ..
        } = self;
        let Some(conn) = conns.get_mut(&key) else {
            return;
        };
        let mut ctx = Ctx {
            limits,
            identify,
            offset: *clock_offset_ns,
            counters,
            out,
            key,
        };
        if h.kind == kind::READ {
            conn.read(h.ts_ns, h.tid, copied, gap, &mut ctx);
        } else {
            conn.write(h.ts_ns, copied, gap, &mut ctx);
        }
    }

    fn insert(&mut self, key: Key, mut conn: Conn, out: &mut Vec<Request>) {
        while self.conns.len() >= self.limits.max_connections.max(1) {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            self.counters.evicted += 1;
            self.remove(oldest, Flush::Idle, out);
        }
        self.seq += 1;
        conn.seq = self.seq;
        self.lru.insert(self.seq, key);
        self.conns.insert(key, conn);
    }

    fn touch(&mut self, key: Key, ts: u64) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        self.lru.remove(&conn.seq);
        self.seq += 1;
        conn.seq = self.seq;
        conn.last_ts = conn.last_ts.max(ts);
        self.lru.insert(self.seq, key);
    }

    fn remove(&mut self, key: Key, how: Flush, out: &mut Vec<Request>) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        self.lru.remove(&conn.seq);
        let mut ctx = Ctx {
            limits: &self.limits,
            identify: &self.identify,
            offset: self.clock_offset_ns,
            counters: &mut self.counters,
            out,
            key,
        };
        conn.flush(how, &mut ctx);
    }

    /// Bytes held for all connections (buffers and kept heads), to check the memory bound in tests.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.conns.values().map(Conn::buffered).sum()
    }
}

/// What a connection's end means for its requests in flight.
#[derive(Clone, Copy, Debug)]
enum Flush {
    /// Closed, shut down or its process exited at this time: unanswered requests are aborted.
    Ended(u64),
    /// Idle too long, evicted or its fd reused: as `Ended` at its last activity.
    Idle,
    /// The daemon stops: unanswered requests are dropped, not aborted.
    Shutdown,
}

/// The assembler's state a connection needs while it processes one record.
struct Ctx<'a> {
    limits: &'a Limits,
    identify: &'a Identify,
    offset: i64,
    counters: &'a mut Counters,
    out: &'a mut Vec<Request>,
    key: Key,
}

impl Ctx<'_> {
    fn emit(&mut self, ex: Exchange, end_ts: u64) {
        let mut req = ex.req;
        req.ts_us = wall_us(ex.start_ts, self.offset);
        req.duration_ns = end_ts.saturating_sub(ex.start_ts);
        self.counters.requests += 1;
        if req.status == 0 {
            self.counters.aborted += 1;
        }
        self.out.push(req);
    }

    fn lost(&mut self, err: &Error) {
        if matches!(err, Error::Uncopied { .. }) {
            self.counters.desynced += 1;
        } else {
            self.counters.unparseable += 1;
        }
        tracing::debug!(tgid = self.key.tgid, fd = self.key.fd, error = %err, "connection no longer followed");
    }
}

fn wall_us(mono_ns: u64, offset: i64) -> i64 {
    // In i128 the sum cannot overflow, and divided by 1000 it always fits an i64 again.
    let ns = i128::from(mono_ns) + i128::from(offset);
    i64::try_from(ns.div_euclid(1000)).unwrap_or(i64::MAX)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Peer {
    Unknown,
    Unix,
    Ip(IpAddr),
}

/// Reads the peer address out of the raw `sockaddr` an accept copied (family in host order, port and
/// address in network order).
fn decode_peer(len: u64, raw: &[u8]) -> Peer {
    let Some(family) = raw
        .get(..2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
    else {
        return Peer::Unknown;
    };
    match family {
        AF_UNIX => Peer::Unix,
        AF_INET if len >= 8 => match raw.get(4..8).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            Some(octets) => Peer::Ip(IpAddr::V4(Ipv4Addr::from(octets))),
            None => Peer::Unknown,
        },
        AF_INET6 if len >= 24 => match raw.get(8..24).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`; show them as IPv4.
            Some(octets) => Peer::Ip(IpAddr::V6(Ipv6Addr::from(octets)).to_canonical()),
            None => Peer::Unknown,
        },
        _ => Peer::Unknown,
    }
}

/// Whether bytes read from a connection never seen begin with a request line (`METHOD /target` or
/// `METHOD *`, or an absolute `http://` target), as opposed to the middle of a body.
fn starts_request(data: &[u8]) -> bool {
    let method = data.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method == 0 || method > 16 {
        return false;
    }
    let rest = data.get(method..).unwrap_or_default();
    let target_ok = match rest {
        [b' ', b'/' | b'*', ..] => true,
        [b' ', t @ ..] => {
            t.len() >= 4 && t.get(..4).is_some_and(|s| s.eq_ignore_ascii_case(b"http"))
        }
        _ => false,
    };
    target_ok
        && httparse::Request::new(&mut [httparse::EMPTY_HEADER; MAX_HEADERS])
            .parse(data)
            .is_ok()
}

/// One followed connection: a request parser, a response parser and the requests between them.
struct Conn {
    conn_ts: u64,
    peer: Peer,
    last_ts: u64,
    seq: u64,
    rx: Rx,
    tx: Tx,
    /// Parsed requests in arrival order; the front one owns the response being written.
    exchanges: VecDeque<Exchange>,
    /// A request answered before its body was read (gunicorn rejects a `POST` with 405, then drains
    /// the body): emitted once the body is read, so that `bytes_in` counts all of it.
    draining: Option<Exchange>,
}

/// Where the request stream is.
enum Rx {
    /// Between requests.
    Idle,
    /// A head is arriving; `start_ts`/`tid` are those of the read holding its first byte.
    Head {
        buf: Vec<u8>,
        start_ts: u64,
        tid: u32,
    },
    /// The body of the last exchange is arriving.
    Body(Framing),
    /// No longer followed; reads are ignored.
    Lost,
}

/// Where the response stream is.
enum Tx {
    /// Between responses.
    Idle,
    Head {
        buf: Vec<u8>,
    },
    /// The body of the front exchange's response is being written.
    Body(Framing),
    Lost,
}

/// A request and, once begun, its response.
struct Exchange {
    req: Request,
    start_ts: u64,
    /// A `HEAD` request: its response has no body whatever its headers say.
    head_method: bool,
    /// Its body is still being read (it is the last exchange).
    reading: bool,
    /// Its final response head was parsed (`req.status` is set).
    responded: bool,
    /// Time of the last write that carried bytes of its response.
    last_write_ts: u64,
}

impl Conn {
    fn new(conn_ts: u64, peer: Peer, ts: u64) -> Self {
        Self {
            conn_ts,
            peer,
            last_ts: ts,
            seq: 0,
            rx: Rx::Idle,
            tx: Tx::Idle,
            exchanges: VecDeque::new(),
            draining: None,
        }
    }

    #[cfg(test)]
    fn buffered(&self) -> usize {
        let rx = match &self.rx {
            Rx::Head { buf, .. } => buf.capacity(),
            _ => 0,
        };
        let tx = match &self.tx {
            Tx::Head { buf } => buf.capacity(),
            _ => 0,
        };
        let kept: usize = self
            .exchanges
            .iter()
            .chain(&self.draining)
            .map(|e| e.req.head.capacity())
            .sum();
        rx + tx + kept
    }

    /// A read of `data` (copied bytes) followed by `gap` bytes that were read but not copied.
    fn read(&mut self, ts: u64, tid: u32, mut data: &[u8], mut gap: u64, ctx: &mut Ctx<'_>) {
        loop {
            match &mut self.rx {
                Rx::Lost => return,
                Rx::Idle => {
                    // Clients may send stray CRLFs between requests (RFC 9112 §2.2).
                    let blank = data
                        .iter()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count();
                    data = data.get(blank..).unwrap_or_default();
                    if data.is_empty() {
                        if gap > 0 {
                            self.lose_uncopied(Side::Request, ctx);
                        }
                        return;
                    }
                    // A new request ends a response that had no length: it was complete.
                    if matches!(self.tx, Tx::Body(Framing::UntilClose)) {
                        self.tx = Tx::Idle;
                        if let Some(ex) = self.exchanges.pop_front() {
                            let end = ex.last_write_ts;
                            ctx.emit(ex, end);
                        }
                    }
                    self.rx = Rx::Head {
                        buf: Vec::new(),
                        start_ts: ts,
                        tid,
                    };
                }
                Rx::Head { buf, start_ts, tid } => {
                    if data.is_empty() {
                        if gap > 0 {
                            self.lose_uncopied(Side::Request, ctx);
                        }
                        return;
                    }
                    let before = buf.len();
                    let room = ctx.limits.max_head.saturating_sub(before);
                    buf.extend_from_slice(data.get(..room).unwrap_or(data));
                    match parse_request(buf, ctx.identify) {
                        Err(e) => return self.lose(e, ctx),
                        Ok(None) if buf.len() >= ctx.limits.max_head => {
                            let max = ctx.limits.max_head;
                            return self.lose(
                                Error::HeadTooLong {
                                    side: Side::Request,
                                    max,
                                },
                                ctx,
                            );
                        }
                        Ok(None) => data = &[],
                        Ok(Some(head)) => {
                            data = data
                                .get(head.len.saturating_sub(before)..)
                                .unwrap_or_default();
                            let (start_ts, tid) = (*start_ts, *tid);
                            let kept = buf
                                .get(..head.len.min(ctx.limits.keep_head))
                                .unwrap_or_default()
                                .to_vec();
                            if let Err(e) = self.begin(head, kept, start_ts, tid, ctx) {
                                return self.lose(e, ctx);
                            }
                        }
                    }
                }
                Rx::Body(framing) => {
                    let done = if data.is_empty() {
                        if gap == 0 {
                            return;
                        }
                        match framing.skip(gap) {
                            Ok((n, done)) => {
                                gap -= n;
                                if let Some(ex) = self.reader() {
                                    ex.req.bytes_in += n;
                                }
                                done
                            }
                            Err(()) => return self.lose_uncopied(Side::Request, ctx),
                        }
                    } else {
                        match framing.feed(data) {
                            Ok((n, done)) => {
                                let (body, rest) = data.split_at(n.min(data.len()));
                                data = rest;
                                if let Some(ex) = self.reader() {
                                    ex.req.bytes_in += body.len() as u64;
                                    let room =
                                        ctx.limits.keep_head.saturating_sub(ex.req.head.len());
                                    ex.req
                                        .head
                                        .extend_from_slice(body.get(..room).unwrap_or(body));
                                }
                                done
                            }
                            Err(()) => {
                                return self.lose(
                                    Error::Chunk {
                                        side: Side::Request,
                                    },
                                    ctx,
                                )
                            }
                        }
                    };
                    if done {
                        self.rx = Rx::Idle;
                        if let Some(ex) = self.draining.take() {
                            let end = ex.last_write_ts;
                            ctx.emit(ex, end);
                        } else if let Some(ex) = self.exchanges.back_mut() {
                            ex.reading = false;
                        }
                    }
                }
            }
        }
    }

    /// The exchange whose request body is being read, if it is followed.
    fn reader(&mut self) -> Option<&mut Exchange> {
        match self.draining.as_mut() {
            Some(ex) => Some(ex),
            None => self.exchanges.back_mut().filter(|e| e.reading),
        }
    }

    /// The front exchange's response is complete at `ts`.
    fn answered(&mut self, ctx: &mut Ctx<'_>, ts: u64) {
        let Some(ex) = self.exchanges.pop_front() else {
            return;
        };
        if ex.reading {
            self.draining = Some(ex);
        } else {
            ctx.emit(ex, ts);
        }
    }

    /// Queues the request whose head was just parsed and sets up its body.
    fn begin(
        &mut self,
        head: ReqHead,
        kept: Vec<u8>,
        start_ts: u64,
        tid: u32,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), Error> {
        if self.exchanges.len() >= MAX_PIPELINE {
            return Err(Error::Pipeline { max: MAX_PIPELINE });
        }
        let (path, query) = split_target(&head.target);
        let peer = match &self.peer {
            Peer::Ip(ip) => identity::Peer::Ip(*ip),
            Peer::Unix => identity::Peer::Unix,
            Peer::Unknown => identity::Peer::Unknown,
        };
        let remote_ip = ctx.identify.proxies.client_ip(peer, &head.forwarded);
        let req = Request {
            method: head.method.clone(),
            path,
            query,
            http_version: format!("HTTP/1.{}", head.version),
            bytes_in: head.len as u64,
            remote_ip,
            worker_pid: ctx.key.tgid,
            tid,
            host: head.host,
            user_agent: head.user_agent,
            head: kept,
            user: head.user,
            ..Request::default()
        };
        let body = head.body;
        let reading = !matches!(body, Framing::Length(0));
        self.exchanges.push_back(Exchange {
            req,
            start_ts,
            head_method: head.method.eq_ignore_ascii_case("HEAD"),
            reading,
            responded: false,
            last_write_ts: start_ts,
        });
        self.rx = if reading { Rx::Body(body) } else { Rx::Idle };
        Ok(())
    }

    /// A write of `data` (copied bytes) followed by `gap` bytes that were written but not copied.
    fn write(&mut self, ts: u64, mut data: &[u8], mut gap: u64, ctx: &mut Ctx<'_>) {
        loop {
            match &mut self.tx {
                Tx::Lost => return,
                Tx::Idle => {
                    if data.is_empty() && gap == 0 {
                        return;
                    }
                    if self.exchanges.is_empty() {
                        // A response to a request fmd did not see (attached mid-connection): not followed.
                        return;
                    }
                    if data.is_empty() {
                        return self.lose_uncopied(Side::Response, ctx);
                    }
                    self.tx = Tx::Head { buf: Vec::new() };
                }
                Tx::Head { buf } => {
                    if data.is_empty() {
                        if gap > 0 {
                            self.lose_uncopied(Side::Response, ctx);
                        }
                        return;
                    }
                    let before = buf.len();
                    let room = ctx.limits.max_head.saturating_sub(before);
                    buf.extend_from_slice(data.get(..room).unwrap_or(data));
                    let parsed = parse_response(buf);
                    let too_long = buf.len() >= ctx.limits.max_head;
                    let Some(ex) = self.exchanges.front_mut() else {
                        self.tx = Tx::Idle;
                        return;
                    };
                    match parsed {
                        Err(e) => return self.lose(e, ctx),
                        Ok(None) if too_long => {
                            let max = ctx.limits.max_head;
                            return self.lose(
                                Error::HeadTooLong {
                                    side: Side::Response,
                                    max,
                                },
                                ctx,
                            );
                        }
                        Ok(None) => {
                            ex.req.bytes_out += data.len() as u64;
                            ex.last_write_ts = ts;
                            data = &[];
                        }
                        Ok(Some(head)) => {
                            let used = head.len.saturating_sub(before).min(data.len());
                            data = data.get(used..).unwrap_or_default();
                            ex.req.bytes_out += used as u64;
                            ex.last_write_ts = ts;
                            match head.status {
                                101 => {
                                    // The connection now speaks another protocol (WebSocket): the upgrade
                                    // request is complete and nothing after it is HTTP/1.x.
                                    ex.req.status = 101;
                                    if let Some(ex) = self.exchanges.pop_front() {
                                        ctx.emit(ex, ts);
                                    }
                                    self.exchanges.clear();
                                    self.rx = Rx::Lost;
                                    self.tx = Tx::Lost;
                                    return;
                                }
                                // Interim response (100 Continue): the final one follows.
                                100..=199 => self.tx = Tx::Idle,
                                status => {
                                    ex.req.status = status;
                                    ex.responded = true;
                                    let framing = match head.framing {
                                        _ if ex.head_method || status == 204 || status == 304 => {
                                            Framing::Length(0)
                                        }
                                        BodyHeaders::Chunked => Framing::Chunked(Chunk::default()),
                                        BodyHeaders::Length(n) => Framing::Length(n),
                                        BodyHeaders::OtherCoding | BodyHeaders::None => {
                                            Framing::UntilClose
                                        }
                                    };
                                    if matches!(framing, Framing::Length(0)) {
                                        self.tx = Tx::Idle;
                                        self.answered(ctx, ts);
                                    } else {
                                        self.tx = Tx::Body(framing);
                                    }
                                }
                            }
                        }
                    }
                }
                Tx::Body(framing) => {
                    let (n, done) = if data.is_empty() {
                        if gap == 0 {
                            return;
                        }
                        match framing.skip(gap) {
                            Ok(r) => {
                                gap -= r.0;
                                r
                            }
                            Err(()) => return self.lose_uncopied(Side::Response, ctx),
                        }
                    } else {
                        match framing.feed(data) {
                            Ok((n, done)) => {
                                data = data.get(n..).unwrap_or_default();
                                (n as u64, done)
                            }
                            Err(()) => {
                                return self.lose(
                                    Error::Chunk {
                                        side: Side::Response,
                                    },
                                    ctx,
                                )
                            }
                        }
                    };
                    if let Some(ex) = self.exchanges.front_mut() {
                        ex.req.bytes_out += n;
                        ex.last_write_ts = ts;
                    }
                    if done {
                        self.tx = Tx::Idle;
                        self.answered(ctx, ts);
                    }
                }
            }
        }
    }

    /// Stops following the side `err` concerns. A lost request stream still lets the requests already
    /// parsed get their responses; a lost response stream cannot be matched to requests any more.
    fn lose(&mut self, err: Error, ctx: &mut Ctx<'_>) {
        ctx.lost(&err);
        if let Some(ex) = self.draining.take() {
            let end = ex.last_write_ts;
            ctx.emit(ex, end);
        }
        self.rx = Rx::Lost;
        if err.side() == Side::Response {
            self.tx = Tx::Lost;
            self.exchanges.clear();
        } else if let Some(ex) = self.exchanges.back_mut() {
            ex.reading = false;
        }
    }

    fn lose_uncopied(&mut self, side: Side, ctx: &mut Ctx<'_>) {
        self.lose(Error::Uncopied { side }, ctx);
    }

    /// The connection ends (see [`Flush`]): emits what it has.
    fn flush(&mut self, how: Flush, ctx: &mut Ctx<'_>) {
        let end_ts = match how {
            Flush::Ended(ts) => ts,
            Flush::Idle | Flush::Shutdown => self.last_ts,
        };
        if let Some(ex) = self.draining.take() {
            let end = ex.last_write_ts;
            ctx.emit(ex, end);
        }
        while let Some(ex) = self.exchanges.pop_front() {
            if ex.responded {
                // The response had begun: it ended with its last write (the only right end for a response
                // without length; the best known one for a cut-off response).
                let end = ex.last_write_ts;
                ctx.emit(ex, end);
            } else if matches!(how, Flush::Shutdown) {
                // Still being served when the daemon stops: not an abort.
            } else if ex.req.bytes_out > 0 {
                let end = ex.last_write_ts;
                ctx.emit(ex, end);
            } else {
                ctx.emit(ex, end_ts);
            }
        }
        self.tx = Tx::Idle;
        self.rx = Rx::Idle;
    }
}

/// How a body's end is found.
#[derive(Debug)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    Chunked(Chunk),
    /// Ends when the connection does (a response without length).
    UntilClose,
}

impl Framing {
    /// Consumes the body bytes at the start of `data`: how many, and whether the body is complete.
    /// `Err` for a malformed chunked body.
    fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ()> {
        match self {
            Self::Length(left) => {
                let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                Ok((n, *left == 0))
            }
            Self::Chunked(chunk) => chunk.feed(data),
            Self::UntilClose => Ok((data.len(), false)),
        }
    }

    /// As [`feed`](Self::feed) for `n` bytes not copied. `Err` when framing (a chunk size) lies in them.
    fn skip(&mut self, n: u64) -> Result<(u64, bool), ()> {
        match self {
            Self::Length(left) => {
                let used = n.min(*left);
                *left -= used;
                Ok((used, *left == 0))
            }
            Self::Chunked(chunk) => chunk.skip(n),
            Self::UntilClose => Ok((n, false)),
        }
    }
}

/// Position inside a chunked body (RFC 9112 §7.1).
#[derive(Debug)]
enum Chunk {
    /// In a chunk-size line: the size so far, its digit count, and whether an extension (or whitespace)
    /// began, after which everything up to the LF is ignored.
    Size { value: u64, digits: u8, ext: bool },
    /// This many chunk-data bytes remain.
    Data(u64),
    /// The CRLF after chunk data; `cr` once its CR was seen.
    DataEnd { cr: bool },
    /// After the last (zero) chunk: trailer lines up to an empty line.
    Trailer { line_start: bool },
}

impl Default for Chunk {
    fn default() -> Self {
        Self::Size {
            value: 0,
            digits: 0,
            ext: false,
        }
    }
}

impl Chunk {
    fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ()> {
        let mut i = 0;
        while let Some(rest) = data.get(i..).filter(|r| !r.is_empty()) {
            if let Self::Data(left) = self {
                let n = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                i += n;
                if *left == 0 {
                    *self = Self::DataEnd { cr: false };
                }
                continue;
            }
            let Some(&b) = rest.first() else {
                break;
            };
            i += 1;
            if self.byte(b)? {
                return Ok((i, true));
            }
        }
        Ok((i, false))
    }

    /// One framing byte; `true` when it ends the body.
    fn byte(&mut self, b: u8) -> Result<bool, ()> {
        match self {
            Self::Size { value, digits, ext } => match b {
                b'\n' if *digits == 0 => return Err(()),
                b'\n' if *value == 0 => *self = Self::Trailer { line_start: true },
                b'\n' => *self = Self::Data(*value),
                _ if *ext => {}
                b';' | b' ' | b'\t' | b'\r' if *digits > 0 => *ext = true,
                _ => {
                    let digit = char::from(b).to_digit(16).ok_or(())?;
                    if *digits >= 15 {
                        return Err(()); // no body is 2^60 bytes long
                    }
                    *value = *value * 16 + u64::from(digit);
                    *digits += 1;
                }
            },
            Self::Data(left) => {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    *self = Self::DataEnd { cr: false };
                }
            }
            Self::DataEnd { cr } => match b {
                b'\r' if !*cr => *cr = true,
                b'\n' => *self = Self::default(),
                _ => return Err(()),
            },
            Self::Trailer { line_start } => match b {
                b'\n' if *line_start => return Ok(true),
                b'\n' => *line_start = true,
                b'\r' => {}
                _ => *line_start = false,
            },
        }
        Ok(false)
    }

    /// Skips `n` uncopied bytes: chunk data and the CRLF that must follow it can be counted over; a size
    /// line or trailer cannot.
    fn skip(&mut self, n: u64) -> Result<(u64, bool), ()> {
        let mut used = 0;
        while used < n {
            match self {
                Self::Data(left) => {
                    let k = (n - used).min(*left);
                    *left -= k;
                    used += k;
                    if *left == 0 {
                        *self = Self::DataEnd { cr: false };
                    }
                }
                Self::DataEnd { cr: false } => {
                    *self = Self::DataEnd { cr: true };
                    used += 1;
                }
                Self::DataEnd { cr: true } => {
                    *self = Self::default();
                    used += 1;
                }
                Self::Size { .. } | Self::Trailer { .. } => return Err(()),
            }
        }
        Ok((used, false))
    }
}

/// What a head's framing headers say about its body.
#[derive(Debug, PartialEq, Eq)]
enum BodyHeaders {
    None,
    Length(u64),
    Chunked,
    /// A transfer coding other than chunked last: no length (a response runs until close).
    OtherCoding,
}

/// Reads `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3: a chunked coding wins over a length).
fn body_headers(headers: &[httparse::Header<'_>], side: Side) -> Result<BodyHeaders, Error> {
    let mut length: Option<u64> = None;
    let mut last_coding: Option<&[u8]> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                let n = std::str::from_utf8(part)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(Error::Framing {
                        side,
                        header: "Content-Length",
                    })?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::Framing {
                        side,
                        header: "Content-Length",
                    });
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if let Some(coding) = h
                .value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .rfind(|c| !c.is_empty())
            {
                last_coding = Some(coding);
            }
        }
    }
    Ok(match (last_coding, length) {
        (Some(c), _) if c.eq_ignore_ascii_case(b"chunked") => BodyHeaders::Chunked,
        (Some(_), _) => BodyHeaders::OtherCoding,
        (None, Some(n)) => BodyHeaders::Length(n),
        (None, None) => BodyHeaders::None,
    })
}

/// A parsed request head.
struct ReqHead {
    len: usize,
    method: String,
    target: String,
    version: u8,
    host: Option<String>,
    user_agent: Option<String>,
    /// Forwarding headers: they give the client address only when the peer is a trusted proxy.
    forwarded: Forwarded,
    user: Option<String>,
    body: Framing,
}

/// `Ok(None)` while the head is incomplete.
fn parse_request(buf: &[u8], identify: &Identify) -> Result<Option<ReqHead>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(source) => {
            return Err(Error::Syntax {
                side: Side::Request,
                source,
            })
        }
    };
    let text = |v: &[u8]| {
        Some(String::from_utf8_lossy(v.trim_ascii()).into_owned()).filter(|s| !s.is_empty())
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let body = match body_headers(req.headers, Side::Request)? {
        BodyHeaders::None => Framing::Length(0),
        BodyHeaders::Length(n) => Framing::Length(n),
        BodyHeaders::Chunked => Framing::Chunked(Chunk::default()),
        // A server cannot find the end of such a request (RFC 9112 §6.3): gunicorn answers 400 and closes.
        BodyHeaders::OtherCoding => {
            return Err(Error::Framing {
                side: Side::Request,
                header: "Transfer-Encoding",
            })
        }
    };
    let target = req.path.unwrap_or_default();
    let user = identify.users.user(&RequestParts {
        headers: req.headers,
        query: target.split_once('?').map(|(_, q)| q),
    });
    Ok(Some(ReqHead {
        len,
        method: req.method.unwrap_or_default().to_owned(),
        target: target.to_owned(),
        version: req.version.unwrap_or(1),
        host: header("host").and_then(text),
        user_agent: header("user-agent").and_then(text),
        forwarded: Identify::forwarded(req.headers),
        user,
        body,
    }))
}

/// A parsed response head.
struct RespHead {
    len: usize,
    status: u16,
    framing: BodyHeaders,
}

fn parse_response(buf: &[u8]) -> Result<Option<RespHead>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(source) => {
            return Err(Error::Syntax {
                side: Side::Response,
                source,
            })
        }
    };
    let framing = body_headers(resp.headers, Side::Response)?;
    Ok(Some(RespHead {
        len,
        status: resp.code.unwrap_or_default(),
        framing,
    }))
}

/// Splits a request target into path and query; an absolute-form target (`http://host/p`) keeps its path.
fn split_target(target: &str) -> (String, Option<String>) {
    let mut path = target;
    for scheme in ["http://", "https://"] {
        if path
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        {
            let rest = path.get(scheme.len()..).unwrap_or_default();
            path = rest
                .find(['/', '?'])
                .and_then(|i| rest.get(i..))
                .unwrap_or("/");
            if path.starts_with('?') {
                return ("/".to_owned(), path.get(1..).map(str::to_owned));
            }
        }
    }
    match path.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (path.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    const PID: u32 = 4242;

    // Fixtures; `fixture_lengths` pins the byte counts the expectations below are written against.
    const GET_A: &str = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    const GET_B: &str = "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    const OK_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
    const CURL: &str =
        "GET /hello/1 HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
    const GUNICORN_HEAD: &str =
        "HTTP/1.1 200 OK\r\nServer: gunicorn\r\nConnection: close\r\nContent-Length: 4\r\n\r\n";
    const POST_10: &str = "POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n";
    const POST_CHUNKED: &str = "POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    const CHUNKED_HEAD: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    const GET_10: &str = "GET /s HTTP/1.0\r\n\r\n";
    const PLAIN_10: &str = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    const FOUND: &str = "HTTP/1.1 302 FOUND\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n";
    const NOT_FOUND: &str = "HTTP/1.1 404 NOT FOUND\r\nContent-Length: 3\r\n\r\nnah";
    const ERROR: &str = "HTTP/1.1 500 INTERNAL SERVER ERROR\r\nContent-Length: 1\r\n\r\n!";
    const POST_5000: &str = "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n";

    #[test]
    fn fixture_lengths() {
        let lens = [
            GET_A,
            GET_B,
            OK,
            OK_HEAD,
            CURL,
            GUNICORN_HEAD,
            POST_10,
            POST_CHUNKED,
            CHUNKED_HEAD,
            GET_10,
            PLAIN_10,
            FOUND,
            NOT_FOUND,
            ERROR,
            POST_5000,
        ]
        .map(str::len);
        assert_eq!(
            lens,
            [28, 28, 40, 38, 84, 75, 49, 57, 47, 19, 45, 55, 48, 58, 53]
        );
    }

    /// A record, or (kinds above 100) an action of the test harness.
    struct Ev {
        h: EventHeader,
        data: Vec<u8>,
    }

    const TICK: u32 = 101;
    const FINISH: u32 = 102;

    fn ev(kind: u32, fd: i32, t_us: u64, len: u64, data: &[u8]) -> Ev {
        let h = EventHeader {
            kind,
            tgid: PID,
            tid: PID,
            fd,
            ts_ns: t_us * 1000,
            conn_ts: 1,
            len,
            copied: data.len() as u32,
            _pad: 0,
        };
        Ev {
            h,
            data: data.to_vec(),
        }
    }

    impl Ev {
        fn tid(mut self, tid: u32) -> Self {
            self.h.tid = tid;
            self
        }
        fn conn(mut self, conn_ts: u64) -> Self {
            self.h.conn_ts = conn_ts;
            self
        }
        fn pid(mut self, pid: u32) -> Self {
            self.h.tgid = pid;
            self.h.tid = pid;
            self
        }
    }

    type Sockaddr = (u64, Vec<u8>);

    fn sockaddr(family: u16, len: u64, at: usize, addr: &[u8], port: u16) -> Sockaddr {
        let mut raw = vec![0u8; 28];
        raw[..2].copy_from_slice(&family.to_ne_bytes());
        raw[2..4].copy_from_slice(&port.to_be_bytes());
        raw[at..at + addr.len()].copy_from_slice(addr);
        (len, raw)
    }
    fn v4(ip: [u8; 4]) -> Sockaddr {
        sockaddr(AF_INET, 16, 4, &ip, 40000)
    }
    fn v6(ip: &str) -> Sockaddr {
        sockaddr(
            AF_INET6,
            28,
            8,
            &ip.parse::<Ipv6Addr>().unwrap().octets(),
            40000,
        )
    }
    fn unix() -> Sockaddr {
        sockaddr(AF_UNIX, 2, 2, &[], 0)
    }

    fn accept(fd: i32, t: u64, (len, raw): Sockaddr) -> Ev {
        ev(kind::ACCEPT, fd, t, len, &raw)
    }
    fn read(fd: i32, t: u64, s: impl AsRef<[u8]>) -> Ev {
        let s = s.as_ref();
        ev(kind::READ, fd, t, s.len() as u64, s)
    }
    /// A read of all of `s` of which BPF copied only the first `copied` bytes.
    fn read_cut(fd: i32, t: u64, s: impl AsRef<[u8]>, copied: usize) -> Ev {
        let s = s.as_ref();
        ev(kind::READ, fd, t, s.len() as u64, &s[..copied])
    }
    fn write(fd: i32, t: u64, s: impl AsRef<[u8]>) -> Ev {
        let s = s.as_ref();
        ev(kind::WRITE, fd, t, s.len() as u64, s)
    }
    fn write_cut(fd: i32, t: u64, s: impl AsRef<[u8]>, copied: usize) -> Ev {
        let s = s.as_ref();
        ev(kind::WRITE, fd, t, s.len() as u64, &s[..copied])
    }
    /// A `sendfile` of `n` bytes: counted, never copied.
    fn sendfile(fd: i32, t: u64, n: u64) -> Ev {
        ev(kind::WRITE, fd, t, n, &[])
    }
    fn shutdown(fd: i32, t: u64) -> Ev {
        ev(kind::SHUTDOWN, fd, t, 0, &[])
    }
    fn close(fd: i32, t: u64) -> Ev {
        ev(kind::CLOSE, fd, t, 0, &[])
    }
    fn exit(t: u64) -> Ev {
        ev(kind::EXIT, -1, t, 0, &[])
    }
    /// `Assembler::expire` at `t`.
    fn tick(t: u64) -> Ev {
        ev(TICK, -1, t, 0, &[])
    }
    fn finish() -> Ev {
        ev(FINISH, -1, 0, 0, &[])
    }

    fn run(asm: &mut Assembler, events: &[Ev]) -> Vec<Request> {
        let mut out = Vec::new();
        for e in events {
            match e.h.kind {
                TICK => asm.expire(e.h.ts_ns, &mut out),
                FINISH => asm.finish_all(&mut out),
                _ => asm.push(&e.h, &e.data, &mut out),
            }
        }
        out
    }

    /// One line per request (times in µs), then the open connections and the non-zero counters.
    fn render(asm: &Assembler, out: &[Request]) -> String {
        let mut s = String::new();
        for r in out {
            let query = r
                .query
                .as_ref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let _ = write!(
                s,
                "{} {}{query} {} {} in={} out={} @{} +{} ip={}",
                r.method,
                r.path,
                r.http_version,
                r.status,
                r.bytes_in,
                r.bytes_out,
                r.ts_us,
                r.duration_ns / 1000,
                r.remote_ip.as_deref().unwrap_or("-"),
            );
            if (r.worker_pid, r.tid) != (PID, PID) {
                let _ = write!(s, " w={}/{}", r.worker_pid, r.tid);
            }
            if let Some(host) = r.host.as_deref().filter(|h| *h != "h") {
                let _ = write!(s, " host={host}");
            }
            if let Some(ua) = &r.user_agent {
                let _ = write!(s, " ua={ua}");
            }
            s.push('\n');
        }
        let c = asm.counters();
        let _ = write!(s, "open={}", asm.open_connections());
        for (name, value) in [
            ("requests", c.requests),
            ("unparseable", c.unparseable),
            ("aborted", c.aborted),
            ("desynced", c.desynced),
            ("evicted", c.evicted),
            ("orphans", c.orphan_events),
        ] {
            if value > 0 {
                let _ = write!(s, " {name}={value}");
            }
        }
        s
    }

    fn check(events: &[Ev], expect: &str) {
        check_with(Limits::default(), events, expect);
    }

    fn check_with(limits: Limits, events: &[Ev], expect: &str) {
        let mut asm = Assembler::new(limits, 0);
        let out = run(&mut asm, events);
        let actual = render(&asm, &out);
        let expect = expect
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(actual, expect, "\nactual:\n{actual}\n");
    }

    fn cat(parts: &[&str]) -> String {
        parts.concat()
    }

    #[test]
    fn sync_worker_request() {
        check(
            &[
                accept(5, 1, v4([10, 0, 0, 7])),
                read(5, 10, CURL),
                write(5, 20, GUNICORN_HEAD),
                write(5, 21, "hi 1"),
                shutdown(5, 22),
                close(5, 23),
            ],
            "GET /hello/1 HTTP/1.1 200 in=84 out=79 @10 +11 ip=10.0.0.7 host=localhost:8000 ua=curl/8.5.0
             open=0 requests=1",
        );
    }

    #[test]
    fn keep_alive_three_requests() {
        let get_c = "GET /c?x=1&y HTTP/1.1\r\nHost: h\r\n\r\n"; // 34 bytes
        check(
            &[
                accept(7, 1, v4([127, 0, 0, 1])),
                read(7, 10, GET_A).tid(11),
                write(7, 12, OK).tid(11),
                read(7, 20, get_c).tid(12),
                write(7, 21, CHUNKED_HEAD).tid(12),
                write(7, 22, "5\r\nhello\r\n").tid(12),
                write(7, 23, "0\r\n\r\n").tid(12),
                read(7, 30, GET_B).tid(13),
                write(7, 31, OK).tid(13),
                close(7, 40),
            ],
            "GET /a HTTP/1.1 200 in=28 out=40 @10 +2 ip=127.0.0.1 w=4242/11
             GET /c?x=1&y HTTP/1.1 200 in=34 out=62 @20 +3 ip=127.0.0.1 w=4242/12
             GET /b HTTP/1.1 200 in=28 out=40 @30 +1 ip=127.0.0.1 w=4242/13
             open=0 requests=3",
        );
    }

    #[test]
    fn pipelined_requests_in_one_read() {
        check(
            &[
                accept(3, 1, v4([1, 2, 3, 4])),
                read(3, 10, cat(&[GET_A, GET_B])),
                write(3, 11, OK),
                write(3, 12, OK),
            ],
            "GET /a HTTP/1.1 200 in=28 out=40 @10 +1 ip=1.2.3.4
             GET /b HTTP/1.1 200 in=28 out=40 @10 +2 ip=1.2.3.4
             open=1 requests=2",
        );
        // Both responses in one write, the second request's head split over two reads.
        check(
            &[
                accept(3, 1, v4([1, 2, 3, 4])),
                read(3, 10, cat(&[GET_A, "GET /b HTTP/1"])),
                read(3, 11, ".1\r\nHost: h\r\n\r\n"),
                write(3, 12, cat(&[OK, OK])),
            ],
            "GET /a HTTP/1.1 200 in=28 out=40 @10 +2 ip=1.2.3.4
             GET /b HTTP/1.1 200 in=28 out=40 @10 +2 ip=1.2.3.4
             open=1 requests=2",
        );
    }

    #[test]
    fn head_split_over_three_reads() {
        check(
            &[
                accept(3, 1, unix()),
                read(3, 10, "GE").tid(8),
                read(3, 11, "T /a HTTP/1.1\r\nHo").tid(9),
                read(3, 12, "st: h\r\n\r\n").tid(9),
                write(3, 13, "HTTP/1.1 200 OK\r\nCont"),
                write(3, 14, "ent-Length: 2\r\n\r\n"),
                write(3, 15, "o"),
                write(3, 16, "k"),
            ],
            "GET /a HTTP/1.1 200 in=28 out=40 @10 +6 ip=- w=4242/8
             open=1 requests=1",
        );
    }

    #[test]
    fn post_bodies() {
        // Body in later reads, then a request on the same connection.
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, cat(&[POST_10, "0123"])),
                read(4, 11, "4567"),
                read(4, 12, "89"),
                write(4, 13, OK),
                read(4, 20, GET_A),
                write(4, 21, OK),
            ],
            "POST /f HTTP/1.1 200 in=59 out=40 @10 +3 ip=-
             GET /a HTTP/1.1 200 in=28 out=40 @20 +1 ip=-
             open=1 requests=2",
        );
        // Body in the head's read, stray CRLF after it (tolerated, not counted), then another request.
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, cat(&[POST_10, "0123456789\r\n"])),
                write(4, 11, OK),
                read(4, 20, GET_A),
                write(4, 21, OK),
            ],
            "POST /f HTTP/1.1 200 in=59 out=40 @10 +1 ip=-
             GET /a HTTP/1.1 200 in=28 out=40 @20 +1 ip=-
             open=1 requests=2",
        );
        // Chunked body over two reads, the next request pipelined after its terminator.
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, cat(&[POST_CHUNKED, "4\r\nab"])),
                read(4, 11, cat(&["cd\r\n0\r\n\r\n", GET_A])),
                write(4, 12, OK),
                write(4, 13, OK),
            ],
            "POST /u HTTP/1.1 200 in=71 out=40 @10 +2 ip=-
             GET /a HTTP/1.1 200 in=28 out=40 @11 +2 ip=-
             open=1 requests=2",
        );
    }

    #[test]
    fn chunked_responses() {
        // gunicorn: head, then one write per chunk, then the terminator.
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                write(4, 11, CHUNKED_HEAD),
                write(4, 12, "5\r\nhello\r\n"),
                write(4, 13, "a;ext=1\r\n0123456789\r\n"),
                write(4, 14, "0\r\n\r\n"),
                write(4, 15, "stray"),
            ],
            "GET /a HTTP/1.1 200 in=28 out=83 @10 +4 ip=-
             open=1 requests=1",
        );
        // A chunk longer than the copied prefix: its data and CRLF are counted over.
        let big = format!("1000\r\n{}\r\n", "x".repeat(4096));
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                write(4, 11, CHUNKED_HEAD),
                write_cut(4, 12, &big, 4096),
                write(4, 13, "0\r\nX-Trailer: 1\r\n\r\n"),
            ],
            "GET /a HTTP/1.1 200 in=28 out=4170 @10 +3 ip=-
             open=1 requests=1",
        );
        // A chunk-size line in uncopied bytes cannot be followed.
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                write(4, 11, CHUNKED_HEAD),
                write_cut(4, 12, "5\r\nhello\r\n5\r\nworld\r\n", 10),
                write(4, 13, "0\r\n\r\n"),
                close(4, 20),
            ],
            "open=0 desynced=1",
        );
    }

    #[test]
    fn close_delimited_responses() {
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_10),
                write(4, 11, PLAIN_10),
                write(4, 12, "aaa"),
                write(4, 13, "bbbb"),
                shutdown(4, 20),
                close(4, 21),
            ],
            "GET /s HTTP/1.0 200 in=19 out=52 @10 +3 ip=-
             open=0 requests=1",
        );
        // Ended by the next request on the connection.
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                write(4, 11, "HTTP/1.1 200 OK\r\n\r\n"),
                write(4, 12, "stream"),
                read(4, 20, GET_B),
                write(4, 21, OK),
            ],
            "GET /a HTTP/1.1 200 in=28 out=25 @10 +2 ip=-
             GET /b HTTP/1.1 200 in=28 out=40 @20 +1 ip=-
             open=1 requests=2",
        );
    }

    #[test]
    fn statuses() {
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                write(4, 11, FOUND),
                read(4, 20, GET_A),
                write(4, 21, NOT_FOUND),
                read(4, 30, GET_A),
                write(4, 31, ERROR),
                read(4, 40, "HEAD /a HTTP/1.1\r\n\r\n"),
                write(4, 41, OK_HEAD),
                read(4, 50, "DELETE /a HTTP/1.1\r\n\r\n"),
                write(4, 51, "HTTP/1.1 204 NO CONTENT\r\n\r\n"),
                read(4, 60, GET_A),
                write(
                    4,
                    61,
                    "HTTP/1.1 304 NOT MODIFIED\r\nContent-Length: 9\r\n\r\n",
                ),
                read(4, 70, GET_B),
                write(4, 71, OK),
            ],
            "GET /a HTTP/1.1 302 in=28 out=55 @10 +1 ip=-
             GET /a HTTP/1.1 404 in=28 out=48 @20 +1 ip=-
             GET /a HTTP/1.1 500 in=28 out=58 @30 +1 ip=-
             HEAD /a HTTP/1.1 200 in=20 out=38 @40 +1 ip=-
             DELETE /a HTTP/1.1 204 in=22 out=27 @50 +1 ip=-
             GET /a HTTP/1.1 304 in=28 out=48 @60 +1 ip=-
             GET /b HTTP/1.1 200 in=28 out=40 @70 +1 ip=-
             open=1 requests=7",
        );
    }

    #[test]
    fn interim_and_upgrade_responses() {
        check(
            &[
                accept(4, 1, unix()),
                read(
                    4,
                    10,
                    "POST /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
                ),
                write(4, 11, "HTTP/1.1 100 Continue\r\n\r\n"),
                read(4, 12, "hi"),
                write(4, 13, OK),
            ],
            "POST /f HTTP/1.1 200 in=63 out=65 @10 +3 ip=-
             open=1 requests=1",
        );
        check(
            &[
                accept(4, 1, unix()),
                read(
                    4,
                    10,
                    "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                ),
                write(
                    4,
                    11,
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                ),
                read(
                    4,
                    12,
                    b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58".as_slice(),
                ),
                write(4, 13, b"\x81\x05hello".as_slice()),
                close(4, 20),
            ],
            "GET /ws HTTP/1.1 101 in=61 out=56 @10 +1 ip=-
             open=0 requests=1",
        );
    }

    #[test]
    fn uncopied_bytes() {
        // Body bytes past the copied prefix are counted over, and the stream stays in sync.
        let post = format!("{POST_5000}{}", "b".repeat(5000));
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n{}",
            "r".repeat(10000)
        );
        check(
            &[
                accept(4, 1, unix()),
                read_cut(4, 10, &post, 4096),
                write_cut(4, 11, &resp, 4096),
                read(4, 20, GET_A),
                write(4, 21, "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n"),
                sendfile(4, 22, 10000),
            ],
            "POST /big HTTP/1.1 200 in=5053 out=10042 @10 +1 ip=-
             GET /a HTTP/1.1 200 in=28 out=10042 @20 +2 ip=-
             open=1 requests=2",
        );
        // A head past the copied prefix cannot be parsed: the connection is dropped, not guessed.
        let long = format!("GET /h HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(5000));
        check(
            &[
                accept(4, 1, unix()),
                read_cut(4, 10, &long, 4096),
                write(4, 11, OK),
                read(4, 12, GET_A),
                write(4, 13, OK),
                close(4, 20),
            ],
            "open=0 desynced=1",
        );
        // The request before the lost head still gets its response.
        check(
            &[
                accept(4, 1, unix()),
                read_cut(4, 10, format!("{GET_A}{GET_B}"), 28),
                write(4, 11, OK),
                write(4, 12, OK),
                close(4, 20),
            ],
            "GET /a HTTP/1.1 200 in=28 out=40 @10 +1 ip=-
             open=0 requests=1 desynced=1",
        );
        // A response head in uncopied bytes (a write whose copy failed).
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                sendfile(4, 11, 40),
                close(4, 20),
            ],
            "open=0 desynced=1",
        );
    }

    #[test]
    fn answered_before_the_body_is_read() {
        // As gunicorn does for a POST to a GET-only route: 405 first, then it drains the body; the request
        // is emitted once its body is read, ending at its response.
        let body = "a".repeat(100);
        check(
            &[
                accept(4, 1, unix()),
                read(
                    4,
                    10,
                    format!(
                        "POST /r HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}",
                        &body[..30]
                    ),
                ),
                write(4, 11, NOT_FOUND),
                read(4, 12, &body[30..60]),
                read(4, 13, format!("{}{GET_A}", &body[60..])),
                write(4, 14, OK),
            ],
            "POST /r HTTP/1.1 404 in=141 out=48 @10 +1 ip=-
             GET /a HTTP/1.1 200 in=28 out=40 @13 +1 ip=-
             open=1 requests=2",
        );
        // The connection ends before the body is read: emitted then, still ending at its response.
        check(
            &[
                accept(4, 1, unix()),
                read(
                    4,
                    10,
                    format!(
                        "POST /r HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}",
                        &body[..30]
                    ),
                ),
                write(4, 11, NOT_FOUND),
                close(4, 20),
            ],
            "POST /r HTTP/1.1 404 in=71 out=48 @10 +1 ip=-
             open=0 requests=1",
        );
        // The next head straddles the copied prefix (seen with 10 kB POSTs to gunicorn): lost, not guessed.
        let tail = "a".repeat(4096 - 10);
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, "POST /r HTTP/1.1\r\nContent-Length: 4086\r\n\r\n"),
                write(4, 11, NOT_FOUND),
                read_cut(4, 12, format!("{tail}{GET_A}{}", "z".repeat(4000)), 4096),
                write(4, 13, OK),
                close(4, 20),
            ],
            "POST /r HTTP/1.1 404 in=4128 out=48 @10 +1 ip=-
             open=0 requests=1 desynced=1",
        );
    }

    #[test]
    fn unanswered_requests_are_aborted() {
        check(
            &[
                accept(4, 1, v6("2001:db8::1")),
                read(4, 10, GET_A),
                close(4, 25),
            ],
            "GET /a HTTP/1.1 0 in=28 out=0 @10 +15 ip=2001:db8::1
             open=0 requests=1 aborted=1",
        );
        // A response head cut off by the close: aborted at its last write.
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                write(4, 12, "HTTP/1.1 200 OK\r\n"),
                close(4, 25),
            ],
            "GET /a HTTP/1.1 0 in=28 out=17 @10 +2 ip=-
             open=0 requests=1 aborted=1",
        );
        // A body cut off by the close: the status is known, the end is the last write.
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                write(4, 12, OK_HEAD),
                write(4, 13, "o"),
                close(4, 25),
            ],
            "GET /a HTTP/1.1 200 in=28 out=39 @10 +3 ip=-
             open=0 requests=1",
        );
    }

    #[test]
    fn fd_reuse() {
        check(
            &[
                accept(5, 1, v4([1, 1, 1, 1])),
                read(5, 10, GET_A),
                // The close of conn 1 was lost; fd 5 is accepted again.
                accept(5, 20, v4([2, 2, 2, 2])).conn(2),
                read(5, 21, GET_B).conn(2),
                write(5, 22, OK).conn(2),
                // Reused again without an accept record: followed from its request line.
                read(5, 30, GET_A).conn(3),
                write(5, 31, OK).conn(3),
                close(5, 32).conn(3),
            ],
            "GET /a HTTP/1.1 0 in=28 out=0 @10 +0 ip=1.1.1.1
             GET /b HTTP/1.1 200 in=28 out=40 @21 +1 ip=2.2.2.2
             GET /a HTTP/1.1 200 in=28 out=40 @30 +1 ip=-
             open=0 requests=3 aborted=1",
        );
    }

    #[test]
    fn not_http() {
        let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x9b".as_slice();
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, tls),
                read(4, 11, tls),
                write(4, 12, tls),
                close(4, 13),
            ],
            "open=0 unparseable=1",
        );
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
                close(4, 13),
            ],
            "open=0 unparseable=1",
        );
        check(
            &[accept(4, 1, unix()), read(4, 10, "hello world\r\n\r\n")],
            "open=1 unparseable=1",
        );
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, "GET /a HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            ],
            "open=1 unparseable=1",
        );
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, "GET /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            ],
            "open=1 unparseable=1",
        );
        // A garbage response loses the requests waiting for it.
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                write(4, 11, "\x00\x01garbage"),
                close(4, 12),
            ],
            "open=0 unparseable=1",
        );
        // A malformed chunk.
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, cat(&[POST_CHUNKED, "zz\r\n"])),
                write(4, 11, OK),
            ],
            "POST /u HTTP/1.1 200 in=57 out=40 @10 +1 ip=-
             open=1 requests=1 unparseable=1",
        );
    }

    #[test]
    fn heads_longer_than_the_limit() {
        let limits = Limits {
            max_head: 64,
            ..Limits::default()
        };
        // Letters without a line end are a valid start of a method to httparse: only the cap stops them.
        let endless = "A".repeat(50);
        check_with(
            limits,
            &[
                accept(4, 1, unix()),
                read(4, 10, &endless),
                read(4, 11, &endless),
                read(4, 12, &endless),
            ],
            "open=1 unparseable=1",
        );
        let long = format!("GET /a HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(60));
        check_with(
            limits,
            &[accept(4, 1, unix()), read(4, 10, &long)],
            "open=1 unparseable=1",
        );
        check_with(
            limits,
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                write(4, 11, format!("HTTP/1.1 200 OK\r\nX: {long}")),
            ],
            "open=1 unparseable=1",
        );
    }

    #[test]
    fn pipeline_cap() {
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A.repeat(MAX_PIPELINE + 1)),
                write(4, 11, OK),
            ],
            "GET /a HTTP/1.1 200 in=28 out=40 @10 +1 ip=-
             open=1 requests=1 unparseable=1",
        );
    }

    #[test]
    fn process_exit() {
        check(
            &[
                accept(4, 1, unix()),
                accept(5, 1, unix()),
                accept(4, 1, unix()).pid(7),
                read(4, 10, GET_A),
                read(5, 11, GET_10),
                write(5, 12, PLAIN_10),
                write(5, 13, "streaming"),
                read(4, 14, GET_B).pid(7),
                exit(30),
            ],
            "GET /a HTTP/1.1 0 in=28 out=0 @10 +20 ip=-
             GET /s HTTP/1.0 200 in=19 out=54 @11 +2 ip=-
             open=1 requests=2 aborted=1",
        );
    }

    #[test]
    fn client_address() {
        // Forwarding headers count only from trusted proxies (by default loopback and unix sockets).
        check(
            &[
                accept(4, 1, v4([10, 0, 0, 1])),
                read(4, 10, "GET /a HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"),
                write(4, 11, OK),
                accept(6, 15, v4([127, 0, 0, 1])),
                read(6, 20, "GET /b HTTP/1.1\r\nX-Forwarded-For:  203.0.113.9 , 10.0.0.1\r\n\r\n"),
                write(6, 21, OK),
                read(6, 30, "GET /c HTTP/1.1\r\nX-Real-IP: 198.51.100.2\r\nX-Forwarded-For: 2001:db8::9\r\n\r\n"),
                write(6, 31, OK),
                read(6, 40, "GET /d HTTP/1.1\r\nX-Forwarded-For: \r\n\r\n"),
                write(6, 41, OK),
                accept(5, 50, unix()),
                read(5, 51, "GET /e HTTP/1.1\r\nX-Real-IP: 198.51.100.3\r\n\r\n"),
                write(5, 52, OK),
            ],
            "GET /a HTTP/1.1 200 in=49 out=40 @10 +1 ip=10.0.0.1
             GET /b HTTP/1.1 200 in=61 out=40 @20 +1 ip=10.0.0.1
             GET /c HTTP/1.1 200 in=74 out=40 @30 +1 ip=2001:db8::9
             GET /d HTTP/1.1 200 in=38 out=40 @40 +1 ip=127.0.0.1
             GET /e HTTP/1.1 200 in=44 out=40 @51 +1 ip=198.51.100.3
             open=3 requests=5",
        );
    }

    #[test]
    fn users_and_proxies_follow_the_config() {
        use crate::identity::{Extractor, ProxiesConfig, Trusted, UsersConfig};
        let identify = Identify {
            users: UsersConfig {
                extract: vec![
                    Extractor::Header {
                        name: "X-User".into(),
                    },
                    Extractor::Query { name: "u".into() },
                ],
            },
            proxies: ProxiesConfig {
                trusted: vec![Trusted::parse("10.0.0.0/8").expect("net")],
            },
        };
        let mut asm = Assembler::new(Limits::default(), 0).with_identify(identify);
        let out = run(
            &mut asm,
            &[
                accept(4, 1, v4([10, 0, 0, 1])),
                read(
                    4,
                    10,
                    "GET /a?x=1 HTTP/1.1\r\nX-User: ann\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
                ),
                write(4, 11, OK),
                accept(5, 20, v4([127, 0, 0, 1])),
                read(
                    5,
                    21,
                    "GET /b?u=bob HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
                ),
                write(5, 22, OK),
                accept(6, 30, unix()),
                read(
                    6,
                    31,
                    "GET /c HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
                ),
                write(6, 32, OK),
            ],
        );
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.user.as_deref(), r.remote_ip.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("ann"), Some("203.0.113.9")),
                (Some("bob"), Some("127.0.0.1")),
                (None, None)
            ]
        );
    }

    #[test]
    fn peer_addresses() {
        let cases: &[(Sockaddr, Peer)] = &[
            (
                v4([192, 168, 1, 20]),
                Peer::Ip("192.168.1.20".parse().unwrap()),
            ),
            (
                v6("2001:db8::42"),
                Peer::Ip("2001:db8::42".parse().unwrap()),
            ),
            (v6("::ffff:10.1.2.3"), Peer::Ip("10.1.2.3".parse().unwrap())),
            (unix(), Peer::Unix),
            ((0, vec![]), Peer::Unknown),
            ((4, v4([1, 2, 3, 4]).1), Peer::Unknown),
            ((16, v6("::1").1[..12].to_vec()), Peer::Unknown),
            (sockaddr(17, 20, 4, &[1, 2, 3, 4], 0), Peer::Unknown),
        ];
        for ((len, raw), expect) in cases {
            assert_eq!(&decode_peer(*len, raw), expect, "len {len} raw {raw:?}");
        }
    }

    #[test]
    fn targets() {
        let cases = [
            ("/a/b", "/a/b", None),
            ("/a?x=1&y=%20", "/a", Some("x=1&y=%20")),
            ("/a?", "/a", Some("")),
            ("*", "*", None),
            ("http://example.com/p?q", "/p", Some("q")),
            ("HTTPS://example.com", "/", None),
            ("http://example.com?q", "/", Some("q")),
        ];
        for (target, path, query) in cases {
            assert_eq!(
                split_target(target),
                (path.to_owned(), query.map(str::to_owned)),
                "{target}"
            );
        }
    }

    #[test]
    fn connections_seen_mid_way() {
        check(
            &[
                write(9, 5, "tail of a response"),
                read(9, 6, "ody of an upload"),
                read(9, 7, "GET"),
                read(9, 10, "GET /a?z HTTP/1.1\r\nHost: app\r\n\r\n"),
                write(9, 11, OK),
                close(9, 12),
                close(10, 13),
            ],
            "GET /a?z HTTP/1.1 200 in=32 out=40 @10 +1 ip=- host=app
             open=0 requests=1 orphans=3",
        );
    }

    #[test]
    fn idle_expiry() {
        let limits = Limits {
            idle_timeout_ns: 1_000_000,
            ..Limits::default()
        };
        check_with(
            limits,
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_A),
                accept(5, 500, unix()),
                read(5, 600, GET_10),
                write(5, 700, PLAIN_10),
                tick(1010),
                tick(1011),
                tick(1699),
                tick(1701),
            ],
            "GET /a HTTP/1.1 0 in=28 out=0 @10 +0 ip=-
             GET /s HTTP/1.0 200 in=19 out=45 @600 +100 ip=-
             open=0 requests=2 aborted=1",
        );
    }

    #[test]
    fn connection_cap_evicts_least_recently_active() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        check_with(
            limits,
            &[
                accept(1, 1, unix()),
                accept(2, 2, unix()),
                read(1, 10, GET_A),
                read(2, 11, GET_B),
                write(1, 12, OK_HEAD),
                accept(3, 20, unix()),
                write(1, 21, "ok"),
                write(2, 22, OK),
            ],
            "GET /b HTTP/1.1 0 in=28 out=0 @11 +0 ip=-
             GET /a HTTP/1.1 200 in=28 out=40 @10 +11 ip=-
             open=2 requests=2 aborted=1 evicted=1 orphans=1",
        );
    }

    #[test]
    fn daemon_shutdown() {
        check(
            &[
                accept(4, 1, unix()),
                read(4, 10, GET_10),
                write(4, 11, PLAIN_10),
                write(4, 12, "x"),
                accept(5, 1, unix()),
                read(5, 20, GET_A),
                finish(),
            ],
            "GET /s HTTP/1.0 200 in=19 out=46 @10 +2 ip=-
             open=0 requests=1",
        );
    }

    #[test]
    fn wall_clock_and_kept_head() {
        let limits = Limits {
            keep_head: 32,
            ..Limits::default()
        };
        let offset = 1_700_000_000_000_000_000;
        let mut asm = Assembler::new(limits, offset);
        let out = run(
            &mut asm,
            &[
                accept(4, 1, unix()),
                read(4, 10, cat(&[POST_10, "0123456789"])),
                write(4, 11, OK),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ts_us, 1_700_000_000_000_010);
        assert_eq!(out[0].duration_ns, 1000);
        assert_eq!(out[0].head, POST_10.as_bytes()[..32]);
        let mut asm = Assembler::new(Limits::default(), offset);
        let out = run(
            &mut asm,
            &[
                accept(4, 1, unix()),
                read(4, 10, cat(&[POST_10, "0123456789"])),
                write(4, 11, OK),
            ],
        );
        assert_eq!(out[0].head, cat(&[POST_10, "0123456789"]).as_bytes());
        assert_eq!(
            (out[0].endpoint.as_deref(), out[0].rule.as_deref()),
            (None, None)
        );
        assert_eq!(wall_us(5_000, -10_000), -5);
        assert_eq!(wall_us(0, -1), -1);
    }

    /// xorshift64*: deterministic randomness without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// Cuts `s` into 1..=4 pieces at random points.
        fn split<'a>(&mut self, s: &'a [u8]) -> Vec<&'a [u8]> {
            let mut cuts: Vec<usize> = (0..self.below(4))
                .map(|_| self.below(s.len() + 1))
                .collect();
            cuts.push(0);
            cuts.push(s.len());
            cuts.sort_unstable();
            cuts.dedup();
            cuts.windows(2).map(|w| &s[w[0]..w[1]]).collect()
        }
    }

    #[test]
    fn random_records_never_panic_and_stay_bounded() {
        let limits = Limits {
            max_head: 300,
            max_connections: 6,
            idle_timeout_ns: 50_000,
            keep_head: 64,
        };
        let fragments: &[&[u8]] = &[
            GET_A.as_bytes(),
            OK.as_bytes(),
            POST_CHUNKED.as_bytes(),
            CHUNKED_HEAD.as_bytes(),
            b"5\r\nhello\r\n",
            b"0\r\n\r\n",
            b"\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"GET ",
            b"Content-Length: 99999999\r\n",
            b"\x16\x03\x01",
        ];
        let mut seen = Counters::default();
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut asm = Assembler::new(limits, 0);
            let mut out = Vec::new();
            let mut t = 0;
            for _ in 0..3000 {
                t += rng.below(3000) as u64;
                let kind = [
                    kind::ACCEPT,
                    kind::READ,
                    kind::READ,
                    kind::WRITE,
                    kind::WRITE,
                    kind::CLOSE,
                    kind::SHUTDOWN,
                    kind::EXIT,
                    kind::FORK,
                    99,
                ][rng.below(10)];
                let mut data = Vec::new();
                for _ in 0..rng.below(4) {
                    if rng.below(3) == 0 {
                        data.extend((0..rng.below(200)).map(|_| rng.next() as u8));
                    } else {
                        let f = fragments[rng.below(fragments.len())];
                        let a = rng.below(f.len() + 1);
                        data.extend_from_slice(&f[a.min(rng.below(3) * f.len())..]);
                    }
                }
                let len = data.len() as u64
                    + if rng.below(4) == 0 {
                        rng.next() % 10_000
                    } else {
                        0
                    };
                let h = EventHeader {
                    kind,
                    tgid: 1 + rng.below(2) as u32,
                    tid: 9,
                    fd: rng.below(10) as i32,
                    ts_ns: t,
                    conn_ts: rng.below(3) as u64,
                    len,
                    copied: data.len() as u32,
                    _pad: 0,
                };
                asm.push(&h, &data, &mut out);
                if rng.below(50) == 0 {
                    asm.expire(t, &mut out);
                }
                let open = asm.open_connections();
                assert!(
                    open <= limits.max_connections,
                    "seed {seed}: {open} connections"
                );
                let bound = open * (4 * limits.max_head + MAX_PIPELINE * 2 * limits.keep_head);
                assert!(
                    asm.buffered() <= bound,
                    "seed {seed}: {} bytes buffered",
                    asm.buffered()
                );
                out.clear();
            }
            asm.finish_all(&mut out);
            assert_eq!(asm.open_connections(), 0);
            assert_eq!(asm.buffered(), 0);
            let c = asm.counters();
            seen.requests += c.requests;
            seen.unparseable += c.unparseable;
            seen.desynced += c.desynced;
            seen.evicted += c.evicted;
            seen.orphan_events += c.orphan_events;
        }
        // The generator must reach every way of giving up, or the test proves little.
        for (name, n) in [
            ("requests", seen.requests),
            ("unparseable", seen.unparseable),
            ("desynced", seen.desynced),
            ("evicted", seen.evicted),
            ("orphan_events", seen.orphan_events),
        ] {
            assert!(n > 0, "no {name} in any run: {seen:?}");
        }
    }

    #[test]
    fn random_splits_of_valid_traffic() {
        // (request bytes, response bytes, method, status)
        let post = cat(&[POST_10, "0123456789"]);
        let chunked_post = cat(&[
            POST_CHUNKED,
            "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
        ]);
        let chunked_resp = cat(&[CHUNKED_HEAD, "5\r\nhello\r\n", "2\r\n!!\r\n", "0\r\n\r\n"]);
        let exchanges: [(&str, &str, &str, u16); 5] = [
            (GET_A, OK, "GET", 200),
            (&post, NOT_FOUND, "POST", 404),
            (&chunked_post, &chunked_resp, "POST", 200),
            (GET_B, FOUND, "GET", 302),
            ("HEAD /a HTTP/1.1\r\n\r\n", OK_HEAD, "HEAD", 200),
        ];
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
            let picked: Vec<_> = (0..1 + rng.below(6))
                .map(|_| exchanges[rng.below(exchanges.len())])
                .collect();
            let pipelined = rng.below(2) == 0;
            let mut events = vec![accept(4, 0, unix())];
            let mut t = 1;
            let reads = |rng: &mut Rng, s: &str, events: &mut Vec<Ev>, t: &mut u64| {
                for piece in rng.split(s.as_bytes()) {
                    *t += 1;
                    events.push(read(4, *t, piece));
                }
            };
            if pipelined {
                let all: String = picked.iter().map(|e| e.0).collect();
                reads(&mut rng, &all, &mut events, &mut t);
            }
            for e in &picked {
                if !pipelined {
                    reads(&mut rng, e.0, &mut events, &mut t);
                }
                for piece in rng.split(e.1.as_bytes()) {
                    t += 1;
                    events.push(write(4, t, piece));
                }
            }
            let mut asm = Assembler::new(Limits::default(), 0);
            let out = run(&mut asm, &events);
            let got: Vec<_> = out
                .iter()
                .map(|r| (r.method.as_str(), r.status, r.bytes_in, r.bytes_out))
                .collect();
            let want: Vec<_> = picked
                .iter()
                .map(|e| (e.2, e.3, e.0.len() as u64, e.1.len() as u64))
                .collect();
            assert_eq!(got, want, "seed {seed}, pipelined {pipelined}");
            assert_eq!(
                asm.counters(),
                Counters {
                    requests: picked.len() as u64,
                    ..Counters::default()
                }
            );
        }
    }
}
