//! `/metrics` of the daemons, on the gateway's HTTP stack (axum).

pub use mesh_gateway::{serve_metrics, HttpServer as MetricsServer};
