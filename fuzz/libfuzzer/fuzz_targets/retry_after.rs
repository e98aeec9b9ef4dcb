//! Fuzz target `retry_after` (`make fuzz`): `Retry-After` parsing (`backoff::parse_retry_after`)
//! with a fuzzed clock, held to RFC 9110's properties. The body and its oracle are
//! `relay_fuzz::retry_after` (fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_fuzz::retry_after(data));
