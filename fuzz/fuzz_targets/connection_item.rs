//! A create-item request from bytes, and a connection string from text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ts_fuzz_props::connection_item::fuzz(data));
