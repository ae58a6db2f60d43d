//! The echo server: the classic IOCP program on one [`CompletionPort`].
//!
//! Every worker loops on "dequeue completions; act on each; start the next
//! operations". Connections keep one receive in flight and one send in
//! flight at most; received data waits in a per-connection queue until it is
//! sent back, and when that queue holds `max_buffered` bytes the connection is
//! paused (no receive) until sends drain it to half. A housekeeping thread
//! posts a tick packet every 50 ms; the worker that dequeues it re-arms
//! accepts after a back-off and closes idle connections, so there is no timer
//! per connection.

mod accept;
mod conn;
mod counters;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringport::{Backend, Completion, CompletionPort, OpKind, Packet};

pub use counters::{Counters, Snapshot};

use crate::error::{describe, Error, Result};
use accept::Acceptor;
use conn::Conn;

/// Completion key of the listener; connections use keys from 1 up.
const LISTENER: u64 = 0;
/// Posted packet: a worker exits.
const SHUTDOWN: u64 = u64::MAX;
/// Posted packet: housekeeping (accept back-off, idle scan).
const TICK: u64 = u64::MAX - 1;
const TICK_EVERY: Duration = Duration::from_millis(50);
const SHARDS: usize = 16;

/// How the server runs; `Default` gives the `serve` defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Worker threads dequeuing from the port (0 = one per CPU).
    pub threads: usize,
    /// The port's concurrency value (0 = one per CPU).
    pub concurrency: usize,
    /// Which backend the port runs on.
    pub backend: Backend,
    /// Connections beyond this many are accepted and closed at once.
    pub max_connections: usize,
    /// Connections with no I/O completed for this long are closed (None = never).
    pub idle_timeout: Option<Duration>,
    /// Received bytes a connection may hold before it stops being read.
    pub max_buffered: usize,
    /// Print a counters line this often (None = never).
    pub stats_interval: Option<Duration>,
    /// Set `SO_REUSEPORT` so several processes can share the address.
    pub reuseport: bool,
    /// Size of the pooled receive buffers (512 of them are shared by every
    /// connection; an idle connection holds none).
    pub buf_size: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            threads: 0,
            concurrency: 0,
            backend: Backend::Auto,
            max_connections: 100_000,
            idle_timeout: Some(Duration::from_secs(300)),
            max_buffered: 1 << 20,
            stats_interval: None,
            reuseport: false,
            buf_size: 16 * 1024,
        }
    }
}

/// What every worker shares.
struct Shared {
    cfg: Config,
    port: CompletionPort,
    counters: Counters,
    stopping: AtomicBool,
    conns: Vec<Mutex<HashMap<u64, Arc<Conn>>>>,
    acceptor: Acceptor,
    next_key: std::sync::atomic::AtomicU64,
    last_idle_scan: Mutex<Instant>,
    epoch: Instant,
}

/// A running echo server.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
    housekeeper: Option<JoinHandle<()>>,
    housekeeper_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("cfg", &self.cfg).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens the port with the configured backend, saying how to fix a refusal;
/// pooled receives use buffers of `buf_size` bytes.
pub fn open_port(backend: Backend, concurrency: usize, buf_size: usize) -> Result<CompletionPort> {
    CompletionPort::builder()
        .backend(backend)
        .concurrency(concurrency)
        .recv_buffers(512, buf_size)
        .build()
        .map_err(|e| match backend {
            Backend::Auto => Error::msg(format!("cannot open a completion port: {e}")),
            b => Error::msg(format!("backend {b} cannot run here: {e}")),
        })
}

#[cfg(unix)]
fn reuse_port(s: &socket2::Socket) -> std::io::Result<()> {
    s.set_reuse_port(true)
}

#[cfg(not(unix))]
fn reuse_port(_: &socket2::Socket) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "--reuseport needs SO_REUSEPORT, which this platform lacks",
    ))
}

fn bind(cfg: &Config) -> Result<TcpListener> {
    let what = format!("cannot listen on {}", cfg.addr);
    let s = socket2::Socket::new(
        socket2::Domain::for_address(cfg.addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|e| Error::io(&what, &e))?;
    let setup = || -> std::io::Result<()> {
        s.set_reuse_address(true)?;
        if cfg.reuseport {
            reuse_port(&s)?;
        }
        s.bind(&cfg.addr.into())?;
        s.listen(4096)
    };
    setup().map_err(|e| Error::msg(format!("{what}: {}", describe(&e))))?;
    Ok(s.into())
}

impl Server {
    /// Binds, opens the port, starts the workers and the housekeeper.
    ///
    /// # Errors
    ///
    /// The address cannot be bound, or the backend cannot run here.
    pub fn start(mut cfg: Config) -> Result<Server> {
        let cpus = thread::available_parallelism().map_or(1, usize::from);
        if cfg.threads == 0 {
            cfg.threads = cpus;
        }
        cfg.max_buffered = cfg.max_buffered.max(1);
        let port = open_port(cfg.backend, cfg.concurrency, cfg.buf_size)?;
        let listener = bind(&cfg)?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the bound address", &e))?;
        let listener = port
            .associate(listener, LISTENER)
            .map_err(|e| Error::io("cannot associate the listener", &e))?;
        let shared = Arc::new(Shared {
            port,
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            conns: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            acceptor: Acceptor::new(listener),
            next_key: 1.into(),
            last_idle_scan: Mutex::new(Instant::now()),
            epoch: Instant::now(),
            cfg,
        });
        shared.acceptor.top_up(&shared);
        let workers = (0..shared.cfg.threads)
            .map(|i| {
                let s = shared.clone();
                thread::Builder::new()
                    .name(format!("ringport-worker-{i}"))
                    .spawn(move || s.worker())
                    .map_err(|e| Error::io("cannot start a worker thread", &e))
            })
            .collect::<Result<Vec<_>>>()?;
        let housekeeper_stop = Arc::new(AtomicBool::new(false));
        let housekeeper = {
            let (s, stop) = (shared.clone(), housekeeper_stop.clone());
            thread::Builder::new()
                .name("ringport-housekeeper".into())
                .spawn(move || s.housekeeper(&stop))
                .map_err(|e| Error::io("cannot start the housekeeping thread", &e))?
        };
        Ok(Server {
            shared,
            addr,
            workers,
            housekeeper: Some(housekeeper),
            housekeeper_stop,
        })
    }

    /// The address the server listens on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.shared.port.backend()
    }

    /// Why that backend was chosen.
    pub fn backend_reason(&self) -> String {
        self.shared.port.backend_reason().to_string()
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.shared.cfg.threads
    }

    /// The counters now.
    pub fn counters(&self) -> Snapshot {
        self.shared.counters.snapshot()
    }

    /// Graceful shutdown: stop accepting, close every connection, wait for
    /// every operation to complete, post one shutdown packet per worker, join
    /// them, and return the final counters.
    pub fn shutdown(mut self) -> Snapshot {
        let s = &self.shared;
        s.stopping.store(true, Ordering::SeqCst);
        s.acceptor.close();
        for shard in &s.conns {
            let drained: Vec<Arc<Conn>> = lock(shard).drain().map(|(_, c)| c).collect();
            for c in drained {
                c.close(s, conn::Why::Shutdown);
            }
        }
        // Every accepted operation completes exactly once: wait for them all,
        // so no packet is still coming when the workers leave.
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.in_flight() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        for _ in &self.workers {
            let _ = s.port.post(Packet {
                bytes: 0,
                key: SHUTDOWN,
                user: 0,
            });
        }
        // A worker the port never hands its packet to (a lost wake-up in the
        // port) must not hang the process: close the port, which wakes every
        // waiter with `Closed`, and say so in the counters.
        let deadline = Instant::now() + Duration::from_secs(5);
        let threads = self.workers.len() as u64;
        while s.counters.snapshot().workers_exited < threads && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if s.counters.snapshot().workers_exited < threads {
            Counters::inc(&s.counters.shutdown_forced);
            s.port.close();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.housekeeper_stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.housekeeper.take() {
            let _ = h.join();
        }
        s.counters.snapshot()
    }
}

impl Shared {
    fn in_flight(&self) -> u64 {
        let c = self.counters.snapshot();
        c.ops_submitted.saturating_sub(c.ops_completed)
    }

    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, Arc<Conn>>> {
        &self.conns[(key as usize) % SHARDS]
    }

    fn lookup(&self, key: u64) -> Option<Arc<Conn>> {
        lock(self.shard(key)).get(&key).cloned()
    }

    fn forget(&self, key: u64) {
        lock(self.shard(key)).remove(&key);
    }

    /// Counts an operation that was accepted by the port.
    fn started<E>(&self, r: &std::result::Result<ringport::OpId, E>) -> bool {
        if r.is_ok() {
            Counters::inc(&self.counters.ops_submitted);
        }
        r.is_ok()
    }

    fn worker(&self) {
        let mut batch = Vec::with_capacity(64);
        let mut exit = false;
        while !exit {
            batch.clear();
            if self.port.get_many(&mut batch, 64, None).is_err() {
                break; // the port was closed under us
            }
            for c in batch.drain(..) {
                if c.kind() == OpKind::Post && c.key() == SHUTDOWN {
                    if exit {
                        // One shutdown packet per worker: hand the extra on.
                        let _ = self.port.post(Packet {
                            bytes: 0,
                            key: SHUTDOWN,
                            user: 0,
                        });
                    }
                    exit = true;
                } else {
                    self.dispatch(c);
                }
            }
        }
        let _ = self.port.submit();
        Counters::inc(&self.counters.workers_exited);
    }

    fn dispatch(&self, mut c: Completion) {
        if c.kind() == OpKind::Post {
            if c.key() == TICK {
                self.tick();
            }
            return;
        }
        Counters::inc(&self.counters.ops_completed);
        if c.is_aborted() {
            Counters::inc(&self.counters.ops_cancelled);
        }
        match c.kind() {
            OpKind::Accept => self.acceptor.completed(self, &mut c),
            OpKind::Recv | OpKind::Send => {
                if let Some(conn) = self.lookup(c.key()) {
                    conn.completed(self, c);
                }
            }
            _ => {}
        }
    }

    /// A new connection from an accept: associate it and start reading.
    fn admit(&self, stream: std::net::TcpStream) {
        Counters::inc(&self.counters.accepted);
        let snap = self.counters.snapshot();
        if snap.active > self.cfg.max_connections as u64 {
            Counters::inc(&self.counters.rejected);
            Counters::inc(&self.counters.closed);
            return; // dropping the stream closes it
        }
        let _ = stream.set_nodelay(true);
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let handle = match self.port.associate(stream, key) {
            Ok(h) => h,
            Err(_) => {
                Counters::inc(&self.counters.io_errors);
                Counters::inc(&self.counters.closed);
                return;
            }
        };
        let conn = Arc::new(Conn::new(key, handle, self));
        {
            let mut shard = lock(self.shard(key));
            if self.stopping.load(Ordering::SeqCst) {
                drop(shard);
                conn.close(self, conn::Why::Shutdown);
                return;
            }
            shard.insert(key, conn.clone());
        }
        conn.start(self);
    }

    fn tick(&self) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        self.acceptor.top_up(self);
        let Some(idle) = self.cfg.idle_timeout else {
            return;
        };
        {
            let mut last = lock(&self.last_idle_scan);
            let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
            if last.elapsed() < every {
                return;
            }
            *last = Instant::now();
        }
        for shard in &self.conns {
            let idle_ones: Vec<Arc<Conn>> = lock(shard)
                .values()
                .filter(|c| c.idle_for(self) >= idle)
                .cloned()
                .collect();
            for c in idle_ones {
                c.close(self, conn::Why::Idle);
            }
        }
    }

    fn housekeeper(&self, stop: &AtomicBool) {
        let mut next_stats = self.cfg.stats_interval.map(|d| Instant::now() + d);
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(TICK_EVERY);
            if !self.stopping.load(Ordering::SeqCst) {
                let _ = self.port.post(Packet {
                    bytes: 0,
                    key: TICK,
                    user: 0,
                });
            }
            if let (Some(due), Some(every)) = (next_stats, self.cfg.stats_interval) {
                if Instant::now() >= due {
                    println!("{}", self.counters.snapshot().one_line());
                    next_stats = Some(due + every);
                }
            }
        }
    }

    /// Milliseconds since the server started, for idle bookkeeping.
    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
