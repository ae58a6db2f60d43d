//! The echo server: the classic IOCP program on one [`CompletionPort`].
//!
//! Every worker loops on "dequeue completions; act on each; start the next
//! operations". Connections keep one receive in flight and one send in
//! flight at most; received data waits in a per-connection queue until it is
//! sent back, and when that queue holds `max_buffered` bytes the connection is
//! paused (no receive) until sends drain it to half. A housekeeping thread
//! advances a coarse clock and posts a tick packet every 50 ms; the worker
//! that dequeues it re-arms accepts after a back-off and closes idle
//! connections, so there is no timer per connection and no clock read per
//! message.
//!
//! Connections live in a slot table ([`slots`]): each operation carries its
//! connection's slot token as its `user` value, so a completion finds its
//! connection by index, under that connection's lock only.

mod accept;
mod clock;
mod conn;
mod counters;
mod housekeeping;
mod slots;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringport::{Backend, Completion, CompletionPort, OpKind, Packet};

pub use counters::{Counters, Snapshot};

use crate::error::{describe, Error, Result};
use accept::Acceptor;
use clock::CoarseClock;
use conn::{Conn, Why};
use slots::{Slots, Token};

/// Completion key of the listener; a connection's key is its slot token.
const LISTENER: u64 = 0;
/// Posted packet: a worker exits.
const SHUTDOWN: u64 = u64::MAX;
/// Posted packet: housekeeping (accept back-off, idle scan).
const TICK: u64 = u64::MAX - 1;
const TICK_EVERY: Duration = Duration::from_millis(50);
/// Completions a worker takes per dequeue (`GetQueuedCompletionStatusEx`'s
/// count).
const BATCH: usize = 256;

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
    ///
    /// Idle time is kept on a coarse clock that advances once per 50 ms
    /// tick, and a connection is closed by the first idle scan (every quarter
    /// of the timeout, 50 ms to 1 s) that finds it silent for the timeout
    /// plus one tick. So it closes no later than the timeout plus two ticks
    /// and one scan interval after its last I/O, and no earlier than the
    /// timeout, less however late the housekeeping thread woke for a tick
    /// (normally well under a millisecond) and the clock's 1 ms resolution.
    pub idle_timeout: Option<Duration>,
    /// Received bytes a connection may hold before it stops being read.
    pub max_buffered: usize,
    /// Print a counters line this often (None = never).
    pub stats_interval: Option<Duration>,
    /// Set `SO_REUSEPORT` so several processes can share the address.
    pub reuseport: bool,
    /// With one worker, keep the port an ordinary one, its ring shared (by
    /// default one worker gets a single-thread port: see
    /// `Builder::single_thread`).
    pub shared_ring: bool,
    /// Pooled receives one at a time in the kernel, not through a multishot
    /// receive per socket (see `Builder::multishot_recv`; for comparing).
    pub single_shot: bool,
    /// Sockets named by descriptor number, not through the ring's registered
    /// file table (see `Builder::registered_files`; for comparing).
    pub unregistered: bool,
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
            shared_ring: false,
            single_shot: false,
            unregistered: false,
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
    conns: Slots<Conn>,
    acceptor: Acceptor,
    clock: CoarseClock,
    /// The coarse clock at the last idle scan.
    last_idle_scan: AtomicU64,
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
/// pooled receives use buffers of `buf_size` bytes; `single`: one thread
/// dequeues (see `Builder::single_thread`).
pub fn open_port(
    backend: Backend,
    concurrency: usize,
    buf_size: usize,
    single: bool,
) -> Result<CompletionPort> {
    open_port_with(backend, concurrency, buf_size, single, true, true)
}

/// [`open_port`], choosing whether pooled receives go through a multishot
/// receive per socket (`Builder::multishot_recv`) and whether sockets go in
/// the ring's registered file table (`Builder::registered_files`).
pub fn open_port_with(
    backend: Backend,
    concurrency: usize,
    buf_size: usize,
    single: bool,
    multishot: bool,
    files: bool,
) -> Result<CompletionPort> {
    CompletionPort::builder()
        .backend(backend)
        .concurrency(concurrency)
        .recv_buffers(512, buf_size)
        .single_thread(single)
        .multishot_recv(multishot)
        .registered_files(files)
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
        // One worker: the port is that thread's alone, and io_uring can run
        // its ring for it (SINGLE_ISSUER + DEFER_TASKRUN).
        let single = cfg.threads == 1 && !cfg.shared_ring;
        let port = open_port_with(
            cfg.backend,
            cfg.concurrency,
            cfg.buf_size,
            single,
            !cfg.single_shot,
            !cfg.unregistered,
        )?;
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
            // Closed connections keep their slot until their last operation
            // completes: room for twice the limit.
            conns: Slots::new(cfg.max_connections.saturating_mul(2).max(1024)),
            acceptor: Acceptor::new(listener),
            clock: CoarseClock::new(),
            last_idle_scan: AtomicU64::new(0),
            cfg,
        });
        shared.acceptor.top_up(&shared);
        shared.counters.flush();
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
        s.conns.each(|slot| s.close(slot, Why::Shutdown));
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
    /// Operations the port has not handed back yet. (Not the counters: those
    /// lag by a worker's batch.) What it handed back is either queued, ahead
    /// of the shutdown packets, or in a worker's batch, done before that
    /// worker dequeues again.
    fn in_flight(&self) -> usize {
        self.port.stats().in_flight
    }

    /// Closes the connection in `slot`, emptying the slot if nothing of it is
    /// still in flight (else its last completion does).
    fn close(&self, slot: &mut Option<Conn>, why: Why) {
        if let Some(c) = slot {
            c.close(self, why);
        }
        settle(slot);
    }

    /// Counts an operation that was accepted by the port.
    fn started<E>(&self, r: &std::result::Result<ringport::OpId, E>) -> bool {
        if r.is_ok() {
            self.counters.submitted();
        }
        r.is_ok()
    }

    fn worker(&self) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut exit = false;
        while !exit {
            if self.port.get_many(&mut batch, BATCH, None).is_err() {
                break; // the port was closed under us
            }
            // By reference: a completion is too big to copy into every call
            // on its way to its connection; the batch drops them all after.
            for c in batch.iter_mut() {
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
            batch.clear();
            self.counters.flush();
        }
        let _ = self.port.submit();
        self.counters.flush();
        Counters::inc(&self.counters.workers_exited);
    }

    fn dispatch(&self, c: &mut Completion) {
        if c.kind() == OpKind::Post {
            if c.key() == TICK {
                self.tick();
            }
            return;
        }
        self.counters.completed();
        if c.is_aborted() {
            Counters::inc(&self.counters.ops_cancelled);
        }
        match c.kind() {
            OpKind::Accept => self.acceptor.completed(self, c),
            // A stale token (impossible while slots are freed only once
            // nothing is in flight) finds nothing, and the packet is dropped.
            OpKind::Recv | OpKind::Send => {
                self.conns.with(Token::from_user(c.user()), |slot| {
                    if let Some(conn) = slot {
                        conn.completed(self, c);
                    }
                    settle(slot);
                });
            }
            _ => {}
        }
    }

    /// A new connection from an accept: give it a slot, associate it and
    /// start reading.
    fn admit(&self, stream: TcpStream) {
        Counters::inc(&self.counters.accepted);
        let snap = self.counters.snapshot();
        if snap.active > self.cfg.max_connections as u64 {
            return self.reject(); // dropping the stream closes it
        }
        let Some(token) = self.conns.take() else {
            return self.reject(); // out of slots: never in practice
        };
        let _ = stream.set_nodelay(true);
        // Under the slot's lock, so a shutdown scanning the table either sees
        // the connection or is seen here through `stopping`.
        self.conns
            .with(token, |slot| *slot = self.open(token, stream));
    }

    fn reject(&self) {
        Counters::inc(&self.counters.rejected);
        Counters::inc(&self.counters.closed);
    }

    /// The connection for a new socket, reading already; None when it is
    /// over at once (association refused, shutting down, first receive
    /// refused), so its slot is freed.
    fn open(&self, token: Token, stream: TcpStream) -> Option<Conn> {
        let Ok(handle) = self.port.associate(stream, token.user()) else {
            Counters::inc(&self.counters.io_errors);
            Counters::inc(&self.counters.closed);
            return None;
        };
        let mut conn = Conn::new(token, handle, self.clock.now());
        if self.stopping.load(Ordering::SeqCst) {
            conn.close(self, Why::Shutdown);
        } else {
            conn.start(self);
        }
        (!conn.finished()).then_some(conn)
    }
}

/// Empties a slot whose connection is closed with nothing in flight, so the
/// table frees it for reuse.
fn settle(slot: &mut Option<Conn>) {
    if slot.as_ref().is_some_and(Conn::finished) {
        *slot = None;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
