//! The response body: a JSON array of item ids, written by hand.
//!
//! An item id is a `u32`, so the array is digits and commas only: nothing to
//! escape. Each number is written straight into its place, eight digits at
//! a time ([`eight_digits`]), in a per-thread [`BytesMut`] chunk, and the
//! body is split off the chunk as a `Bytes`: no allocation and no copy per
//! response. A chunk is taken back once every body split off it is sent,
//! so a keep-alive client's answers reuse one chunk; a new one is made only
//! while earlier answers are still held (every [`CHUNK`] bytes of them). A
//! body keeps its chunk alive until it is written out, so a worker holds at
//! most one chunk per answer in flight, plus its current one.
//!
//! Writing in place, rather than formatting each number into `itoa`'s
//! buffer and appending it (a `memcpy` call and a capacity check per
//! number), and splitting bodies off a chunk rather than allocating each,
//! are hand-written because they are measurably cheaper on the hot path:
//! callgrind counts in docs/BENCHMARKS.md ("Storage you can trust"); the
//! `encode_items` benchmark compares the encoder with `serde_json::to_vec`.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use feed_domain::ItemId;

/// The size of the chunks bodies are split off.
pub const CHUNK: usize = 4096;

thread_local! {
    static CHUNKS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// An upper bound of the encoded size of `n` items: brackets plus ten digits
/// and a comma each.
pub const fn encoded_len_hint(n: usize) -> usize {
    2 + n * 11
}

/// `[1,2,3]` for the given items, split off this thread's chunk.
pub fn encode_items(items: &[ItemId]) -> Bytes {
    CHUNKS.with_borrow_mut(|chunk| {
        let bound = encoded_len_hint(items.len());
        if chunk.capacity() < bound {
            // Takes the chunk back when every body split off it is gone,
            // else starts a new one (the last body frees the old).
            chunk.reserve(bound.max(CHUNK));
        }
        // Zeroes only the answer's room, not a whole chunk.
        chunk.resize(bound, 0);
        let len = write_items(items, chunk);
        chunk.truncate(len);
        chunk.split().freeze()
    })
}

/// Writes `[1,2,3]` for the given items at the start of `out` and returns
/// its length; the bytes of `out` past it are left as they are.
///
/// # Panics
/// If `out` is shorter than [`encoded_len_hint`] of the items.
pub fn write_items(items: &[ItemId], out: &mut [u8]) -> usize {
    let bound = encoded_len_hint(items.len());
    let out = &mut out[..bound];
    out[0] = b'[';
    let mut at = 1;
    for item in items {
        at = write_u32(out, at, item.get());
        out[at] = b',';
        at += 1;
    }
    // The last comma becomes the closing bracket (or, with no items, the
    // bracket goes right after the opening one).
    let end = at.max(2);
    out[end - 1] = b']';
    end
}

/// Two decimal digits of every number below 100.
const PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// The eight decimal digits of `n` (below 10^8, with leading zeros), one a
/// byte as values 0 to 9, in a `u64` whose first byte in memory
/// (little-endian) is the most significant digit. All eight are made at
/// once, in lanes of one `u64`: the two halves of four digits in 32-bit
/// lanes, then pairs of two digits in 16-bit lanes, then single digits in
/// bytes; each division by 100 or 10 is a multiplication and a shift, exact
/// for the lane's range (the tests check every boundary and two million
/// values against `format!`).
#[inline]
fn eight_digits(n: u32) -> u64 {
    let halves = u64::from(n / 10_000) | (u64::from(n % 10_000) << 32);
    let hundreds = ((halves * 10_486) >> 20) & 0x0000_007F_0000_007F;
    let pairs = hundreds | ((halves - hundreds * 100) << 16);
    let tens = ((pairs * 103) >> 10) & 0x000F_000F_000F_000F;
    tens | ((pairs - tens * 10) << 8)
}

/// Digit values to ASCII, a byte each.
const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

/// Writes `n` in decimal at `out[at..]` and returns where it ends. Up to
/// eight bytes past the end may be overwritten: `out` has room for 11
/// bytes a number (see [`encoded_len_hint`]), and the caller writes what
/// follows over them.
#[inline]
fn write_u32(out: &mut [u8], at: usize, n: u32) -> usize {
    if n < 100_000_000 {
        // Only the significant digits: the leading zeros are the low zero
        // bytes of the digit values, shifted away (one digit stays for 0).
        let digits = eight_digits(n);
        let zeros = (digits.trailing_zeros() / 8).min(7) as usize;
        let ascii = (digits | ASCII_ZEROS) >> (8 * zeros);
        out[at..at + 8].copy_from_slice(&ascii.to_le_bytes());
        return at + 8 - zeros;
    }
    let (lead, rest) = (n / 100_000_000, n % 100_000_000);
    let mut at = at;
    if lead >= 10 {
        let pair = lead as usize * 2;
        out[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        at += 2;
    } else {
        out[at] = b'0' + lead as u8;
        at += 1;
    }
    out[at..at + 8].copy_from_slice(&(eight_digits(rest) | ASCII_ZEROS).to_le_bytes());
    at + 8
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn encodes_a_json_array() {
        assert_eq!(&encode_items(&[])[..], b"[]");
        assert_eq!(&encode_items(&[ItemId::new(7)])[..], b"[7]");
        let items = [0, 17, u32::MAX].map(ItemId::new);
        assert_eq!(&encode_items(&items)[..], b"[0,17,4294967295]");
        // A long answer, then a short one: the leftover bytes stay out.
        let long: Vec<ItemId> = (1_000_000..1_000_200).map(ItemId::new).collect();
        assert_eq!(encode_items(&long).len(), 2 + 200 * 8 - 1);
        assert_eq!(&encode_items(&[ItemId::new(5)])[..], b"[5]");
        assert_eq!(&encode_items(&[])[..], b"[]");
    }

    #[test]
    fn eight_digits_at_a_time_match_format() {
        let check = |n: u32| {
            let got = (eight_digits(n) | ASCII_ZEROS).to_le_bytes();
            assert_eq!(&got[..], format!("{n:08}").as_bytes(), "{n}");
        };
        (0..1_000_000).for_each(check);
        let mut rng = fastrand::Rng::with_seed(7);
        (0..1_000_000).for_each(|_| check(rng.u32(0..100_000_000)));
        let mut base = 1u32;
        while base <= 10_000_000 {
            for n in [base - 1, base, base + 1] {
                check(n);
            }
            base *= 10;
        }
        check(99_999_999);
    }

    #[test]
    fn every_digit_count_is_written_whole() {
        let mut n = 1u64;
        while n <= u64::from(u32::MAX) {
            for m in [n - 1, n, n + 1].map(|m| m.min(u64::from(u32::MAX)) as u32) {
                assert_eq!(
                    &encode_items(&[ItemId::new(m)])[..],
                    format!("[{m}]").as_bytes()
                );
            }
            n *= 10;
        }
    }

    proptest! {
        #[test]
        fn matches_serde_json(ids in prop::collection::vec(any::<u32>(), 0..300)) {
            let items: Vec<ItemId> = ids.iter().copied().map(ItemId::new).collect();
            let ours = encode_items(&items);
            prop_assert!(ours.len() <= encoded_len_hint(items.len()));
            prop_assert_eq!(&ours[..], &serde_json::to_vec(&ids).unwrap()[..]);
        }
    }
}
