//! The load generator: closed loop, byte-verified, latency in hdrhistogram.
//!
//! The client side is a completion port too: every connection is associated
//! with one port and `threads` client threads dequeue from it, so the load
//! generator is itself an IOCP program. Each connection keeps `pipeline`
//! messages in flight; a message is done when all its bytes came back, and
//! its latency is the time from issuing it to its last byte. Only messages
//! issued after the warm-up and finished before the end are measured.

mod client;
mod pattern;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringport::{Backend, CompletionPort, OpKind, Packet};

use crate::error::{Error, Result};
use client::Client;
pub use pattern::Pattern;

const SHUTDOWN: u64 = u64::MAX;
/// How long connections get to bring their last messages back after the end.
const DRAIN: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The echo server.
    pub addr: SocketAddr,
    /// Connections opened.
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Client threads dequeuing from the client port.
    pub threads: usize,
    /// Backend of the client port.
    pub backend: Backend,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    pub backend: Backend,
    pub backend_reason: String,
    pub connections: usize,
    pub size: usize,
    pub pipeline: usize,
    pub threads: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Messages measured (issued after the warm-up, done before the end).
    pub msgs: u64,
    pub msgs_per_sec: f64,
    /// Echoed payload, one way, in 10^6 bytes per second.
    pub mb_per_sec: f64,
    /// Latency percentiles, issue of a message to the check of its echo.
    pub p10_us: f64,
    pub p25_us: f64,
    pub p50_us: f64,
    pub p75_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// Every echoed byte checked, warm-up and drain included.
    pub bytes_verified: u64,
    pub bytes_wrong: u64,
    pub failed_connections: u64,
    /// Failed connections (a wrong byte fails its connection); 0 on a good run.
    pub errors: u64,
    /// The first failure, in words.
    pub first_error: Option<String>,
}

impl Report {
    /// True when every byte came back right and no connection failed.
    pub fn ok(&self) -> bool {
        self.errors == 0 && self.bytes_wrong == 0 && self.failed_connections == 0
    }

    /// The report as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "backend": self.backend.to_string(),
            "backend_reason": self.backend_reason,
            "connections": self.connections,
            "size": self.size,
            "pipeline": self.pipeline,
            "threads": self.threads,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "msgs": self.msgs,
            "msgs_per_sec": self.msgs_per_sec,
            "mb_per_sec": self.mb_per_sec,
            "p10_us": self.p10_us,
            "p25_us": self.p25_us,
            "p50_us": self.p50_us,
            "p75_us": self.p75_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "mean_us": self.mean_us,
            "bytes_verified": self.bytes_verified,
            "bytes_wrong": self.bytes_wrong,
            "failed_connections": self.failed_connections,
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }
}

/// What the client threads share.
pub(crate) struct Run {
    cfg: Config,
    port: CompletionPort,
    pattern: Pattern,
    recv_buf: usize,
    measure_from: Instant,
    stopping: AtomicBool,
    msgs: AtomicU64,
    msgs_total: AtomicU64,
    bytes_verified: AtomicU64,
    bytes_wrong: AtomicU64,
    failed: AtomicU64,
    finished: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Run {
    fn count_wrong(&self, n: usize) {
        self.bytes_wrong.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn fail(&self, idx: usize, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::SeqCst);
        lock(&self.first_error).get_or_insert(format!("connection {idx}: {why}"));
    }
}

/// Live figures for a progress display.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Time since the start (warm-up included).
    pub elapsed: Duration,
    /// Messages done so far, warm-up included.
    pub msgs_total: u64,
    /// Connections that failed so far.
    pub failed: u64,
}

/// Runs the load: connects, warms up, measures, drains, and reports.
/// `on_progress` is called about ten times a second.
///
/// # Errors
///
/// The client port cannot be opened or a connection cannot be made. Wrong
/// bytes and connections that fail later are in the report, not errors.
pub fn run(cfg: &Config, mut on_progress: impl FnMut(Progress)) -> Result<Report> {
    let port = crate::server::open_port(cfg.backend, cfg.threads, 16 * 1024, false)?;
    let clients = connect_all(cfg, &port)?;
    let start = Instant::now();
    let run = Arc::new(Run {
        port,
        pattern: Pattern::default(),
        recv_buf: (cfg.size.saturating_mul(cfg.pipeline)).clamp(4096, 256 << 10),
        measure_from: start + cfg.warmup,
        stopping: AtomicBool::new(false),
        msgs: AtomicU64::new(0),
        msgs_total: AtomicU64::new(0),
        bytes_verified: AtomicU64::new(0),
        bytes_wrong: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        finished: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        cfg: cfg.clone(),
    });
    let clients = Arc::new(clients);
    let workers: Vec<_> = (0..cfg.threads)
        .map(|_| {
            let (run, clients) = (run.clone(), clients.clone());
            thread::spawn(move || worker(&run, &clients))
        })
        .collect();
    for c in clients.iter() {
        c.start(&run);
    }
    let stop_at = run.measure_from + cfg.duration;
    let progress = |run: &Run| Progress {
        elapsed: start.elapsed(),
        msgs_total: run.msgs_total.load(Ordering::Relaxed),
        failed: run.failed.load(Ordering::Relaxed),
    };
    while Instant::now() < stop_at && run.finished.load(Ordering::SeqCst) < clients.len() {
        thread::sleep(Duration::from_millis(100).min(stop_at - Instant::now().min(stop_at)));
        on_progress(progress(&run));
    }
    run.stopping.store(true, Ordering::SeqCst);
    let measured = (Instant::now().min(stop_at))
        .saturating_duration_since(run.measure_from)
        .max(Duration::from_millis(1));
    let drain_until = Instant::now() + DRAIN;
    while run.finished.load(Ordering::SeqCst) < clients.len() && Instant::now() < drain_until {
        thread::sleep(Duration::from_millis(5));
    }
    for c in clients.iter() {
        c.abandon(&run);
    }
    for _ in &workers {
        let _ = run.port.post(Packet {
            bytes: 0,
            key: SHUTDOWN,
            user: 0,
        });
    }
    let mut hist = new_histogram();
    for w in workers {
        if let Ok(h) = w.join() {
            let _ = hist.add(&h);
        }
    }
    Ok(report(cfg, &run, &hist, measured))
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 100 s, 3 significant figures.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("constant bounds are valid")
}

fn connect_all(cfg: &Config, port: &CompletionPort) -> Result<Vec<Client>> {
    (0..cfg.connections)
        .map(|i| {
            let s = TcpStream::connect_timeout(&cfg.addr, Duration::from_secs(5)).map_err(|e| {
                Error::io(
                    format!(
                        "cannot connect to {} (connection {} of {})",
                        cfg.addr,
                        i + 1,
                        cfg.connections
                    ),
                    &e,
                )
            })?;
            let _ = s.set_nodelay(true);
            let h = port
                .associate(s, i as u64)
                .map_err(|e| Error::io("cannot associate a client socket", &e))?;
            Ok(Client::new(i, h))
        })
        .collect()
}

fn worker(run: &Run, clients: &[Client]) -> Histogram<u64> {
    let mut hist = new_histogram();
    let mut batch = Vec::with_capacity(64);
    let mut exit = false;
    while !exit {
        batch.clear();
        match run
            .port
            .get_many(&mut batch, 64, Some(Duration::from_millis(100)))
        {
            Ok(_) | Err(ringport::GetError::TimedOut) => {}
            Err(_) => break,
        }
        for c in batch.drain(..) {
            if c.kind() == OpKind::Post {
                if exit {
                    let _ = run.port.post(Packet {
                        bytes: 0,
                        key: SHUTDOWN,
                        user: 0,
                    });
                }
                exit = true;
            } else if let Some(client) = usize::try_from(c.key()).ok().and_then(|k| clients.get(k))
            {
                debug_assert_eq!(client.idx as u64, c.key());
                client.completed(run, c, &mut hist);
            }
        }
    }
    let _ = run.port.submit();
    hist
}

fn report(cfg: &Config, run: &Run, hist: &Histogram<u64>, measured: Duration) -> Report {
    let secs = measured.as_secs_f64();
    let msgs = run.msgs.load(Ordering::Relaxed);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let bytes_wrong = run.bytes_wrong.load(Ordering::Relaxed);
    let failed = run.failed.load(Ordering::Relaxed);
    Report {
        backend: run.port.backend(),
        backend_reason: run.port.backend_reason().to_string(),
        connections: cfg.connections,
        size: cfg.size,
        pipeline: cfg.pipeline,
        threads: cfg.threads,
        duration_s: secs,
        warmup_s: cfg.warmup.as_secs_f64(),
        msgs,
        msgs_per_sec: msgs as f64 / secs,
        mb_per_sec: msgs as f64 * cfg.size as f64 / secs / 1e6,
        p10_us: us(0.1),
        p25_us: us(0.25),
        p50_us: us(0.5),
        p75_us: us(0.75),
        p90_us: us(0.9),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: hist.max() as f64 / 1000.0,
        mean_us: hist.mean() / 1000.0,
        bytes_verified: run.bytes_verified.load(Ordering::Relaxed),
        bytes_wrong,
        failed_connections: failed,
        errors: failed,
        first_error: lock(&run.first_error).clone(),
    }
}
