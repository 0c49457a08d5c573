//! A raw HTTP/1.x client for the tests: it controls what the capture must cope with (keep-alive,
//! pipelining, heads split over several writes, HTTP/1.0, unix sockets) and measures each request's
//! latency from its first byte written to its last byte read, the upper bound for fmd's `duration_ms`.

use std::{
    io::{self, Read, Write},
    net::TcpStream,
    os::unix::net::UnixStream,
    path::Path,
    thread,
    time::{Duration, Instant},
};

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// `HTTP/1.1` (default) or `HTTP/1.0`.
    pub version: &'static str,
    /// Ask the server to close after the response.
    pub close: bool,
}

impl Req {
    pub fn get(target: &str) -> Self {
        Self {
            method: "GET".into(),
            target: target.into(),
            body: vec![],
            headers: vec![],
            version: "HTTP/1.1",
            close: false,
        }
    }

    pub fn post(target: &str, body: &[u8]) -> Self {
        Self {
            method: "POST".into(),
            body: body.to_vec(),
            ..Self::get(target)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn http10(mut self) -> Self {
        self.version = "HTTP/1.0";
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} {}\r\nHost: fmd-test\r\nUser-Agent: fmd-tests/1\r\n",
            self.method, self.target, self.version
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !self.body.is_empty() || self.method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if self.close {
            head.push_str("Connection: close\r\n");
        } else if self.version == "HTTP/1.0" {
            head.push_str("Connection: keep-alive\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// What came back, and how long it took as the client saw it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub latency: Duration,
    /// The server will close the connection (or did).
    pub closed: bool,
    /// Response headers, names in lowercase, in order.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The first header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn tcp(addr: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: Stream::Tcp(stream),
            buf: vec![],
        })
    }

    pub fn unix(path: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            stream: Stream::Unix(stream),
            buf: vec![],
        })
    }

    /// Sends `req` and reads its response.
    pub fn send(&mut self, req: &Req) -> io::Result<Answer> {
        let start = Instant::now();
        self.stream.write_all(&req.bytes())?;
        self.read_answer(req, start)
    }

    /// Sends `req` in `pieces` writes a few milliseconds apart, so the head arrives in several reads.
    pub fn send_split(&mut self, req: &Req, pieces: usize) -> io::Result<Answer> {
        let bytes = req.bytes();
        let size = bytes.len().div_ceil(pieces.max(1));
        let start = Instant::now();
        for piece in bytes.chunks(size) {
            self.stream.write_all(piece)?;
            thread::sleep(Duration::from_millis(15));
        }
        self.read_answer(req, start)
    }

    /// Writes all `reqs` at once, then reads their responses in order.
    pub fn pipeline(&mut self, reqs: &[Req]) -> io::Result<Vec<Answer>> {
        let start = Instant::now();
        let all: Vec<u8> = reqs.iter().flat_map(Req::bytes).collect();
        self.stream.write_all(&all)?;
        reqs.iter().map(|r| self.read_answer(r, start)).collect()
    }

    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    fn read_answer(&mut self, req: &Req, start: Instant) -> io::Result<Answer> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let closed = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || (status_line.starts_with("HTTP/1.0")
                && !header("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")));
        let body = if req.method == "HEAD" || status == 204 || status == 304 {
            vec![]
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while self.buf.len() < len {
                if !self.fill()? {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                }
            }
            self.buf.drain(..len).collect()
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.read_chunked()?
        } else {
            while self.fill()? {}
            std::mem::take(&mut self.buf)
        };
        Ok(Answer {
            status,
            body,
            latency: start.elapsed(),
            closed,
            headers,
        })
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = vec![];
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if !self.fill()? {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short chunk"));
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {size_text:?}"),
                    )
                })?;
            while self.buf.len() < line_end + 2 + size + 2 {
                if !self.fill()? {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short chunk"));
                }
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
