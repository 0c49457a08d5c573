//! Exceptions the app logs while serving a request, with no code in the app: BPF copies what a serving
//! thread writes to its log descriptors (stderr, log files, a syslog socket), `traceback` recognises
//! Python tracebacks in it, `collector` ties them to the request that thread served and groups them by
//! `fingerprint`, and `source` adds the app's source lines around each frame.

pub mod collector;
pub mod fingerprint;
pub mod source;
pub mod traceback;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use self::collector::Collector;
use self::{source::SourceLine, traceback::Relation};

/// An exception logged while a request was served, as stored with that request.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    /// The group: [`fingerprint::fingerprint`] of its traceback.
    pub group: String,
    pub type_name: String,
    pub message: String,
    /// The traceback with source context ([`Detail`] as JSON), shared by a group's occurrences.
    pub detail: Arc<str>,
    /// The exception the request raised: the last traceback logged while it was served.
    pub raised: bool,
}

/// A frame as shown: where, the line Python printed, and the app's source lines around it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetailFrame {
    pub file: String,
    pub line: u32,
    pub function: String,
    pub code: Option<String>,
    /// Source lines around `line` read from the app's file (empty when it could not be read).
    pub context: Vec<SourceLine>,
}

/// An earlier exception of a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetailException {
    #[serde(rename = "type")]
    pub type_name: String,
    pub message: String,
    /// How the exception after this one relates to it (`context`: raised while handling it, `cause`:
    /// `raise ... from` it).
    pub relation: Option<Relation>,
    pub frames: Vec<DetailFrame>,
}

/// What a group shows besides its counts: the raised exception's frames and the chain before it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    pub frames: Vec<DetailFrame>,
    /// Earlier exceptions, oldest first ("During handling of the above exception..." / "The above
    /// exception was the direct cause...").
    pub chain: Vec<DetailException>,
}
