//! Who a request comes from, read from its head as the assembler parses it: the user (configurable
//! extractors, `users`) and the client address behind trusted proxies (`proxies`). Pure functions over
//! header fields, so that every form is unit-tested.

pub mod proxies;
pub mod users;

pub use self::{
    proxies::{Forwarded, Peer, ProxiesConfig, Trusted},
    users::{Extractor, RequestParts, UsersConfig},
};

/// What the assembler needs to identify requests, built once from the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identify {
    pub users: UsersConfig,
    pub proxies: ProxiesConfig,
}

impl Identify {
    /// The forwarding headers of a head, kept until the connection's peer decides whether they count.
    pub fn forwarded(headers: &[httparse::Header<'_>]) -> Forwarded {
        let value = |name: &str| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Forwarded {
            forwarded: value("forwarded"),
            x_forwarded_for: value("x-forwarded-for"),
            x_real_ip: value("x-real-ip"),
        }
    }
}
