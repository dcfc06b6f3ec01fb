//! What a person or a collector sees of a running command: progress on stderr (jobs and
//! pairs; a model download) and trace export.

pub mod download;
pub mod otel;
pub mod progress;
