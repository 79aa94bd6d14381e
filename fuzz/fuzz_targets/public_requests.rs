//! Every public request message decoded from the same bytes, then re-encoded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ts_fuzz_props::public_requests::fuzz(data));
