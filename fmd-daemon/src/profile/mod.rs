//! Level-3 profiling: ties the sampler's Python stacks to the requests their threads were serving, and turns
//! per-request samples into FMD's views (a request's execution tree, an endpoint's merged profile).

pub mod attribution;
pub mod collector;
pub mod tree;
pub mod trim;

pub use attribution::{Attributor, FrameId, ProfiledRequest, Sample};
pub use collector::Collector;
pub use tree::{
    folded, grouped, request_tree, GroupedLine, GroupedProfile, Node, StackWeight, TreeNode,
};

/// How the sampler weighs time.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ProfileMode {
    /// On-CPU samples plus each off-CPU stretch (sleep, socket, lock) at its real length: request wall time.
    #[default]
    Wall,
    /// On-CPU samples only.
    Cpu,
}
