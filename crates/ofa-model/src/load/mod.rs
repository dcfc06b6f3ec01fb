//! Loading a model: the ModelScope directory and its files (`model_dir`, `files`), the
//! architecture (`config`) and runtime options (`runtime`), checkpoints (`weights`) and the engine's own layout of them (`engine_layout`), the number
//! format (`precision`), and random OFA-large weights for measuring without the download
//! (`random`).

pub mod config;
pub mod engine_layout;
pub mod files;
pub mod model_dir;
pub mod precision;
pub mod random;
pub mod runtime;
pub mod weights;
