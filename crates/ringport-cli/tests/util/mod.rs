//! Helpers for the hostile-client tests: a real `ringport serve` child on
//! loopback, its final counters, and small client tools.
//!
//! Every test runs on the backend named by `RINGPORT_BACKEND` (`io_uring`,
//! `epoll`; unset means `auto`); a backend that cannot run here is skipped
//! with `SKIP backend <b>: <reason>`, never passed silently.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringport::CompletionPort;

pub const BIN: &str = env!("CARGO_BIN_EXE_ringport");
pub const LONG: Duration = Duration::from_secs(20);

/// The backend to test, or None (after printing why) when it cannot run here.
pub fn backend() -> Option<String> {
    let name = match std::env::var("RINGPORT_BACKEND") {
        Ok(n) if !n.is_empty() && n != "all" => n,
        _ => return Some("auto".into()),
    };
    let b = match name.parse() {
        Ok(b) => b,
        Err(e) => panic!("RINGPORT_BACKEND={name}: {e}"),
    };
    match CompletionPort::builder().backend(b).build() {
        Ok(_) => Some(name),
        Err(e) => {
            println!("SKIP backend {name}: {e}");
            eprintln!("SKIP backend {name}: {e}");
            None
        }
    }
}

/// Raises this process's descriptor limit (children inherit it) so a
/// thousand clients and the server fit.
pub fn raise_nofile(want: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A `ringport serve` child process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub banner: String,
    out: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
}

/// Options for [`Server::start`].
#[derive(Default)]
pub struct Opts<'a> {
    pub args: &'a [&'a str],
    /// RLIMIT_NOFILE for the child.
    pub nofile: Option<u64>,
}

impl Server {
    pub fn start(backend: &str, args: &[&str]) -> Server {
        Server::start_with(backend, Opts { args, nofile: None })
    }

    pub fn start_with(backend: &str, o: Opts<'_>) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--backend", backend])
            .args(o.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(n) = o.nofile {
            // SAFETY: the closure runs in the child between fork and exec and
            // only calls setrlimit, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn ringport serve");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let banner = lines
            .next()
            .expect("a line from the server")
            .expect("read the server's stdout");
        let addr = banner
            .strip_prefix("listening on ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {banner:?}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let reader = thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Server {
            child,
            addr,
            banner,
            out,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// True while the child runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits (bounded) until a `stats:` line (needs `--stats-interval`)
    /// newer than this call shows `active=0`.
    pub fn wait_for_no_active_connections(&self) {
        let seen = self.out.lock().unwrap().len();
        let deadline = Instant::now() + LONG;
        loop {
            let idle = self.out.lock().unwrap()[seen..]
                .iter()
                .any(|l| l.starts_with("stats:") && l.contains(" active=0 "));
            if idle {
                return;
            }
            assert!(Instant::now() < deadline, "connections stayed open");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait (bounded), and parse the final `key=value` counters.
    pub fn stop(mut self) -> Counters {
        // SAFETY: kill only sends a signal to our own child's pid.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let deadline = Instant::now() + LONG;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not exit within {LONG:?} of SIGTERM");
            }
            thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        assert!(status.success(), "server exited with {status}");
        let lines = self.out.lock().unwrap().clone();
        let map: HashMap<String, u64> = lines
            .iter()
            .filter_map(|l| l.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        assert!(map.contains_key("accepted"), "no counters in {lines:?}");
        Counters(map)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's final counters.
#[derive(Debug)]
pub struct Counters(pub HashMap<String, u64>);

impl Counters {
    pub fn get(&self, k: &str) -> u64 {
        *self.0.get(k).unwrap_or_else(|| panic!("no counter {k}"))
    }

    /// `port<i>_admitted` for each of `ports` ports (a port per worker).
    pub fn admitted_by_port(&self, ports: usize) -> Vec<u64> {
        (0..ports)
            .map(|i| self.get(&format!("port{i}_admitted")))
            .collect()
    }

    /// What every clean shutdown must show.
    pub fn assert_clean(&self, threads: u64) {
        assert_eq!(self.get("accepted"), self.get("closed"), "{self:?}");
        assert_eq!(self.get("active"), 0, "{self:?}");
        assert_eq!(
            self.get("ops_submitted"),
            self.get("ops_completed"),
            "an operation never completed: {self:?}"
        );
        assert_eq!(self.get("workers_exited"), threads, "{self:?}");
        assert_eq!(
            self.get("shutdown_forced"),
            0,
            "workers missed their shutdown packets: {self:?}"
        );
    }
}

/// A connected client with timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(LONG)).unwrap();
    s.set_write_timeout(Some(LONG)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `data` and reads it back, checking every byte.
pub fn echo(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    s.read_exact(&mut back).expect("read the echo");
    assert!(back == data, "echoed bytes differ");
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

/// CPU time (user + system) of a process so far.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
