//! Cold start as Lambda does it: each release binary is spawned with the Lambda environment
//! and `AWS_LAMBDA_RUNTIME_API` pointing at [`RuntimeApi`]. Init is exec → its first
//! `GET …/next`; first invoke is exec → its first response. Peak RSS is `VmHWM` from
//! `/proc/<pid>/status`, read when the function polls `next` again after answering (idle, just
//! before the bench ends it). Subjects are spawned round-robin, so a burst of load from
//! elsewhere on the machine hits all of them alike.

use crate::runtime_api::{ApiEvent, RuntimeApi};
use crate::stats::{Summary, median_u64};
use serde_json::{Value, json};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Checks a function's response to spawn `i`.
pub type Check<'a> = Box<dyn Fn(&[u8], usize) -> Result<(), String> + 'a>;

/// One binary under test.
pub struct Subject<'a> {
    pub name: &'static str,
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
    /// The invocation payload for spawn `i`.
    pub event: Box<dyn Fn(usize) -> Vec<u8> + 'a>,
    /// Checks the function's response to spawn `i`.
    pub check: Check<'a>,
}

/// One spawn's figures.
#[derive(Debug, Clone, Copy)]
pub struct Spawn {
    pub init: Duration,
    pub first_invoke: Duration,
    pub vm_hwm_kb: u64,
}

/// Every spawn of one subject.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: &'static str,
    pub spawns: Vec<Spawn>,
}

impl Series {
    pub fn init(&self) -> Summary {
        Summary::of(&self.spawns.iter().map(|s| s.init).collect::<Vec<_>>())
    }

    pub fn first_invoke(&self) -> Summary {
        Summary::of(
            &self
                .spawns
                .iter()
                .map(|s| s.first_invoke)
                .collect::<Vec<_>>(),
        )
    }

    pub fn vm_hwm_kb(&self) -> u64 {
        median_u64(&self.spawns.iter().map(|s| s.vm_hwm_kb).collect::<Vec<_>>())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "spawns": self.spawns.len(),
            "init": self.init().to_json_ms(),
            "first_invoke": self.first_invoke().to_json_ms(),
            "vm_hwm_kb_median": self.vm_hwm_kb(),
        })
    }
}

/// What Lambda's `provided.al2023` runtime sets, minus what the binaries never read.
fn lambda_env(api: &RuntimeApi, function: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.address.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2025/12/21/[$LATEST]0123456789abcdef0123456789abcdef".to_owned(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        ),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_SESSION_TOKEN", "test".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Peak resident set size of a live process, in kB.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Spawns `subject` once and times it.
async fn spawn_once(
    api: &mut RuntimeApi,
    subject: &Subject<'_>,
    index: usize,
    log: &File,
) -> Result<Spawn, String> {
    let function = format!("bench-{}", subject.name);
    api.arm(
        &format!("{}-{index:04}-request", subject.name),
        &function,
        (subject.event)(index),
    );
    let mut command = Command::new(&subject.binary);
    command
        .env_clear()
        .envs(lambda_env(api, &function))
        .envs(subject.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log.try_clone().map_err(|e| e.to_string())?);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot spawn {}: {e}", subject.binary.display()))?;
    let pid = child.id();
    let outcome = watch(api, subject, index, started, pid).await;
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

async fn watch(
    api: &mut RuntimeApi,
    subject: &Subject<'_>,
    index: usize,
    started: Instant,
    pid: u32,
) -> Result<Spawn, String> {
    let deadline = started + Duration::from_secs(20);
    let (mut init, mut first_invoke) = (None, None);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = api.next_event(left).await.ok_or_else(|| {
            format!(
                "{} spawn #{index}: no {} within 20 s (see logs/coldstart-{}.log)",
                subject.name,
                if init.is_none() {
                    "poll for an invocation"
                } else {
                    "response"
                },
                subject.name
            )
        })?;
        match event {
            ApiEvent::Next(at) if init.is_none() => init = Some(at - started),
            ApiEvent::Next(_) => {
                let (Some(init), Some(first_invoke)) = (init, first_invoke) else {
                    return Err(format!("{} polled twice without answering", subject.name));
                };
                return Ok(Spawn {
                    init,
                    first_invoke,
                    vm_hwm_kb: vm_hwm_kb(pid).ok_or("cannot read VmHWM")?,
                });
            }
            ApiEvent::Response(at, body) => {
                first_invoke = Some(at - started);
                (subject.check)(&body, index)
                    .map_err(|e| format!("{} spawn #{index}: wrong response: {e}", subject.name))?;
            }
            ApiEvent::Error(_, body) | ApiEvent::InitError(_, body) => {
                return Err(format!(
                    "{} spawn #{index} reported an error: {}",
                    subject.name,
                    String::from_utf8_lossy(&body)
                ));
            }
        }
    }
}

/// `rounds` spawns of every subject, round-robin. Each subject's stdout and stderr go to
/// `logs/coldstart-<name>.log`.
pub async fn run(
    subjects: &[Subject<'_>],
    rounds: usize,
    logs: &std::path::Path,
) -> Result<Vec<Series>, String> {
    let mut api = RuntimeApi::start().await;
    let files: Vec<File> = subjects
        .iter()
        .map(|s| File::create(logs.join(format!("coldstart-{}.log", s.name))))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot create a log file: {e}"))?;
    let mut series: Vec<Series> = subjects
        .iter()
        .map(|s| Series {
            name: s.name,
            spawns: Vec::with_capacity(rounds),
        })
        .collect();
    // One untimed spawn each first: the page cache then holds every binary, as it does for a
    // Lambda image that was just pulled.
    for (subject, log) in subjects.iter().zip(&files) {
        spawn_once(&mut api, subject, rounds, log).await?;
    }
    for round in 0..rounds {
        for ((subject, log), out) in subjects.iter().zip(&files).zip(series.iter_mut()) {
            out.spawns
                .push(spawn_once(&mut api, subject, round, log).await?);
        }
    }
    Ok(series)
}
