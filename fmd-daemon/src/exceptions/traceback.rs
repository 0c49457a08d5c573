//! Recognises Python tracebacks in a stream of log text, as `logging` (Flask's default handler, gunicorn's
//! error log, a `FileHandler`, a `SysLogHandler`) writes them: `Traceback (most recent call last):`, the
//! frames (`  File "f", line N, in fn`, their source line, 3.11+ caret lines), the exception line, and the
//! chained exceptions before it ("During handling of the above exception..." / "The above exception was
//! the direct cause..."). Pure logic over bytes, fed write by write; every buffer is bounded.
//!
//! A log record is written by one write() (a handler formats the whole record, traceback last, then
//! flushes), so the end of a write ends the exception's message: lines after it in the same write are
//! message lines (multi-line messages, 3.11+ notes), lines in a later write are not.

use serde::{Deserialize, Serialize};

const HEADER: &str = "Traceback (most recent call last):";
const GROUP_HEADER: &str = "Exception Group Traceback (most recent call last):";
const CONTEXT: &str = "During handling of the above exception, another exception occurred:";
const CAUSE: &str = "The above exception was the direct cause of the following exception:";

/// Longest line kept; the rest of a longer line is dropped (a frame or message line this long is garbage).
const MAX_LINE: usize = 8 * 1024;
/// Frames kept per exception (Python prints at most ~1000, collapsing repeats).
const MAX_FRAMES: usize = 256;
/// Exceptions kept per chain.
const MAX_CHAIN: usize = 16;
/// Bytes kept of a message.
const MAX_MESSAGE: usize = 4 * 1024;

/// One frame as Python printed it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub file: String,
    pub line: u32,
    pub function: String,
    /// The source line Python printed under the frame, stripped; `None` when it printed none.
    pub code: Option<String>,
}

/// How an exception of a chain relates to the one printed before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relation {
    /// "During handling of the above exception, another exception occurred" (`__context__`).
    Context,
    /// "The above exception was the direct cause of the following exception" (`raise ... from`).
    Cause,
}

/// One exception of a chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// The type as printed: `KeyError`, `json.decoder.JSONDecodeError`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Everything after `Type: `, lines joined with `\n`; empty when the exception had no message.
    pub message: String,
    /// Outermost call first, as printed.
    pub frames: Vec<Frame>,
    /// How this exception relates to the previous one of its chain; `None` for the first.
    pub relation: Option<Relation>,
}

/// A logged traceback: the chain oldest first, so the last exception is the one that propagated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traceback {
    pub chain: Vec<Exception>,
    /// When the write holding its first line was made ([`Recogniser::set_time`]).
    pub ts_ns: u64,
}

impl Traceback {
    /// The exception that propagated (the last one printed).
    pub fn raised(&self) -> Option<&Exception> {
        self.chain.last()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Outside a traceback.
    Idle,
    /// After a header: frames until the exception line.
    Frames,
    /// After the exception line, in the same write: further lines continue the message.
    Message,
    /// After the message: a chain separator continues the traceback, anything else ends it.
    AfterMessage,
    /// After a chain separator: the next traceback header continues the chain.
    Chained(Relation),
}

/// Counters of what could not be recognised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecogniserCounters {
    /// Tracebacks cut off before their exception line (a gap in the copy, or a truncated write).
    pub incomplete: u64,
    /// Lines longer than the bound, cut.
    pub long_lines: u64,
}

/// The streaming recogniser of one writer (thread and descriptor).
#[derive(Debug)]
pub struct Recogniser {
    state: State,
    /// An exception group's frames and exception line are prefixed with `  | `.
    group: bool,
    line: Vec<u8>,
    line_cut: bool,
    chain: Vec<Exception>,
    current: Exception,
    /// The current exception's pending frame is waiting for its source line.
    frame_open: bool,
    done: Vec<Traceback>,
    /// Time of the write being fed, and of the one the traceback in progress started in.
    now_ns: u64,
    started_ns: u64,
    pub counters: RecogniserCounters,
}

impl Default for Recogniser {
    fn default() -> Self {
        Self {
            state: State::Idle,
            group: false,
            line: Vec::new(),
            line_cut: false,
            chain: Vec::new(),
            current: Exception::default(),
            frame_open: false,
            done: Vec::new(),
            now_ns: 0,
            started_ns: 0,
            counters: RecogniserCounters::default(),
        }
    }
}

impl Recogniser {
    /// The time of the write fed next: a traceback is dated by the write its header is in.
    pub fn set_time(&mut self, ts_ns: u64) {
        self.now_ns = ts_ns;
    }

    /// When the traceback in progress started; `None` when none is.
    pub fn in_progress_since(&self) -> Option<u64> {
        (self.state != State::Idle).then_some(self.started_ns)
    }

    /// Feeds the bytes of a write (or a piece of one).
    pub fn feed(&mut self, bytes: &[u8]) {
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let (body, complete) = match chunk.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (chunk, false),
            };
            let room = MAX_LINE.saturating_sub(self.line.len());
            if body.len() > room {
                self.line.extend_from_slice(&body[..room]);
                self.line_cut = true;
            } else {
                self.line.extend_from_slice(body);
            }
            if complete {
                self.complete_line();
            }
        }
    }

    /// The write ended. A record ends with a newline (logging's terminator) or a NUL (a syslog datagram):
    /// then the message of a traceback is over. A write ending mid-line is a record cut by a buffer; the
    /// line continues in the next write.
    pub fn end_of_write(&mut self) {
        if self.line.last() == Some(&0) {
            self.complete_line();
        }
        if self.line.is_empty() && self.state == State::Message {
            self.state = State::AfterMessage;
        }
    }

    /// Bytes were lost before what comes next: a traceback in progress is dropped.
    pub fn gap(&mut self) {
        self.line.clear();
        self.line_cut = false;
        if self.state == State::Frames || matches!(self.state, State::Chained(_)) {
            self.counters.incomplete += 1;
            self.reset();
        } else {
            self.finish_traceback();
        }
    }

    /// Ends whatever is in progress (the request is over) and returns the tracebacks found.
    pub fn finish(&mut self) -> Vec<Traceback> {
        if !self.line.is_empty() {
            self.complete_line();
        }
        self.end_of_write();
        match self.state {
            State::Idle => {}
            State::Frames => {
                self.counters.incomplete += 1;
                self.reset();
            }
            State::Message | State::AfterMessage | State::Chained(_) => self.finish_traceback(),
        }
        std::mem::take(&mut self.done)
    }

    /// Tracebacks completed so far (those still in progress stay).
    pub fn take(&mut self) -> Vec<Traceback> {
        std::mem::take(&mut self.done)
    }

    /// Whether nothing is buffered (no partial line, no traceback in progress).
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle && self.line.is_empty() && self.done.is_empty()
    }

    fn complete_line(&mut self) {
        if self.line_cut {
            self.counters.long_lines += 1;
            self.line_cut = false;
        }
        let bytes = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&bytes);
        // Syslog records end with NUL; CRLF from some handlers.
        let text = text.trim_end_matches(['\r', '\0']);
        self.on_line(text);
        // Keep the allocation.
        self.line = bytes;
        self.line.clear();
    }

    fn on_line(&mut self, line: &str) {
        match self.state {
            State::Idle => self.idle_line(line),
            State::Frames => self.frame_line(line),
            State::Message => {
                if line.is_empty() || self.strip_group(line).is_none() {
                    self.state = State::AfterMessage;
                    if !line.is_empty() {
                        self.on_line(line);
                    }
                } else if is_header(line) {
                    self.finish_traceback();
                    self.idle_line(line);
                } else if self.current.message.len() < MAX_MESSAGE {
                    let line = self.strip_group(line).unwrap_or(line);
                    self.current.message.push('\n');
                    push_bounded(&mut self.current.message, line);
                }
            }
            State::AfterMessage => match line {
                "" => {}
                CONTEXT => self.state = State::Chained(Relation::Context),
                CAUSE => self.state = State::Chained(Relation::Cause),
                _ => {
                    self.finish_traceback();
                    self.idle_line(line);
                }
            },
            State::Chained(_) if line.is_empty() => {}
            State::Chained(relation) => {
                if line == HEADER && self.chain.len() < MAX_CHAIN {
                    let done = std::mem::take(&mut self.current);
                    self.chain.push(done);
                    self.current.relation = Some(relation);
                    self.frame_open = false;
                    self.state = State::Frames;
                } else {
                    self.finish_traceback();
                    self.idle_line(line);
                }
            }
        }
    }

    fn idle_line(&mut self, line: &str) {
        // A prefix is allowed (a syslog priority, a formatter that puts the traceback on the message line).
        if line.contains(GROUP_HEADER) {
            self.start(true);
        } else if line.contains(HEADER) {
            self.start(false);
        }
    }

    fn start(&mut self, group: bool) {
        self.reset();
        self.group = group;
        self.state = State::Frames;
        self.started_ns = self.now_ns;
    }

    /// An exception group's own lines carry `  | `; its sub-exceptions are nested deeper and skipped.
    fn strip_group<'a>(&self, line: &'a str) -> Option<&'a str> {
        if !self.group {
            return Some(line);
        }
        line.strip_prefix("  | ")
            .or_else(|| (line == "  |").then_some(""))
    }

    fn frame_line(&mut self, line: &str) {
        let Some(line) = self.strip_group(line) else {
            // Sub-exceptions of a group (`  +-+---- 1 ----`, `    | ...`): not part of the group's frames.
            return;
        };
        if let Some(rest) = line.strip_prefix("  File \"") {
            self.frame_open = false;
            if let Some(frame) = parse_frame(rest) {
                if self.current.frames.len() < MAX_FRAMES {
                    self.current.frames.push(frame);
                    self.frame_open = true;
                }
            }
            // `  File "x.py", line 3` without `, in` is a SyntaxError's location, not a frame.
            return;
        }
        if line.starts_with(' ') || line.is_empty() {
            // Source lines are indented by four; `  [Previous line repeated N more times]` by two.
            let code = line.trim();
            if self.frame_open && line.starts_with("    ") && !is_caret_line(code) {
                if let Some(frame) = self.current.frames.last_mut() {
                    if frame.code.is_none() {
                        frame.code = Some(code.to_owned());
                    }
                }
                // 3.13 may print several lines of one statement: the first is the frame's line.
                self.frame_open = false;
            }
            return;
        }
        match parse_exception_line(line) {
            Some((type_name, message)) => {
                self.current.type_name = type_name.to_owned();
                self.current.message.clear();
                push_bounded(&mut self.current.message, message);
                self.state = State::Message;
            }
            None => {
                // Not a traceback after all (or one cut by interleaved output).
                self.counters.incomplete += 1;
                self.reset();
                self.idle_line(line);
            }
        }
    }

    fn finish_traceback(&mut self) {
        if matches!(
            self.state,
            State::Message | State::AfterMessage | State::Chained(_)
        ) {
            let mut chain = std::mem::take(&mut self.chain);
            chain.push(std::mem::take(&mut self.current));
            self.done.push(Traceback {
                chain,
                ts_ns: self.started_ns,
            });
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.state = State::Idle;
        self.group = false;
        self.chain.clear();
        self.current = Exception::default();
        self.frame_open = false;
    }
}

fn is_header(line: &str) -> bool {
    line.contains(HEADER)
}

fn push_bounded(to: &mut String, text: &str) {
    let room = MAX_MESSAGE.saturating_sub(to.len());
    if text.len() <= room {
        to.push_str(text);
    } else {
        let mut end = room;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        to.push_str(&text[..end]);
    }
}

/// `/path/app.py", line 12, in view` (after `  File "`).
fn parse_frame(rest: &str) -> Option<Frame> {
    let (file, rest) = rest.rsplit_once("\", line ")?;
    let (line, function) = rest.split_once(", in ")?;
    // Python prints `line None` for a frame without a line number.
    let line = if line == "None" {
        0
    } else {
        line.parse().ok()?
    };
    Some(Frame {
        file: file.to_owned(),
        line,
        function: function.to_owned(),
        code: None,
    })
}

/// 3.11+ position markers under a source line: `~~~^^^^`.
fn is_caret_line(code: &str) -> bool {
    code.chars().all(|c| matches!(c, '^' | '~' | ' '))
}

/// `module.Type: message` or `Type`; `None` when the line cannot be an exception line.
fn parse_exception_line(line: &str) -> Option<(&str, &str)> {
    let (type_name, message) = match line.split_once(": ") {
        Some((t, m)) => (t, m),
        None => (line.strip_suffix(':').unwrap_or(line), ""),
    };
    let valid = !type_name.is_empty()
        && type_name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        });
    valid.then_some((type_name, message))
}

#[cfg(test)]
mod tests;
