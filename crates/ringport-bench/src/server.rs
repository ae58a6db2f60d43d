//! Starting an echo server under test, finding its address, stopping it.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to print its `listening on` line.
const START_LIMIT: Duration = Duration::from_secs(10);

/// One kind of server under test.
#[derive(Clone, Debug)]
pub struct ServerKind {
    /// Short name used in tables: `ringport-io_uring`, `tokio`, `ceiling`.
    pub name: &'static str,
    /// The executable.
    pub program: PathBuf,
    /// Arguments before `--addr` and `--threads`.
    pub args: Vec<String>,
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it printed after its address (the backend and setup).
    pub banner: String,
}

impl ServerKind {
    /// The servers this crate knows by name, with their binaries in `dir`:
    /// `ringport-io_uring` (or `ringport`), `ringport-epoll`, `ringport-shared`
    /// (io_uring with `--shared-ring`: one worker keeps the ordinary shared
    /// ring instead of a single-thread port's), `ringport-perthread` (io_uring
    /// with `--ports per-thread`: a port per worker, what io_uring gets by
    /// default), `ringport-oneport` (io_uring with `--ports shared`: one port
    /// for every worker), `ringport-single` (io_uring with `--single-shot`: a
    /// receive per message, no multishot),
    /// `ringport-unregistered` (io_uring with `--no-registered-files`: sockets
    /// named by number, not through the ring's file table), `tokio`, `mio`, `ceiling`,
    /// `ceiling-coop` (the ceiling with ringport's ring setup flags) and
    /// `ceiling-single` (the ceiling with a single-shot receive per message).
    pub fn by_name(name: &str, dir: &Path) -> Option<ServerKind> {
        let serve = |backend: &str| vec!["serve".to_string(), "--backend".into(), backend.into()];
        // `ringport serve` on io_uring with `more` flags.
        let uring = |more: &[&str]| {
            let mut args = serve("io_uring");
            args.extend(more.iter().map(|a| a.to_string()));
            args
        };
        let (name, program, args): (&'static str, &str, Vec<String>) = match name {
            "ringport-io_uring" | "ringport" => ("ringport-io_uring", "ringport", uring(&[])),
            "ringport-epoll" => ("ringport-epoll", "ringport", serve("epoll")),
            "ringport-shared" => ("ringport-shared", "ringport", uring(&["--shared-ring"])),
            "ringport-oneport" => (
                "ringport-oneport",
                "ringport",
                uring(&["--ports", "shared"]),
            ),
            "ringport-perthread" => (
                "ringport-perthread",
                "ringport",
                uring(&["--ports", "per-thread"]),
            ),
            "ringport-single" => ("ringport-single", "ringport", uring(&["--single-shot"])),
            "ringport-unregistered" => (
                "ringport-unregistered",
                "ringport",
                uring(&["--no-registered-files"]),
            ),
            "tokio" => ("tokio", "tokio_echo", Vec::new()),
            "mio" => ("mio", "mio_echo", Vec::new()),
            "ceiling" => ("ceiling", "uring_echo", Vec::new()),
            "ceiling-coop" => ("ceiling-coop", "uring_echo", vec!["--coop".into()]),
            "ceiling-single" => ("ceiling-single", "uring_echo", vec!["--single-shot".into()]),
            _ => return None,
        };
        Some(ServerKind {
            name,
            program: dir.join(program),
            args,
        })
    }

    /// Starts the server on an ephemeral loopback port with `threads` threads
    /// and waits for its `listening on <addr>` line.
    ///
    /// # Errors
    ///
    /// It could not be started, or did not print that line within 10 s (the
    /// message then holds the first line it wrote to stderr).
    pub fn start(&self, threads: usize) -> Result<Running, String> {
        self.start_on(threads, None)
    }

    /// [`ServerKind::start`], on the CPUs `cpus` (a `taskset -c` list such
    /// as `0` or `0-1`) if given.
    ///
    /// # Errors
    ///
    /// As for [`ServerKind::start`].
    pub fn start_on(&self, threads: usize, cpus: Option<&str>) -> Result<Running, String> {
        let mut child = command_on(&self.program, cpus)
            .args(&self.args)
            .args(["--addr", "127.0.0.1:0", "--threads", &threads.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "{}: cannot start {}: {e}",
                    self.name,
                    self.program.display()
                )
            })?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            lines.for_each(drop);
        });
        let line = match rx.recv_timeout(START_LIMIT) {
            Ok(line) => line,
            Err(_) => return Err(self.failed_start(child)),
        };
        match parse_listening(&line) {
            Some((addr, banner)) => {
                drain_stderr(&mut child);
                Ok(Running {
                    child,
                    addr,
                    banner,
                })
            }
            None => Err(format!("{}: unexpected first line {line:?}", self.name)),
        }
    }

    fn failed_start(&self, mut child: Child) -> String {
        let _ = child.kill();
        let _ = child.wait();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        format!("{} did not start: {first}", self.name)
    }
}

fn drain_stderr(child: &mut Child) {
    if let Some(e) = child.stderr.take() {
        thread::spawn(move || BufReader::new(e).lines().for_each(drop));
    }
}

/// `listening on 127.0.0.1:7000 (backend: ...)` → the address and the rest.
pub fn parse_listening(line: &str) -> Option<(SocketAddr, String)> {
    let rest = line.trim().strip_prefix("listening on ")?;
    let (addr, banner) = rest.split_once(' ').unwrap_or((rest, ""));
    let banner = banner.trim().trim_start_matches('(').trim_end_matches(')');
    Some((addr.parse().ok()?, banner.to_string()))
}

impl Running {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL if it has not exited within two seconds.
    pub fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command running `program`, on the CPUs `cpus` (a `taskset -c` list) if
/// given. `taskset` execs the program, so the child's pid is the program's.
pub fn command_on(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_listening;

    #[test]
    fn listening_lines() {
        let (a, b) = parse_listening("listening on 127.0.0.1:7000 (backend: tokio)").unwrap();
        assert_eq!(a.port(), 7000);
        assert_eq!(b, "backend: tokio");
        assert!(parse_listening("listening on 127.0.0.1:1").is_some());
        assert!(parse_listening("hello").is_none());
        assert!(parse_listening("listening on nowhere (x)").is_none());
    }
}
