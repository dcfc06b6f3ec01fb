//! Image bytes from where a caller points, safely. One fetcher for every front end (`batch`,
//! `worker`, the HTTP routes): a URL is fetched only when the [`AllowList`] admits it and every
//! address it connects to (public unicast addresses by default; internal ones only when an
//! entry re-admits them), the name is resolved once and the checked address is the one
//! connected to, every redirect is checked the same way, and size and time are bounded. Paths
//! are read only as regular files under a root.

mod allow;
mod error;
mod path;
mod ranges;
mod remote;
mod resolver;

pub use allow::{AllowList, AllowListError};
pub use error::FetchError;
pub use path::read_under;
pub use ranges::special_range;
pub use remote::{ClientError, Fetched, UrlFetcher, UrlSettings, Validators};
