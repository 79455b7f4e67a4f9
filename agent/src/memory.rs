//! How the agent asks the C library's allocator to behave: buffers of 256 KiB and
//! more (batches, Kafka record batches, compression output) are mapped on their own
//! and given back to the system when freed.
//!
//! Why: glibc raises its mmap threshold to the size of every mapped block that is
//! freed (up to 32 MiB), so after the first freed batch, batch-sized buffers come
//! from the heap instead, where freed space is kept, and with a second thread (the
//! Kafka output encodes the next batch on one) a second heap keeps its own. Fixing
//! the threshold keeps the resident size to what is in use (issue: the agent stays
//! under 25 MB RSS shipping to Kafka at full speed). Other C libraries: no effect.

#![allow(unsafe_code)]

/// Allocations at least this large are mapped on their own.
const MMAP_THRESHOLD: i32 = 256 << 10;

/// Apply the settings; call once, first thing in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; it is called before
        // any other thread exists and takes plain integers.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if ok != 1 {
            tracing::debug!("mallopt(M_MMAP_THRESHOLD) was refused; memory use may be higher");
        }
    }
}
