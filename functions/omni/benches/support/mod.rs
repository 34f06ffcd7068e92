//! What the benches share: a server process under test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A server under test, killed however the bench ends (a failed assertion included), so
/// no server outlives its run.
pub struct Server(Child);

impl Server {
    /// Starts `command` and waits for its `<prefix>http://host:port` line on stdout; an
    /// error if it cannot start, exits or stays silent for a minute first. Its stdout is drained after that, so
    /// a server that logs there never blocks on a full pipe.
    pub fn start(mut command: Command, prefix: &'static str) -> Result<(Self, String), String> {
        // Named by program and arguments only: the environment holds the auth token.
        let name = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `{name}`: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let server = Server(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let url = lines.find_map(|l| l.strip_prefix(prefix).map(str::to_owned));
            let _ = tx.send(url);
            lines.for_each(drop);
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(url)) => Ok((server, url)),
            _ => Err(format!(
                "`{name}` exited or printed no `{prefix}…` line within 60 s (its stderr is above)"
            )),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Peak resident memory so far (`VmHWM`), read while the process is still alive.
    pub fn max_rss_kib(&self) -> Option<u64> {
        max_rss_kib(self.pid())
    }
}

/// Peak resident memory of a process, from /proc (Linux).
fn max_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
