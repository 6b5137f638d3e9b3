//! No repeats across data versions in the cluster: what a user was given
//! under the version served before is passed over in the one served now,
//! checked where their progress lives, in the same round trip.
//!
//! A user's items given under a version are its feed up to their offset
//! (the offset moves past what it serves and what it passes over, so an
//! item passed over counts as given, and a chain of versions carries it
//! on). While the cluster keeps a previous version, every request to the
//! current one is one small script, [`CARRIED`], over the user's two keys
//! (`o:{U}:CURRENT` and `o:{U}:PREVIOUS`, one hash tag, one slot). In one
//! atomic step it:
//!
//! 1. **seals** the previous key: its offset `n` becomes `sEPOCH:AT`, the
//!    pointers' count of moves ([`crate::keys::EPOCH`]) when the sealing
//!    frontend switched, and the offset it had. `HINCRBY` refuses a value
//!    that is no number, and both scripts refuse a key sealed at their own
//!    switch's count or later, so a frontend that has not switched yet
//!    moves nothing there any more (it answers from the fallback list until
//!    it switches, within `redis.poll_ms`): what the previous version gave
//!    is final;
//! 2. **checks the marks**: field `g` of the current key holds one bit per
//!    position of the user's feed, set where the item was given before;
//!    field `c` (`VERSION:AT`, as `redis-load` writes it ahead of the
//!    publish, [`write_ahead`]) says they include everything that version
//!    gave up to offset `AT`. When the sealed offset is further on, the
//!    script answers which positions of the previous feed are missing, and
//!    the frontend, which maps both snapshots, sends their marks in a
//!    second call ([`marks`]): the one second round trip, once per user
//!    and version, for users whose marks were not written ahead or who
//!    moved after their offset was read. Then `c` becomes
//!    `VERSION:AT:EPOCH`, settled at this switch: the user's later requests
//!    read only their own key;
//! 3. **walks** on from the offset over `size` unmarked positions, moves
//!    the offset there, and answers the range with its bytes of marks, so
//!    the frontend serves the unmarked items of the range from its
//!    snapshot.
//!
//! A rollback is the same the other way round, at a higher count: the
//! version coming back finds its own keys sealed at a lower count, unseals
//! them (and forgets their retry keys: after a swap a retry is a new
//! request) and adds the marks of what the version it replaces gave. A key
//! sealed at the frontend's own count or later belongs to a switch that
//! frontend has not made yet, and is refused. An unsealed key's offset is
//! written `uEPOCH:AT` from then on, never a plain number again: a
//! frontend that has not seen the rollback (its `HINCRBY`, its `PAGE`, or
//! the carried request at a lower count) is refused on it rather than
//! move it past marks it does not read. So is a frontend whose previous
//! version a later switch holds (its old key sealed or served again at a
//! higher count).
//!
//! Cost: the request is `EVALSHA` with one `HMGET` of the user's key and,
//! when something moved, one `HSET` (docs/SCALING.md has the figures),
//! against one `HINCRBY` while the cluster keeps no previous version.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use feed_domain::RankedFeeds;

use crate::cluster::ClusterSettings;
use crate::export::{ProgressScan, ScanError};
use crate::keys;

/// The version the cluster keeps as previous, as a request to the current
/// one carries from it: its number, the pointers' count of moves at the
/// switch, and its feeds when this frontend maps its snapshot (without them
/// a user whose marks are missing gets the fallback list until a frontend
/// that has them writes them). It also keeps a bit a user of the current
/// version: set when the carried request said the user is settled at this
/// switch with nothing marked from their offset on, after which their
/// requests without a retry key are the plain `HINCRBY` again (the
/// carried request and `HINCRBY` agree on such a key; a switch makes a
/// new `Before`, with no bit set).
pub struct Before {
    /// Its version number.
    pub version: u64,
    /// The pointers' count of moves ([`crate::keys::EPOCH`]) when the
    /// current version was switched to: seals carry it.
    pub epoch: u64,
    /// Its feeds, if mapped here.
    pub feeds: Option<Arc<dyn RankedFeeds>>,
    /// The cluster no longer keeps it (this frontend is left behind): its
    /// keys are not read or sealed, the current key's marks still walked.
    pub gone: bool,
    /// A bit a user of the current version: settled, nothing marked ahead.
    clear: OnceLock<Box<[AtomicU64]>>,
}

impl Before {
    /// Carries from `version`, switched to at `epoch`, with its `feeds` if
    /// mapped here.
    pub fn new(version: u64, epoch: u64, feeds: Option<Arc<dyn RankedFeeds>>) -> Self {
        Self {
            version,
            epoch,
            feeds,
            gone: false,
            clear: OnceLock::new(),
        }
    }

    /// The same, once the cluster no longer keeps it.
    #[must_use]
    pub fn gone(&self) -> Self {
        Self {
            gone: true,
            ..Self::new(self.version, self.epoch, None)
        }
    }

    /// Whether the user at `position` is settled with nothing marked ahead.
    #[inline]
    pub fn is_clear(&self, position: u32) -> bool {
        self.clear
            .get()
            .and_then(|words| words.get(position as usize / 64))
            .is_some_and(|word| word.load(Ordering::Relaxed) & (1 << (position % 64)) != 0)
    }

    /// Records that the user at `position` (of `users`) is settled with
    /// nothing marked ahead.
    pub fn set_clear(&self, position: u32, users: u32) {
        if position >= users {
            return;
        }
        let words = self
            .clear
            .get_or_init(|| (0..users.div_ceil(64)).map(|_| AtomicU64::new(0)).collect());
        if let Some(word) = words.get(position as usize / 64) {
            word.fetch_or(1 << (position % 64), Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Before {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Before")
            .field("version", &self.version)
            .field("epoch", &self.epoch)
            .field("mapped", &self.feeds.is_some())
            .finish_non_exhaustive()
    }
}

/// The marks of `feed` (a version's feed of a user, one bit a position,
/// least significant bit first) for the items of `given` (what the user
/// was given under the version before).
pub fn marks(given: &[u32], feed: &[u32]) -> Vec<u8> {
    let mut sorted = given.to_vec();
    sorted.sort_unstable();
    let mut bits = vec![0u8; feed.len().div_ceil(8)];
    for (at, item) in feed.iter().enumerate() {
        if sorted.binary_search(item).is_ok() {
            bits[at / 8] |= 1 << (at % 8);
        }
    }
    bits
}

/// Whether position `at` is marked in `bytes`, the marks from position
/// `from` on as the script answers them (the byte holding `from` first).
#[inline]
pub fn is_marked(bytes: &[u8], from: u64, at: u64) -> bool {
    let byte = (at / 8 - from / 8) as usize;
    bytes.get(byte).is_some_and(|b| b & (1 << (at % 8)) != 0)
}

/// What [`CARRIED`] answers first: tag 0, a new page; 1, the latest retry
/// key's page again; 2, the latest retry key with another size; 3, the key
/// is sealed by another version; 4, marks are missing. Every answer has
/// five parts; the fifth, for a page, is 1 when nothing is marked from its
/// end on (the user's later requests may be the plain `HINCRBY`).
pub mod tag {
    /// A new page: `{0, start, end, marks, clear}`.
    pub const PAGE: i64 = 0;
    /// The latest retry key's page again: `{1, start, end, marks, clear}`.
    pub const REPLAYED: i64 = 1;
    /// The latest retry key with another size: `{2, its size, 0, ''}`.
    pub const OTHER_SIZE: i64 = 2;
    /// Sealed by another version: `{3, that version, 0, ''}`.
    pub const SEALED: i64 = 3;
    /// The marks of the previous version's positions from `{4, FROM, TO,
    /// ''}` are missing.
    pub const MISSING: i64 = 4;
}

/// The request of a version with a previous one; see the module doc.
///
/// `KEYS`: the user's key in the current version, then in the previous.
/// `ARGV`: the most items wanted, the retry key's hash (or empty), the
/// feed's length, the previous version, the pointers' count of moves at
/// this frontend's switch, `1` when the previous version is gone (its key
/// is then neither read nor sealed: only the current key's marks are
/// walked); then, when the script asked for marks, the marks, the offset
/// they run to and the one they run from.
pub static CARRIED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local cur, old = KEYS[1], KEYS[2]
local size, key, len = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local prev, epoch, gone = ARGV[4], tonumber(ARGV[5]), ARGV[6] == '1'
local function fields(name, ...)
  local got = redis.pcall('HMGET', name, ...)
  if got.err then
    local n = redis.call('GET', name)
    redis.call('DEL', name)
    redis.call('HSET', name, 'n', n)
    got = redis.call('HMGET', name, ...)
  end
  return got
end
local function form(value)
  if value then
    local kind, by, at = string.match(value, '^([su])(%d+):(%d+)$')
    if kind then return kind, tonumber(by), tonumber(at) end
  end
  return nil, nil, nil
end
local function number(value)
  local n = tonumber(value or '0')
  if not n or n < 0 or n ~= math.floor(n) then
    return nil
  end
  return n
end
local got = fields(cur, 'n', 'c', 'g', 'k')
local raw, c, g, latest = got[1], got[2], got[3] or '', got[4]
local set = {}
local kind, by, n = form(raw)
if kind == 's' and by >= epoch then return {3, by, 0, '', 0} end
if kind == 'u' and by > epoch then return {3, by, 0, '', 0} end
local served_again = kind ~= nil
if kind == 's' or (kind == 'u' and by < epoch) then
  redis.call('HDEL', cur, 'k')
  latest = false
end
if not kind then
  n = number(raw)
  if not n then
    return redis.error_reply('ERR offset ' .. tostring(raw) .. ' is not a progress')
  end
end
local upto, settled = 0, false
if c then
  local from, at, at_epoch = string.match(c, '^(%d+):(%d+):?(%d*)$')
  if from == prev then
    upto = tonumber(at)
    settled = tonumber(at_epoch) == epoch
  end
end
if not settled and not gone then
  local oraw = fields(old, 'n')[1]
  local okind, oby, given = form(oraw)
  if okind and oby > epoch then return {3, oby, 0, '', 0} end
  if not okind then
    given = number(oraw)
    if not given then
      return redis.error_reply('ERR previous offset ' .. tostring(oraw) .. ' is not a progress')
    end
  end
  if okind ~= 's' or oby < epoch then
    redis.call('HSET', old, 'n', 's' .. string.format('%d', epoch) .. ':' .. string.format('%d', given))
  end
  if given > upto then
    local marks, to, since = ARGV[7], tonumber(ARGV[8] or ''), tonumber(ARGV[9] or '')
    if not marks or to ~= given or not since or since > upto then
      return {4, upto, given, '', 0}
    end
    local out = {}
    for i = 1, math.max(#g, #marks) do
      out[i] = string.char(bit.bor(string.byte(g, i) or 0, string.byte(marks, i) or 0))
    end
    g = table.concat(out)
    set[#set + 1] = 'g'
    set[#set + 1] = g
  end
  set[#set + 1] = 'c'
  set[#set + 1] = prev .. ':' .. string.format('%d', given) .. ':' .. string.format('%d', epoch)
end
local function walk(from)
  local at = from
  if #g == 0 then
    if at < len then at = math.min(at + size, len) end
    return at
  end
  local taken = 0
  while taken < size and at < len do
    local byte = string.byte(g, math.floor(at / 8) + 1) or 0
    if bit.band(byte, bit.lshift(1, at % 8)) == 0 then taken = taken + 1 end
    at = at + 1
  end
  return at
end
local function bytes(from, to)
  if to <= from or #g == 0 then return '' end
  return string.sub(g, math.floor(from / 8) + 1, math.floor((to - 1) / 8) + 1)
end
local function clear(from)
  if served_again then return 0 end
  if #g == 0 then return 1 end
  local first = math.floor(from / 8) + 1
  local byte = string.byte(g, first)
  if byte and bit.band(byte, bit.lshift(255, from % 8)) ~= 0 then return 0 end
  for i = first + 1, #g do
    if string.byte(g, i) ~= 0 then return 0 end
  end
  return 1
end
local function save()
  if #set > 0 then redis.call('HSET', cur, unpack(set)) end
end
if key ~= '' and latest then
  local k, start, was = string.match(latest, '^(%d+):(%d+):(%d+)$')
  if k == key then
    if tonumber(was) ~= size then save() return {2, tonumber(was), 0, '', 0} end
    save()
    start = tonumber(start)
    local to = walk(start)
    return {1, start, to, bytes(start, to), clear(to)}
  end
end
local to = walk(n)
if served_again then
  set[#set + 1] = 'n'
  set[#set + 1] = 'u' .. string.format('%d', epoch) .. ':' .. string.format('%d', to)
elseif to ~= n then
  set[#set + 1] = 'n'
  set[#set + 1] = string.format('%d', to)
end
if key ~= '' then
  set[#set + 1] = 'k'
  set[#set + 1] = key .. ':' .. string.format('%d', n) .. ':' .. string.format('%d', size)
end
save()
return {0, n, to, bytes(n, to), clear(to)}
",
    )
});

/// What [`write_ahead`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ahead {
    /// The version whose gifts were carried.
    pub from: u64,
    /// Users with progress in it whose marks were written.
    pub users: u64,
    /// Positions marked.
    pub marked: u64,
}

/// Users whose marks one pipelined round trip writes.
const WRITE_PAGE: usize = 1_000;

/// Before version `to` is published over `from`: for every user with
/// progress in `from` (read as [`ProgressScan::offsets`] reads them, while
/// frontends serve), writes into their key in `to` the marks
/// `marks(user, offset)` gives (`None`: the user has no feed in `to`) and
/// the offset they were made from, so that their first request to `to`
/// is one call. Users who move in `from` after their offset was read get
/// the rest in a second call at that request (see the module doc).
///
/// # Errors
/// The cluster's, as a [`ScanError`].
pub fn write_ahead(
    cluster: &ClusterSettings,
    (from, to): (u64, u64),
    mut marks: impl FnMut(u64, u64) -> Option<Vec<u8>>,
) -> Result<Ahead, ScanError> {
    let mut scan = ProgressScan::connect(cluster)?;
    let mut writer = crate::load::blocking_connection(cluster)?;
    let mut ahead = Ahead {
        from,
        ..Ahead::default()
    };
    let mut page: Vec<(u64, u64, Vec<u8>)> = Vec::with_capacity(WRITE_PAGE);
    let mut flush = |page: &mut Vec<(u64, u64, Vec<u8>)>| -> Result<(), ScanError> {
        let mut pipe = redis::cluster::cluster_pipe();
        for (user, given, bits) in page.drain(..) {
            let key = keys::offset(user, to);
            let made_from = format!("{from}:{given}");
            if bits.is_empty() {
                pipe.hset(key, "c", made_from).ignore();
            } else {
                pipe.hset_multiple(key, &[("g", bits), ("c", made_from.into_bytes())])
                    .ignore();
            }
        }
        pipe.query::<()>(&mut writer)?;
        Ok(())
    };
    scan.offsets(from, |user, given| -> Result<(), ScanError> {
        if given == 0 {
            return Ok(());
        }
        let Some(mut bits) = marks(user, given) else {
            return Ok(());
        };
        let marked: u32 = bits.iter().map(|b| b.count_ones()).sum();
        if marked == 0 {
            bits.clear();
        }
        ahead.users += 1;
        ahead.marked += u64::from(marked);
        page.push((user, given, bits));
        if page.len() >= WRITE_PAGE {
            flush(&mut page)?;
        }
        Ok(())
    })?;
    flush(&mut page)?;
    Ok(ahead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_the_positions_of_given_items() {
        let feed = [5020, 5021, 6001, 5001, 7000, 5002, 1, 2, 3];
        let bits = marks(&[5001, 5002, 5020, 9999], &feed);
        assert_eq!(bits, [0b0010_1001, 0]);
        let marked: Vec<u64> = (0..feed.len() as u64)
            .filter(|&at| is_marked(&bits, 0, at))
            .collect();
        assert_eq!(marked, [0, 3, 5]);
        // From position 8 on, the script answers the byte holding 8 first.
        assert!(!is_marked(&bits[1..], 8, 8));
        assert!(!is_marked(&[], 3, 3), "no bytes: nothing marked");
        assert!(marks(&[], &feed).iter().all(|&b| b == 0));
    }
}
