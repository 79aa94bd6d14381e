//! An access token for the fixed key's verifier, and claims to sign and mutate.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ts_fuzz_props::access_token::fuzz(data));
