//! The registry's error, translated once at each edge: into a `tonic::Status`
//! here, and into an HTTP status with a small JSON body in `http`.

use tonic::{Code, Status};

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field is malformed or out of bounds. Nothing was changed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as a path (`instances[2].address`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The named instance or lease does not exist.
    #[error("{field}: {what} not found")]
    NotFound {
        /// The field that named it.
        field: &'static str,
        /// What was looked for.
        what: String,
    },
    /// The instance belongs to another live lease: only its holder (or an
    /// operator) may replace it. Nothing was changed.
    #[error(
        "{field}: {key} is held by another live lease; deregister it with that lease, wait for the lease to lapse, or use an operator token"
    )]
    Held {
        /// The field that named it.
        field: String,
        /// `service/instance_id`.
        key: String,
    },
    /// No token, or a token nobody knows.
    #[error("missing or unknown token")]
    Unauthenticated,
    /// A known token that may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The durable store failed; the change was not made.
    #[error("storage: {0}")]
    Storage(String),
    /// The registry is shutting down.
    #[error("registry is shutting down")]
    ShuttingDown,
    /// The store cannot take writes now (etcd unreachable, or this replica
    /// lost its session); nothing was changed, or the outcome is unknown
    /// when the message says so. Another replica may answer.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

// === impl Error ===

impl From<switchyard_runtime::auth::AuthError> for Error {
    fn from(e: switchyard_runtime::auth::AuthError) -> Self {
        match e {
            switchyard_runtime::auth::AuthError::Unauthenticated => Self::Unauthenticated,
            switchyard_runtime::auth::AuthError::PermissionDenied(m) => Self::PermissionDenied(m),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Invalid { .. } => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::Held { .. } => Code::AlreadyExists,
            Error::Unauthenticated => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Storage(_) => Code::Internal,
            Error::ShuttingDown | Error::Unavailable(_) => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}
