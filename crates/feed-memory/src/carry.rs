//! [`Given`]: which positions of a version's feeds hold items the user was
//! already given under the version served before it, so that a swap (a
//! reload, the watch, SIGHUP, a rollback) never hands an item out twice.
//!
//! A user's items given under a version are the feed up to their offset:
//! the offset moves past every position it serves and every position it
//! skips, so an item skipped counts as given, and a chain of versions
//! carries it on. When version B replaces A, every position of a user's
//! feed in B whose item is among that user's given items in A is marked,
//! and B's offsets move past marked positions as if they had been served,
//! without serving them.
//!
//! Where the marks live: [`carry`] builds them as [`Rows`], at most one
//! bit a position of the users who have any (a bitmap, or a list of the
//! positions when that is smaller), plus an index of 4 bits a user, never
//! changed once built. A user marked later (they moved in A while
//! the carry ran, or after it) is marked in the shadow instead, one bit a
//! position of the whole table of which only such users' pages are ever
//! touched, and flagged in the late bits (one a user) that say their
//! shadow is to be read. So the memory is about one bit a position of the
//! users with progress, not of every user.
//!
//! Architecture Invariant: the rule holds exactly, with no window, and no
//! request waits for the work. [`carry`] marks every user on a background
//! thread while A still serves; each read of a user's offset clears the
//! `CHANGED` flag of their cell, which every advance sets again in the
//! same atomic write. Then B is swapped in, and [`Given::finish`] seals
//! every cell of A (no advance of A moves a sealed cell, so what A gave is
//! final: a request that loaded A just before the swap and advances after
//! gets no personal item rather than one B may give too) and marks again
//! each user whose seal found `CHANGED`. Until it is done, a request to B
//! first seals its own user's cell in A the same way, under B's stripe
//! lock of the user ([`Given::catch_up`]), so the user is never served from
//! B before what A gave them is marked. After it, a request to B reads
//! marks that no longer change: one flag load, the rows' pointer and
//! generation, the user's row found once (a bit test for a user without
//! one, and a test of their late bit), and a bit test a position; in its
//! step, after the load of its offset, it checks that the generation is
//! the same (a rollback's carry bumps it before it opens the cells again),
//! so a request that read the marks long before never advances past marks
//! made since.
//!
//! A rollback is the same carry the other way round: the version coming
//! back keeps its bits and adds those of the version it replaces, and its
//! cells are unsealed before it serves again: its rows are built anew,
//! theirs and its late marks folded in. Marks live in memory, or with the
//! progress: the rows in their own file, written whole before the swap
//! (`progress-<id>-rows.bin`), the shadow and the late bits in files of
//! [`crate::progress::Kind::Given`] and [`crate::progress::Kind::Late`],
//! journaled like offsets, so a restart keeps them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use arc_swap::{ArcSwapOption, Guard};

use feed_domain::UserId;

use crate::offsets::{Cells, zeroed};
use crate::progress::ProgressFile;
use crate::rows::{Row, Rows, RowsBuilder};
use crate::seen::SeenSet;
use crate::storage::MemoryFeedStorage;
use crate::table::FeedTable;

/// A version that was served, as the carry reads it.
pub trait Served: Send + Sync {
    /// Its storage.
    fn storage(&self) -> &MemoryFeedStorage;
}

/// Marks over one version's feed positions; see the module doc.
#[derive(Debug)]
pub struct Given {
    /// The marks [`carry`] made, for the users who have any.
    rows: ArcSwapOption<Rows>,
    /// Where `rows` are kept, and the data's id, with progress on disk.
    rows_file: Option<(PathBuf, u64)>,
    /// Marks made after [`carry`] built `rows` (a user who moved while it
    /// ran, or caught up after the swap): one bit a position of the whole
    /// table, of which only the pages of such users are ever touched.
    shadow: Cells,
    /// One bit a user of the version: their marks in `shadow` are to be
    /// read too.
    late: Cells,
    /// Bumped by every [`carry`] once its rows are in: a request that read
    /// the marks under another generation advances nothing
    /// ([`Given::is_stale`]).
    generation: AtomicU64,
    /// Set from the swap until every cell of the version before is sealed.
    catching_up: AtomicBool,
    /// That version, while `catching_up`.
    before: ArcSwapOption<Before>,
}

/// The version a carry reads from.
struct Before(Arc<dyn Served>);

impl std::fmt::Debug for Before {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Before")
    }
}

/// `u32` words for `positions` bits.
pub const fn words_for(positions: usize) -> usize {
    positions.div_ceil(32)
}

/// The rows of a [`Given`] as one request holds them.
pub(crate) type RowsGuard = Guard<Option<Arc<Rows>>>;

/// What one request reads of one user's marks: their row, if they have
/// one, and their part of the shadow, if they were marked late.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks<'a> {
    row: Option<(&'a Rows, Row)>,
    shadow: Option<&'a [AtomicU32]>,
    /// Where the user's feed starts in the table (the shadow's numbering).
    base: usize,
}

impl Marks<'_> {
    /// Whether the item at `at` of the user's feed was given before.
    #[inline]
    pub(crate) fn is_given(&self, at: usize) -> bool {
        self.row.is_some_and(|(rows, row)| rows.is_set(row, at))
            || self.shadow.is_some_and(|words| bit(words, self.base + at))
    }
}

/// Bit `at` of `words`.
#[inline]
fn bit(words: &[AtomicU32], at: usize) -> bool {
    words
        .get(at / 32)
        .is_some_and(|word| word.load(Ordering::Relaxed) & (1 << (at % 32)) != 0)
}

/// Sets bit `at` of `words`; whether it was clear (false beyond them).
fn set_bit(words: &[AtomicU32], at: usize) -> bool {
    let Some(cell) = words.get(at / 32) else {
        return false;
    };
    let bit = 1 << (at % 32);
    cell.fetch_or(bit, Ordering::Relaxed) & bit == 0
}

impl Given {
    /// No position marked, for a table of `users` users and `positions`
    /// items, in memory.
    pub fn in_memory(users: u32, positions: usize) -> Self {
        Self::with_cells(
            Cells::Memory(zeroed(words_for(positions))),
            Cells::Memory(zeroed(words_for(users as usize))),
            None,
        )
    }

    /// The marks kept in files: `shadow` (of
    /// [`crate::progress::Kind::Given`], with [`words_for`] the table's
    /// items as its users), `late` (of [`crate::progress::Kind::Late`],
    /// [`words_for`] the table's users), and the rows at `rows` (data
    /// `id`), read and installed by the caller.
    pub fn in_files(shadow: ProgressFile, late: ProgressFile, rows: PathBuf, id: u64) -> Self {
        Self::with_cells(Cells::File(shadow), Cells::File(late), Some((rows, id)))
    }

    /// Marks every user late, so that the whole shadow is read: for a
    /// shadow kept without its late bits.
    pub(crate) fn mark_every_user_late(&self) {
        for (word, cell) in self.late.words().iter().enumerate() {
            if cell.fetch_or(u32::MAX, Ordering::Relaxed) != u32::MAX
                && let Cells::File(file) = &self.late
            {
                file.moved(word as u32);
            }
        }
    }

    fn with_cells(shadow: Cells, late: Cells, rows_file: Option<(PathBuf, u64)>) -> Self {
        Self {
            rows: ArcSwapOption::empty(),
            rows_file,
            shadow,
            late,
            generation: AtomicU64::new(0),
            catching_up: AtomicBool::new(false),
            before: ArcSwapOption::empty(),
        }
    }

    /// The files the marks are kept in (the shadow, then the late bits),
    /// none in memory. The rows' own file is written whole by
    /// [`Self::write_rows`].
    pub fn files(&self) -> impl Iterator<Item = &ProgressFile> {
        [&self.shadow, &self.late]
            .into_iter()
            .filter_map(|cells| match cells {
                Cells::Memory(_) => None,
                Cells::File(file) => Some(file),
            })
    }

    /// Where the rows are kept, with progress on disk.
    pub fn rows_path(&self) -> Option<&std::path::Path> {
        self.rows_file.as_ref().map(|(path, _)| path.as_path())
    }

    /// The marks' generation and rows, for one request: the generation
    /// first, so that rows a carry installed before bumping it are seen
    /// with it.
    #[inline]
    pub(crate) fn load_rows(&self) -> (u64, RowsGuard) {
        let generation = self.generation.load(Ordering::Acquire);
        (generation, self.rows.load())
    }

    /// Whether a carry installed other rows since a request read
    /// `generation`. Called in the request's step, after the load of the
    /// user's offset: a cell opened again by a rollback
    /// ([`crate::OffsetMap::unseal_all`], after the carry) shows the new
    /// generation, so a request that read the marks before it advances
    /// nothing rather than past marks it never read.
    #[inline]
    pub(crate) fn is_stale(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Acquire) != generation
    }

    /// Serves `rows` (read back from their file at start, checked against
    /// this version's table).
    pub(crate) fn install_rows(&self, rows: Rows) {
        self.rows.store(Some(Arc::new(rows)));
    }

    /// Bytes held by the rows (the shadow's touched pages not counted).
    pub fn rows_bytes(&self) -> usize {
        self.rows.load().as_ref().map_or(0, |rows| rows.bytes())
    }

    /// Writes the rows to their file (before the swap), a no-op in memory.
    ///
    /// # Errors
    /// The system's error; then [`Self::rows_to_shadow`] keeps them durable.
    pub fn write_rows(&self) -> std::io::Result<()> {
        let (Some((path, id)), Some(rows)) = (&self.rows_file, self.rows.load_full()) else {
            return Ok(());
        };
        rows.write(path, *id)
    }

    /// Copies every row into the shadow, and marks its user late: when the
    /// rows' file cannot be written, the shadow (whose blocks were
    /// allocated when it was opened) keeps them.
    pub fn rows_to_shadow(&self, table: &FeedTable) {
        let Some(rows) = self.rows.load_full() else {
            return;
        };
        let mut words = Vec::new();
        for position in 0..table.users() {
            let Some(found) = rows.row(position, table) else {
                continue;
            };
            let len = table.feed_len(position as usize);
            words.clear();
            words.resize(len.div_ceil(64), 0u64);
            rows.or_into(found, len, &mut words);
            let base = table.start_at(position as usize);
            for at in (0..len).filter(|&at| words[at / 64] & (1 << (at % 64)) != 0) {
                self.mark_shadow(base + at);
            }
            self.mark_late(position);
        }
    }

    /// What a request for the user at `position` (whose feed starts at
    /// `base` of `table`) reads of their marks, with `rows` from
    /// [`Self::load_rows`]; `None` when nothing of their feed is marked.
    #[inline]
    pub(crate) fn marks<'a>(
        &'a self,
        rows: &'a RowsGuard,
        position: u32,
        base: usize,
        table: &FeedTable,
    ) -> Option<Marks<'a>> {
        let row = rows
            .as_deref()
            .and_then(|rows| Some((rows, rows.row(position, table)?)));
        let shadow = self.is_late(position).then(|| self.shadow.words());
        (row.is_some() || shadow.is_some()).then_some(Marks { row, shadow, base })
    }

    /// Whether the user at `position` has marks in the shadow.
    #[inline]
    fn is_late(&self, position: u32) -> bool {
        bit(self.late.words(), position as usize)
    }

    /// Marks `position` of the table in the shadow; whether it was not
    /// marked before.
    fn mark_shadow(&self, position: usize) -> bool {
        let fresh = set_bit(self.shadow.words(), position);
        if fresh && let Cells::File(file) = &self.shadow {
            // A word is a "user" of the file: journaled at the next sync.
            file.moved((position / 32) as u32);
        }
        fresh
    }

    /// Marks the user at `position` late (their shadow is read).
    fn mark_late(&self, position: u32) {
        if set_bit(self.late.words(), position as usize)
            && let Cells::File(file) = &self.late
        {
            file.moved(position / 32);
        }
    }

    /// Marks, in the shadow, the positions of `feed` (the user at
    /// `position`, starting at `base`) whose item is in `given`, and the
    /// user late; returns how many were not marked before.
    fn mark_given(
        &self,
        position: u32,
        given: &[u32],
        feed: &[u32],
        base: usize,
        seen: &mut SeenSet,
    ) -> usize {
        let mut marked = 0;
        let mut matched = false;
        for_each_given(given, feed, seen, |at| {
            matched = true;
            if self.mark_shadow(base + at) {
                marked += 1;
            }
        });
        // Whenever a position matched, not only when its bit was new: a
        // shadow bit may be durable without the late bit (a crash between
        // their syncs). Both writes are relaxed: the carry's protocol (the
        // stripe lock, `settle`, `catching_up`) orders them before any
        // request reads them.
        if matched {
            self.mark_late(position);
        }
        marked
    }

    /// Makes sure `user` (at `position` of `storage`, this version's) has
    /// everything the version before gave them marked, while that version
    /// is being sealed; a flag load otherwise.
    #[inline]
    pub fn catch_up(&self, user: UserId, position: u32, storage: &MemoryFeedStorage) {
        if self.catching_up.load(Ordering::Acquire) {
            self.catch_up_now(user, position, storage);
        }
    }

    #[cold]
    fn catch_up_now(&self, user: UserId, position: u32, storage: &MemoryFeedStorage) {
        let before = self.before.load();
        let Some(before) = before.as_ref() else {
            return;
        };
        let old = before.0.storage();
        let Some((at, feed)) = old.table().lookup(user) else {
            return;
        };
        // Sealed and carried (by `finish`, or an earlier request): nothing
        // to wait for.
        if old.offsets().is_settled(at) {
            return;
        }
        // Whoever seals the cell marks and settles it under this lock.
        let _user = storage.offsets().stripe(position);
        if let Some((offset, true)) = old.offsets().seal(at) {
            if let Some((_, base, now)) = storage.table().locate(user) {
                let given = &feed[..(offset as usize).min(feed.len())];
                self.mark_given(position, given, now, base, &mut SeenSet::default());
            }
            old.offsets().settle(at);
        }
    }

    /// After the swap: seals every user's cell of the version before, marks
    /// again those who moved since [`carry`] read them, and ends the catching
    /// up. Returns how many users moved. `after` is this version's storage.
    pub fn finish(&self, after: &MemoryFeedStorage) -> usize {
        let Some(before) = self.before.load_full() else {
            return 0;
        };
        let before = before.0.storage();
        let mut seen = SeenSet::default();
        let mut moved = 0;
        for (at, (user, feed)) in before.table().entries().enumerate() {
            let user = UserId::new(user);
            let Some((position, base, now)) = after.table().locate(user) else {
                before.offsets().seal(at as u32);
                continue;
            };
            let _user = after.offsets().stripe(position);
            if let Some((offset, true)) = before.offsets().seal(at as u32) {
                moved += 1;
                let given = &feed[..(offset as usize).min(feed.len())];
                self.mark_given(position, given, now, base, &mut seen);
                before.offsets().settle(at as u32);
            }
        }
        self.catching_up.store(false, Ordering::Release);
        self.before.store(None);
        moved
    }
}

/// Calls `mark` with each position of `feed` whose item is in `given`.
fn for_each_given(given: &[u32], feed: &[u32], seen: &mut SeenSet, mut mark: impl FnMut(usize)) {
    if given.is_empty() {
        return;
    }
    let mut set = seen.start(given.len());
    set.hold_all(given);
    for (at, &item) in feed.iter().enumerate() {
        if set.contains(item, given) {
            mark(at);
        }
    }
}

/// What [`carry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    /// Users of both versions with progress in the version before.
    pub users: usize,
    /// Positions of the new version marked as given.
    pub marked: usize,
    /// Users of the new version with a row of marks (theirs from this
    /// carry, and from earlier ones when it serves again).
    pub rows: usize,
}

/// Before `after` is swapped in over `before` (which still serves): marks
/// every position of `after`'s feeds whose item its user was given under
/// `before`, in rows for the users who have any, installed in `given`
/// (with those `given` held already, when `after` serves again after a
/// rollback), and opens the catching up that [`Given::finish`] ends after
/// the swap. Runs on a background thread; nothing waits for it but the
/// swap. The caller then makes the rows durable ([`Given::write_rows`]).
/// `after`'s retry keys are forgotten first: marks may now fall inside a
/// page it answered, which could then not be replayed as it was
/// (docs/API.md: after a swap a retry is a new request).
pub fn carry(before: &Arc<dyn Served>, after: &MemoryFeedStorage, given: &Given) -> Carried {
    let old = before.storage();
    after.offsets().forget_keys();
    let table = after.table();
    let held = given.rows.load_full();
    let mut builder = RowsBuilder::new(table.users());
    let mut seen = SeenSet::default();
    let mut row: Vec<u64> = Vec::new();
    let mut carried = Carried {
        users: 0,
        marked: 0,
        rows: 0,
    };
    for (position, (user, feed)) in table.entries().enumerate() {
        let position = position as u32;
        row.clear();
        row.resize(feed.len().div_ceil(64), 0);
        // What this version carried before, when it serves again.
        if let Some(rows) = &held
            && let Some(found) = rows.row(position, table)
        {
            rows.or_into(found, feed.len(), &mut row);
        }
        if given.is_late(position) {
            let base = table.start_at(position as usize);
            for at in (0..feed.len()).filter(|&at| bit(given.shadow.words(), base + at)) {
                row[at / 64] |= 1 << (at % 64);
            }
        }
        if let Some((at, old_feed)) = old.table().lookup(UserId::new(user)) {
            let offset = old.offsets().take_changed(at) as usize;
            if offset > 0 {
                carried.users += 1;
                let gave = &old_feed[..offset.min(old_feed.len())];
                for_each_given(gave, feed, &mut seen, |at| {
                    let (word, bit) = (at / 64, 1 << (at % 64));
                    if row[word] & bit == 0 {
                        row[word] |= bit;
                        carried.marked += 1;
                    }
                });
            }
        }
        if row.iter().any(|&word| word != 0) {
            builder.push(position, &row, feed.len());
            carried.rows += 1;
        }
    }
    // The catching up opens first, then the rows, then the generation
    // (Release): a request that reads the new generation (after its
    // catch-up check, which reads `catching_up`) also catches up; one that
    // read the old one is stale at its step once the cells open again.
    given
        .before
        .store(Some(Arc::new(Before(Arc::clone(before)))));
    given.catching_up.store(true, Ordering::Release);
    given.rows.store(Some(Arc::new(builder.finish())));
    given.generation.fetch_add(1, Ordering::Release);
    carried
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashSet;

    use feed_domain::ItemId;

    use super::*;
    use crate::table::FeedTable;

    /// A version, as the data manager holds one.
    pub(crate) struct Version(pub(crate) MemoryFeedStorage);

    impl Served for Version {
        fn storage(&self) -> &MemoryFeedStorage {
            &self.0
        }
    }

    /// A version whose users `ids` have the feeds `feeds`.
    pub(crate) fn version(ids: &[u64], feeds: &[Vec<u32>]) -> Arc<Version> {
        let mut offsets = vec![0u64];
        let mut items = Vec::new();
        for feed in feeds {
            items.extend_from_slice(feed);
            offsets.push(items.len() as u64);
        }
        let table = FeedTable::from_csr(ids.to_vec(), offsets, items).unwrap();
        Arc::new(Version(MemoryFeedStorage::new(table)))
    }

    fn take(version: &Version, user: u64, size: usize) -> Vec<u32> {
        let mut out = Vec::new();
        version
            .0
            .take_now(UserId::new(user), size, &mut out)
            .unwrap();
        out.into_iter().map(ItemId::get).collect()
    }

    /// Swaps from `before` to `after`, as the data manager does: carry,
    /// (the swap), finish; `after` serving again after a rollback is
    /// unsealed first.
    pub(crate) fn swap(before: &Arc<Version>, after: &Arc<Version>) -> Carried {
        let given = after.0.given_or_init(|| {
            Given::in_memory(after.0.table().users(), after.0.table().total_items())
        });
        let before_dyn: Arc<dyn Served> = Arc::clone(before) as Arc<dyn Served>;
        let carried = carry(&before_dyn, &after.0, given);
        after.0.offsets().unseal_all();
        given.finish(&after.0);
        carried
    }

    /// The issue's own example: given 5001-5030 under v1; v2 starts
    /// 5020-5040 and ends 5001-5010; a rollback to v1 after 5031-5040 were
    /// given under v2.
    #[test]
    fn a_refresh_and_a_rollback_repeat_nothing() {
        let v1_feed: Vec<u32> = (5001..=5060).collect();
        let mut v2_feed: Vec<u32> = (5020..=5040).collect();
        v2_feed.extend(6001..=6010);
        v2_feed.extend(5001..=5010);
        let v1 = version(&[7], &[v1_feed]);
        let v2 = version(&[7], &[v2_feed]);
        assert_eq!(take(&v1, 7, 30), (5001..=5030).collect::<Vec<_>>());

        let carried = swap(&v1, &v2);
        assert_eq!((carried.users, carried.marked, carried.rows), (1, 21, 1));
        // 5020-5030 and 5001-5010 are skipped; the rest comes in order.
        assert_eq!(take(&v2, 7, 10), (5031..=5040).collect::<Vec<_>>());
        assert_eq!(take(&v2, 7, 10), (6001..=6010).collect::<Vec<_>>());
        assert_eq!(take(&v2, 7, 10), Vec::<u32>::new(), "the rest was given");
        // v1, now sealed, hands out nothing more.
        assert_eq!(take(&v1, 7, 10), Vec::<u32>::new());

        swap(&v2, &v1);
        // Under v2 the user was given 5020-5040 (all of it, skipped ones
        // included): v1 goes on after 5030, past 5031-5040.
        assert_eq!(take(&v1, 7, 5), (5041..=5045).collect::<Vec<_>>());
    }

    /// A retry key of the version a rollback brings back is forgotten: a
    /// retry after the swap is a new page, and nothing is given twice.
    #[test]
    fn a_retry_after_a_rollback_is_a_new_page() {
        let feed: Vec<u32> = (1..=30).collect();
        let v1 = version(&[7], std::slice::from_ref(&feed));
        let v2 = version(&[7], &[feed]);
        let key = feed_domain::IdempotencyKey::parse(b"k").unwrap();
        let keyed = |version: &Version| {
            let mut out = Vec::new();
            let answer = version
                .0
                .take_keyed_now(UserId::new(7), 3, key, &mut out)
                .unwrap();
            (answer, out.into_iter().map(ItemId::get).collect::<Vec<_>>())
        };
        let (first, items) = keyed(&v1);
        assert!(matches!(first, feed_domain::Keyed::Fresh { .. }));
        assert_eq!(items, [1, 2, 3]);
        swap(&v1, &v2);
        assert_eq!(take(&v2, 7, 3), [4, 5, 6]);
        swap(&v2, &v1);
        let (again, items) = keyed(&v1);
        assert!(
            matches!(again, feed_domain::Keyed::Fresh { .. }),
            "{again:?}"
        );
        assert_eq!(items, [7, 8, 9]);
    }

    /// Users who move in the old version while the carry runs, or after
    /// the swap on a request that loaded the old version just before it,
    /// are caught: with a user moving in the old version between carry and
    /// finish, nothing is served twice.
    #[test]
    fn users_who_move_during_the_carry_are_caught() {
        let feed: Vec<u32> = (1..=100).collect();
        let mut reversed = feed.clone();
        reversed.reverse();
        let old = version(&[1, 2], &[feed.clone(), feed]);
        let new = version(&[1, 2], &[reversed.clone(), reversed]);
        take(&old, 1, 10);
        let given = new.0.given_or_init(|| Given::in_memory(2, 200));
        let old_dyn: Arc<dyn Served> = Arc::clone(&old) as Arc<dyn Served>;
        carry(&old_dyn, &new.0, given);
        // After the carry read them: user 1 moves on, user 2 starts.
        let late_1 = take(&old, 1, 10);
        let late_2 = take(&old, 2, 5);
        // The swap: user 2 asks the new version before finish.
        let new_2 = take(&new, 2, 95);
        assert!(new_2.iter().all(|item| !late_2.contains(item)), "{new_2:?}");
        assert_eq!(new_2.len(), 95);
        given.finish(&new.0);
        let new_1 = take(&new, 1, 100);
        let old_1: HashSet<u32> = (1..=10).chain(late_1).collect();
        assert_eq!(new_1.len(), 80);
        assert!(new_1.iter().all(|item| !old_1.contains(item)));
        // Sealed: the old version gives nothing more.
        assert!(take(&old, 1, 10).is_empty() && take(&old, 2, 10).is_empty());
    }

    /// Threads ask both versions while the swap happens: no item is given
    /// twice to a user, whichever version gave it.
    #[test]
    fn concurrent_requests_across_a_swap_repeat_nothing() {
        let users: Vec<u64> = (0..8).collect();
        let feeds: Vec<Vec<u32>> = users.iter().map(|_| (1..=400).collect()).collect();
        let shuffled: Vec<Vec<u32>> = users
            .iter()
            .map(|&u| {
                let mut feed: Vec<u32> = (1..=400).collect();
                fastrand::Rng::with_seed(u).shuffle(&mut feed);
                feed
            })
            .collect();
        let old = version(&users, &feeds);
        let new = version(&users, &shuffled);
        let current = Arc::new(std::sync::Mutex::new(Arc::clone(&old)));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..8)
            .map(|t| {
                let (current, stop) = (Arc::clone(&current), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut got: Vec<(u64, u32)> = Vec::new();
                    let mut n = t;
                    while !stop.load(Ordering::Relaxed) || n < t + 64 {
                        let served = Arc::clone(&current.lock().unwrap());
                        let user = n % 8;
                        n += 1;
                        got.extend(take(&served, user, 3).into_iter().map(|i| (user, i)));
                    }
                    got
                })
            })
            .collect();
        let given = new.0.given_or_init(|| Given::in_memory(8, 8 * 400));
        let old_dyn: Arc<dyn Served> = Arc::clone(&old) as Arc<dyn Served>;
        carry(&old_dyn, &new.0, given);
        *current.lock().unwrap() = Arc::clone(&new);
        given.finish(&new.0);
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for client in clients {
            all.extend(client.join().unwrap());
        }
        let distinct: HashSet<_> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "an item was given twice");
    }
}
