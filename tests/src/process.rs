//! A child process (the relay's binaries) whose output lines are collected for assertions.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A child process whose stdout and stderr lines are collected as they come; killed on drop.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn spawn(
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        use tokio::io::AsyncBufReadExt;
        let mut command = Command::new(program.as_ref());
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", program.as_ref()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for stream in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(stderr),
        ] {
            let lines = Arc::clone(&lines);
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Process { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `count` lines contain `needle`; panics with everything printed so far.
    pub async fn wait_for(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let matching: Vec<String> = self
                .lines()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if matching.len() >= count {
                return matching;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {count} line(s) containing {needle:?}; output so far:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM, waits for the exit status, and returns it with every line the process
    /// printed, its last words included.
    pub async fn terminate_with_output(self) -> (std::process::ExitStatus, Vec<String>) {
        let lines = Arc::clone(&self.lines);
        let status = self.terminate().await;
        // The readers finish the pipes after the exit; give them a moment to reach the end.
        let mut seen = 0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = lines.lock().unwrap().len();
            if now == seen {
                break;
            }
            seen = now;
        }
        let printed = lines.lock().unwrap().clone();
        (status, printed)
    }

    /// Sends SIGTERM (a clean stop) and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("process stops within 20 s of SIGTERM")
            .expect("wait for process")
    }
}
