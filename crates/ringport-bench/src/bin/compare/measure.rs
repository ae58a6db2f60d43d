//! One measured run: a server, `ringport bench --json` against it, and the
//! server's CPU time over the measured window.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ringport_bench::proc;

use ringport_bench::server::{command_on, Running, ServerKind};

/// A load shape.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub connections: usize,
    pub size: usize,
}

impl Scenario {
    pub fn label(&self) -> String {
        let size = if self.size % 1024 == 0 {
            format!("{} KiB", self.size / 1024)
        } else {
            format!("{} B", self.size)
        };
        format!("{} x {size}", self.connections)
    }
}

/// Client settings shared by every run.
#[derive(Clone, Debug)]
pub struct Load {
    pub duration: Duration,
    pub warmup: Duration,
    pub pipeline: usize,
    pub client_threads: usize,
    /// Count the server's system calls in the window with `perf stat`.
    pub syscalls: bool,
    /// With `--pin`, the machine's CPU count (at least 2, checked by
    /// `config`): the client goes on the last CPU and a one-thread server on
    /// the first; a server with more threads may use every CPU.
    pub pin: Option<usize>,
}

impl Load {
    /// The CPUs for a server with `threads` threads and for the client, as
    /// `taskset -c` lists, when pinning.
    fn cpus(&self, threads: usize) -> (Option<String>, Option<String>) {
        match self.pin {
            Some(n) => {
                let server = if threads == 1 {
                    "0".to_string()
                } else {
                    format!("0-{}", n - 1)
                };
                (Some(server), Some((n - 1).to_string()))
            }
            None => (None, None),
        }
    }
}

/// What one run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The latency's 10th and 90th percentiles, from a client that reports
    /// them (the shape of the distribution, beside its median and tail).
    pub p10_us: Option<f64>,
    pub p90_us: Option<f64>,
    /// Server CPU (user + system) per echoed message, in microseconds.
    pub cpu_us_per_msg: f64,
    /// The user part of it: the server's own work, without the kernel's.
    pub user_us_per_msg: f64,
    /// Server CPU time over wall time in the window (1.0 = one core busy).
    pub cpu_util: f64,
    /// `io_uring_enter` calls by the server per echoed message (`--syscalls`).
    pub uring_enters_per_msg: Option<f64>,
    /// Every system call by the server per echoed message (`--syscalls`).
    pub syscalls_per_msg: Option<f64>,
}

/// Starts `server`, loads it with `client` for warm-up + duration, and stops it.
pub fn run_once(
    client: &Path,
    server: &ServerKind,
    threads: usize,
    sc: Scenario,
    load: &Load,
) -> Result<(Sample, String), String> {
    let (server_cpus, client_cpus) = load.cpus(threads);
    let running = server.start_on(threads, server_cpus.as_deref())?;
    let banner = running.banner.clone();
    let result = load_server(client, client_cpus.as_deref(), &running, sc, load);
    running.stop();
    result.map(|s| (s, banner))
}

fn load_server(
    client: &Path,
    cpus: Option<&str>,
    srv: &Running,
    sc: Scenario,
    load: &Load,
) -> Result<Sample, String> {
    let child = command_on(client, cpus)
        .arg("bench")
        .args(["--addr", &srv.addr.to_string()])
        .args(["--connections", &sc.connections.to_string()])
        .args(["--size", &sc.size.to_string()])
        .args(["--duration", &secs(load.duration)])
        .args(["--warmup", &secs(load.warmup)])
        .args(["--pipeline", &load.pipeline.to_string()])
        .args(["--threads", &load.client_threads.to_string()])
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", client.display()))?;
    // The client measures from the end of its warm-up; so does this window.
    thread::sleep(load.warmup);
    let cpu0 = proc::cpu_times(srv.pid()).map_err(|e| format!("server CPU time: {e}"))?;
    let t0 = Instant::now();
    let counts = if load.syscalls {
        Some(count_syscalls(srv.pid(), load.duration)?)
    } else {
        thread::sleep(load.duration);
        None
    };
    let cpu1 = proc::cpu_times(srv.pid()).map_err(|e| format!("server CPU time: {e}"))?;
    let window = t0.elapsed();
    let out = wait_for_client(child, CLIENT_GRACE)?;
    let json = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("").trim();
        return Err(format!(
            "client failed ({}): {first} {}",
            out.status,
            json.trim()
        ));
    }
    let mut s = parse_client(&json)?;
    let msgs = s.msgs_per_sec * window.as_secs_f64();
    let user = (cpu1.0 - cpu0.0).as_secs_f64();
    let cpu = user + (cpu1.1 - cpu0.1).as_secs_f64();
    let per_msg = |t: f64| if msgs > 0.0 { t * 1e6 / msgs } else { f64::NAN };
    s.cpu_us_per_msg = per_msg(cpu);
    s.user_us_per_msg = per_msg(user);
    s.cpu_util = cpu / window.as_secs_f64();
    if let (Some((enters, all)), true) = (counts, msgs > 0.0) {
        s.uring_enters_per_msg = Some(enters as f64 / msgs);
        s.syscalls_per_msg = Some(all as f64 / msgs);
    }
    Ok(s)
}

const ENTER: &str = "syscalls:sys_enter_io_uring_enter";
const ANY: &str = "raw_syscalls:sys_enter";

/// Counts the system calls of every thread of `pid` for `window` with
/// `perf stat` on the syscall tracepoints: (`io_uring_enter` calls, all calls).
fn count_syscalls(pid: u32, window: Duration) -> Result<(u64, u64), String> {
    let out = Command::new("perf")
        .args(["stat", "-x,", "-e", &format!("{ENTER},{ANY}")])
        .args(["-p", &pid.to_string(), "--", "sleep", &secs(window)])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("--syscalls needs perf (Debian: apt-get install linux-perf): {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    parse_perf(&text).ok_or_else(|| format!("cannot read perf stat output: {}", text.trim()))
}

/// Reads `perf stat -x,` lines: `count,unit,event,...`; `<not counted>` is 0.
pub fn parse_perf(text: &str) -> Option<(u64, u64)> {
    let count = |event: &str| {
        let line = text.lines().find(|l| l.split(',').nth(2) == Some(event))?;
        let v = line.split(',').next()?;
        Some(if v.starts_with('<') {
            0
        } else {
            v.trim().parse().ok()?
        })
    };
    Some((count(ENTER)?, count(ANY)?))
}

/// How long the client may run past its warm-up and duration before it is
/// killed (a server that stopped answering must not hang the whole comparison).
/// Its output is small (one JSON line, no progress bar when piped), so it fits
/// in the pipes while we poll.
const CLIENT_GRACE: Duration = Duration::from_secs(30);

fn wait_for_client(mut child: Child, grace: Duration) -> Result<Output, String> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "client still running {grace:?} after its run; killed"
                ));
            }
            Err(e) => return Err(format!("waiting for the client: {e}")),
        }
    }
    child
        .wait_with_output()
        .map_err(|e| format!("reading the client's output: {e}"))
}

fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// Reads the fields this runner needs from `ringport bench --json`.
pub fn parse_client(json: &str) -> Result<Sample, String> {
    let v: serde_json::Value = serde_json::from_str(json.trim())
        .map_err(|e| format!("client output is not JSON ({e}): {:?}", json.trim()))?;
    let num = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| format!("client JSON has no number {k:?}"))
    };
    let errors = num("errors")?;
    if errors != 0.0 {
        return Err(format!("client reported {errors} errors"));
    }
    Ok(Sample {
        msgs_per_sec: num("msgs_per_sec")?,
        mb_per_sec: num("mb_per_sec")?,
        p50_us: num("p50_us")?,
        p99_us: num("p99_us")?,
        p10_us: v.get("p10_us").and_then(serde_json::Value::as_f64),
        p90_us: v.get("p90_us").and_then(serde_json::Value::as_f64),
        ..Sample::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_json() {
        let s = parse_client(
            r#"{"msgs":10,"msgs_per_sec":5.0,"mb_per_sec":1,"p50_us":2,"p99_us":3,"errors":0}"#,
        )
        .unwrap();
        assert_eq!((s.msgs_per_sec, s.p99_us), (5.0, 3.0));
        assert_eq!((s.p10_us, s.p90_us), (None, None));
        let s = parse_client(
            r#"{"msgs_per_sec":5,"mb_per_sec":1,"p10_us":1,"p50_us":2,"p90_us":2.5,"p99_us":3,"errors":0}"#,
        )
        .unwrap();
        assert_eq!((s.p10_us, s.p90_us), (Some(1.0), Some(2.5)));
        assert!(parse_client(r#"{"msgs_per_sec":5.0,"errors":1}"#).is_err());
        assert!(parse_client("not json").is_err());
    }

    #[test]
    fn perf_output() {
        let t = "12,,syscalls:sys_enter_io_uring_enter,1,100.00,,\n\
                 <not counted>,,raw_syscalls:sys_enter,0,100.00,,\n";
        assert_eq!(parse_perf(t), Some((12, 0)));
        assert_eq!(parse_perf("garbage"), None);
    }

    #[test]
    fn labels() {
        let s = Scenario {
            connections: 10,
            size: 16384,
        };
        assert_eq!(s.label(), "10 x 16 KiB");
        assert_eq!(
            Scenario {
                connections: 50,
                size: 64
            }
            .label(),
            "50 x 64 B"
        );
    }
}
