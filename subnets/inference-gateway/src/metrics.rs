//! The gateway's Prometheus metrics (on the node's registry).

use std::time::Duration;

use axum::http::StatusCode;
use mesh_subnet_inference::proto::Finished;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub(crate) struct GatewayMetrics {
    requests: Family<Labels, Counter>,
    tokens: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    ttft: Histogram,
}

impl GatewayMetrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let sub = registry.sub_registry_with_prefix("mesh_gateway");
        let requests = Family::<Labels, Counter>::default();
        sub.register(
            "requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        let tokens = Family::<Labels, Counter>::default();
        sub.register(
            "tokens",
            "Tokens of finished generations, by kind (prompt, completion)",
            tokens.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        sub.register(
            "errors",
            "Errors answered, by code (invalid_request, model_not_found, servers_busy, no_servers, …)",
            errors.clone(),
        );
        let ttft = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        sub.register(
            "time_to_first_token_seconds",
            "From a generation request to its first token (or its end)",
            ttft.clone(),
        );
        Self {
            requests,
            tokens,
            errors,
            ttft,
        }
    }

    pub(crate) fn request(&self, route: &'static str, status: StatusCode) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("status", status.as_u16().to_string()),
            ])
            .inc();
    }

    pub(crate) fn error(&self, code: &'static str) {
        self.errors
            .get_or_create(&vec![("code", code.to_string())])
            .inc();
    }

    pub(crate) fn first_token(&self, after: Duration) {
        self.ttft.observe(after.as_secs_f64());
    }

    pub(crate) fn tokens(&self, finished: &Finished) {
        self.tokens
            .get_or_create(&vec![("kind", "prompt".to_string())])
            .inc_by(u64::from(finished.prompt_tokens));
        self.tokens
            .get_or_create(&vec![("kind", "completion".to_string())])
            .inc_by(u64::from(finished.completion_tokens));
    }
}
