//! The spool: events on disk on their way to Kafka (docs/spool-format.md).
//!
//! Everything here is plain Rust and std, no nginx: the record format, the file names and
//! locks, the writer and the reader. The worker (`crate::worker`) drives them; the
//! `kafka-spool` tool reads the same files.

pub mod files;
pub mod format;
pub mod store;
