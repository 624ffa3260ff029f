//! The HTTP side: the `kafka_ingest` content handler, request bodies and responses, the
//! `kafka_metrics` and `kafka_ready` endpoints, and the `$kafka_*` variables.

mod body;
mod handler;
mod metrics;
mod response;
mod value;
mod variables;

pub use body::collect as collect_body;
pub use handler::{answer_acked, ingest_handler, reading_failed, record, resume, RequestCtx};
pub use metrics::{metrics_handler, ready_handler};
pub use response::{send_accepted, send_bytes, send_rejection, Rejection};
pub use value::{evaluate, lone_variable};
pub use variables::add_variables;
