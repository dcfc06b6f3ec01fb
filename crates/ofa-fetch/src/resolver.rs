//! Name resolution that checks what it found: the HTTP client connects only to the addresses
//! this returns, so the address checked is the address connected to, and a name that changes
//! its answer between a check and a connection (DNS rebinding) gains nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::allow::AllowList;

pub(crate) struct CheckedResolver {
    pub allow: Arc<AllowList>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // The port is the URL's; the client sets it on each address.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            // Every address, not just one: the client may try any of them.
            for a in &addrs {
                allow.check_address(a.ip(), Some(&host))?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
