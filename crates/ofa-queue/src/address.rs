//! The broker's URL, and keeping its credentials out of every log line and error.

use crate::error::BrokerError;

/// An AMQP URL with what must not be shown of it.
#[derive(Clone)]
pub struct Address {
    url: String,
    shown: String,
    secrets: Vec<String>,
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Address {
    /// Accepts `amqp://` and `amqps://` URLs; the user and password (if any) are kept apart.
    pub fn parse(url: &str) -> Result<Self, BrokerError> {
        let url = url.trim().to_owned();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(BrokerError::InvalidUrl(
                "expected amqp://[user:password@]host[:port][/vhost]".into(),
            ));
        };
        if scheme != "amqp" && scheme != "amqps" {
            return Err(BrokerError::InvalidUrl(format!(
                "scheme must be amqp or amqps, got {scheme:?}"
            )));
        }
        // The user info runs to the last `@`, wherever the first `/` or `?` is: a password
        // may hold a raw `/`, `?` or `@`, and splitting at the path first would show it.
        let (shown, secrets, host) = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let mut secrets = vec![userinfo.to_owned()];
                if !password.is_empty() {
                    secrets.push(password.to_owned());
                    secrets.push(
                        percent_encoding::percent_decode_str(password)
                            .decode_utf8_lossy()
                            .into_owned(),
                    );
                }
                (format!("{scheme}://{user}:***@{host}"), secrets, host)
            }
            None => (url.clone(), Vec::new(), rest),
        };
        if host.is_empty() || host.starts_with(['/', '?']) {
            return Err(BrokerError::InvalidUrl(format!("no host in {shown}")));
        }
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 2).collect();
        // Longest first, so a password inside `user:password` is hidden with it.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Address {
            url,
            shown,
            secrets,
        })
    }

    /// The full URL, for the client library only.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL as it may be logged: the password replaced by `***`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `text` with every credential replaced, for messages built from the client's errors.
    pub fn scrub(&self, text: impl std::fmt::Display) -> String {
        let mut s = text.to_string().replace(&self.url, &self.shown);
        for secret in &self.secrets {
            s = s.replace(secret.as_str(), "***");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_shown() {
        let a = Address::parse("amqp://ofa:p%40ss-w0rd@rabbit:5672/%2f").unwrap();
        assert_eq!(a.shown(), "amqp://ofa:***@rabbit:5672/%2f");
        let msg = a.scrub(format!(
            "failed: {} (password p@ss-w0rd, raw p%40ss-w0rd)",
            a.url()
        ));
        assert!(!msg.contains("p@ss") && !msg.contains("p%40ss"), "{msg}");
        assert!(msg.contains("amqp://ofa:***@rabbit"), "{msg}");
        let plain = Address::parse("amqp://localhost").unwrap();
        assert_eq!(plain.shown(), "amqp://localhost");
        for (url, password) in [
            ("amqp://ofa:pa/ss@rabbit:5672/%2f", "pa/ss"),
            ("amqp://ofa:pa?ss@rabbit", "pa?ss"),
            ("amqp://ofa:p@ss@rabbit/vh", "p@ss"),
        ] {
            let a = Address::parse(url).unwrap();
            assert!(!a.shown().contains(password), "{}", a.shown());
            let msg = a.scrub(format!("cannot connect to {url}: {password}"));
            assert!(!msg.contains(password), "{msg}");
        }
        for bad in ["localhost:5672", "http://h/", "amqp://", "amqp://u:p@/x"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }
}
