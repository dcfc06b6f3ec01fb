//! Loading a model: the ModelScope directory and its files (`model_dir`, `files`), the
//! architecture (`config`) and runtime options (`runtime`), checkpoints (`weights`), the
//! engine's own layout of them (`engine_layout`) and the tensors used where that file maps
//! them (`mapped`), the number format (`precision`), and random OFA-large weights for
//! measuring without the download (`random`).

pub mod config;
pub mod engine_layout;
pub mod files;
pub mod mapped;
pub mod model_dir;
pub mod precision;
pub mod random;
pub mod runtime;
pub mod weights;
