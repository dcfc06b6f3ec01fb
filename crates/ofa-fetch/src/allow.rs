//! `IMAGE_URL_ALLOW`: which URLs may be fetched and which internal addresses are re-admitted.
//!
//! Empty, any `http`/`https` URL may be fetched, on any port, as long as every address it
//! connects to is public unicast. Otherwise a URL must match an entry:
//! - `host` or `host:port`: exactly that name (or that IP address, written as in the URL);
//! - `*.domain` or `*.domain:port`: any name below `domain`;
//! - a CIDR block, `10.0.0.0/8` or `[fd00::/8]:9000`: URLs that name an address inside it.
//!
//! An entry without a port admits ports 80 and 443 only. The addresses a fetch connects to
//! must still be public, unless an entry re-admits them on purpose: an address or CIDR entry
//! re-admits its addresses, and an exact `host` entry re-admits what its name resolves to
//! (`minio.storage.svc:9000`, an in-cluster store) except link-local, multicast, broadcast,
//! unspecified and reserved addresses, which only an address or CIDR entry can re-admit.

use std::net::IpAddr;

use ipnet::IpNet;
use reqwest::Url;

use crate::ranges::classify;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// A name, lower case, without a trailing dot.
    Exact(String),
    /// `.domain`: names ending with it.
    Below(String),
    Net(IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    pattern: Pattern,
    port: Option<u16>,
}

impl Entry {
    fn admits_port(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        }
    }
}

/// A malformed `IMAGE_URL_ALLOW` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("IMAGE_URL_ALLOW entry {entry:?}: {why}")]
pub struct AllowListError {
    pub entry: String,
    pub why: &'static str,
}

/// Why a URL or an address may not be fetched: a sentence for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Comma-separated entries (module docs); blanks are ignored.
    pub fn parse(list: &str) -> Result<Self, AllowListError> {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_entry)
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `url` may be fetched, before any connection: its scheme, no user info, its host
    /// and port against the entries, and an address written in it against the address rules.
    pub fn check_url(&self, url: &Url) -> Result<(), Forbidden> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Forbidden(format!(
                "only http and https image URLs are fetched, not {}:",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Forbidden(
                "image URLs with user info (user:password@) are refused: no credentials are sent"
                    .into(),
            ));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Forbidden("the image URL has no port".into()))?;
        let host = match url.host() {
            None => return Err(Forbidden("the image URL has no host".into())),
            Some(url::Host::Domain(d)) => Host::Name(normalise(d)),
            Some(url::Host::Ipv4(ip)) => Host::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Host::Ip(IpAddr::V6(ip).to_canonical()),
        };
        if !self.entries.is_empty() && !self.entries.iter().any(|e| e.admits(&host, port)) {
            let shown = match &host {
                Host::Name(n) => format!("{n}:{port}"),
                Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
                Host::Ip(ip) => format!("{ip}:{port}"),
            };
            return Err(Forbidden(format!(
                "{shown} is not admitted by IMAGE_URL_ALLOW"
            )));
        }
        match host {
            Host::Ip(ip) => self.check_address(ip, None),
            Host::Name(_) => Ok(()),
        }
    }

    /// Whether a fetch may connect to `ip`, which `name` resolved to (`None`: the URL wrote the
    /// address itself).
    pub fn check_address(&self, ip: IpAddr, name: Option<&str>) -> Result<(), Forbidden> {
        let ip = ip.to_canonical();
        let Some(special) = classify(ip) else {
            return Ok(());
        };
        let readmitted = self.entries.iter().any(|e| match &e.pattern {
            Pattern::Net(net) => net.contains(&ip),
            Pattern::Exact(n) => !special.hard && name.is_some_and(|m| normalise(m) == *n),
            Pattern::Below(_) => false,
        });
        if readmitted {
            return Ok(());
        }
        Err(Forbidden(match name {
            Some(n) => format!(
                "{n} resolves to {ip}, a {} address, which is not fetched unless IMAGE_URL_ALLOW re-admits it",
                special.name
            ),
            None => format!(
                "{ip} is a {} address, which is not fetched unless IMAGE_URL_ALLOW re-admits it",
                special.name
            ),
        }))
    }
}

enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Entry {
    fn admits(&self, host: &Host, port: u16) -> bool {
        let matches = match (&self.pattern, host) {
            (Pattern::Exact(n), Host::Name(h)) => n == h,
            (Pattern::Below(suffix), Host::Name(h)) => h.ends_with(suffix.as_str()),
            (Pattern::Net(net), Host::Ip(ip)) => net.contains(ip),
            _ => false,
        };
        matches && self.admits_port(port)
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn parse_entry(text: &str) -> Result<Entry, AllowListError> {
    let bad = |why| AllowListError {
        entry: text.to_owned(),
        why,
    };
    let net = |s: &str| {
        s.parse::<IpNet>()
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
            .map(|n| match n {
                // `::ffff:10.0.0.0/104` and `10.0.0.0/8` are the same block.
                IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                    Some(v4) if v6.prefix_len() >= 96 => {
                        ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                            .map(|n| IpNet::V4(n.trunc()))
                            .unwrap_or(IpNet::V6(v6.trunc()))
                    }
                    _ => IpNet::V6(v6.trunc()),
                },
                IpNet::V4(v4) => IpNet::V4(v4.trunc()),
            })
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0);
    // `[v6]` or `[v6/len]`, with or without `:port`.
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
        let net = net(inner).ok_or_else(|| bad("not an IPv6 address or CIDR block"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .and_then(port)
                    .ok_or_else(|| bad("the port must be 1 to 65535"))?,
            ),
        };
        return Ok(Entry {
            pattern: Pattern::Net(net),
            port,
        });
    }
    // A bare IPv6 address or block has colons of its own and no port.
    if let Some(n) = net(text) {
        return Ok(Entry {
            pattern: Pattern::Net(n),
            port: None,
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(port(p).ok_or_else(|| bad("the port must be 1 to 65535"))?),
        ),
        None => (text, None),
    };
    if let Some(n) = net(host) {
        return Ok(Entry {
            pattern: Pattern::Net(n),
            port,
        });
    }
    let (below, name) = match host.strip_prefix("*.") {
        Some(d) => (true, d),
        None => (false, host),
    };
    let name = normalise(name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(bad(
            "expected host, host:port, *.domain[:port], an IP address or a CIDR block",
        ));
    }
    Ok(Entry {
        pattern: if below {
            Pattern::Below(format!(".{name}"))
        } else {
            Pattern::Exact(name)
        },
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn ok(list: &str, u: &str) -> bool {
        AllowList::parse(list).unwrap().check_url(&url(u)).is_ok()
    }

    #[test]
    fn by_default_every_spelling_of_an_internal_address_is_refused() {
        for u in [
            "http://127.0.0.1:8080/",
            "http://2130706433:8080/",
            "http://0177.0.0.1:8080/",
            "http://0x7f.1:8080/",
            "http://127.1:8080/",
            "http://0:8080/",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://[::ffff:7f00:1]/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0xa9fea9fe/",
            "http://[fd00::1]/",
            "http://10.0.0.1./",
            "https://192.168.0.1/",
            "http://[64:ff9b::7f00:1]/",
        ] {
            assert!(!ok("", u), "{u} must be refused");
        }
        assert!(ok("", "http://8.8.8.8:8080/a.png"));
        assert!(ok("", "https://images.example.com/a.png"));
    }

    #[test]
    fn only_http_without_credentials() {
        for u in [
            "ftp://example.com/a.png",
            "file:///etc/passwd",
            "http://user:pass@example.com/a.png",
            "http://user@example.com/a.png",
        ] {
            assert!(!ok("", u), "{u}");
        }
    }

    #[test]
    fn entries_admit_their_hosts_and_only_their_ports() {
        let list = "cdn.example.com, *.images.example.org:8443, 127.0.0.1:9000, 10.0.0.0/8";
        assert!(ok(list, "https://cdn.example.com/a.png"));
        assert!(ok(list, "http://CDN.example.com./a.png"));
        assert!(
            !ok(list, "http://cdn.example.com:8080/a.png"),
            "80/443 only"
        );
        assert!(!ok(list, "https://other.example.com/a.png"));
        assert!(ok(list, "https://a.images.example.org:8443/x"));
        assert!(
            !ok(list, "https://images.example.org:8443/x"),
            "below, not at"
        );
        assert!(!ok(list, "https://a.images.example.org/x"));
        assert!(ok(list, "http://127.0.0.1:9000/x"));
        assert!(ok(list, "http://2130706433:9000/x"), "any spelling of it");
        assert!(!ok(list, "http://127.0.0.1:9001/x"));
        assert!(!ok(list, "http://localhost:9000/x"), "names must be listed");
        assert!(ok(list, "http://10.2.3.4/x"));
        assert!(!ok(list, "http://10.2.3.4:22/x"));
        assert!(
            !ok(list, "http://8.8.8.8/x"),
            "a list admits only what it names"
        );
    }

    #[test]
    fn resolved_addresses_need_a_reason() {
        let none = AllowList::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(none
            .check_address(ip("93.184.216.34"), Some("a.com"))
            .is_ok());
        assert!(none
            .check_address(ip("127.0.0.1"), Some("localhost"))
            .is_err());
        let named = AllowList::parse("minio.storage.svc:9000").unwrap();
        assert!(named
            .check_address(ip("10.96.0.7"), Some("minio.storage.svc"))
            .is_ok());
        assert!(named
            .check_address(ip("10.96.0.7"), Some("evil.example"))
            .is_err());
        assert!(
            named
                .check_address(ip("169.254.169.254"), Some("minio.storage.svc"))
                .is_err(),
            "link-local needs an address entry"
        );
        let wild = AllowList::parse("*.svc:9000").unwrap();
        assert!(wild.check_address(ip("10.96.0.7"), Some("a.svc")).is_err());
        let meta = AllowList::parse("169.254.169.254/32").unwrap();
        assert!(meta.check_address(ip("169.254.169.254"), None).is_ok());
        let mapped = AllowList::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.check_address(ip("10.1.1.1"), None).is_ok());
    }

    #[test]
    fn malformed_entries_are_named() {
        for bad in [
            "a b",
            "host:0",
            "host:99999",
            "[::1",
            "*.",
            "10.0.0.0/33",
            "a/b",
        ] {
            let e = AllowList::parse(&format!("ok.example, {bad}")).unwrap_err();
            assert_eq!(e.entry, bad);
        }
        assert!(AllowList::parse(" , ").unwrap().is_empty());
        assert!(AllowList::parse("[fd00::/8]:9000, ::1, 10.0.0.0/8:80").is_ok());
    }
}
