//! The response body: a JSON array of item ids, written by hand.
//!
//! An item id is a `u32`, so the array is digits and commas only: nothing to
//! escape, and `itoa` writes each number without a format machinery. It
//! writes into a per-thread scratch `Vec<u8>` and copies the result into a
//! `Bytes` of exactly the body's length: one allocation per response, the
//! one actix needs to own the body. The `encode_items` benchmark compares
//! this with `serde_json::to_vec`; an earlier version that wrote through
//! `BytesMut`'s `put_*` calls measured slower than `serde_json` and
//! allocated twice (figures in docs/BENCHMARKS.md).

use std::cell::RefCell;

use bytes::Bytes;
use feed_domain::ItemId;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An upper bound of the encoded size of `n` items: brackets plus ten digits
/// and a comma each.
pub const fn encoded_len_hint(n: usize) -> usize {
    2 + n * 11
}

/// `[1,2,3]` for the given items, in one allocation of the exact size.
pub fn encode_items(items: &[ItemId]) -> Bytes {
    SCRATCH.with_borrow_mut(|out| {
        out.clear();
        write_items(items, out);
        Bytes::copy_from_slice(out)
    })
}

/// Appends `[1,2,3]` for the given items to `out`.
pub fn write_items(items: &[ItemId], out: &mut Vec<u8>) {
    out.reserve(encoded_len_hint(items.len()));
    let mut digits = itoa::Buffer::new();
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(digits.format(item.get()).as_bytes());
    }
    out.push(b']');
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
    }

    proptest! {
        #[test]
        fn matches_serde_json(ids in prop::collection::vec(any::<u32>(), 0..300)) {
            let items: Vec<ItemId> = ids.iter().copied().map(ItemId::new).collect();
            let ours = encode_items(&items);
            prop_assert!(ours.len() <= encoded_len_hint(items.len()));
            prop_assert_eq!(serde_json::from_slice::<Vec<u32>>(&ours).unwrap(), ids);
        }
    }
}
