//! Where everything lives in the cluster.
//!
//! The feeds are not in the cluster: every frontend maps the snapshot a
//! version names. The cluster holds each user's progress in one data
//! version in the hash `o:{USER}:VERSION` (absent until their first
//! request): field `n`, the offset, moved by one `HINCRBY`; field `k`,
//! their latest retry key as `HASH:START:SIZE` in decimal, written by the
//! page script of a keyed request. (Before retry keys, the key was a plain
//! counter; the script turns one into the hash on first use.) Everything a
//! later feature keeps per user goes under the same hash tag `{USER}`, so
//! it sits in the same slot and one call can read and move it atomically. The version pointers
//! and each version's description carry the tag `{ff}`, so they share one
//! slot too.

/// The hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// The version being served.
pub const CURRENT: &str = "{ff}:current";
/// The version served before the current one, kept for rollback.
pub const PREVIOUS: &str = "{ff}:previous";
/// How many times the pointers moved (each publish and rollback adds
/// one): a frontend's switch is known by the count it read with them, and
/// a user's key sealed at a later count belongs to a newer switch
/// (`crate::carry`).
pub const EPOCH: &str = "{ff}:epoch";
/// The items taken down, a set (`crate::blocklist`).
pub const BLOCKED: &str = "{ff}:blocked";
/// The log of changes to [`BLOCKED`], a stream.
pub const BLOCK_LOG: &str = "{ff}:blocklog";
/// The counter that numbers new versions.
pub const NEXT: &str = "{ff}:next";

/// The field of a user's key that holds their offset.
pub const OFFSET_FIELD: &str = "n";

/// The key of `user`'s offset in `version`.
pub fn offset(user: u64, version: u64) -> String {
    String::from_utf8_lossy(offset_in(user, version, &mut [0; OFFSET_KEY_BYTES])).into_owned()
}

/// The longest offset key: `o:{` and `}:` around two `u64`s.
pub const OFFSET_KEY_BYTES: usize = 5 + 2 * 20;

/// [`offset`], written into `buf` (the request path makes no `String`).
pub fn offset_in(user: u64, version: u64, buf: &mut [u8; OFFSET_KEY_BYTES]) -> &[u8] {
    let mut digits = [0u8; 20];
    let mut at = 0;
    for part in [
        &b"o:{"[..],
        decimal(user, &mut digits),
        b"}:",
        decimal(version, &mut [0u8; 20]),
    ] {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    &buf[..at]
}

/// The hash of `version`'s description: users, items, creation time and
/// the id of the snapshot holding its feeds.
pub fn meta(version: u64) -> String {
    format!("{{ff}}:meta:{version}")
}

/// A `SCAN MATCH` pattern for every key of `version`'s users: their
/// offsets, and the feeds a loader before this one wrote (`f:`), so that a
/// cluster upgraded from that layout loses them with their version.
pub fn version_pattern(version: u64) -> String {
    format!("[fo]:{{*}}:{version}")
}

/// A `SCAN MATCH` pattern for every user's offset key in `version`.
pub fn offset_pattern(version: u64) -> String {
    format!("o:{{*}}:{version}")
}

/// The user whose offset in `version` is at `key`; `None` for any other
/// key (the pattern of [`offset_pattern`] matches more than offset keys).
pub fn offset_user(key: &str, version: u64) -> Option<u64> {
    let tagged = key.strip_prefix("o:{")?;
    let (user, rest) = tagged.split_once("}:")?;
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits(user) || !digits(rest) || rest.parse::<u64>().ok()? != version {
        return None;
    }
    let user: u64 = user.parse().ok()?;
    // The one spelling `offset` writes (no leading zeros).
    (offset(user, version) == key).then_some(user)
}

/// The hash slot of `user`'s keys: CRC16 (XMODEM) of the tag, as Redis
/// computes it.
pub fn slot(user: u64) -> u16 {
    let mut digits = [0u8; 20];
    let tag = decimal(user, &mut digits);
    crc16::State::<crc16::XMODEM>::calculate(tag) % SLOTS
}

/// `value` in decimal, written at the end of `buf`.
fn decimal(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_ones_redis_computes() {
        // `CLUSTER KEYSLOT 123456789` is 12739, the CRC16 check value.
        assert_eq!(slot(123_456_789), 12_739);
        assert_eq!(
            slot(0),
            crc16::State::<crc16::XMODEM>::calculate(b"0") % SLOTS
        );
        assert_eq!(
            slot(u64::MAX),
            crc16::State::<crc16::XMODEM>::calculate(u64::MAX.to_string().as_bytes()) % SLOTS
        );
    }

    #[test]
    fn a_users_key_carries_their_tag() {
        assert_eq!(offset(42, 7), "o:{42}:7");
        assert_eq!(
            offset(u64::MAX, u64::MAX),
            format!("o:{{{}}}:{}", u64::MAX, u64::MAX)
        );
        assert_eq!(offset(0, 0), "o:{0}:0");
        assert_eq!(meta(7), "{ff}:meta:7");
        assert_eq!(version_pattern(7), "[fo]:{*}:7");
    }

    #[test]
    fn offset_keys_are_read_back_and_nothing_else_is() {
        assert_eq!(offset_pattern(7), "o:{*}:7");
        for user in [0, 42, u64::MAX] {
            assert_eq!(offset_user(&offset(user, 7), 7), Some(user));
        }
        for key in [
            "o:{42}:8",
            "o:{42}:17",
            "o:{042}:7",
            "o:{4x}:7",
            "o:{}:7",
            "o:{1}:7:1",
            "f:{42}:7",
            "o:{1}:1}:7",
            "o:{18446744073709551616}:7",
        ] {
            assert_eq!(offset_user(key, 7), None, "{key}");
        }
    }
}
