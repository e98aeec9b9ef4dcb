//! How much of the suite to run ([`Plan`]), its sections, and where the release binaries it
//! measures are ([`Bins`]).

use std::path::PathBuf;

/// How much of everything to run.
pub struct Plan {
    pub spawns: usize,
    pub warm_events: usize,
    pub dispatch_batches: usize,
    pub backlog: usize,
    pub load_events: usize,
    pub concurrency: usize,
    pub paced_events: usize,
    pub paced_rate: u64,
    pub closed_repeats: usize,
    pub callgrind_repeats: usize,
    /// Extra environment for the cold-start spawns (experiments, e.g. `SSL_CERT_DIR=`).
    pub lambda_env: Vec<(String, String)>,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            spawns: 40,
            warm_events: 20_000,
            dispatch_batches: 2_000,
            backlog: 20_000,
            load_events: 20_000,
            concurrency: 64,
            paced_events: 3_000,
            paced_rate: 1_000,
            closed_repeats: 3,
            callgrind_repeats: 2,
            lambda_env: Vec::new(),
        }
    }

    pub fn quick() -> Plan {
        Plan {
            spawns: 3,
            warm_events: 2_000,
            dispatch_batches: 200,
            backlog: 2_000,
            load_events: 2_000,
            concurrency: 64,
            paced_events: 500,
            paced_rate: 1_000,
            closed_repeats: 1,
            callgrind_repeats: 1,
            lambda_env: Vec::new(),
        }
    }
}

/// The release binaries, next to this one.
pub struct Bins {
    pub ingest: PathBuf,
    pub dispatcher: PathBuf,
    pub live_auth: PathBuf,
    pub relay: PathBuf,
    pub hello: PathBuf,
    pub ingest_events: PathBuf,
}

impl Bins {
    pub fn locate() -> Result<Bins, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let dir = exe.parent().ok_or("no directory for this binary")?;
        let bin = |name: &str| -> Result<PathBuf, String> {
            let path = dir.join(name);
            path.exists().then_some(path.clone()).ok_or_else(|| {
                format!(
                    "{} is missing: run `make bench` (it builds the release binaries)",
                    path.display()
                )
            })
        };
        Ok(Bins {
            ingest: bin("ingest")?,
            dispatcher: bin("dispatcher")?,
            live_auth: bin("live-auth")?,
            relay: bin("relay")?,
            hello: bin("hello-lambda")?,
            ingest_events: bin("bench-ingest-events")?,
        })
    }
}

/// The sections `--only` can pick, in the order they run.
pub const SECTIONS: [&str; 9] = [
    "sizes",
    "coldstart",
    "logbytes",
    "warm",
    "callgrind",
    "local",
    "live",
    "concurrency",
    "payload",
];
