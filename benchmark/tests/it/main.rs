//! The benchmark crate's one integration-test binary.
//!
//! Every test in it runs under [`Counting`], a global allocator that counts
//! the allocations each thread makes, so that a test can prove a code path
//! allocates nothing (or exactly what it should). The counters are per
//! thread, so tests running in parallel do not see each other's allocations.

// A global allocator is an `unsafe impl GlobalAlloc` by definition: the
// trait's methods hand out raw memory. The workspace denies unsafe code; this
// file allows it for the allocator alone, which only counts and then defers
// every call to the system allocator unchanged.
#![allow(unsafe_code)]

mod allocations;
mod floor;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting allocations and reallocations per thread.
struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What one thread allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    allocations: u64,
    /// Bytes asked for by those calls (the new size, for `realloc`).
    bytes: u64,
}

thread_local! {
    // `const`-initialized and without a destructor: reading it never
    // allocates, so the allocator can use it.
    static COUNTS: Cell<Counts> = const { Cell::new(Counts { allocations: 0, bytes: 0 }) };
}

fn note(size: usize) {
    // `try_with`: a thread being torn down may still allocate.
    let _ = COUNTS.try_with(|c| {
        let mut counts = c.get();
        counts.allocations += 1;
        counts.bytes += size as u64;
        c.set(counts);
    });
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds `GlobalAlloc`'s contract; counting touches only a thread-local
// `Cell` and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's guarantees for `alloc` are passed on as they are.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` and returns what this thread allocated meanwhile.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (Counts, R) {
    let before = COUNTS.with(Cell::get);
    let result = f();
    let after = COUNTS.with(Cell::get);
    let counts = Counts {
        allocations: after.allocations - before.allocations,
        bytes: after.bytes - before.bytes,
    };
    (counts, result)
}
