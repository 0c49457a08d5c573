//! Command-line subcommands of fmd-daemon besides running the daemon itself: `query requests`,
//! `query endpoints` and `query stats` over a database, whether a daemon is running on it or not.

mod endpoints;
mod exceptions;
mod levels;
mod outliers;
mod profile;
mod query;
mod users;
mod versions;

pub use self::{
    endpoints::{describe_endpoints, write_endpoints},
    levels::{run_level, LevelArgs},
    outliers::{write_outliers, OutliersArgs},
    query::{
        run_query, write_requests, write_stats, Format, QueryArgs, QueryCommand, RequestsArgs,
        DEFAULT_DB,
    },
    users::{run_user, UserArgs},
    versions::write_versions,
};
