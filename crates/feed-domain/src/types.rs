//! Validated value types. Every constructor that can fail returns an error
//! naming what was wrong; once built, a value is valid for its whole life.

use std::fmt;

use crate::error::{FeedSizeError, IdempotencyKeyError, SizeLimitsError};

/// A user, identified by a 64-bit number, as offline jobs key their users
/// (ids may be sparse anywhere in the range). Every `u64` is a well-formed
/// id; whether the user has a feed is the storage's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(u64);

impl UserId {
    /// Wraps a raw id.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A catalog item, identified by a 32-bit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct ItemId(u32);

impl ItemId {
    /// Wraps a raw id.
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw id.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A client's retry key (the `Idempotency-Key` request header): 1 to
/// [`Self::MAX_LEN`] visible ASCII characters (`!` to `~`). Only its 32-bit
/// hash is kept, never the key itself, so that a storage can remember the
/// latest key of every user in a few bytes; the hash is never 0, which
/// stores use for "no key".
///
/// Two different keys share a hash with probability 2^-32: the second
/// would then be answered as a retry of the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(u32);

impl IdempotencyKey {
    /// The longest key accepted.
    pub const MAX_LEN: usize = 255;

    /// Validates a raw key and keeps its hash.
    ///
    /// # Errors
    /// [`IdempotencyKeyError`] when `raw` is empty, longer than
    /// [`Self::MAX_LEN`] or holds anything but visible ASCII.
    pub fn parse(raw: &[u8]) -> Result<Self, IdempotencyKeyError> {
        if raw.is_empty() {
            return Err(IdempotencyKeyError::Empty);
        }
        if raw.len() > Self::MAX_LEN {
            return Err(IdempotencyKeyError::TooLong { len: raw.len() });
        }
        // Eight bytes at a time: each must be visible ASCII, and each word
        // is folded in by a multiply and a rotation; a few instructions a
        // word, and no dependency (this crate keeps to `thiserror`).
        if let Some(at) = raw.iter().position(|byte| !byte.is_ascii_graphic()) {
            return Err(IdempotencyKeyError::NotVisibleAscii { at });
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ raw.len() as u64;
        let mut words = raw.chunks_exact(8);
        for word in &mut words {
            let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
            hash = (hash ^ word)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        hash = (hash ^ u64::from_le_bytes(tail)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash ^= hash >> 31;
        let folded = (hash ^ (hash >> 32)) as u32;
        Ok(Self(folded.max(1)))
    }

    /// A key from a stored hash; `None` for 0 (no key).
    pub const fn from_hash(hash: u32) -> Option<Self> {
        if hash == 0 { None } else { Some(Self(hash)) }
    }

    /// The key's hash, never 0.
    pub const fn hash(self) -> u32 {
        self.0
    }
}

/// The number of items one request asks for: at least 1 and at most the
/// configured maximum. Only [`SizeLimits::resolve`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedSize(u32);

impl FeedSize {
    /// The number of items, as a count.
    pub const fn get(self) -> usize {
        self.0 as usize
    }
}

/// The sizes a request may ask for: `1..=max`, with `0` standing for `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    default: FeedSize,
    max: FeedSize,
}

impl SizeLimits {
    /// The largest `max` accepted. It bounds the work and the memory one
    /// request can cause, whatever the configuration says.
    pub const CEILING: u32 = 10_000;

    /// Limits with the given default and maximum.
    ///
    /// # Errors
    /// [`SizeLimitsError`] when `default` is 0 or above `max`, or `max` is 0
    /// or above [`Self::CEILING`].
    pub const fn new(default: u32, max: u32) -> Result<Self, SizeLimitsError> {
        if max == 0 || max > Self::CEILING {
            return Err(SizeLimitsError::Max { max });
        }
        if default == 0 || default > max {
            return Err(SizeLimitsError::Default { default, max });
        }
        Ok(Self {
            default: FeedSize(default),
            max: FeedSize(max),
        })
    }

    /// The size used when a request names none (or names 0).
    pub const fn default_size(&self) -> FeedSize {
        self.default
    }

    /// The largest size a request may name.
    pub const fn max_size(&self) -> FeedSize {
        self.max
    }

    /// Turns a requested size into a [`FeedSize`]: `0` means the default.
    ///
    /// # Errors
    /// [`FeedSizeError::TooLarge`] when `requested` is above the maximum.
    pub const fn resolve(&self, requested: u32) -> Result<FeedSize, FeedSizeError> {
        match requested {
            0 => Ok(self.default),
            n if n <= self.max.0 => Ok(FeedSize(n)),
            n => Err(FeedSizeError::TooLarge {
                requested: n,
                max: self.max.0,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn zero_means_the_default() {
        let limits = SizeLimits::new(10, 200).unwrap();
        assert_eq!(limits.resolve(0).unwrap().get(), 10);
        assert_eq!(limits.resolve(1).unwrap().get(), 1);
        assert_eq!(limits.resolve(200).unwrap().get(), 200);
        assert_eq!(
            limits.resolve(201),
            Err(FeedSizeError::TooLarge {
                requested: 201,
                max: 200
            })
        );
    }

    #[test]
    fn limits_reject_nonsense() {
        assert_eq!(SizeLimits::new(1, 0), Err(SizeLimitsError::Max { max: 0 }));
        assert!(SizeLimits::new(1, SizeLimits::CEILING + 1).is_err());
        assert!(SizeLimits::new(0, 10).is_err());
        assert!(SizeLimits::new(11, 10).is_err());
        assert!(SizeLimits::new(10, 10).is_ok());
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert_eq!(IdempotencyKey::parse(b""), Err(IdempotencyKeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse(&[b'a'; 256]),
            Err(IdempotencyKeyError::TooLong { len: 256 })
        );
        assert!(IdempotencyKey::parse(&[b'~'; 255]).is_ok());
        assert_eq!(
            IdempotencyKey::parse(b"ab c"),
            Err(IdempotencyKeyError::NotVisibleAscii { at: 2 })
        );
        assert_eq!(
            IdempotencyKey::parse("é".as_bytes()),
            Err(IdempotencyKeyError::NotVisibleAscii { at: 0 })
        );
        let key = IdempotencyKey::parse(b"9f1c-retry").unwrap();
        assert_eq!(IdempotencyKey::parse(b"9f1c-retry"), Ok(key));
        assert_ne!(IdempotencyKey::parse(b"9f1c-retrz").unwrap(), key);
        assert_eq!(IdempotencyKey::from_hash(key.hash()), Some(key));
        assert_eq!(IdempotencyKey::from_hash(0), None);
    }

    proptest! {
        /// Any bytes give a key or an error, never a panic; a key's hash is
        /// never 0 and depends only on the bytes.
        #[test]
        fn any_bytes_make_a_key_or_an_error(raw in prop::collection::vec(any::<u8>(), 0..300)) {
            match IdempotencyKey::parse(&raw) {
                Ok(key) => {
                    prop_assert!(key.hash() != 0);
                    prop_assert!(!raw.is_empty() && raw.len() <= 255 && raw.iter().all(u8::is_ascii_graphic));
                    prop_assert_eq!(IdempotencyKey::parse(&raw), Ok(key));
                }
                Err(_) => prop_assert!(raw.is_empty() || raw.len() > 255 || !raw.iter().all(u8::is_ascii_graphic)),
            }
        }

        #[test]
        fn resolved_sizes_are_within_limits(default in 1u32..=50, max in 50u32..=500, req in any::<u32>()) {
            let limits = SizeLimits::new(default, max).unwrap();
            match limits.resolve(req) {
                Ok(size) => {
                    prop_assert!(size.get() >= 1 && size.get() <= max as usize);
                    prop_assert_eq!(size.get(), if req == 0 { default as usize } else { req as usize });
                }
                Err(_) => prop_assert!(req > max),
            }
        }
    }
}
