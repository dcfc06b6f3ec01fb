//! The HTTP layer in process: the router with the real engine and the real model code on the
//! tiny checkpoint, called through `tower`'s `oneshot` (no socket, no process), one file per
//! concern. Bad input gets its specific status and error kind, table-driven, and leaves the
//! service healthy; the routes, the contract and the log line answer as documented; keys,
//! gateways, proxies, rates and quotas decide who gets in; `/rerank` ranks. What needs a real
//! connection or tool (curl's `Expect: 100-continue`, slow clients, SIGTERM, Redis, tritonclient,
//! promtool, Chromium) stays in the binary's black-box tests.

mod access;
mod bad_input;
mod common;
mod contract;
mod images;
mod load;
mod rerank;
mod rerank_compat;
