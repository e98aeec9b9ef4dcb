//! `bench-ingest-events K [SIGNED [SIZE]]`: runs K signed events of SIZE bytes (default: a
//! typical 300-byte `message`) through the ingest router in-process (a fresh in-process queue
//! every 1,000 events, as in the warm benchmark), on a single-threaded runtime, and prints
//! how many were accepted. SIGNED (default K) requests are built and signed first: callgrind
//! runs it with two values of K and the same SIGNED, so the difference of their totals is
//! the cost of the extra events and nothing else.

use relay_bench::fixtures::TYPICAL_BYTES;
use relay_bench::warm::{QUEUE_RESET_EVERY, presigned_requests, time_ingest};
use relay_shared::telemetry::Metrics;
use std::process::ExitCode;

fn main() -> ExitCode {
    let numbers: Result<Vec<usize>, _> = std::env::args().skip(1).map(|a| a.parse()).collect();
    let (events, signed, size) = match numbers.as_deref() {
        Ok([k]) => (*k, *k, TYPICAL_BYTES),
        Ok([k, signed]) if signed >= k => (*k, *signed, TYPICAL_BYTES),
        Ok([k, signed, size]) if signed >= k => (*k, *signed, *size),
        _ => {
            eprintln!("usage: bench-ingest-events K [SIGNED [SIZE]] (SIGNED >= K)");
            return ExitCode::from(2);
        }
    };
    let mut requests = presigned_requests("cg", signed, size);
    requests.truncate(events);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let timed = runtime.block_on(time_ingest(
        requests,
        0,
        QUEUE_RESET_EVERY,
        &Metrics::off(),
        || {},
    ));
    println!("{} events accepted", timed.len());
    ExitCode::SUCCESS
}
