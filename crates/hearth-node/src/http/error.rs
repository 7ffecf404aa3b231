//! What the HTTP face answers when a request is refused or fails: one type, [`RestError`],
//! mapped to a status and a JSON body in one place ([`RestError::into_response`]).
//!
//! Bodies follow DoSync's (FastAPI's) shapes: `{"detail": "…"}` for a refusal, and
//! `{"detail": [{"loc": […], "msg": "…", "type": "…"}]}` (`HTTPValidationError`) for a body or
//! query that does not parse. Hearth adds `"error"`, a stable code (`NO_QUORUM`,
//! `UNAUTHENTICATED`, …) a client can match without reading the sentence.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Why an HTTP request was refused or failed. Nothing was appended to the chain for any of
/// these unless the message says so.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The body or query does not parse, or a field has the wrong type (422, with `loc`).
    #[error("{msg}")]
    Validation {
        loc: Vec<String>,
        msg: String,
        kind: &'static str,
    },
    /// A field parsed but its value is refused (422, DoSync's `{"detail": "…"}`).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    RateLimited(String),
    /// No quorum, no leader, or a leader that did not answer (503 with the reason).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    /// The endpoint exists in DoSync's API and has no implementation in Hearth (yet): the
    /// message says why.
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Internal(String),
}

impl RestError {
    pub fn field(loc: &[&str], msg: impl Into<String>) -> Self {
        RestError::Validation {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: msg.into(),
            kind: "value_error",
        }
    }

    /// The HTTP status and the stable code of this error.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            RestError::Validation { .. } | RestError::Unprocessable(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_ARGUMENT")
            }
            RestError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            RestError::Forbidden(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            RestError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            RestError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            RestError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE"),
            RestError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            RestError::Unavailable(m) if m.starts_with("NO_QUORUM") => {
                (StatusCode::SERVICE_UNAVAILABLE, "NO_QUORUM")
            }
            RestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            RestError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "TIMEOUT"),
            RestError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED"),
            RestError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    fn body(&self) -> Value {
        let (_, code) = self.status();
        match self {
            RestError::Validation { loc, msg, kind } => json!({
                "detail": [{"loc": loc, "msg": msg, "type": kind}],
                "error": code,
            }),
            other => json!({"detail": other.to_string(), "error": code}),
        }
    }
}

/// A gRPC status from the API (the same functions gRPC clients reach) as the HTTP answer:
/// the message passes unchanged, so a `NO_QUORUM` names its reason here too.
impl From<tonic::Status> for RestError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let m = s.message().to_string();
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => RestError::Unprocessable(m),
            Code::Unauthenticated => RestError::Unauthenticated(m),
            Code::PermissionDenied => RestError::Forbidden(m),
            Code::NotFound => RestError::NotFound(m),
            Code::AlreadyExists | Code::FailedPrecondition => RestError::Conflict(m),
            Code::ResourceExhausted => RestError::RateLimited(m),
            // Aborted: an entry discarded by a leader change; it may or may not commit.
            Code::Unavailable | Code::Aborted => RestError::Unavailable(m),
            Code::DeadlineExceeded | Code::Cancelled => RestError::Timeout(m),
            Code::Unimplemented => RestError::NotImplemented(m),
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => RestError::Internal(m),
        }
    }
}

impl From<crate::error::NodeError> for RestError {
    fn from(e: crate::error::NodeError) -> Self {
        crate::api::to_status(e).into()
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let (status, _) = self.status();
        let mut r = (status, axum::body::Body::from(self.body().to_string())).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_quorum_is_a_503_with_its_reason_and_code() {
        let e: RestError = tonic::Status::unavailable("NO_QUORUM: node 2 sees no leader").into();
        assert_eq!(e.status(), (StatusCode::SERVICE_UNAVAILABLE, "NO_QUORUM"));
        assert_eq!(e.body()["detail"], "NO_QUORUM: node 2 sees no leader");
    }

    #[test]
    fn validation_errors_have_fastapis_shape() {
        let e = RestError::field(&["body", "urgency"], "not one of emergency, alert");
        let b = e.body();
        assert_eq!(b["detail"][0]["loc"], json!(["body", "urgency"]));
        assert_eq!(b["detail"][0]["type"], "value_error");
        assert_eq!(e.status().0, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        for (s, want) in [
            (tonic::Status::invalid_argument("x"), 422),
            (tonic::Status::unauthenticated("x"), 401),
            (tonic::Status::permission_denied("x"), 403),
            (tonic::Status::not_found("x"), 404),
            (tonic::Status::already_exists("x"), 409),
            (tonic::Status::resource_exhausted("x"), 429),
            (tonic::Status::aborted("x"), 503),
            (tonic::Status::internal("x"), 500),
            (tonic::Status::data_loss("x"), 500),
        ] {
            let e: RestError = s.into();
            assert_eq!(e.status().0.as_u16(), want, "{e:?}");
        }
    }
}
