//! What the static build replaces of musl, its C library: the two parts a `/mcp` tool call
//! leans on that musl keeps small rather than fast.
//!
//! - [`SmallFront`], the static build's global allocator: a cache of small freed blocks in
//!   front of musl's malloc.
//! - [`compare`], exported as `memcmp` and `bcmp` on musl only: musl compares a byte at a
//!   time; Rust calls these for every `==` and `cmp` of strings and byte slices (map keys,
//!   header names, methods), about 80 times per `/mcp` call.
//!
//! # The allocator
//! musl's allocator spends several times what glibc's does on a malloc/free pair, and it
//! keeps its metadata apart from the blocks, so each pair touches more cache lines. A `/mcp`
//! tool call still makes 13 pairs (README, "Gateway"), most of them blocks of a few dozen
//! bytes that the next call asks for again. [`SmallFront`] keeps freed blocks of up to
//! [`MAX_SMALL`] bytes on one free list per power-of-two size class and hands them out again;
//! everything else, and a class whose list is empty, full or in use by the other thread at that
//! moment, goes to the C library as before.
//!
//! - **Bounded:** at most [`KEEP`] blocks per class, so at most 65,024 bytes are held back
//!   from the C library in all.
//! - **Never waits:** a class is taken with one compare-and-swap; when the other thread (the
//!   worker) holds it, the call goes straight to the C library instead of spinning.
//! - **Interchangeable blocks:** every block of a class is allocated from the C library with
//!   the class's size and an alignment of 16, whoever asked for it, so a block freed to the
//!   list or to the C library is freed as it was made.
//! - Requests aligned to more than 16 bytes bypass the lists.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

/// The smallest class, as a power of two (16 bytes: the C library's own minimum alignment).
const MIN_SHIFT: u32 = 4;
/// Classes of 16, 32, ..., 1024 bytes.
const CLASSES: usize = 7;
/// The largest block kept: bigger ones go to the C library and back.
pub const MAX_SMALL: usize = 1 << (MIN_SHIFT as usize + CLASSES - 1);
/// Blocks kept per class at most.
pub const KEEP: usize = 32;
/// The alignment every kept block is made with.
const ALIGN: usize = 16;

/// A freed block on a class's list: its first word points to the next one.
struct Free {
    next: *mut Free,
}

/// One size class: a free list behind a try-lock.
struct Class {
    taken: AtomicBool,
    /// Guarded by `taken`.
    head: UnsafeCell<*mut Free>,
    /// Guarded by `taken`: how many blocks `head` holds.
    len: UnsafeCell<usize>,
}

impl Class {
    const fn new() -> Class {
        Class {
            taken: AtomicBool::new(false),
            head: UnsafeCell::new(ptr::null_mut()),
            len: UnsafeCell::new(0),
        }
    }

    /// Runs `f` on the list, or returns `None` when the other thread holds it now.
    fn with<R>(&self, f: impl FnOnce(&mut *mut Free, &mut usize) -> R) -> Option<R> {
        if self
            .taken
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: `taken` was false and is now ours: no other reference to the fields exists
        // until it is released below.
        let r = unsafe { f(&mut *self.head.get(), &mut *self.len.get()) };
        self.taken.store(false, Ordering::Release);
        Some(r)
    }

    /// A kept block, if the list has one and is free to take.
    fn pop(&self) -> *mut u8 {
        self.with(|head, len| {
            let block = *head;
            if !block.is_null() {
                // SAFETY: blocks on the list are ours, at least 16 bytes, aligned to 16, and
                // hold the next pointer in their first word.
                *head = unsafe { (*block).next };
                *len -= 1;
            }
            block.cast::<u8>()
        })
        .unwrap_or(ptr::null_mut())
    }

    /// Keeps `block`; `false` when the list is full or busy (the caller frees it).
    ///
    /// # Safety
    /// `block` is a block of this class that nothing uses any more.
    unsafe fn push(&self, block: *mut u8) -> bool {
        self.with(|head, len| {
            if *len >= KEEP {
                return false;
            }
            let block = block.cast::<Free>();
            // SAFETY: the caller gives up the block, which is big and aligned enough for a
            // pointer.
            unsafe { block.write(Free { next: *head }) };
            *head = block;
            *len += 1;
            true
        })
        .unwrap_or(false)
    }
}

/// The class of a request, if its blocks are kept.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    let size = layout.size().max(1 << MIN_SHIFT);
    // ceil(log2(size)) - MIN_SHIFT
    Some((usize::BITS - (size - 1).leading_zeros() - MIN_SHIFT) as usize)
}

/// What every block of class `i` is made with.
fn class_layout(i: usize) -> Layout {
    // SAFETY: a power of two up to MAX_SMALL, and 16, a power of two it is a multiple of.
    unsafe { Layout::from_size_align_unchecked(1 << (MIN_SHIFT as usize + i), ALIGN) }
}

/// The allocator: see the module's documentation.
pub struct SmallFront {
    classes: [Class; CLASSES],
}

// SAFETY: each class's fields are only reached while its `taken` flag is held.
unsafe impl Sync for SmallFront {}

impl SmallFront {
    /// An allocator with empty lists.
    pub const fn new() -> SmallFront {
        SmallFront {
            classes: [const { Class::new() }; CLASSES],
        }
    }

    /// Blocks kept now in each class (16 bytes first).
    pub fn kept(&self) -> [Option<usize>; CLASSES] {
        std::array::from_fn(|i| self.classes[i].with(|_, len| *len))
    }
}

impl Default for SmallFront {
    fn default() -> Self {
        SmallFront::new()
    }
}

// SAFETY: blocks handed out are at least `layout.size()` bytes and aligned to
// `layout.align()` (a class's blocks have its size, ≥ the request, and alignment 16 ≥ the
// request's); a block is on a list only after it is freed, and handed out once.
unsafe impl GlobalAlloc for SmallFront {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(i) => {
                let block = self.classes[i].pop();
                if block.is_null() {
                    // SAFETY: a non-zero size.
                    unsafe { System.alloc(class_layout(i)) }
                } else {
                    block
                }
            }
            // SAFETY: as the caller's.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(_) => {
                // SAFETY: as the caller's; the block has at least `layout.size()` bytes.
                let block = unsafe { self.alloc(layout) };
                if !block.is_null() {
                    unsafe { block.write_bytes(0, layout.size()) };
                }
                block
            }
            // SAFETY: as the caller's (the C library may skip zeroing fresh pages).
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(i) => {
                // SAFETY: the caller frees a block this allocator made for `layout`, so one
                // of class `i`, made with `class_layout(i)`.
                if !unsafe { self.classes[i].push(block) } {
                    unsafe { System.dealloc(block, class_layout(i)) }
                }
            }
            // SAFETY: as the caller's: made by `System` with `layout`.
            None => unsafe { System.dealloc(block, layout) },
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the alignment, does not
        // overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // SAFETY: made by `System` with `layout`.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            // The block has room for the class's size already.
            (Some(a), Some(b)) if a == b => block,
            _ => {
                // SAFETY: as the caller's; the two blocks are distinct and each has at least
                // the bytes copied.
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

/// `memcmp`: the sign of the first differing byte of `a` and `b` (as unsigned), over `n`
/// bytes; 0 when they are equal. Eight bytes at a time, then one at a time.
///
/// # Safety
/// `a` and `b` are readable for `n` bytes.
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n bytes are readable from both; unaligned reads are allowed.
        let (x, y) = unsafe {
            (
                a.add(i).cast::<u64>().read_unaligned(),
                b.add(i).cast::<u64>().read_unaligned(),
            )
        };
        if x != y {
            // Big-endian, the first byte in memory is the most significant: the words
            // compare as their first differing bytes do.
            return if u64::from_be(x) < u64::from_be(y) {
                -1
            } else {
                1
            };
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// musl's `memcmp`, replaced (see [`compare`]).
///
/// # Safety
/// As `memcmp`'s: `a` and `b` are readable for `n` bytes.
#[cfg(target_env = "musl")]
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: as the caller's.
    unsafe { compare(a, b, n) }
}

/// musl's `bcmp` (0 when equal), which LLVM calls where only equality matters.
///
/// # Safety
/// As `bcmp`'s: `a` and `b` are readable for `n` bytes.
#[cfg(target_env = "musl")]
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: as the caller's.
    unsafe { compare(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("a valid layout")
    }

    #[test]
    fn compare_orders_as_memcmp_does() {
        let sign = |v: i32| v.signum();
        let mut cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"".to_vec(), b"".to_vec()),
            (b"a".to_vec(), b"b".to_vec()),
            (b"tools/call".to_vec(), b"tools/call".to_vec()),
            (b"tools/calL".to_vec(), b"tools/call".to_vec()),
            (b"0123456789abcdef0".to_vec(), b"0123456789abcdef1".to_vec()),
        ];
        // A difference at every position of 0..=20 bytes, either way, high bytes included.
        for n in 0..=20usize {
            for at in 0..n {
                let a: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
                let mut b = a.clone();
                b[at] = b[at].wrapping_add(200);
                cases.push((a.clone(), b.clone()));
                cases.push((b, a));
            }
        }
        for (a, b) in cases {
            let expected = sign(a.cmp(&b) as i32);
            let got = unsafe { compare(a.as_ptr(), b.as_ptr(), a.len()) };
            assert_eq!(sign(got), expected, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sizes_fall_in_the_power_of_two_class_that_holds_them() {
        let cases = [
            (1, 0),
            (16, 0),
            (17, 1),
            (32, 1),
            (33, 2),
            (1000, 6),
            (1024, 6),
        ];
        for (size, class) in cases {
            assert_eq!(class_of(layout(size, 1)), Some(class), "size {size}");
            assert!(class_layout(class).size() >= size);
        }
        assert_eq!(class_of(layout(1025, 1)), None);
        assert_eq!(
            class_of(layout(64, 32)),
            None,
            "over-aligned requests bypass the lists"
        );
        assert_eq!(class_of(layout(64, 16)), Some(2));
    }

    #[test]
    fn a_freed_block_is_handed_out_again_and_the_lists_are_bounded() {
        let a = SmallFront::new();
        let l = layout(40, 8);
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            p.write_bytes(7, 40);
            a.dealloc(p, l);
            assert_eq!(a.kept()[2], Some(1));
            // Any request of the class gets it back, aligned as asked.
            let q = a.alloc(layout(64, 16));
            assert_eq!(q, p);
            assert_eq!(q as usize % 16, 0);
            assert_eq!(a.kept()[2], Some(0));
            a.dealloc(q, layout(64, 16));
            // More frees than the bound: the rest go back to the C library.
            let blocks: Vec<*mut u8> = (0..KEEP + 10).map(|_| a.alloc(l)).collect();
            for &b in &blocks {
                a.dealloc(b, l);
            }
            assert_eq!(a.kept()[2], Some(KEEP));
            assert!(a.kept().iter().flatten().all(|&n| n <= KEEP));
            // Zeroed blocks are zero even when they come from the list.
            let z = a.alloc_zeroed(l);
            assert!(std::slice::from_raw_parts(z, 40).iter().all(|&b| b == 0));
            a.dealloc(z, l);
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_across_classes_and_to_the_c_library() {
        let a = SmallFront::new();
        unsafe {
            let mut l = layout(10, 1);
            let mut p = a.alloc(l);
            for i in 0..10 {
                p.add(i).write(i as u8);
            }
            // Within the class: the same block.
            let same = a.realloc(p, l, 16);
            assert_eq!(same, p);
            l = layout(16, 1);
            // Up through the classes and out of them, then back down.
            for size in [100, 1024, 5000, 700, 12] {
                p = a.realloc(p, l, size);
                assert!(!p.is_null());
                l = layout(size, 1);
                let head = std::slice::from_raw_parts(p, 10);
                assert_eq!(head, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "after {size}");
            }
            a.dealloc(p, l);
        }
    }

    #[test]
    fn a_class_held_by_the_other_thread_is_passed_by_not_waited_for() {
        let a = SmallFront::new();
        let l = layout(24, 8);
        unsafe {
            let p = a.alloc(l);
            a.dealloc(p, l);
            assert_eq!(a.kept()[1], Some(1));
            // The class is held: the allocation goes to the C library, the free too.
            a.classes[1].taken.store(true, Ordering::Relaxed);
            let q = a.alloc(l);
            assert!(!q.is_null());
            assert_ne!(q, p);
            a.dealloc(q, l);
            assert_eq!(a.kept()[1], None);
            a.classes[1].taken.store(false, Ordering::Relaxed);
            assert_eq!(a.kept()[1], Some(1));
        }
    }
}
