//! `eval`'s library part: reading a labelled set and reporting accuracy, agreement between
//! precisions and throughput, unit-tested apart from the command.

pub mod data;
pub mod report;
