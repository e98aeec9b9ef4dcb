//! Replays every committed fuzz input (the corpora and the inputs of past findings) through
//! the same function its fuzz target calls: ordinary tests, on stable, without libFuzzer.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, run) = relay_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = inputs(&root.join("corpus").join(target));
    assert!(
        corpus.len() >= 3,
        "fuzz/corpus/{target} has {} inputs: the seeds are missing",
        corpus.len()
    );
    let regressions = inputs(&root.join("regressions").join(target));
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).expect("a readable input");
        // A panic names the file, so a failure is reproducible with
        // `fuzz/run.sh repro <target> <file>`.
        eprintln!("replaying {}", path.display());
        run(&data);
    }
}

#[test]
fn ingest_event_corpus() {
    replay("ingest_event");
}

#[test]
fn ingest_batch_corpus() {
    replay("ingest_batch");
}

#[test]
fn signature_corpus() {
    replay("signature");
}

#[test]
fn retry_after_corpus() {
    replay("retry_after");
}

#[test]
fn sqs_records_corpus() {
    replay("sqs_records");
}

#[test]
fn every_target_has_a_test_here() {
    let source = include_str!("corpus_replay.rs");
    for (name, _) in relay_fuzz::TARGETS {
        assert!(source.contains(&format!("replay(\"{name}\")")), "{name}");
    }
}
