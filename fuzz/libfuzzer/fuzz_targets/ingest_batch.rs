//! Fuzz target `ingest_batch` (`make fuzz`): libFuzzer's bytes as the body of a correctly
//! signed `POST /events/batch`. The body and its oracle (one result per item, each queued item
//! stored as validation reads it) are `relay_fuzz::ingest_batch` (fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_fuzz::ingest_batch(data));
