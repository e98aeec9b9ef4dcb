//! The machine the suite runs on, for the report's header: CPU, memory, kernel, commit, load.

use std::process::Command;

/// A command's trimmed stdout, if it ran and succeeded.
pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The header lines: when, what, on which machine.
pub fn machine(build_seconds: Option<f64>, quick: bool) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let git =
        command_output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into());
    let dirty = command_output("git", &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    let mut header = vec![
        format!(
            "date: {}; commit {git}{}",
            command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
            if dirty {
                " (with uncommitted changes)"
            } else {
                ""
            }
        ),
        format!(
            "machine: {cores} cores, {model}, {memory} RAM, Linux {}; {}",
            kernel.trim(),
            command_output("rustc", &["--version"]).unwrap_or_default()
        ),
        format!(
            "load average at the start: {} (the machine is shared: compare ratios, not absolute figures)",
            load_average()
        ),
        match build_seconds {
            Some(s) => format!(
                "release build before the run (`cargo build --release` of ingest, dispatcher, relay and the bench, as it found target/; near 0 = already built): {s:.0} s"
            ),
            None => "release build: not timed (binary started directly)".into(),
        },
    ];
    if quick {
        header.push(
            "**--quick run: too few samples for figures; a smoke test of the harness**".into(),
        );
    }
    header
}
