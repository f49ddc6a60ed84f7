//! Errors in OpenAI's JSON shape, with the HTTP status clients expect.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mesh_subnet_inference::client::ClientError;
use tonic::Code;

/// An error answer: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    /// OpenAI's error `code` (a short machine-readable reason).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
        }
    }

    /// 400: the request cannot be served as given.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    /// 401: no API key, or not one of the gateway's.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            message,
        )
    }

    /// 404: no live server serves this model.
    pub fn unknown_model(model: &str, served: &[String]) -> Self {
        let served = if served.is_empty() {
            "none".to_string()
        } else {
            served.join(", ")
        };
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("the model {model:?} is not served by any live server of the subnet (served: {served})"),
        )
    }

    /// 404: no such path or key.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            message,
        )
    }

    /// 413: the prompt (or the body) is too large.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "context_length_exceeded",
            message,
        )
    }

    /// 429: over this key's rate limit, or every server is busy.
    pub fn rate_limited(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "requests", code, message)
    }

    /// 503: no server is alive (or none could be reached).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "no_servers",
            message,
        )
    }

    /// 502: the servers failed.
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "upstream_failed",
            message,
        )
    }

    /// The metric label of this error.
    pub fn label(&self) -> &'static str {
        self.code
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": null,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::NoServers(_) => ApiError::unavailable(e.to_string()),
            ClientError::Heartbeats(_) => ApiError::unavailable(e.to_string()),
            ClientError::Refused { status, .. } => match status.code() {
                Code::OutOfRange => ApiError::too_large(status.message()),
                _ => ApiError::bad_request(status.message()),
            },
            ClientError::AllFailed(failures) => {
                let gone = |c: Code| {
                    matches!(
                        c,
                        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
                    )
                };
                // Busy servers and dead ones: trying again shortly may work.
                if failures
                    .iter()
                    .any(|(_, s)| s.code() == Code::ResourceExhausted)
                    && failures
                        .iter()
                        .all(|(_, s)| s.code() == Code::ResourceExhausted || gone(s.code()))
                {
                    ApiError::rate_limited(
                        "servers_busy",
                        "every inference server is busy; try again shortly",
                    )
                } else if failures.iter().all(|(_, s)| gone(s.code())) {
                    ApiError::unavailable(e.to_string())
                } else {
                    ApiError::upstream(e.to_string())
                }
            }
            _ => ApiError::upstream(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::PeerId;
    use tonic::Status;

    fn all_failed(codes: &[Code]) -> ApiError {
        ClientError::AllFailed(
            codes
                .iter()
                .map(|&c| (PeerId::random(), Status::new(c, "x")))
                .collect(),
        )
        .into()
    }

    #[test]
    fn failures_map_to_the_status_a_client_can_act_on() {
        let busy = all_failed(&[Code::ResourceExhausted, Code::ResourceExhausted]);
        assert_eq!(
            (busy.status, busy.code),
            (StatusCode::TOO_MANY_REQUESTS, "servers_busy")
        );
        // One busy, one gone: trying again shortly may work.
        let mixed = all_failed(&[Code::ResourceExhausted, Code::Unavailable]);
        assert_eq!(mixed.status, StatusCode::TOO_MANY_REQUESTS);
        let gone = all_failed(&[Code::Unavailable, Code::DeadlineExceeded]);
        assert_eq!(gone.status, StatusCode::SERVICE_UNAVAILABLE);
        let broken = all_failed(&[Code::Internal]);
        assert_eq!(broken.status, StatusCode::BAD_GATEWAY);
        let refused: ApiError = ClientError::Refused {
            peer: PeerId::random(),
            status: Status::out_of_range("prompt of 9000 tokens does not fit"),
        }
        .into();
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "context_length_exceeded")
        );
        let body = refused.body();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["param"].is_null());
    }
}
