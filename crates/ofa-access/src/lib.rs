//! Who is asking and how much they may, for every front end: consumers identified by their
//! keys (kept as hashes, reloadable) or named by a trusted gateway, client addresses seen
//! through trusted proxies, and per-consumer rate limits and quotas kept in memory or shared by
//! every replica through Redis. Knows nothing of HTTP routing; front ends translate.

pub mod consumers;
mod decision;
mod error;
pub mod keystore;
pub mod limits;
mod local;
pub mod proxies;
pub mod rate;
mod redis_store;
pub mod secret;

pub use consumers::{Consumer, Consumers};
pub use decision::{Decision, Policy, Refusal, Window};
pub use error::AccessError;
pub use keystore::{KeyStore, Reload};
pub use limits::{BackendChange, Limits};
pub use proxies::{ForwardedHeader, TrustedProxies};
pub use rate::{Period, Quota, Rate};
