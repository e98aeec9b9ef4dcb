//! Fuzz target `signature` (`make fuzz`): Standard Webhooks verification
//! (`SecretSet::verify_at`) with fuzzed headers, body and clock, one field a line. The body and
//! its oracle are `relay_fuzz::signature` (fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_fuzz::signature(data));
