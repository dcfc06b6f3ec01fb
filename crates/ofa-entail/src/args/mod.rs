//! Flags and environment variables every command shares, parsed into the libraries' typed
//! settings: the model's source, the device, access control, the job commands' sources and
//! broker, the result store, and the value parsers (sizes, seconds, the log).

pub mod access;
pub mod device;
pub mod flags;
pub mod jobs;
pub mod model;
pub mod store;
