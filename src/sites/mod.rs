//! Sites of `kafka_collect`: the registry of `kafka_sites`, the events of a request, and what
//! they say about the client. Plain code, without nginx.

pub mod events;
pub mod privacy;
pub mod registry;
