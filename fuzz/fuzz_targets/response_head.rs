//! The inline client's response-head parser and both of its sinks (http1/head.rs, server/respond.rs).
//! The checks are in `data_plane::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| data_plane::fuzzing::response_head(data));
