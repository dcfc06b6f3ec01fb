//! Which peers are our own proxies (`TRUSTED_PROXIES`), and the client address behind them.
//! Forwarding headers are believed only from a trusted peer, and only back to the first
//! address that is not itself a trusted proxy: anything left of it the client could have
//! written. Only the header our proxies write (`FORWARDED_HEADER`) is read, every line of it
//! in order: a client's own copy of the other header is never believed, and a second line
//! cannot hide the hop the proxy appended.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::AccessError;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

/// The forwarding header our proxies append the client's address to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx, Envoy, cloud load balancers, Kong, APISIX).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

impl ForwardedHeader {
    pub fn parse(s: &str) -> Result<Self, AccessError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            other => Err(AccessError::Limit(format!(
                "FORWARDED_HEADER must be x-forwarded-for or forwarded, got {other:?}"
            ))),
        }
    }

    /// The header's name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

impl TrustedProxies {
    /// Comma-separated addresses or CIDR blocks (`10.0.0.0/8, 127.0.0.1, fd00::/8`).
    pub fn parse(list: &str) -> Result<Self, AccessError> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| AccessError::Proxy(item.to_owned()))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client: the peer itself unless it is trusted; then the rightmost hop of `header`
    /// that is not a trusted proxy, reading all of the header's `lines` in order as one list
    /// (a line that is not text is an unreadable hop).
    pub fn client_ip(
        &self,
        peer: IpAddr,
        header: ForwardedHeader,
        lines: &[Option<&str>],
    ) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) || lines.is_empty() {
            return client;
        }
        let hops: Vec<Option<IpAddr>> = lines
            .iter()
            .flat_map(|line| match line {
                None => vec![None],
                Some(l) => l
                    .split(',')
                    .map(|el| match header {
                        ForwardedHeader::XForwardedFor => el.trim().parse().ok(),
                        ForwardedHeader::Forwarded => el
                            .split(';')
                            .find_map(|p| {
                                let (k, v) = p.split_once('=')?;
                                k.trim().eq_ignore_ascii_case("for").then_some(v)
                            })
                            .and_then(forwarded_node),
                    })
                    .collect(),
            })
            .collect();
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) => {
                    client = ip.to_canonical();
                    if !self.contains(client) {
                        break;
                    }
                }
                // An unreadable hop ends what can be believed.
                None => break,
            }
        }
        client
    }
}

/// `for=` values: `192.0.2.1`, `"192.0.2.1:8080"`, `"[2001:db8::1]:4711"`.
fn forwarded_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        use ForwardedHeader::{Forwarded, XForwardedFor};
        let t = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        let spoof = [Some("6.6.6.6")];
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), XForwardedFor, &spoof),
            ip("203.0.113.9")
        );
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), XForwardedFor, &spoof),
            ip("6.6.6.6")
        );
        // The client prepended a fake hop; the proxy appended the real one.
        assert_eq!(
            t.client_ip(
                ip("10.1.2.3"),
                XForwardedFor,
                &[Some("6.6.6.6, 198.51.100.7, 10.9.9.9")]
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            t.client_ip(
                ip("::ffff:127.0.0.1"),
                Forwarded,
                &[Some(
                    r#"for="[2001:db8::1]:4711";proto=https, for=10.0.0.5"#
                )]
            ),
            ip("2001:db8::1")
        );
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), XForwardedFor, &[Some("garbage, 10.0.0.1")]),
            ip("10.0.0.1")
        );
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("example.com").is_err());
    }

    #[test]
    fn a_second_header_line_cannot_hide_the_proxys_hop() {
        let t = TrustedProxies::parse("127.0.0.1").unwrap();
        // The client sent its own line; the proxy added a second with the real address.
        let lines = [Some("6.6.6.6"), Some("198.51.100.7")];
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), ForwardedHeader::XForwardedFor, &lines),
            ip("198.51.100.7")
        );
        let unreadable = [Some("6.6.6.6"), None];
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), ForwardedHeader::XForwardedFor, &unreadable),
            ip("127.0.0.1"),
            "an unreadable last line believes nothing"
        );
        assert!(ForwardedHeader::parse("Forwarded").is_ok());
        assert!(ForwardedHeader::parse("x-real-ip").is_err());
    }
}
