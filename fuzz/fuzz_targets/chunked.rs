//! The chunked body decoder (http1/body.rs): arbitrary bytes, and round trips.
//! The checks are in `data_plane::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| data_plane::fuzzing::chunked(data));
