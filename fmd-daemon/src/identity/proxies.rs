//! A request's client address: the socket peer, unless the peer is a trusted proxy, in which case the
//! address it forwarded (`Forwarded: for=`, else `X-Forwarded-For`, else `X-Real-IP`). Headers from any
//! other peer are ignored: a client can write whatever it likes in them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("invalid trusted proxy {value:?}: give an address (10.0.0.1), a network (10.0.0.0/8) or \"unix\"")]
pub struct Error {
    value: String,
}

/// One entry of `[proxies] trusted`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trusted {
    /// An address or network: `10.0.0.0/8`, `::1`.
    Net { addr: IpAddr, prefix: u8 },
    /// Any unix-socket peer (a proxy on the same host, e.g. nginx in front of `--bind unix:...`).
    Unix,
}

impl Trusted {
    pub fn parse(value: &str) -> Result<Self, Error> {
        let err = || Error {
            value: value.to_owned(),
        };
        let value = value.trim();
        if value.eq_ignore_ascii_case("unix") {
            return Ok(Self::Unix);
        }
        let (addr, prefix) = match value.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| err())?)),
            None => (value, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(err());
        }
        Ok(Self::Net {
            addr: addr.to_canonical(),
            prefix,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let Self::Net { addr, prefix } = self else {
            return false;
        };
        match (addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Trusted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `[proxies]`: which peers may tell fmd the client's address.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxiesConfig {
    pub trusted: Vec<Trusted>,
}

impl Default for ProxiesConfig {
    fn default() -> Self {
        Self {
            // gunicorn's own default (`forwarded_allow_ips = "127.0.0.1,::1"`, unix sockets trusted): a
            // proxy on the same host, the usual nginx-in-front deployment, works without configuration,
            // and no remote client can forge its address.
            trusted: vec![
                Trusted::Net {
                    addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    prefix: 32,
                },
                Trusted::Net {
                    addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    prefix: 128,
                },
                Trusted::Unix,
            ],
        }
    }
}

/// The socket peer of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Ip(IpAddr),
    Unix,
    /// Accepted before fmd attached: nothing is known about it, so it is not trusted.
    Unknown,
}

/// The forwarding headers of a request, as raw values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    pub forwarded: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub x_real_ip: Option<String>,
}

impl Forwarded {
    pub fn is_empty(&self) -> bool {
        self.forwarded.is_none() && self.x_forwarded_for.is_none() && self.x_real_ip.is_none()
    }
}

impl ProxiesConfig {
    fn trusts(&self, peer: Peer) -> bool {
        match peer {
            Peer::Ip(ip) => self.trusted.iter().any(|t| t.contains(ip)),
            Peer::Unix => self.trusted.contains(&Trusted::Unix),
            Peer::Unknown => false,
        }
    }

    /// The client address to show. Through a chain of proxies, the nearest hop that is not itself a
    /// trusted proxy (the rightmost untrusted one: entries left of it could be written by the client).
    pub fn client_ip(&self, peer: Peer, headers: &Forwarded) -> Option<String> {
        let peer_ip = match peer {
            Peer::Ip(ip) => Some(ip.to_string()),
            Peer::Unix | Peer::Unknown => None,
        };
        if headers.is_empty() || !self.trusts(peer) {
            return peer_ip;
        }
        let hops: Vec<&str> = if let Some(f) = &headers.forwarded {
            forwarded_for(f)
        } else if let Some(x) = &headers.x_forwarded_for {
            x.split(',').map(str::trim).collect()
        } else {
            headers.x_real_ip.iter().map(|v| v.trim()).collect()
        };
        let mut last = peer_ip;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // `unknown` or an obfuscated identifier: nothing to show beyond the last hop known.
                return last;
            };
            if !self.trusts(Peer::Ip(ip)) {
                return Some(ip.to_string());
            }
            last = Some(ip.to_string());
        }
        last
    }
}

/// The `for=` values of a `Forwarded` header (RFC 7239), in order.
fn forwarded_for(value: &str) -> Vec<&str> {
    value
        .split(',')
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            })
        })
        .collect()
}

/// An address out of a hop: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest
            .split(']')
            .next()?
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(trusted: &[&str]) -> ProxiesConfig {
        ProxiesConfig {
            trusted: trusted
                .iter()
                .map(|t| Trusted::parse(t).expect("trusted"))
                .collect(),
        }
    }

    fn headers(forwarded: Option<&str>, xff: Option<&str>, real: Option<&str>) -> Forwarded {
        Forwarded {
            forwarded: forwarded.map(str::to_owned),
            x_forwarded_for: xff.map(str::to_owned),
            x_real_ip: real.map(str::to_owned),
        }
    }

    fn check(config: &ProxiesConfig, peer: Peer, h: &Forwarded, expect: Option<&str>) {
        assert_eq!(
            config.client_ip(peer, h).as_deref(),
            expect,
            "{peer:?} {h:?}"
        );
    }

    fn ip(s: &str) -> Peer {
        Peer::Ip(s.parse().expect("ip"))
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let c = ProxiesConfig::default();
        let xff = headers(None, Some("203.0.113.9, 10.0.0.1"), None);
        // A client on the internet cannot set its own address.
        check(&c, ip("198.51.100.7"), &xff, Some("198.51.100.7"));
        // The local proxy is trusted; 10.0.0.1 is not, so it is the client as far as fmd can tell.
        check(&c, ip("127.0.0.1"), &xff, Some("10.0.0.1"));
        check(&c, Peer::Unix, &xff, Some("10.0.0.1"));
        check(&c, Peer::Unknown, &xff, None);
        // With the inner proxy trusted too, the address it was given.
        let c2 = config(&["127.0.0.1", "10.0.0.0/8"]);
        check(&c2, ip("127.0.0.1"), &xff, Some("203.0.113.9"));
        check(&c2, Peer::Unix, &xff, None);
        // Every hop trusted: the leftmost.
        check(
            &c2,
            ip("10.1.2.3"),
            &headers(None, Some("10.9.9.9"), None),
            Some("10.9.9.9"),
        );
        // No headers: the peer.
        check(&c2, ip("10.1.2.3"), &Forwarded::default(), Some("10.1.2.3"));
        // Nothing trusted at all.
        check(&config(&[]), Peer::Unix, &xff, None);
    }

    #[test]
    fn header_forms() {
        let c = ProxiesConfig::default();
        let local = ip("::1");
        check(
            &c,
            local,
            &headers(
                Some("for=192.0.2.60;proto=http;by=203.0.113.43"),
                Some("1.1.1.1"),
                None,
            ),
            Some("192.0.2.60"),
        );
        check(
            &c,
            local,
            &headers(
                Some(r#"for="[2001:db8:cafe::17]:4711", For=198.51.100.17:80"#),
                None,
                None,
            ),
            Some("198.51.100.17"),
        );
        check(
            &c,
            local,
            &headers(Some("for=unknown"), None, None),
            Some("::1"),
        );
        check(
            &c,
            local,
            &headers(None, None, Some(" 198.51.100.2 ")),
            Some("198.51.100.2"),
        );
        check(
            &c,
            local,
            &headers(None, Some("::ffff:1.2.3.4"), None),
            Some("1.2.3.4"),
        );
        check(
            &c,
            local,
            &headers(None, Some("garbage"), None),
            Some("::1"),
        );
    }

    #[test]
    fn trusted_entries() {
        for bad in ["", "10.0.0.0/33", "::/129", "host.example", "10.0.0.1/x"] {
            assert!(Trusted::parse(bad).is_err(), "{bad}");
        }
        let net = Trusted::parse("10.0.0.0/8").expect("net");
        assert!(net.contains("10.255.0.1".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let all = Trusted::parse("0.0.0.0/0").expect("all");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let v6 = Trusted::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!v6.contains("2001:db9::1".parse().expect("ip")));
        let parsed: ProxiesConfig =
            toml::from_str("trusted = [\"unix\", \"192.168.0.0/16\"]").expect("toml");
        assert_eq!(parsed, config(&["unix", "192.168.0.0/16"]));
        assert!(toml::from_str::<ProxiesConfig>("trusted = [\"nope\"]").is_err());
    }
}
