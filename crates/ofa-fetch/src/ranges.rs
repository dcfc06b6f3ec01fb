//! Addresses that are not public unicast: the IANA IPv4 and IPv6 special-purpose registries
//! (data), plus the IPv6 forms that embed an IPv4 address, judged by the address they embed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::{Ipv4Net, Ipv6Net};

/// A range that is not public unicast: its name for errors, and whether it is *hard*, one that
/// only an address or CIDR entry can re-admit (link-local with the cloud metadata endpoint,
/// multicast, broadcast, unspecified, reserved), never a host name that resolves into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Special {
    pub name: &'static str,
    pub hard: bool,
}

/// Ranges a fetch may never reach by default, each with the name an error gives it.
static V4: LazyLock<Vec<(Ipv4Net, Special)>> = LazyLock::new(|| {
    [
        ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)", true),
        ("10.0.0.0/8", "private (10.0.0.0/8)", false),
        (
            "100.64.0.0/10",
            "shared address space (CGNAT, 100.64.0.0/10)",
            false,
        ),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)", false),
        (
            "169.254.0.0/16",
            "link-local (169.254.0.0/16, cloud metadata)",
            true,
        ),
        ("172.16.0.0/12", "private (172.16.0.0/12)", false),
        (
            "192.0.0.0/24",
            "IETF protocol assignments (192.0.0.0/24)",
            false,
        ),
        ("192.0.2.0/24", "documentation (192.0.2.0/24)", false),
        (
            "192.88.99.0/24",
            "6to4 relay anycast (192.88.99.0/24)",
            false,
        ),
        ("192.168.0.0/16", "private (192.168.0.0/16)", false),
        ("198.18.0.0/15", "benchmarking (198.18.0.0/15)", false),
        ("198.51.100.0/24", "documentation (198.51.100.0/24)", false),
        ("203.0.113.0/24", "documentation (203.0.113.0/24)", false),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)", true),
        ("255.255.255.255/32", "broadcast (255.255.255.255)", true),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)", true),
    ]
    .into_iter()
    .map(|(n, name, hard)| (n.parse().expect("a valid range"), Special { name, hard }))
    .collect()
});

static V6: LazyLock<Vec<(Ipv6Net, Special)>> = LazyLock::new(|| {
    [
        ("::/128", "unspecified (::)", true),
        ("::1/128", "loopback (::1)", false),
        ("::/96", "IPv4-compatible (::/96, deprecated)", false),
        ("64:ff9b:1::/48", "local-use NAT64 (64:ff9b:1::/48)", false),
        ("100::/64", "discard-only (100::/64)", true),
        (
            "2001::/23",
            "IETF protocol assignments (2001::/23, Teredo and benchmarking)",
            false,
        ),
        ("2001:db8::/32", "documentation (2001:db8::/32)", false),
        ("3fff::/20", "documentation (3fff::/20)", false),
        ("5f00::/16", "segment routing (5f00::/16)", false),
        ("fc00::/7", "unique-local (fc00::/7)", false),
        ("fe80::/10", "link-local (fe80::/10)", true),
        ("fec0::/10", "site-local (fec0::/10)", false),
        ("ff00::/8", "multicast (ff00::/8)", true),
    ]
    .into_iter()
    .map(|(n, name, hard)| (n.parse().expect("a valid range"), Special { name, hard }))
    .collect()
});

/// Why `ip` is not a public unicast address (its range's name), or `None` when it is one.
/// IPv4-mapped, IPv4-translated, NAT64 and 6to4 addresses are judged by the IPv4 address they
/// carry, so `::ffff:127.0.0.1` is loopback.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    classify(ip).map(|s| s.name)
}

pub(crate) fn classify(ip: IpAddr) -> Option<Special> {
    let v4 = |ip: Ipv4Addr| V4.iter().find(|(n, _)| n.contains(&ip)).map(|(_, s)| *s);
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(ip) => v4(ip),
            None => V6.iter().find(|(n, _)| n.contains(&v6)).map(|(_, s)| *s),
        },
    }
}

/// The IPv4 address inside an IPv6 form that carries one to an IPv4 host.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (translated, RFC 6052 SIIT).
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail),
        // 64:ff9b::a.b.c.d, the well-known NAT64 prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:AABB:CCDD::/48, 6to4.
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special(s: &str) -> bool {
        special_range(s.parse().unwrap()).is_some()
    }

    #[test]
    fn internal_addresses_in_every_form_are_special() {
        for s in [
            "127.0.0.1",
            "127.255.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "198.18.0.1",
            "192.0.2.7",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:0:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::169.254.169.254",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fd00::1",
            "fc12::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
        ] {
            assert!(special(s), "{s} must be special");
        }
    }

    #[test]
    fn public_unicast_is_not() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert!(!special(s), "{s} is public");
        }
        let hard = |s: &str| classify(s.parse().unwrap()).unwrap().hard;
        assert!(hard("169.254.169.254") && hard("::ffff:169.254.169.254") && hard("ff02::1"));
        assert!(!hard("10.0.0.1") && !hard("127.0.0.1") && !hard("fd00::1"));
    }
}
