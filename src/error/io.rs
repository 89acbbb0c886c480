//! [`IoError`]: the shells' IO failures, with their source.

use std::fmt;

/// An IO failure: what was being done, with the [`std::io::Error`] as its
/// [source](std::error::Error::source). See [`Error::Io`](super::Error::Io).
///
/// Cheap to clone (the source is shared). Two `IoError`s are equal when they name the same
/// operation, kind and message.
///
/// # Examples
///
/// ```
/// use std::error::Error as _;
/// use attachments::Error;
///
/// let err = Error::io("reading photo.jpg", std::io::Error::other("disk on fire"));
/// assert_eq!(err.to_string(), "reading photo.jpg failed: disk on fire");
/// assert_eq!(err.source().map(|s| s.to_string()).as_deref(), Some("disk on fire"));
/// assert!(err.is_transient());
/// ```
#[derive(Debug, Clone)]
pub struct IoError {
    op: String,
    source: std::sync::Arc<std::io::Error>,
}

impl IoError {
    /// An IO error `source` met while doing `op`.
    pub fn new(op: impl Into<String>, source: std::io::Error) -> Self {
        IoError {
            op: op.into(),
            source: std::sync::Arc::new(source),
        }
    }

    /// What was being done.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The kind of the underlying error.
    pub fn kind(&self) -> std::io::ErrorKind {
        self.source.kind()
    }

    /// The underlying error.
    pub fn io_error(&self) -> &std::io::Error {
        &self.source
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.op, self.source)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl PartialEq for IoError {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op
            && self.source.kind() == other.source.kind()
            && self.source.to_string() == other.source.to_string()
    }
}

impl Eq for IoError {}
