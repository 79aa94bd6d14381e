//! A stored envelope from bytes, and a plaintext to seal and mutate.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ts_fuzz_props::envelope::fuzz(data));
