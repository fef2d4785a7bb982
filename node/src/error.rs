//! Errors of the node library.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in the node, typed so callers (the API, the CLI) can tell
/// failures apart.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The home directory already holds an identity.
    #[error("{0} already holds a Kith identity; refusing to overwrite it")]
    AlreadyInitialized(PathBuf),
    /// The home directory holds no identity.
    #[error("no Kith identity in {0}; run `kith init` first")]
    NotInitialized(PathBuf),
    /// A file in the home directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key file or stored value is damaged.
    #[error("{path}: {what}")]
    Corrupt {
        /// The file or store.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The store could not be opened or written.
    #[error("store {path}: {reason}")]
    Store {
        /// The store directory.
        path: PathBuf,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// A name is not valid.
    #[error(transparent)]
    InvalidName(#[from] kith_protocol::NameError),
    /// No valid record exists for a name.
    #[error("no one has registered the name {0:?}")]
    NameNotFound(String),
    /// Another identity holds the name.
    #[error("the name {0:?} is already held by another key")]
    NameTaken(String),
    /// The key a pinned name resolves to has changed.
    #[error(
        "WARNING: the key of {name:?} has changed since you first talked (was {pinned}, now {now}); \
         this can mean an impostor; run `kith trust {name}` only if you verified the new safety number"
    )]
    KeyChanged {
        /// The name.
        name: String,
        /// The pinned user id.
        pinned: String,
        /// The user id it now resolves to.
        now: String,
    },
    /// The DHT could not be reached or did not answer.
    #[error("DHT: {0}")]
    Dht(String),
    /// What was asked is not acceptable as given: a message too long or empty, an address that
    /// is not one, a conversation that is not a group.
    #[error("{0}")]
    BadInput(String),
    /// The rules do not allow it: removing a member who joined before you, posting to a group
    /// you left, revoking the device you are using.
    #[error("{0}")]
    NotAllowed(String),
    /// A mailbox could not be reached, or answered something other than the protocol allows.
    #[error("mailbox: {0}")]
    Mailbox(String),
    /// A peer could not be reached or did not answer.
    #[error("network: {0}")]
    Network(String),
    /// A peer, or this node, is too busy to take the request now; try again shortly.
    #[error("busy: {0}")]
    Busy(String),
    /// An envelope was sealed in a session this device does not hold (it lost the session's
    /// state): its sender seals it again.
    #[error("sealed in a session this device does not hold")]
    NoSession,
    /// Something that should not happen did (a message this node built does not seal, a
    /// poisoned lock): a bug to report.
    #[error("internal error: {0}")]
    Internal(String),
    /// No such message, contact or conversation.
    #[error("not found: {0}")]
    NotFound(String),
    /// A peer (a mailbox) refused the request.
    #[error("refused: {0}")]
    Refused(String),
    /// The network task has stopped.
    #[error("the network task has stopped")]
    NetworkStopped,
    /// The operation needs the identity key, which this (linked) device does not hold.
    #[error(
        "this device does not hold the identity key; run this on the device you linked it from \
         (or one restored with `kith init --recover`)"
    )]
    NoIdentityKey,
    /// Linking a device failed.
    #[error("linking: {0}")]
    Link(String),
    /// The blob store failed (a file, a quota, a chunk that failed its check).
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobStoreError),
    /// Fetching an attachment failed (no holder reachable, every holder sent bad data).
    #[error("transfer: {0}")]
    Transfer(String),
    /// A configuration value is not acceptable.
    #[error("configuration: {0}")]
    Config(String),
}

impl NodeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NodeError::Io { path: path.into(), source }
    }
}

/// For results a background task cannot return to anyone: log the failure (with what was being
/// done) instead of dropping it, and go on.
pub(crate) trait OrWarn<T> {
    /// The value, or `None` after logging the error as a warning.
    fn or_warn(self, what: &str) -> Option<T>;
}

impl<T> OrWarn<T> for Result<T, NodeError> {
    fn or_warn(self, what: &str) -> Option<T> {
        match self {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("{what}: {e}");
                None
            }
        }
    }
}
