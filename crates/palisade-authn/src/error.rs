//! The shape every module's error shares.
//!
//! Each module that can fail defines its own `ErrorKind` (a
//! `#[non_exhaustive]` enum, one doc line per variant, its `Display` the
//! message for humans) and calls [`module_error!`] to get an `Error` that
//! pairs the kind with an optional detail, plus a `Result` alias.
//!
//! No error message ever contains a password, a TOTP code, a recovery code or
//! a token secret: callers log errors.

/// Defines `Error` and `Result` in the calling module, around its `ErrorKind`.
macro_rules! module_error {
    ($what:literal) => {
        #[doc = concat!("A failed ", $what, " operation: what kind of failure, and a detail for humans.")]
        ///
        /// The message never contains the secret that was being checked.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Error {
            kind: ErrorKind,
            detail: ::std::borrow::Cow<'static, str>,
        }

        #[doc = concat!("A `Result` whose error is the ", $what, " [`Error`].")]
        pub type Result<T, E = Error> = ::std::result::Result<T, E>;

        impl Error {
            /// An error of `kind`, with `detail` appended to the kind's message
            /// (empty for none).
            #[allow(dead_code, reason = "not every module needs a detail")]
            pub(crate) fn new(
                kind: ErrorKind,
                detail: impl Into<::std::borrow::Cow<'static, str>>,
            ) -> Self {
                Error {
                    kind,
                    detail: detail.into(),
                }
            }

            /// What kind of failure this is.
            pub fn kind(&self) -> ErrorKind {
                self.kind
            }
        }

        impl From<ErrorKind> for Error {
            fn from(kind: ErrorKind) -> Self {
                Error {
                    kind,
                    detail: ::std::borrow::Cow::Borrowed(""),
                }
            }
        }

        impl ::std::fmt::Display for Error {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                if self.detail.is_empty() {
                    write!(f, "{}", self.kind)
                } else {
                    write!(f, "{}: {}", self.kind, self.detail)
                }
            }
        }

        impl ::std::error::Error for Error {}
    };
}

pub(crate) use module_error;
