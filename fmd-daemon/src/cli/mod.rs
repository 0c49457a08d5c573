//! Command-line subcommands of fmd-daemon besides running the daemon itself: `query requests`,
//! `query endpoints` and `query stats` over a database, whether a daemon is running on it or not.

mod endpoints;
mod profile;
mod query;
mod users;

pub use self::{
    endpoints::{describe_endpoints, write_endpoints},
    query::{
        run_query, write_requests, write_stats, Format, QueryArgs, QueryCommand, RequestsArgs,
        DEFAULT_DB,
    },
    users::{run_user, UserArgs},
};
