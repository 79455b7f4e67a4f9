//! The collector's global allocator: the system allocator, except that a single
//! allocation of [`HUGE`] bytes or more is reserved lazily, as an anonymous mapping
//! with `MAP_NORESERVE`.
//!
//! Why: decoders of untrusted input (the Kafka request codecs of the
//! `kafka-protocol` crate, and the record batch decoder) size a vector from a count
//! read off the wire before they decode a single element. A 10-byte request that
//! declares two billion topics asks for hundreds of gigabytes at once; the system
//! allocator refuses, and a refused allocation aborts the process, which no
//! `Result` or panic handler can catch. Reserved lazily, such a request costs
//! address space only: the decoder then runs out of bytes, returns an error, and
//! the mapping is released, untouched. Real allocations of this size do not occur
//! in the collector (reads, batches and frames are bounded far below it), so
//! nothing else changes.
//!
//! The frame limits keep what a decoder can actually fill (and so touch) small;
//! this only turns an impossible up-front reservation into a harmless one.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped lazily.
pub const HUGE: usize = 1 << 30;

/// Alignment a fresh anonymous mapping always has.
const PAGE: usize = 4096;

/// See the module docs.
pub struct Allocator;

fn map(layout: Layout) -> *mut u8 {
    if layout.align() > PAGE {
        return std::ptr::null_mut();
    }
    // SAFETY: an anonymous private mapping at an address of the kernel's choice;
    // no existing memory is touched. MAP_FAILED is turned into null.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            layout.size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: allocations below HUGE go to the system allocator unchanged; those at or
// above are page-aligned mappings of at least the requested size, released with
// munmap of the same size (dealloc receives the layout they were made with).
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < HUGE {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        } else {
            map(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < HUGE {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        } else {
            // Anonymous mappings are zero-filled.
            map(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < HUGE {
            // SAFETY: `ptr` came from System with this layout (alloc routes by size).
            unsafe { System.dealloc(ptr, layout) }
        } else {
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `map`.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < HUGE && new_size < HUGE {
            // SAFETY: both sizes stay with System; forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing HUGE (or staying above it): allocate, copy, free, each routed
        // by size.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: new_layout has a non-zero size (new_size >= HUGE or the old
        // layout's size >= HUGE > new_size > 0 is the caller's guarantee).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes and do
            // not overlap (the new one was just allocated).
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_reservation_costs_no_memory_and_grows_and_shrinks_across_the_threshold() {
        let a = Allocator;
        // Far more than any test machine has: only address space is taken.
        let layout = Layout::from_size_align(1 << 40, 8).unwrap();
        // SAFETY: non-zero size; freed with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null(), "a lazy reservation of 1 TiB failed");
            *p = 7;
            *p.add((1 << 40) - 1) = 9;
            assert_eq!((*p, *p.add((1 << 40) - 1)), (7, 9));
            a.dealloc(p, layout);
        }
        // A small block grown past HUGE and shrunk back keeps its bytes.
        let small = Layout::from_size_align(16, 8).unwrap();
        // SAFETY: sizes non-zero; every pointer is freed once with its layout.
        unsafe {
            let p = a.alloc(small);
            p.copy_from_nonoverlapping(b"0123456789abcdef".as_ptr(), 16);
            let big = a.realloc(p, small, HUGE + 1);
            assert!(!big.is_null());
            assert_eq!(std::slice::from_raw_parts(big, 16), b"0123456789abcdef");
            let big_layout = Layout::from_size_align(HUGE + 1, 8).unwrap();
            let back = a.realloc(big, big_layout, 32);
            assert_eq!(std::slice::from_raw_parts(back, 16), b"0123456789abcdef");
            a.dealloc(back, Layout::from_size_align(32, 8).unwrap());
        }
    }
}
