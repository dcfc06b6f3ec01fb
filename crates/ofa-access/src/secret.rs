//! Credentials inside URLs (`redis://:password@host`), kept out of every message. Written by
//! hand rather than with a URL parser because the URLs that most need masking are the ones a
//! parser refuses: a password with a raw `/`, `?` or `@` in it.

/// `url` with the password of its user info replaced by `***`: the user info runs from the
/// scheme to the last `@` (a password may hold `@`, `/` or `?`), the password from its first
/// `:`.
pub fn masked_url(url: &str) -> String {
    match split(url) {
        Some((scheme, user, Some(_), host)) => format!("{scheme}://{user}:***@{host}"),
        _ => url.to_owned(),
    }
}

/// `text` with `url`'s password (as written, and percent-decoded) replaced by `***`.
pub fn scrub(url: &str, text: &str) -> String {
    let mut out = text.replace(url, &masked_url(url));
    if let Some((_, _, Some(password), _)) = split(url) {
        for secret in [password.to_owned(), percent_decoded(password)] {
            // A one-character password would blank out every such letter: unreadable, and
            // a short password is not worth hiding at that price.
            if secret.len() >= 2 {
                out = out.replace(&secret, "***");
            }
        }
    }
    out
}

/// The password of `url`, if it has one.
pub fn password(url: &str) -> Option<&str> {
    split(url).and_then(|(_, _, p, _)| p)
}

/// (scheme, user, password, what follows the user info).
fn split(url: &str) -> Option<(&str, &str, Option<&str>, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (userinfo, host) = rest.rsplit_once('@')?;
    Some(match userinfo.split_once(':') {
        Some((user, password)) => (scheme, user, Some(password), host),
        None => (scheme, userinfo, None, host),
    })
}

pub fn percent_decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_with_any_character_are_masked() {
        for (url, pw) in [
            ("redis://:p%40ss@redis:6379/0", "p%40ss"),
            ("redis://:pa/ss@redis:6379", "pa/ss"),
            ("amqp://ofa:pa?ss#@rabbit/%2f", "pa?ss#"),
            ("amqp://ofa:p@ss@rabbit", "p@ss"),
        ] {
            let m = masked_url(url);
            assert!(!m.contains(pw), "{url} -> {m}");
            assert!(m.contains(":***@"), "{m}");
            assert_eq!(password(url), Some(pw));
            let s = scrub(url, &format!("failed: {url} with {pw}"));
            assert!(!s.contains(pw), "{s}");
        }
        assert_eq!(scrub("redis://:p%40ss@h", "bad p@ss"), "bad ***");
        assert_eq!(masked_url("redis://redis:6379"), "redis://redis:6379");
    }
}
