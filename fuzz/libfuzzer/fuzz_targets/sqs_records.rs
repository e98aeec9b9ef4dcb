//! Fuzz target `sqs_records` (`make fuzz`): a Lambda SQS event as the dispatcher receives it;
//! each record must become a job that keeps its ids, body and attributes, or their defaults.
//! The body and its oracle are `relay_fuzz::sqs_records` (fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_fuzz::sqs_records(data));
