//! Plain and sealed page tokens from text, and parts to seal and mutate.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ts_fuzz_props::page_token::fuzz(data));
