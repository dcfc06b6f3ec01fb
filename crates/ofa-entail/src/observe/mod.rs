//! What a person or a collector sees of a running command: progress on stderr and trace export.

pub mod otel;
pub mod progress;
