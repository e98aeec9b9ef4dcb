//! A child process (the relay's binaries) whose output lines are collected for assertions.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// How long a process may take to stop after SIGTERM, and its pipes to reach their end after
/// it exited: generous, for a loaded machine.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// A child process whose stdout and stderr lines are collected as they come; killed on drop.
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The stdout and stderr readers; each ends at its pipe's end (the process exited).
    readers: Vec<JoinHandle<()>>,
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
        let readers = [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(stderr),
        ]
        .into_iter()
        .map(|stream| {
            let lines = Arc::clone(&lines);
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            })
        })
        .collect();
        Process {
            child,
            lines,
            readers,
        }
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

    /// The address in the process's `listening on http://<address>` line (the relay prints the
    /// address it bound, so `--listen 127.0.0.1:0` gets a port nobody else holds).
    pub async fn listening_address(&self, timeout: Duration) -> String {
        const MARK: &str = "listening on http://";
        let line = self.wait_for(MARK, 1, timeout).await.remove(0);
        let (_, rest) = line.split_once(MARK).expect("the line holds the mark");
        let address = rest.split_whitespace().next().unwrap_or_default();
        assert!(
            address.parse::<std::net::SocketAddr>().is_ok(),
            "no address after {MARK:?} in {line:?}"
        );
        address.to_owned()
    }

    /// Sends SIGTERM, waits for the exit status, then for both pipes to reach their end, and
    /// returns the status with every line the process printed, its last words included.
    pub async fn terminate_with_output(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let readers = std::mem::take(&mut self.readers);
        let lines = Arc::clone(&self.lines);
        let status = self.terminate().await;
        for reader in readers {
            tokio::time::timeout(STOP_WAIT, reader)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the process exited ({status}) but its output did not end within {STOP_WAIT:?}; so far:\n{}",
                        lines.lock().unwrap().join("\n")
                    )
                })
                .expect("an output reader panicked");
        }
        let printed = lines.lock().unwrap().clone();
        (status, printed)
    }

    /// Sends SIGTERM (a clean stop) and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        // Until it is waited for, the child keeps its pid (a zombie at worst): the signal
        // reaches it even if it exited on its own.
        let pid = self.child.id().expect("the process was not waited for yet");
        let kill = Command::new("kill")
            .arg(pid.to_string())
            .output()
            .await
            .expect("run kill");
        assert!(
            kill.status.success(),
            "kill {pid}: {} {}",
            kill.status,
            String::from_utf8_lossy(&kill.stderr)
        );
        tokio::time::timeout(STOP_WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("process stops within {STOP_WAIT:?} of SIGTERM"))
            .expect("wait for process")
    }
}
