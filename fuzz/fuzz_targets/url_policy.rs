//! The image-URL policy: `IMAGE_URL_ALLOW` text, a newline, then a URL. Whatever the input,
//! parsing never panics; with no list, a URL that names any non-public address in any spelling
//! is refused before a connection; and a URL the policy admits names only an address the
//! address rules admit, so a refused address is never the one connected to.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use ofa_fetch::{special_range, AllowList};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (list, url) = text.split_once('\n').unwrap_or(("", text));
    let Ok(allow) = AllowList::parse(list) else {
        return;
    };
    let Ok(url) = url::Url::parse(url) else {
        return;
    };
    let verdict = allow.check_url(&url);
    let ip: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) => Some(ip.into()),
        _ => None,
    };
    if let Some(ip) = ip {
        if allow.is_empty() && special_range(ip).is_some() {
            assert!(verdict.is_err(), "{url} names {ip} and was admitted");
        }
        if verdict.is_ok() {
            assert!(allow.check_address(ip, None).is_ok(), "{url}");
        }
    }
    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() {
        assert!(verdict.is_err(), "{url}");
    }
});
