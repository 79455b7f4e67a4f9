//! `<offset:020>.sources`: the deduplication table as it stood before `offset` (the
//! base of the segment a roll created), so that open need not scan the segments
//! below it.
//!
//! ```text
//! u32 magic "TSRC" | u8 version=1 | u64 offset | u32 count
//! | count × (u64 source_id | u64 highest source offset | u64 base offset of the
//!            source's last batch | u16 host length | host)
//! | u32 crc32c of every byte before it
//! ```
//! All integers little-endian. Written atomically (temp file, fsync, rename) after
//! the segment it describes was fsynced; the partition directory is fsynced by the
//! roll right after. A snapshot that fails any check is ignored (with a warning) and
//! the segments are scanned instead.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::error::Error;
use crate::segment;

use super::Sources;

const MAGIC: &[u8; 4] = b"TSRC";
const VERSION: u8 = 1;
const FIXED_LEN: usize = 4 + 1 + 8 + 4;

/// Encode `sources` as the snapshot for `offset`.
pub(crate) fn encode(sources: &Sources, offset: u64) -> Vec<u8> {
    let entries = sources.entries();
    let mut b = Vec::with_capacity(FIXED_LEN + entries.len() * 48 + 4);
    b.extend_from_slice(MAGIC);
    b.push(VERSION);
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (id, seen) in entries {
        // Hosts come from record blocks, whose host length is a u16.
        let host = &seen.host.as_bytes()[..seen.host.len().min(usize::from(u16::MAX))];
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&seen.high.to_le_bytes());
        b.extend_from_slice(&seen.batch.to_le_bytes());
        b.extend_from_slice(&(host.len() as u16).to_le_bytes());
        b.extend_from_slice(host);
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decode a snapshot that must be the one for `offset`; the reason when it is not.
pub(crate) fn decode(bytes: &[u8], offset: u64) -> Result<Sources, String> {
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
        return Err(format!("{} bytes is too short", bytes.len()));
    };
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err("CRC32C mismatch".into());
    }
    let mut r = Reader { b: body, pos: 0 };
    if r.take(4)? != MAGIC {
        return Err("not a deduplication snapshot".into());
    }
    let version = r.take(1)?[0];
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let at = r.u64()?;
    if at != offset {
        return Err(format!("holds offset {at}, its name says {offset}"));
    }
    let count = r.u32()?;
    let mut sources = Sources::default();
    for _ in 0..count {
        let id = r.u64()?;
        let high = r.u64()?;
        let batch = r.u64()?;
        let n = r.u16()?;
        let host = std::str::from_utf8(r.take(usize::from(n))?)
            .map_err(|_| "host is not UTF-8".to_owned())?;
        if batch >= offset {
            return Err(format!("entry seen at offset {batch}, past the snapshot"));
        }
        sources.raise(id, host, high, batch);
    }
    if r.pos != body.len() {
        return Err(format!("{} stray bytes", body.len() - r.pos));
    }
    Ok(sources)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        self.pos += n;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

/// Write the snapshot for `offset` into `dir`, atomically and durably.
pub(crate) fn write(dir: &Path, offset: u64, sources: &Sources) -> Result<(), Error> {
    let path = segment::sources_path(dir, offset);
    Ok(tributary_common::fs::write_atomic(
        &path,
        &encode(sources, offset),
    )?)
}

/// Read the snapshot for `offset`: `Ok(Err(reason))` when it is missing or fails a check.
pub(crate) fn read(dir: &Path, offset: u64) -> Result<Result<Sources, String>, Error> {
    let path = segment::sources_path(dir, offset);
    match fs::read(&path) {
        Ok(bytes) => Ok(decode(&bytes, offset)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Err("file is missing".into())),
        Err(e) => Err(Error::io("read", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sources {
        let mut s = Sources::default();
        s.raise(7, "web-01", 100, 3);
        s.raise(7, "web-02", 5, 0);
        s.raise(u64::MAX, "", u64::MAX, 41);
        s.raise(1, "h", 0, 40);
        s
    }

    fn flat(s: &Sources) -> Vec<(u64, String, u64, u64)> {
        s.entries()
            .into_iter()
            .map(|(id, e)| (id, e.host.to_string(), e.high, e.batch))
            .collect()
    }

    #[test]
    fn roundtrip() {
        let s = sample();
        let b = encode(&s, 42);
        let back = decode(&b, 42).unwrap();
        assert_eq!(flat(&back), flat(&s));
        assert_eq!(back.len(), 4);
        assert_eq!(decode(&encode(&Sources::default(), 0), 0).unwrap().len(), 0);
    }

    #[test]
    fn every_damage_is_refused() {
        let b = encode(&sample(), 42);
        assert!(decode(&b, 43).is_err(), "wrong offset");
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(decode(&d, 42).is_err(), "flipped byte {i}");
        }
        for n in 0..b.len() {
            assert!(decode(&b[..n], 42).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn file_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path(), 9).unwrap().is_err(), "missing");
        write(dir.path(), 9, &sample()).unwrap();
        let refused = read(dir.path(), 9).unwrap().err().unwrap();
        assert!(refused.contains("past the snapshot"), "{refused}");
        let mut small = Sources::default();
        small.raise(1, "h", 7, 8);
        write(dir.path(), 9, &small).unwrap();
        assert_eq!(flat(&read(dir.path(), 9).unwrap().unwrap()), flat(&small));
        assert!(read(dir.path(), 10).unwrap().is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["00000000000000000009.sources"], "no temp file left");
    }
}
