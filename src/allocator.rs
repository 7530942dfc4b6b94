//! The process's allocator: mimalloc, called the way the C allocator is.
//!
//! The `mimalloc` crate sends every allocation through `mi_malloc_aligned`,
//! whose fast path covers only blocks of up to 1 KiB; larger ones (read and
//! write buffers, merged replies) take its generic path. Ordinary Rust
//! types need at most word alignment, which every mimalloc block already
//! has, so those go to plain `mi_malloc`/`mi_realloc`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment of every block mimalloc hands out: its size classes are
/// multiples of the word size and start word-aligned (8 bytes on 64-bit).
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc: faster than the system allocator for the proxy's many small
/// short-lived buffers, and it gives freed pages back to the OS, so memory
/// returns after a burst of clients (glibc's malloc keeps it).
pub struct Allocator;

// SAFETY: every method forwards to mimalloc with a size and alignment that
// satisfy `layout`: plain calls only when `layout.align() <= PLAIN_ALIGN`,
// which all mimalloc blocks meet; the aligned calls otherwise.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            // SAFETY: see the impl comment.
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: see the impl comment.
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            // SAFETY: see the impl comment.
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: see the impl comment.
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc contract).
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            // SAFETY: `ptr` came from this allocator; see the impl comment.
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            // SAFETY: as above.
            unsafe {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them on its arenas, and each 2 MiB page it touches counts whole in the
/// RSS: an idle proxy showed 8 MiB of them for well under 1 MiB of heap.
/// The heap is small and short-lived, so small pages cost nothing measurable.
pub fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and no pointers; it
    // only sets a flag on this process's memory descriptor.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if done != 0 {
        // Old kernels lack it: huge pages then only cost memory.
        eprintln!("slotbridge: note: cannot turn transparent huge pages off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_aligned_blocks_keep_their_alignment() {
        for align in [1, 2, 4, 8, 16, 64, 4096] {
            for size in [1, 7, 24, 1000, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; freed with the same layout.
                unsafe {
                    let p = Allocator.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size}/{align}"
                    );
                    p.write_bytes(0xab, size);
                    let q = Allocator.realloc(p, layout, size * 3);
                    assert!(
                        !q.is_null() && (q as usize).is_multiple_of(align),
                        "{size}/{align} grown"
                    );
                    assert_eq!(*q.add(size - 1), 0xab);
                    Allocator.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = Allocator.alloc_zeroed(layout);
                    assert!((z as usize).is_multiple_of(align) && *z.add(size - 1) == 0);
                    Allocator.dealloc(z, layout);
                }
            }
        }
    }
}
