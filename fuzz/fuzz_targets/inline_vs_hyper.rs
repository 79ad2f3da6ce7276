//! The inline server's request-head parser against hyper's server on the same bytes.
//! The checks are in `data_plane::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| data_plane::fuzzing::inline_vs_hyper(data));
