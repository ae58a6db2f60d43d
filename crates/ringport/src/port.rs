//! [`CompletionPort`]: the public face of a port; every call forwards to `sys`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::completion::{Completion, GetError, OpId, Packet, StartError};
use crate::handle::{Associate, Handle};
use crate::op::Request;
use crate::sys;

/// Which kernel interface a port runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Choose at run time: io_uring on Linux if it works here, else epoll; IOCP on Windows.
    Auto,
    /// Linux io_uring. Forcing it where it is unavailable is an error that says why.
    IoUring,
    /// Linux epoll readiness, completing operations through the same queue.
    Epoll,
    /// The native Windows I/O completion port.
    Iocp,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
            Backend::Iocp => "iocp",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Backend> {
        match s {
            "auto" => Ok(Backend::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(Backend::IoUring),
            "epoll" => Ok(Backend::Epoll),
            "iocp" => Ok(Backend::Iocp),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown backend {s:?} (expected auto, uring, epoll or iocp)"),
            )),
        }
    }
}

/// Settings for a new port; see [`CompletionPort::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    pub(crate) concurrency: usize,
    pub(crate) backend: Backend,
    pub(crate) entries: u32,
    pub(crate) cq_entries: Option<u32>,
    pub(crate) recv_buffers: (usize, usize),
    pub(crate) single_thread: bool,
    #[cfg_attr(windows, allow(dead_code))] // io_uring's
    pub(crate) multishot_recv: bool,
    pub(crate) registered_files: bool,
}

impl Builder {
    /// How many threads may run on the port at once; 0 (the default) means the
    /// number of CPUs (`NumberOfConcurrentThreads` of `CreateIoCompletionPort`).
    pub fn concurrency(mut self, n: usize) -> Builder {
        self.concurrency = n;
        self
    }

    /// Which backend to use; [`Backend::Auto`] by default.
    pub fn backend(mut self, backend: Backend) -> Builder {
        self.backend = backend;
        self
    }

    /// io_uring submission queue size (rounded up to a power of two; default 1024).
    /// Operations beyond what the rings hold wait in the port, never refused.
    ///
    /// # Platform behaviour
    ///
    /// Ignored on Windows, whose port has no rings (nor does epoll).
    pub fn entries(mut self, n: u32) -> Builder {
        self.entries = n.max(1);
        self
    }

    /// The pool of [pooled receives](CompletionPort::recv_pooled): `count`
    /// buffers of `size` bytes (default 512 x 16 KiB). On io_uring `count` is
    /// the provided-buffer ring's length (rounded up to a power of two, at most
    /// 32768): how many receives can land between two reaps before the rest
    /// wait for a buffer. The ring is set up by the first pooled receive.
    pub fn recv_buffers(mut self, count: usize, size: usize) -> Builder {
        self.recv_buffers = (count.max(1), size.max(1));
        self
    }

    /// A port dequeued by one thread only (default false): the first thread
    /// that calls [`get`](CompletionPort::get) or
    /// [`get_many`](CompletionPort::get_many) becomes its owner, and a dequeue
    /// from any other thread fails with [`GetError::Os`] (`ErrorKind::Other`).
    /// Every thread may still start operations, post, cancel and close. When
    /// the owner exits, the port is closed on its way out.
    ///
    /// This is the shape of a thread-per-core server, or of `ringport serve
    /// --threads 1`, and it lets io_uring run the ring for that thread alone:
    /// `IORING_SETUP_SINGLE_ISSUER` + `DEFER_TASKRUN`, which the shared ring
    /// of an ordinary port cannot use (BENCHMARKS.md measures what they are
    /// worth). Other threads then never enter the kernel on the port: what
    /// they start waits for the owner's next dequeue, which they wake
    /// through an eventfd if it sleeps. A [`close`](CompletionPort::close)
    /// from another thread waits for the owner to dequeue and give the
    /// cancelled operations back (10 seconds at most, after which their
    /// memory is leaked, as for any close).
    ///
    /// # Platform behaviour
    ///
    /// The owner rule holds on every backend. The ring of its own needs Linux
    /// 6.1; on older kernels, on epoll and on Windows the port is otherwise an
    /// ordinary one ([`backend_reason`](CompletionPort::backend_reason) names
    /// the ring setup in use).
    pub fn single_thread(mut self, yes: bool) -> Builder {
        self.single_thread = yes;
        self
    }

    /// Whether [pooled receives](CompletionPort::recv_pooled) on io_uring go
    /// through one multishot receive per socket (default true).
    ///
    /// Each socket's first pooled receive arms an `IORING_RECV_MULTISHOT`
    /// receive that stays in the kernel; each time data arrives it fills a
    /// buffer from the ring and completes the oldest pooled receive waiting
    /// on the socket. Data that arrives while none waits is kept and
    /// completes the next pooled receive at once. Each multishot receive
    /// ends after 4 buffers' worth of bytes and the next is armed only for a
    /// receive that waits, so at most that much is kept for a socket nobody
    /// receives on, and a peer that keeps sending to it is held back by TCP. A server that receives, replies and receives again so arms
    /// nothing per message (BENCHMARKS.md measures what that is worth).
    /// Every operation still completes exactly once, and cancel and close
    /// behave as for any receive: a cancelled pooled receive completes as
    /// cancelled at once, and data kept for the socket waits for the next.
    ///
    /// With `false`, each pooled receive is one receive in the kernel, which
    /// takes data from the socket only while it is pending.
    ///
    /// # Platform behaviour
    ///
    /// io_uring only, on kernels with multishot receives and their byte cap
    /// (`optlen`; Linux 6.18 has both): on a kernel that refuses one, the port
    /// finds out at the first and goes one at a time. Epoll and Windows
    /// receive one at a time.
    pub fn multishot_recv(mut self, yes: bool) -> Builder {
        self.multishot_recv = yes;
        self
    }

    /// Whether an io_uring port puts every associated descriptor in its
    /// ring's registered file table (default true).
    ///
    /// Its operations then name the descriptor's slot (`IOSQE_FIXED_FILE`),
    /// so the kernel takes no reference to the file per operation. It costs a
    /// system call when the descriptor is associated and another before it
    /// is closed, to clear the slot. On a single-thread port both are the
    /// owner's to make: a descriptor associated on another thread once the
    /// owner claimed the port stays out of the table, and one closed on
    /// another thread is closed by the owner's next dequeue. With `false`,
    /// operations name descriptors by number (for comparing the two).
    ///
    /// # Platform behaviour
    ///
    /// io_uring only, on kernels with sparse file tables (Linux 5.19);
    /// elsewhere descriptors are named by number. Epoll and Windows ignore it.
    pub fn registered_files(mut self, yes: bool) -> Builder {
        self.registered_files = yes;
        self
    }

    /// io_uring completion queue size (default: four times `entries`).
    ///
    /// Operations are not limited by it: when more completions arrive than it
    /// holds, the kernel keeps them on its overflow list and the port flushes
    /// them, so none is lost; a queue too small only costs extra system calls.
    pub fn cq_entries(mut self, n: u32) -> Builder {
        self.cq_entries = Some(n.max(2));
        self
    }

    /// Creates the port (`CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, n)`).
    ///
    /// # Errors
    ///
    /// Fails when the chosen backend cannot be set up; a forced backend that is
    /// unavailable says why.
    pub fn build(self) -> io::Result<CompletionPort> {
        let concurrency = match self.concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let port = sys::Port::new(&self, concurrency)?;
        Ok(CompletionPort {
            owner: Arc::new(Owner {
                port: Arc::new(port),
                single: self.single_thread.then(|| AtomicU64::new(0)),
            }),
        })
    }
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            concurrency: 0,
            backend: Backend::Auto,
            entries: 1024,
            cq_entries: None,
            recv_buffers: (512, 16 * 1024),
            single_thread: false,
            multishot_recv: true,
            registered_files: true,
        }
    }
}

/// Closes the port when the last `CompletionPort` clone goes away. Handles and
/// operations in flight hold the inner port, not this, so they cannot keep a
/// port nobody can dequeue from alive.
struct Owner {
    port: Arc<sys::Port>,
    /// A single-thread port: its owner's `thread_token()`, 0 until claimed.
    single: Option<AtomicU64>,
}

/// A number for the calling thread, unique in the process and never 0 or
/// `u64::MAX` (`u64::MAX` only once the thread's storage is gone).
pub(crate) fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: Cell<u64> = const { Cell::new(0) };
    }
    TOKEN
        .try_with(|t| match t.get() {
            0 => {
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                t.set(n);
                n
            }
            n => n,
        })
        .unwrap_or(u64::MAX)
}

/// The single-thread ports the calling thread owns, closed when it exits.
struct OwnedPorts(Vec<Weak<sys::Port>>);

impl Drop for OwnedPorts {
    fn drop(&mut self) {
        for port in self.0.drain(..).filter_map(|w| w.upgrade()) {
            port.owner_exit();
        }
    }
}

thread_local! {
    static OWNED: RefCell<OwnedPorts> = const { RefCell::new(OwnedPorts(Vec::new())) };
}

fn not_owner() -> GetError {
    GetError::Os(io::Error::other(
        "a single-thread port is dequeued by its owner thread only",
    ))
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.port.close();
    }
}

/// A snapshot of a port's counters, from [`CompletionPort::stats`].
///
/// # Platform behaviour
///
/// Windows keeps the queue and the running count in the kernel and reports
/// neither, so ringport counts in user space there: `queued` counts posted
/// packets not dequeued yet (I/O packets the kernel has queued are not
/// visible until dequeued); `in_flight` counts operations until their packet
/// is dequeued; `completed` counts posted packets when posted and I/O packets
/// when dequeued; `running` mirrors the kernel's rule (a thread runs from a
/// dequeue until its next one, its exit, or [`CompletionPort::blocking`]), but
/// does not see the kernel free the slot of a thread that waits on something
/// else without saying so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets queued and not yet dequeued.
    pub queued: usize,
    /// Threads counted as running on the port (R6).
    pub running: usize,
    /// Threads blocked in a dequeue.
    pub waiting: usize,
    /// Operations accepted whose completion is not queued yet (on Windows: not
    /// dequeued yet): once this is 0, a packet posted after comes out behind
    /// every completion.
    pub in_flight: usize,
    /// Operations accepted since the port was made.
    pub started: u64,
    /// Completions queued since the port was made (posted packets included).
    pub completed: u64,
    /// Buffers the port holds for [pooled receives](CompletionPort::recv_pooled)
    /// (published to the kernel or free for reuse; not those handed out).
    pub pool_buffers: usize,
}

/// An I/O completion port: a queue of completion packets shared by a pool of
/// threads, with a limit on how many of them run at once.
///
/// `CompletionPort` is `Send + Sync` and a cheap clone; the port closes when the
/// last clone is dropped or [`close`](CompletionPort::close) is called.
///
/// # Platform behaviour
///
/// On Windows every call maps onto the kernel's own port, and the queue, the
/// LIFO wake-up and the concurrency limit are the kernel's. Windows may finish
/// an overlapped call at once (skip-on-success,
/// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`); ringport never sets that mode, so
/// even an operation that finished inside the call completes through the port,
/// exactly once, as on Linux. A call that fails at once (a reset connection,
/// a read past the end of a file) is also reported as a completion with that
/// error, never as a refused start. Errors carry Win32 or Winsock codes
/// (`raw_os_error`), Linux `errno` values elsewhere. On Linux the queue,
/// the LIFO waiters and the concurrency count live in this library, and the
/// kernel work goes through io_uring (or epoll): the most recent waiting thread
/// becomes the poller and sleeps in the kernel; the others sleep in the port. Completions of
/// operations on one handle arrive in the order the kernel finishes them, which
/// is not promised beyond what the kernel promises (as on Windows).
#[derive(Clone)]
pub struct CompletionPort {
    owner: Arc<Owner>,
}

impl fmt::Debug for CompletionPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionPort")
            .field("backend", &self.backend())
            .field("concurrency", &self.concurrency())
            .field("stats", &self.stats())
            .finish()
    }
}

impl CompletionPort {
    /// A builder with the defaults: concurrency = CPUs, backend auto.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A port with the given concurrency (0 = CPUs) on the automatic backend.
    ///
    /// # Errors
    ///
    /// See [`Builder::build`].
    pub fn new(concurrency: usize) -> io::Result<CompletionPort> {
        Builder::default().concurrency(concurrency).build()
    }

    fn sys(&self) -> &Arc<sys::Port> {
        &self.owner.port
    }

    /// A dequeue's check of a single-thread port's owner (the first caller
    /// claims it).
    #[inline]
    fn claim(&self) -> Result<(), GetError> {
        match &self.owner.single {
            None => Ok(()),
            Some(owner) if owner.load(Ordering::Acquire) == thread_token() => Ok(()),
            Some(owner) => self.claim_first(owner),
        }
    }

    #[cold]
    fn claim_first(&self, owner: &AtomicU64) -> Result<(), GetError> {
        let me = thread_token();
        if me == u64::MAX
            || owner
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Err(not_owner());
        }
        self.sys().claim().map_err(GetError::Os)?;
        let weak = Arc::downgrade(self.sys());
        let _ = OWNED.try_with(|o| o.borrow_mut().0.push(weak));
        Ok(())
    }

    /// A dequeue's result: when a single-thread port was closed by another
    /// thread, its owner gives the cancelled operations back here.
    fn settle<T>(&self, r: Result<T, GetError>) -> Result<T, GetError> {
        if matches!(r, Err(GetError::Closed)) && self.owner.single.is_some() {
            self.sys().owner_drain();
        }
        r
    }

    /// The backend this port runs on.
    pub fn backend(&self) -> Backend {
        self.sys().backend()
    }

    /// Why this backend was chosen, e.g. "io_uring available" or
    /// "io_uring refused (EPERM, seccomp?); using epoll".
    pub fn backend_reason(&self) -> &str {
        self.sys().backend_reason()
    }

    /// The concurrency value in force (after 0 was turned into the CPU count).
    pub fn concurrency(&self) -> usize {
        self.sys().concurrency()
    }

    /// Associates a socket or file with the port under a completion key
    /// (`CreateIoCompletionPort(handle, port, key, 0)`).
    ///
    /// # Errors
    ///
    /// `AlreadyExists` if the same open socket or file (for instance a
    /// `try_clone` of it) is already associated with a port; `BrokenPipe` if the
    /// port is closed; or the OS error of preparing the descriptor.
    ///
    /// # Platform behaviour
    ///
    /// On Windows a socket is associated as it is; the kernel refuses a second
    /// association of the same socket. A `File` from std is opened for
    /// synchronous I/O, which a port cannot drive, so ringport opens it again
    /// with `FILE_FLAG_OVERLAPPED` (`ReOpenFile`, same access) and keeps the
    /// caller's handle open beside it until the handle closes (a file opened
    /// without `FILE_SHARE_READ | FILE_SHARE_WRITE` cannot be opened again and
    /// is refused with the sharing error). When a handle
    /// closes, ringport unties its socket from the port
    /// (`FileReplaceCompletionInformation`, Windows 8.1 and later) so that a
    /// duplicate that stays open can be associated again; where that is
    /// unavailable (older Windows, Wine) the duplicate stays tied to the port.
    pub fn associate<T: Associate>(&self, io: T, key: u64) -> io::Result<Handle> {
        let owned = io.into_sys()?;
        let inner = self.sys().associate(owned, key)?;
        Ok(Handle { inner })
    }

    fn start(&self, handle: &Handle, req: Request, user: u64) -> Result<OpId, StartError> {
        if let Some(fits) = req.unfit(handle.kind()) {
            return Err(req.refuse_unfit(handle.kind(), fits));
        }
        self.sys().start(&handle.inner, req, user)
    }

    /// Starts an overlapped accept on a listener (`AcceptEx`); the completion
    /// carries the new socket and the peer address.
    ///
    /// # Errors
    ///
    /// The operation is refused (and produces no completion) when the handle is
    /// not a listener of this port, is closed, or the port is closed.
    ///
    /// # Platform behaviour
    ///
    /// `AcceptEx` needs the accepted socket made before the call: on Windows
    /// ringport makes one of the listener's family for each accept and owns it
    /// until the completion. On success it applies `SO_UPDATE_ACCEPT_CONTEXT`
    /// (so `peer_addr`, `shutdown` and the like work on it) and takes the peer
    /// address from `GetAcceptExSockaddrs`; on failure the socket is closed.
    pub fn accept(&self, listener: &Handle, user: u64) -> Result<OpId, StartError> {
        self.start(listener, Request::Accept, user)
    }

    /// Starts an overlapped connect of an unconnected socket (`ConnectEx`).
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept), for a handle that is not a [`HandleKind::Socket`](crate::HandleKind::Socket).
    ///
    /// # Platform behaviour
    ///
    /// `ConnectEx` wants a bound socket: on Windows an unbound one is bound to
    /// the unspecified address of the target's family first (a socket the
    /// caller bound keeps its address). On success ringport applies
    /// `SO_UPDATE_CONNECT_CONTEXT`.
    pub fn connect(
        &self,
        socket: &Handle,
        addr: SocketAddr,
        user: u64,
    ) -> Result<OpId, StartError> {
        self.start(socket, Request::Connect(addr), user)
    }

    /// Starts an overlapped receive whose buffer the port picks from its pool
    /// only when data arrives, so an idle connection holds no buffer.
    ///
    /// The completion is an [`OpKind::Recv`](crate::OpKind::Recv) like any
    /// other; [`Completion::take_buf`](crate::Completion::take_buf) gives the
    /// pool buffer, holding the bytes received (none when the peer closed, or
    /// no buffer at all when the receive failed or was cancelled). Hand it back
    /// with [`recycle`](CompletionPort::recycle) when done, or drop it.
    /// [`Builder::recv_buffers`] sets the pool's size.
    ///
    /// # Errors
    ///
    /// Refused when the handle is not a socket of this port, or it or the port
    /// is closed.
    ///
    /// # Platform behaviour
    ///
    /// On io_uring (Linux 5.19 and later) the buffers are a provided-buffer
    /// ring: the kernel picks one as the data lands. On epoll the port takes one
    /// when the socket turns readable. On Windows, and on io_uring kernels
    /// without buffer rings, the receive takes a pool buffer when it starts
    /// (as [`recv`](CompletionPort::recv) would), so an idle connection does
    /// hold one there.
    pub fn recv_pooled(&self, socket: &Handle, user: u64) -> Result<OpId, StartError> {
        self.start(socket, Request::RecvPooled { buf: None }, user)
    }

    /// Gives a buffer from a [pooled receive](CompletionPort::recv_pooled) (or
    /// any buffer at least as big) back to the pool for reuse.
    pub fn recycle(&self, buf: Vec<u8>) {
        self.sys().pool().give(buf);
    }

    /// Starts an overlapped receive into the spare capacity of `buf` (`WSARecv`).
    ///
    /// The kernel writes straight into the buffer; the completion hands it back
    /// with its length grown by the bytes received. Zero bytes means the peer
    /// closed its side.
    ///
    /// # Errors
    ///
    /// Refused, with the buffer handed back, when `buf` has no spare capacity,
    /// the handle is not a socket of this port, or it or the port is closed.
    pub fn recv(&self, socket: &Handle, buf: Vec<u8>, user: u64) -> Result<OpId, StartError> {
        self.start(socket, Request::Recv(buf), user)
    }

    /// Starts an overlapped send of all of `buf` (`WSASend`).
    ///
    /// The completion reports how many bytes went out, which may be fewer than
    /// `buf.len()`; send the rest with another operation. Sending never raises
    /// `SIGPIPE`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn send(&self, socket: &Handle, buf: Vec<u8>, user: u64) -> Result<OpId, StartError> {
        self.start(socket, Request::Send(buf), user)
    }

    /// Starts an overlapped read at `offset` into the spare capacity of `buf`
    /// (`ReadFile` with `OVERLAPPED.Offset`).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), for a file handle.
    pub fn read_at(
        &self,
        file: &Handle,
        buf: Vec<u8>,
        offset: u64,
        user: u64,
    ) -> Result<OpId, StartError> {
        self.start(file, Request::Read(buf, offset), user)
    }

    /// Starts an overlapped write of all of `buf` at `offset` (`WriteFile`).
    ///
    /// # Errors
    ///
    /// As [`read_at`](Self::read_at).
    pub fn write_at(
        &self,
        file: &Handle,
        buf: Vec<u8>,
        offset: u64,
        user: u64,
    ) -> Result<OpId, StartError> {
        self.start(file, Request::Write(buf, offset), user)
    }

    /// Dequeues one completion packet (`GetQueuedCompletionStatus`).
    ///
    /// `None` waits forever; `Some(Duration::ZERO)` only polls. The calling
    /// thread stops counting as running on the port while it waits and counts
    /// again once a packet is returned to it.
    ///
    /// # Errors
    ///
    /// [`GetError::TimedOut`] when the timeout elapsed, [`GetError::Closed`]
    /// when the port is closed. A failed I/O is not an error here: it is a
    /// completion whose [`result`](Completion::result) is an error.
    #[inline]
    pub fn get(&self, timeout: Option<Duration>) -> Result<Completion, GetError> {
        self.claim()?;
        self.settle(self.sys().get(timeout))
    }

    /// Dequeues up to `max` packets into `out` in one call
    /// (`GetQueuedCompletionStatusEx`); returns how many were added.
    ///
    /// It counts as one dequeue for the concurrency limit.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn get_many(
        &self,
        out: &mut Vec<Completion>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        self.claim()?;
        self.settle(self.sys().get_many(out, max.max(1), timeout))
    }

    /// Queues a caller-made packet (`PostQueuedCompletionStatus`); no kernel I/O.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` when the port is closed.
    #[inline]
    pub fn post(&self, packet: Packet) -> io::Result<()> {
        self.sys().post(packet)
    }

    /// Requests cancellation of one operation, or of every operation on the
    /// handle with `None` (`CancelIoEx`).
    ///
    /// Cancellation never removes a completion: each operation still completes
    /// exactly once, with success (it finished first), an aborted error, or
    /// another error.
    ///
    /// # Errors
    ///
    /// `NotFound` when nothing matched (`ERROR_NOT_FOUND`): the operation already
    /// completed, or the handle has none in flight.
    pub fn cancel(&self, handle: &Handle, op: Option<OpId>) -> io::Result<()> {
        self.sys().cancel(&handle.inner, op)
    }

    /// Submits operations that this thread started while processing a
    /// completion and that are still batched (see the crate docs on batching).
    ///
    /// # Errors
    ///
    /// The OS error of the submission system call.
    pub fn submit(&self) -> io::Result<()> {
        self.sys().submit()
    }

    /// Announces that the calling thread is about to block on something other
    /// than the port, freeing its concurrency slot until the guard is dropped
    /// (what Windows does when a running thread enters a wait).
    ///
    /// # Platform behaviour
    ///
    /// On Windows the kernel frees the slot by itself when the thread waits,
    /// and takes it back when it wakes; the guard only keeps
    /// [`Stats::running`] in step. On Linux the guard is what frees the slot.
    pub fn blocking(&self) -> Blocking<'_> {
        let released = self.sys().enter_blocking();
        Blocking {
            port: self,
            released,
            _not_send: PhantomData,
        }
    }

    /// A snapshot of the port's counters.
    pub fn stats(&self) -> Stats {
        self.sys().stats()
    }

    /// Closes the port now: every waiter wakes with [`GetError::Closed`],
    /// operations in flight are cancelled, and their buffers are freed once the
    /// kernel has let go of them. Queued packets are discarded. (On a
    /// [single-thread](Builder::single_thread) port, from another thread: see
    /// there.)
    ///
    /// # Platform behaviour
    ///
    /// On Windows, `close` cancels every operation (`CancelIoEx`), wakes each
    /// waiting thread with a packet of its own (closing a port handle does not
    /// wake waiters under Wine), and dequeues the cancelled operations itself
    /// before it returns, so their buffers are freed and never written after.
    /// An operation the kernel does not give back within 10 seconds is leaked,
    /// never freed under the kernel. The kernel's port handle is closed when
    /// the last reference to the port goes, not earlier, so no thread can wait
    /// on a handle value that was closed and reused.
    pub fn close(&self) {
        self.sys().close();
    }

    /// True once the port is closed.
    pub fn is_closed(&self) -> bool {
        self.sys().is_closed()
    }
}

/// Returned by [`CompletionPort::blocking`]; gives the slot back when dropped.
///
/// When the thread resumes it counts as running again even if that exceeds the
/// concurrency limit for a moment, as on Windows.
pub struct Blocking<'a> {
    port: &'a CompletionPort,
    released: bool,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Blocking<'_> {
    fn drop(&mut self) {
        if self.released {
            self.port.sys().leave_blocking();
        }
    }
}

impl fmt::Debug for Blocking<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocking")
            .field("released", &self.released)
            .finish()
    }
}
