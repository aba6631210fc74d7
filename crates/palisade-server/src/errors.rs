//! Errors: the library's typed [`Error`], and how errors become HTTP answers.
//!
//! # How errors become HTTP responses
//!
//! Every handler returns `Result<_, ApiError>`. An [`ApiError`] is a status
//! code, a message written for the caller and optionally the request field at
//! fault; it is rendered as a JSON [`palisade_api::ErrorBody`]
//! (`{"error": "...", "field": "..."}`) with that status. The rules:
//!
//! * **Unreadable input** — malformed JSON, a wrong content type, a path or
//!   query parameter that does not parse (a bad SHA-256, a bad name, a
//!   non-numeric `limit`) — is `400 Bad Request`; `413` when the body exceeds
//!   the configured limit; `415` for a non-JSON content type.
//! * **Well-formed JSON that does not fit** the endpoint's type (unknown
//!   field, unknown enum value, wrong type, missing field, bad hash inside
//!   the body) or that breaks a documented limit (batch too large) is
//!   `422 Unprocessable Entity`. The JSON extractor runs the body through
//!   `serde_path_to_error`, so `field` is the path of the offending value
//!   (`files[3].sha256`), extended with the field's name for unknown and
//!   missing fields.
//! * **Authentication**: no credentials or an unknown bearer token is `401`;
//!   a client certificate of no enrolled computer, or of a revoked one, is
//!   `403`. A wrong, used or expired enrollment token is `401`.
//! * **Not found** (`404`) covers both "does not exist" and "belongs to
//!   another organization": an admin can never tell the two apart, and no
//!   message names anything outside the caller's organization. Unknown
//!   routes are `404` and a wrong method `405`, both with a JSON body.
//! * **Conflict** (`409`): creating something that already exists.
//! * **Too many** (`429`): sign-in attempts while throttled or locked; an
//!   approval request from a computer that has too many pending already.
//! * **Anything else** (database failure, a bug) is `500` with the generic
//!   message `internal error`; the cause is logged with `tracing::error!`
//!   and never sent to the caller.
//!
//! Library functions used without HTTP (`bootstrap`, `create_enroll_token`,
//! ...) return [`Error`], whose [`ErrorKind`] maps onto the statuses above
//! when a handler calls one of them.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use palisade_api::ErrorBody;
use std::fmt;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is invalid.
    Config,
    /// The database failed or holds something unexpected.
    Database,
    /// Certificate or TLS set-up failed.
    Tls,
    /// A socket or file operation failed.
    Io,
    /// A named object (organization, policy, computer, admin) does not exist.
    NotFound,
    /// The object already exists.
    Conflict,
    /// An argument is invalid.
    Invalid,
}

/// The error type of the library API.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::with_source(ErrorKind::Database, "database error", e)
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Self {
        Error::new(ErrorKind::Config, e.to_string())
    }
}

/// An error answer of the HTTP API (see the module documentation).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    error: String,
    field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: None,
        }
    }

    /// Attach the field at fault.
    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        let f = field.into();
        self.field = (!f.is_empty()).then_some(f);
        self
    }

    /// 400: unreadable input.
    pub(crate) fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    /// 422: well-formed input that is not acceptable.
    pub(crate) fn invalid(field: &str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, error).field(field)
    }

    pub(crate) fn unauthorized(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, error)
    }

    pub(crate) fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error)
    }

    pub(crate) fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    pub(crate) fn conflict(error: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, error)
    }

    /// The answer's status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The answer's message.
    pub(crate) fn message(&self) -> &str {
        &self.error
    }

    /// The field the answer names, if any.
    #[cfg(test)]
    pub(crate) fn field_name(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// 500: log the cause, answer a generic message.
    pub(crate) fn internal(cause: &dyn fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error while handling a request");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            field: self.field,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(&e)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e.kind {
            ErrorKind::NotFound => ApiError::not_found(e.message),
            ErrorKind::Conflict => ApiError::conflict(e.message),
            ErrorKind::Invalid => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.message),
            _ => ApiError::internal(&e),
        }
    }
}

/// Result of a handler.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
