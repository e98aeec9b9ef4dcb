//! The relay's benchmark suite, run by `make bench`: every figure is measured next
//! to a baseline taken in the same run, because the machine is small and shared and absolute
//! numbers drift from one run to the next.
//!
//! | module | measures or provides |
//! |---|---|
//! | [`fixtures`] | envelopes of a chosen size, signatures, the Lambda events (API Gateway v2, SQS) |
//! | [`stats`] | medians and percentiles |
//! | [`receiver`] | a loopback webhook receiver that records when each event arrived |
//! | [`runtime_api`] | a minimal Lambda Runtime API, so the release binaries start as on Lambda |
//! | [`coldstart`] | init and first-invoke times and peak RSS of the Lambda binaries vs hello-world |
//! | [`instant_aws`] | the AWS calls of a cold start answered at once, so init shows the functions' own cost |
//! | [`logbytes`] | log bytes per event the Lambda binaries write on the success path |
//! | [`cost`] | the cost model of `make cost`: template settings × measured figures × prices |
//! | [`warm`] | in-process per-event cost, dispatcher concurrency, payload scaling |
//! | [`callgrind`] | instructions per ingest event under valgrind |
//! | [`loadgen`] | `relay local` end to end: events/s and latency, vs a direct POST |
//! | [`live`] | the live channel: page latency beside webhook latency, what publishing adds to ingest, hub memory per connection |
//! | [`artifacts`] | `make verify-artifacts`: the `sam build` bootstraps run under qemu, their answers checked |
//! | [`sizes`] | the release binaries' sizes vs hello-world, the cargo-lambda zips |
//! | [`plan`] | how much to run, the sections, where the release binaries are |
//! | [`host`] | the machine, for the report's header |
//! | [`report`] | the table (`bench-results/results.md`) and the JSON file |

pub mod artifacts;
pub mod callgrind;
pub mod coldstart;
pub mod cost;
pub mod fixtures;
pub mod host;
pub mod instant_aws;
pub mod live;
pub mod loadgen;
pub mod logbytes;
pub mod plan;
pub mod receiver;
pub mod report;
pub mod runtime_api;
pub mod sizes;
pub mod stats;
pub mod warm;
