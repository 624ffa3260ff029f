//! The HTTP side: the `kafka_ingest` content handler, request bodies and responses.

mod body;
mod handler;
mod response;

pub use handler::{ingest_handler, resume};
