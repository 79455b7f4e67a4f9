//! File identity: which file a record came from, independent of its path.
//!
//! A tailed file is tracked by its [`FileKey`] (`st_dev`, `st_ino`, birth time): two
//! paths that name the same inode (a rename, a hard link, a symlink) are one file and
//! are read once. An inode number can be reused after its file is deleted; the birth
//! time tells the two apart where the filesystem records one, and the identity that
//! travels with every record, the `source_id`, also covers the file's first bytes:
//!
//! ```text
//! fingerprint = FNV-1a 64 of the first `len` bytes of the file
//! len         = length of the first line (newline included) if it ends within
//!               the first 256 bytes, else 256
//! source_id   = FNV-1a 64 of  dev:u64le  ino:u64le  len:u64le  fingerprint:u64le
//!               [btime:i64le, when known]  [generation:u32le, when > 0]
//! ```
//!
//! The covered bytes never change in an append-only file, so the fingerprint does
//! not depend on when it is taken: a restart that finds the file grown computes the
//! same id even without a checkpoint (the collector then drops what it already has).
//! A file with fewer than 256 bytes and no newline has no fingerprint, and emits
//! nothing, until it has one. A checkpoint stores `len` and the hash. A truncation
//! (copytruncate) keeps the inode, so the reader counts it: content after a truncation
//! is a new `generation`, whatever its first bytes, and the new generation is in the
//! saved checkpoints before any of its records is sent (see `reader::follow`), so a
//! restart agrees with the run before it on which id the content has.
//!
//! FNV-1a is implemented here because it is tiny, has no dependency and, unlike
//! `std`'s `DefaultHasher`, is stable across Rust versions: ids must survive upgrades.
//! It does no I/O except [`Fingerprint::read`] and [`Fingerprint::prefix`]; it must
//! not depend on paths.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// How many leading bytes of a file the fingerprint covers at most.
pub(crate) const FINGERPRINT_MAX_BYTES: usize = 256;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64-bit hash of `bytes`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_append(FNV_OFFSET, bytes)
}

fn fnv1a64_append(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Where a file lives on the machine: device, inode and birth time. Unique among
/// open files; the birth time (`statx` btime, 0 where the filesystem has none) tells
/// a file from a later one that reuses its inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    pub dev: u64,
    pub ino: u64,
    /// Nanoseconds since the epoch, 0 when unknown.
    pub btime: i64,
}

impl FileKey {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let btime = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            btime,
        }
    }
}

/// Hash of a file's first `len` bytes, fixed when the file is first seen with data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub len: u16,
    pub hash: u64,
}

impl Fingerprint {
    /// Fingerprint of `bytes`, which must be at most [`FINGERPRINT_MAX_BYTES`] long.
    pub(crate) fn of(bytes: &[u8]) -> Self {
        debug_assert!(bytes.len() <= FINGERPRINT_MAX_BYTES);
        Fingerprint {
            len: bytes.len() as u16,
            hash: fnv1a64(bytes),
        }
    }

    /// Take a file's fingerprint: its first line (newline included) when that ends
    /// within the first 256 bytes, else its first 256 bytes; `None` while the file
    /// holds neither (fewer than 256 bytes and no newline yet). The covered bytes never
    /// change in an append-only file, so a restart that sees the file grown further
    /// computes the same fingerprint, whenever it looks. `size` is the file's size.
    ///
    /// `max_line_bytes` lowers the 256 when smaller: a longer line is cut into pieces
    /// of that size, so its first piece is as fixed as a complete first line.
    pub(crate) fn read(file: &File, size: u64, max_line_bytes: usize) -> io::Result<Option<Self>> {
        let cap = Self::cap(max_line_bytes);
        let mut buf = [0u8; FINGERPRINT_MAX_BYTES];
        let want = size.min(cap as u64) as usize;
        let got = read_prefix(file, &mut buf[..want])?;
        Ok(Self::of_head(&buf[..got], cap, false))
    }

    /// How many bytes a fingerprint covers at most with this `max_line_bytes`.
    pub(crate) fn cap(max_line_bytes: usize) -> usize {
        FINGERPRINT_MAX_BYTES.min(max_line_bytes.max(1))
    }

    /// The fingerprint of content starting with `head` (at most `cap` bytes are
    /// looked at): its first line, else its first `cap` bytes. With fewer bytes and
    /// no newline there is none yet, unless the content is `complete` (a compressed
    /// file read to its end), which is then fingerprinted whole.
    pub(crate) fn of_head(head: &[u8], cap: usize, complete: bool) -> Option<Self> {
        let head = &head[..head.len().min(cap)];
        match memchr::memchr(b'\n', head) {
            Some(nl) => Some(Fingerprint::of(&head[..=nl])),
            None if head.len() == cap => Some(Fingerprint::of(head)),
            None if complete && !head.is_empty() => Some(Fingerprint::of(head)),
            None => None,
        }
    }

    /// Fingerprint exactly the first `min(len, 256)` bytes, to compare with a
    /// fingerprint taken earlier; `None` when the file is empty. A file shorter than
    /// `len` (it shrank meanwhile) is fingerprinted over what it holds.
    pub(crate) fn prefix(file: &File, len: u64) -> io::Result<Option<Self>> {
        let mut buf = [0u8; FINGERPRINT_MAX_BYTES];
        let want = len.min(FINGERPRINT_MAX_BYTES as u64) as usize;
        let got = read_prefix(file, &mut buf[..want])?;
        Ok((got > 0).then(|| Fingerprint::of(&buf[..got])))
    }
}

/// How many bytes before a checkpointed offset [`end_hash`] covers.
pub(crate) const END_HASH_BYTES: usize = 32;

/// FNV-1a 64 of the up to [`END_HASH_BYTES`] bytes just before `end`: stored with a
/// checkpoint so that a resume can tell the same content from a file that was
/// truncated and rewritten past the offset with the same first line. 0 at offset 0
/// ("nothing to compare").
pub(crate) fn end_hash_of(before_end: &[u8]) -> u64 {
    let from = before_end.len().saturating_sub(END_HASH_BYTES);
    if before_end.is_empty() {
        0
    } else {
        fnv1a64(&before_end[from..]).max(1)
    }
}

/// [`end_hash_of`] the bytes of `file` before `end`, read from the file.
pub(crate) fn end_hash(file: &File, end: u64) -> io::Result<u64> {
    let from = end.saturating_sub(END_HASH_BYTES as u64);
    let mut buf = [0u8; END_HASH_BYTES];
    let want = (end - from) as usize;
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..want], from + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // A file shorter than `end` cannot be the content the hash was taken of.
    Ok(if got < want {
        u64::MAX
    } else {
        end_hash_of(&buf[..want])
    })
}

/// Fill `buf` from the start of `file`; fewer bytes when the file is shorter.
fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The identity carried by every record of a file. Never 0 (0 means "no source id").
/// `generation` counts the truncations the agent saw (copytruncate): content written
/// after a truncation is a new source even when it starts with the same bytes, so
/// the collector's deduplication never mistakes it for a resend. Generation 0 leaves
/// the id as it was before generations existed.
pub(crate) fn source_id(key: FileKey, fp: Fingerprint, generation: u32) -> u64 {
    let mut h = FNV_OFFSET;
    h = fnv1a64_append(h, &key.dev.to_le_bytes());
    h = fnv1a64_append(h, &key.ino.to_le_bytes());
    h = fnv1a64_append(h, &u64::from(fp.len).to_le_bytes());
    h = fnv1a64_append(h, &fp.hash.to_le_bytes());
    if key.btime != 0 {
        h = fnv1a64_append(h, &key.btime.to_le_bytes());
    }
    if generation > 0 {
        h = fnv1a64_append(h, &generation.to_le_bytes());
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors; pinned because ids must never change.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn source_id_depends_on_every_part() {
        let k = FileKey {
            dev: 1,
            ino: 2,
            btime: 0,
        };
        let fp = Fingerprint::of(b"hello\n");
        let id = source_id(k, fp, 0);
        assert_ne!(id, source_id(k, fp, 1));
        assert_ne!(id, 0);
        assert_ne!(id, source_id(FileKey { ino: 3, ..k }, fp, 0));
        assert_ne!(id, source_id(FileKey { dev: 2, ..k }, fp, 0));
        assert_ne!(id, source_id(FileKey { btime: 7, ..k }, fp, 0));
        assert_ne!(id, source_id(k, Fingerprint::of(b"hello"), 0));
        assert_eq!(id, source_id(k, Fingerprint::of(b"hello\n"), 0));
    }

    #[test]
    fn read_covers_at_most_256_bytes_and_none_when_empty() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        assert_eq!(Fingerprint::read(&f, 0, 1 << 20).unwrap(), None);
        let data = vec![b'x'; 1000];
        f.write_all(&data).unwrap();
        let fp = Fingerprint::read(&f, 1000, 1 << 20).unwrap().unwrap();
        assert_eq!(fp, Fingerprint::of(&data[..256]));
        let fp = Fingerprint::prefix(&f, 10).unwrap().unwrap();
        assert_eq!(fp, Fingerprint::of(&data[..10]));
        // Fewer than 256 bytes and no newline: no fingerprint yet.
        assert_eq!(Fingerprint::read(&f, 10, 1 << 20).unwrap(), None);
    }

    #[test]
    fn fingerprint_covers_the_first_line_whatever_the_size_when_taken() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"first line\nsecond").unwrap();
        let early = Fingerprint::read(&f, 17, 1 << 20).unwrap().unwrap();
        assert_eq!(early, Fingerprint::of(b"first line\n"));
        f.write_all(&[b'y'; 1000]).unwrap();
        assert_eq!(Fingerprint::read(&f, 1017, 1 << 20).unwrap(), Some(early));
        // With short line pieces, the first piece is the fingerprint.
        assert_eq!(
            Fingerprint::read(&f, 1017, 4).unwrap(),
            Some(Fingerprint::of(b"firs"))
        );
    }
}
