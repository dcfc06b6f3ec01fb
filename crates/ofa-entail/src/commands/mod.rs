//! One file per subcommand: its flags, and how it drives the libraries. Loading the model and
//! starting the engine are `crate::startup`'s, written once for all of them.

pub mod batch;
pub mod bench;
pub mod bench_profile;
pub mod collect;
pub mod convert;
pub mod download;
pub mod eval;
pub mod predict;
pub mod rerank;
pub mod serve;
pub mod submit;
pub mod worker;
