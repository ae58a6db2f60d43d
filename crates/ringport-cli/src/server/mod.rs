//! The echo server: the classic IOCP program on a [`CompletionPort`].
//!
//! With [`Ports::Shared`] every worker dequeues from one port: any worker
//! takes any connection's completions. With [`Ports::PerThread`] each worker
//! dequeues from a port of its own: the first port's worker accepts, and
//! hands the connections to the workers in turn (a posted packet tells a
//! worker to take the next one from its inbox), so a connection stays on one
//! worker. Each such port is a single-thread one (unless `shared_ring`), and
//! on io_uring (Linux 6.1 and later) its ring runs with `SINGLE_ISSUER` +
//! `DEFER_TASKRUN`, like the hand-written ceiling's ring per thread in the
//! bench crate, where a ring shared by several threads can only use
//! `COOP_TASKRUN` (BENCHMARKS.md, runs CB and CE: at 10 x 16 KiB on two
//! threads that costs a quarter of the throughput). [`Ports::Auto`], the
//! default, takes a port per worker on io_uring (unless `shared_ring` or a
//! concurrency is set) and one shared port on epoll and Windows, whose shared
//! port costs nothing of the kind. The price of a port per worker is the
//! shared port's balance: a connection waits for its own worker.
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

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
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
/// Posted packet: a connection waits in the port's inbox (per-thread ports).
const ADOPT: u64 = u64::MAX - 2;
const TICK_EVERY: Duration = Duration::from_millis(50);
/// Completions a worker takes per dequeue (`GetQueuedCompletionStatusEx`'s
/// count).
const BATCH: usize = 256;

/// How workers share ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ports {
    /// A port per worker on io_uring unless `shared_ring` or a concurrency
    /// is set, else shared.
    Auto,
    /// One port for every worker (the classic IOCP server).
    Shared,
    /// A port per worker, each a single-thread one unless `shared_ring`;
    /// one accepts and deals the connections out in turn.
    PerThread,
}

impl std::str::FromStr for Ports {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Ports, String> {
        match s {
            "auto" => Ok(Ports::Auto),
            "shared" => Ok(Ports::Shared),
            "per-thread" => Ok(Ports::PerThread),
            _ => Err(format!(
                "unknown port layout {s:?} (expected auto, shared or per-thread)"
            )),
        }
    }
}

impl std::fmt::Display for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ports::Auto => "auto",
            Ports::Shared => "shared",
            Ports::PerThread => "per-thread",
        })
    }
}

/// How the server runs; `Default` gives the `serve` defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Worker threads dequeuing from the port (0 = one per CPU).
    pub threads: usize,
    /// The port's concurrency value (0 = one per CPU; a port per worker has 1).
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
    /// One port for all workers, or one each.
    pub ports: Ports,
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
            ports: Ports::Auto,
            shared_ring: false,
            single_shot: false,
            unregistered: false,
            buf_size: 16 * 1024,
        }
    }
}

/// What the workers of one port share (every worker, unless the ports are
/// per thread). `cfg.threads` is this port's workers.
struct Shared {
    cfg: Config,
    port: CompletionPort,
    /// The whole server's, shared by every port.
    counters: Arc<Counters>,
    stopping: AtomicBool,
    conns: Slots<Conn>,
    /// The listener's accepts: on the first port only.
    acceptor: Option<Acceptor>,
    /// Per-thread ports, on the first: every port (itself too), which its
    /// accepted connections are dealt to in turn.
    peers: OnceLock<Vec<Weak<Shared>>>,
    next_peer: AtomicUsize,
    /// Connections dealt to this port, each announced by an [`ADOPT`] packet.
    inbox: Mutex<VecDeque<TcpStream>>,
    /// Connections dealt to this port that its worker took in, those it then
    /// refused for the connection limit included.
    admitted: AtomicU64,
    /// The whole server's, advanced by its one housekeeper.
    clock: Arc<CoarseClock>,
    /// The coarse clock at the last idle scan.
    last_idle_scan: AtomicU64,
}

/// A running echo server.
#[derive(Debug)]
pub struct Server {
    /// One per port: a single one, or one per worker.
    shards: Vec<Arc<Shared>>,
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

/// Posts the server's own packet `key` (no bytes, no user value).
fn signal(port: &CompletionPort, key: u64) -> std::io::Result<()> {
    port.post(Packet {
        bytes: 0,
        key,
        user: 0,
    })
}

/// Whether `cfg` asks for a port per worker: explicitly, or by default on
/// io_uring where a single-thread port runs its ring for its thread alone,
/// unless `shared_ring` or a concurrency is set.
fn per_thread(cfg: &Config) -> bool {
    match (cfg.ports, cfg.backend) {
        (Ports::PerThread, _) => true,
        (Ports::Shared, _) => false,
        // A ring kept shared, or a concurrency asked for: the shared port.
        (Ports::Auto, _) if cfg.shared_ring || cfg.concurrency != 0 => false,
        // Whether a single-thread port gets a ring of its own here: io_uring
        // (whichever backend `Auto` picks) on Linux 6.1 or later, as its
        // banner says. Elsewhere it would be an ordinary port, and a port per
        // worker would give up the shared port's balance for nothing. The
        // probe costs a ring's set-up.
        (Ports::Auto, Backend::IoUring | Backend::Auto) => CompletionPort::builder()
            .backend(cfg.backend)
            .single_thread(true)
            .build()
            .is_ok_and(|p| {
                p.backend() == Backend::IoUring && p.backend_reason().contains("(single thread)")
            }),
        (Ports::Auto, _) => false,
    }
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
    /// Binds, opens the port (or one per worker), starts the workers and the
    /// housekeeper.
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
        if cfg.ports == Ports::PerThread && cfg.concurrency > 1 {
            return Err(Error::msg(
                "--concurrency applies to a shared port (--ports shared); each per-thread port has one worker",
            ));
        }
        let threads = cfg.threads;
        let counters = Arc::new(Counters::default());
        let clock = Arc::new(CoarseClock::new());
        let mut shards = Vec::new();
        if threads > 1 && per_thread(&cfg) {
            // A worker each: every port is its worker's alone.
            cfg.threads = 1;
            cfg.concurrency = 1;
            for i in 0..threads {
                shards.push(Arc::new(Shared::new(
                    cfg.clone(),
                    &counters,
                    &clock,
                    i == 0,
                )?));
            }
            let peers = shards.iter().map(Arc::downgrade).collect();
            let _ = shards[0].peers.set(peers);
        } else {
            shards.push(Arc::new(Shared::new(cfg, &counters, &clock, true)?));
        }
        let addr = shards[0].cfg.addr;
        let mut workers = Vec::with_capacity(threads);
        for s in &shards {
            if let Some(a) = &s.acceptor {
                a.top_up(s);
            }
            s.counters.flush();
            for _ in 0..s.cfg.threads {
                let s = s.clone();
                let name = format!("ringport-worker-{}", workers.len());
                let w = thread::Builder::new()
                    .name(name)
                    .spawn(move || s.worker())
                    .map_err(|e| Error::io("cannot start a worker thread", &e))?;
                workers.push(w);
            }
        }
        let housekeeper_stop = Arc::new(AtomicBool::new(false));
        let housekeeper = {
            let (s, stop) = (shards.clone(), housekeeper_stop.clone());
            thread::Builder::new()
                .name("ringport-housekeeper".into())
                .spawn(move || housekeeping::run(&s, &stop))
                .map_err(|e| Error::io("cannot start the housekeeping thread", &e))?
        };
        Ok(Server {
            shards,
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
        self.shards[0].port.backend()
    }

    /// Why that backend was chosen.
    pub fn backend_reason(&self) -> String {
        self.shards[0].port.backend_reason().to_string()
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Completion ports: one, or one per worker.
    pub fn ports(&self) -> usize {
        self.shards.len()
    }

    /// The counters now.
    pub fn counters(&self) -> Snapshot {
        self.shards[0].counters.snapshot()
    }

    /// Graceful shutdown: stop accepting, close every connection, wait for
    /// every operation to complete, post one shutdown packet per worker, join
    /// them, and return the final counters.
    pub fn shutdown(self) -> Snapshot {
        self.shutdown_by_port().0
    }

    /// [`shutdown`](Self::shutdown), also returning how many connections
    /// each port admitted, in port order.
    pub fn shutdown_by_port(mut self) -> (Snapshot, Vec<u64>) {
        for s in &self.shards {
            s.stopping.store(true, Ordering::SeqCst);
            if let Some(a) = &s.acceptor {
                a.close();
            }
        }
        for s in &self.shards {
            s.conns.each(|slot| s.close(slot, Why::Shutdown));
        }
        // Every accepted operation completes exactly once: wait for them all,
        // so no packet is still coming when the workers leave.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shards.iter().any(|s| s.in_flight() > 0) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        for s in &self.shards {
            for _ in 0..s.cfg.threads {
                let _ = signal(&s.port, SHUTDOWN);
            }
        }
        // A worker the port never hands its packet to (a lost wake-up in the
        // port) must not hang the process: close the port, which wakes every
        // waiter with `Closed`, and say so in the counters.
        let c = &self.shards[0].counters;
        let deadline = Instant::now() + Duration::from_secs(5);
        let threads = self.workers.len() as u64;
        while c.snapshot().workers_exited < threads && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if c.snapshot().workers_exited < threads {
            Counters::inc(&c.shutdown_forced);
            for s in &self.shards {
                s.port.close();
            }
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // Connections dealt to a port whose worker left first (its port
        // closed under it): closed here, unopened.
        for s in &self.shards {
            for _ in lock(&s.inbox).drain(..) {
                c.closed_unopened();
            }
        }
        self.housekeeper_stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.housekeeper.take() {
            let _ = h.join();
        }
        let admitted = self.shards.iter();
        let admitted = admitted.map(|s| s.admitted.load(Ordering::Relaxed));
        (c.snapshot(), admitted.collect())
    }
}

impl Shared {
    /// Opens a port for `cfg.threads` workers; if `listen`, binds a listener
    /// to `cfg.addr` and associates it (`cfg.addr` comes back with the real
    /// port).
    fn new(
        mut cfg: Config,
        counters: &Arc<Counters>,
        clock: &Arc<CoarseClock>,
        listen: bool,
    ) -> Result<Shared> {
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
        let acceptor = if listen {
            let listener = bind(&cfg)?;
            cfg.addr = listener
                .local_addr()
                .map_err(|e| Error::io("cannot read the bound address", &e))?;
            let listener = port
                .associate(listener, LISTENER)
                .map_err(|e| Error::io("cannot associate the listener", &e))?;
            Some(Acceptor::new(listener))
        } else {
            None
        };
        Ok(Shared {
            port,
            counters: counters.clone(),
            stopping: AtomicBool::new(false),
            // Closed connections keep their slot until their last operation
            // completes: room for twice the limit.
            conns: Slots::new(cfg.max_connections.saturating_mul(2).max(1024)),
            acceptor,
            peers: OnceLock::new(),
            next_peer: AtomicUsize::new(0),
            inbox: Mutex::new(VecDeque::new()),
            admitted: AtomicU64::new(0),
            clock: clock.clone(),
            last_idle_scan: AtomicU64::new(0),
            cfg,
        })
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
                        let _ = signal(&self.port, SHUTDOWN);
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
            } else if c.key() == ADOPT {
                let stream = lock(&self.inbox).pop_front();
                if let Some(stream) = stream {
                    self.admit(stream);
                }
            }
            return;
        }
        self.counters.completed();
        if c.is_aborted() {
            Counters::inc(&self.counters.ops_cancelled);
        }
        match c.kind() {
            OpKind::Accept => {
                if let Some(a) = &self.acceptor {
                    a.completed(self, c);
                }
            }
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

    /// A new connection from an accept: admitted here, or (per-thread
    /// ports) dealt to the next port in turn.
    fn deal(&self, stream: TcpStream) {
        Counters::inc(&self.counters.accepted);
        let peer = self.peers.get().and_then(|p| {
            let i = self.next_peer.fetch_add(1, Ordering::Relaxed) % p.len();
            p[i].upgrade()
        });
        match peer {
            Some(p) if !std::ptr::eq(Arc::as_ptr(&p), self) => p.adopt(stream),
            _ => self.admit(stream),
        }
    }

    /// Queues `stream` for this port's worker and tells it with a packet;
    /// closes it if the port is closed.
    fn adopt(&self, stream: TcpStream) {
        lock(&self.inbox).push_back(stream);
        if signal(&self.port, ADOPT).is_err() {
            // Closed: the worker left at shutdown and takes no more. Only the
            // first port deals, so the last stream queued is this one;
            // dropping it closes it.
            drop(lock(&self.inbox).pop_back());
            self.counters.closed_unopened();
        }
    }

    /// An accepted connection for this port: give it a slot, associate it
    /// and start reading.
    fn admit(&self, stream: TcpStream) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
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
