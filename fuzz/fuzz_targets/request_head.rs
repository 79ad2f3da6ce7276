//! The inline server's request-head parser (http1/request_head.rs).
//! The checks are in `data_plane::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| data_plane::fuzzing::request_head(data));
