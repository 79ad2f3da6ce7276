//! The request-path normaliser (routing/path.rs).
//! The checks are in `data_plane::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| data_plane::fuzzing::path(data));
