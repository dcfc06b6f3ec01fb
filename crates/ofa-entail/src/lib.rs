//! The `ofa-entail` binary's library: its commands, and what they share. `startup` loads the
//! model and starts the engine, once for every command; `args` turns flags into the other
//! crates' typed settings; `conversion` writes the model directory's converted files;
//! `evaluation` is `eval`'s data and report; `observe` is progress and trace export. Job and
//! result files are `ofa_jobs::files`.

pub mod args;
pub mod commands;
pub mod conversion;
pub mod evaluation;
pub mod observe;
pub mod startup;
