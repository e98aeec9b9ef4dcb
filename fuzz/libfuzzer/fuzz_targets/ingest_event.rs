//! Fuzz target `ingest_event` (`make fuzz`): libFuzzer's bytes as the body of a correctly
//! signed `POST /events`, through ingest into a fresh in-process queue. The body and its oracle
//! are `relay_fuzz::ingest_event` (fuzz/src/lib.rs), which `cargo test -p relay-fuzz` replays.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_fuzz::ingest_event(data));
