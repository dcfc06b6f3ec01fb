//! The `ofa-entail` binary's library: its commands, and what they share. `startup` loads the
//! model and starts the engine, once for every command; `args` turns flags into the other
//! crates' typed settings; `files` streams job and result files; `evaluation` is `eval`'s
//! data and report; `observe` is progress and trace export.

pub mod args;
pub mod commands;
pub mod evaluation;
pub mod files;
pub mod observe;
pub mod startup;
