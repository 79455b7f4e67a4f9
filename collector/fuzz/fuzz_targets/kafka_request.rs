//! Fuzz the Kafka listener's request decoding: any bytes after the size prefix go
//! through `kafka::request::decode` (API and version check, header, the body of
//! every API the broker answers) and, for Produce, the record batch decoding with
//! its decompression limits. The collector's own global allocator is installed,
//! as in the binary: a hostile element count must be refused as malformed, never
//! reserve memory it does not fill (libFuzzer's malloc limit would report it).
//!
//! Checked, beyond "no panic, no out-of-memory": an accepted request's API and
//! version are among those offered.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tributary_collector::kafka::request::{Body, Decoded, decode};
use tributary_collector::kafka::versions;

#[global_allocator]
static ALLOCATOR: tributary_collector::alloc::Allocator = tributary_collector::alloc::Allocator;

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    match decoded {
        Decoded::Request {
            api, version, body, ..
        } => {
            assert!(versions::supports(api, version), "{api:?} v{version}");
            if let Body::Produce(req) = *body {
                for t in req.topic_data {
                    for p in t.partition_data {
                        let _ = tributary_collector::kafka::produce::decode_batches(
                            p.records.unwrap_or_default(),
                        );
                    }
                }
            }
        }
        Decoded::NewerApiVersions { .. } | Decoded::Unsupported { .. } => {}
    }
});
