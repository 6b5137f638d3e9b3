//! Turning raw request strings into domain types. Everything a client sends
//! passes through here before the domain sees it.

use feed_domain::{FeedSize, SizeLimits, UserId};

use crate::error::ApiError;

/// An unsigned integer written as ASCII decimal digits only: no sign, no
/// spaces, no other digit systems. Leading zeros are allowed. `None` when it
/// is not one or does not fit.
fn decimal<T: std::str::FromStr>(raw: &str) -> Option<T> {
    if raw.is_empty() || raw.len() > 32 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Digits only, so the only possible failure left is overflow.
    raw.parse().ok()
}

/// A `u32` in strict ASCII decimal (see `decimal`).
pub fn decimal_u32(raw: &str) -> Option<u32> {
    decimal(raw)
}

/// A `u64` in strict ASCII decimal (see `decimal`).
pub fn decimal_u64(raw: &str) -> Option<u64> {
    decimal(raw)
}

/// The `user_id` path segment.
///
/// # Errors
/// [`ApiError::InvalidUserId`] unless it is a decimal `u64`.
pub fn user_id(raw: &str) -> Result<UserId, ApiError> {
    decimal_u64(raw)
        .map(UserId::new)
        .ok_or(ApiError::InvalidUserId)
}

/// The `size` query parameter, from the whole query string: absent or `0`
/// means the default.
///
/// # Errors
/// [`ApiError::InvalidSize`] when `size` is not a decimal number, is above
/// the maximum, or is given more than once. Other parameters are ignored.
pub fn size(query: &str, limits: &SizeLimits) -> Result<FeedSize, ApiError> {
    let requested = query_u32(query, "size")
        .map_err(|()| ApiError::InvalidSize(*limits))?
        .unwrap_or(0);
    limits
        .resolve(requested)
        .map_err(|_| ApiError::InvalidSize(*limits))
}

/// The query parameter `key` as a decimal `u32`: `Ok(None)` when absent,
/// `Err(())` when it is not a decimal `u32` or is given more than once.
/// Percent-encoding is decoded; other parameters are ignored.
///
/// # Errors
/// `()` as above: the caller knows which parameter it asked for.
#[allow(clippy::result_unit_err)]
pub fn query_u32(query: &str, key: &str) -> Result<Option<u32>, ()> {
    let mut found = None;
    // form_urlencoded borrows from the query unless a value is percent-encoded.
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name == key {
            if found.is_some() {
                return Err(());
            }
            found = Some(decimal_u32(&value).ok_or(())?);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_u32_is_strict() {
        assert_eq!(decimal_u32("0"), Some(0));
        assert_eq!(decimal_u32("007"), Some(7));
        assert_eq!(decimal_u32("4294967295"), Some(u32::MAX));
        for bad in [
            "",
            "4294967296",
            "99999999999999999999999999",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "0x10",
            "١",
            "abc",
        ] {
            assert_eq!(decimal_u32(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn user_ids_span_u64() {
        assert_eq!(user_id("0"), Ok(UserId::new(0)));
        assert_eq!(user_id("18446744073709551615"), Ok(UserId::new(u64::MAX)));
        for bad in ["18446744073709551616", "-1", "", "1a", "+5"] {
            assert_eq!(user_id(bad), Err(ApiError::InvalidUserId), "{bad:?}");
        }
    }

    #[test]
    fn size_reads_the_query() {
        let limits = SizeLimits::new(10, 200).unwrap();
        let ok = |q: &str| size(q, &limits).map(FeedSize::get);
        assert_eq!(ok(""), Ok(10));
        assert_eq!(ok("size=0"), Ok(10));
        assert_eq!(ok("size=5"), Ok(5));
        assert_eq!(ok("x=1&size=200&y"), Ok(200));
        assert_eq!(ok("size=%35"), Ok(5));
        for bad in [
            "size=",
            "size=-1",
            "size=201",
            "size=abc",
            "size=1&size=2",
            "size=4294967296",
        ] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
    }
}
