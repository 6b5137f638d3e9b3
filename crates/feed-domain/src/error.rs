//! One error type per failure domain. Adapters return these; the delivery
//! layer maps them to its own wire errors.

use crate::types::UserId;

/// Why a [`crate::FeedStorage`] could not hand out a user's personal items.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage holds no feed for this user.
    #[error("user {0} has no feed")]
    UnknownUser(UserId),
    /// The storage itself failed (a backend down, a corrupt record, ...).
    #[error("feed storage failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// A [`StorageError::Backend`] from anything that converts to an error.
    pub fn backend(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend(cause.into())
    }
}

/// Why a [`crate::RandomFeed`] could not supply all the items asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RandomFillError {
    /// The catalog holds too few items that are not already in the answer.
    #[error("the catalog could not supply {missing} more distinct items")]
    Shortfall {
        /// How many items are still missing.
        missing: usize,
    },
}

/// Everything that [`crate::ErrorRecorder`] is told about.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The personal feed could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The random fill came up short.
    #[error(transparent)]
    RandomFill(#[from] RandomFillError),
}

/// Nothing at all could be served to this user: no personal item and no
/// random item. The only error [`crate::FeedService::next_feed`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no feed item could be served to user {user}")]
pub struct FeedUnavailable {
    /// The user who got nothing.
    pub user: UserId,
}

/// A requested feed size outside the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedSizeError {
    /// Above the configured maximum.
    #[error("size {requested} is above the maximum of {max}")]
    TooLarge {
        /// What was asked for.
        requested: u32,
        /// The maximum.
        max: u32,
    },
}

/// An `Idempotency-Key` that is not 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    /// No characters at all.
    #[error("the idempotency key is empty")]
    Empty,
    /// More than [`crate::IdempotencyKey::MAX_LEN`] characters.
    #[error("the idempotency key has {len} characters, at most 255 are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte that is not visible ASCII (`!` to `~`).
    #[error("the idempotency key holds a character that is not visible ASCII at byte {at}")]
    NotVisibleAscii {
        /// Where, in bytes from the start.
        at: usize,
    },
}

/// Why [`crate::FeedService::next_page`] served nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Not a single item could be served.
    #[error(transparent)]
    Unavailable(#[from] FeedUnavailable),
    /// The user's latest request with this idempotency key asked for
    /// another size: a retry must ask for the same page.
    #[error("this idempotency key was used with size {first}, not {requested}")]
    KeyReused {
        /// The size the key was first used with.
        first: u32,
        /// The size this request asked for.
        requested: u32,
    },
}

/// Size limits that make no sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizeLimitsError {
    /// The maximum is 0 or above [`crate::SizeLimits::CEILING`].
    #[error("max size {max} must be between 1 and {}", crate::SizeLimits::CEILING)]
    Max {
        /// The rejected maximum.
        max: u32,
    },
    /// The default is 0 or above the maximum.
    #[error("default size {default} must be between 1 and the max size {max}")]
    Default {
        /// The rejected default.
        default: u32,
        /// The maximum it was checked against.
        max: u32,
    },
}

/// A configuration value an adapter or the delivery layer cannot use. Its
/// message names the key (`section.key`), as every configuration error
/// does; each crate that reads a section of the configuration reports its
/// keys with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {key}: {reason}")]
pub struct InvalidSetting {
    /// The offending key, `section.key`.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidSetting {
    /// `key` cannot be used, for `reason`.
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}
