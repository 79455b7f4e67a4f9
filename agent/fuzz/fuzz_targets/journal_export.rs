//! Fuzz the journal export stream parser (`input::journald::export`), which reads
//! what `journalctl -o export` prints of entries any local process wrote.
//!
//! Input layout:
//! ```text
//! u8   read size seed: the stream arrives in reads of 1 to 64 bytes
//! u8   value limit seed: max_value from 1 to 256 (small, to reach the cuts)
//! ...  the stream
//! ```
//! Checked, beyond "no panic": entries do not depend on how the stream was cut into
//! reads; no entry has more than `MAX_FIELDS` fields nor a value longer than the
//! limit; a value at the limit that came longer says it was cut.

#![no_main]

use std::io::{BufReader, Read};

use libfuzzer_sys::fuzz_target;
use tributary_agent::input::journald::export::{Entry, MAX_FIELDS, read_entry};

/// A reader that hands out at most `step` bytes per read.
struct Steps<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Steps<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.len().min(self.step).min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

type Parsed = Vec<Vec<(Vec<u8>, Vec<u8>, bool)>>;

fn parse(r: impl Read, cap: usize, max: usize) -> (Parsed, bool) {
    let mut r = BufReader::with_capacity(cap, r);
    let mut e = Entry::default();
    let mut out = Vec::new();
    loop {
        match read_entry(&mut r, &mut e, max) {
            Ok(true) => out.push(
                e.iter()
                    .map(|(n, v, c)| (n.to_vec(), v.to_vec(), c))
                    .collect::<Vec<_>>(),
            ),
            Ok(false) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let step = usize::from(data[0] % 64) + 1;
    let max = usize::from(data[1]) + 1;
    let stream = &data[2..];
    let (whole, ok) = parse(stream, 1 << 16, max);
    let (cut, ok2) = parse(Steps { data: stream, step }, step, max);
    assert_eq!(ok, ok2);
    assert_eq!(whole, cut);
    for e in &whole {
        assert!(e.len() <= MAX_FIELDS);
        for (_, v, c) in e {
            assert!(v.len() <= max);
            if *c {
                assert_eq!(v.len(), max);
            }
        }
    }
});
