//! The Windows port: the kernel's completion port, plus the user-space state
//! the public API promises (closed flag, counters, posted packets).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_ABANDONED_WAIT_0, FALSE, HANDLE, INVALID_HANDLE_VALUE,
    WAIT_TIMEOUT,
};
use windows_sys::Win32::System::IO::{
    CreateIoCompletionPort, GetQueuedCompletionStatusEx, PostQueuedCompletionStatus, OVERLAPPED,
    OVERLAPPED_ENTRY,
};

use super::handle::Handle;
use super::op::{Op, IO_KEY};
use super::owned::Owned;
use super::thread::{self, Running};
use crate::completion::{Completion, GetError, OpId, Packet, StartError};
use crate::op::Request;
use crate::pool::BufPool;
use crate::port::{Backend, Builder, Stats};

/// Completion key of a packet made by `post`: its `OVERLAPPED` pointer is a
/// boxed [`Packet`], never an operation.
const POST_KEY: usize = 1;
/// Completion key of the packets `close` posts to wake waiters; no payload.
const WAKE_KEY: usize = 2;

/// How long closing the port waits for the kernel to give back cancelled
/// operations before it leaks their memory rather than free it under the kernel.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Most entries taken from the kernel in one `GetQueuedCompletionStatusEx`.
const MAX_BATCH: usize = 1024;

/// The port's `HANDLE`, which the kernel lets any thread use.
#[derive(Debug)]
struct Raw(HANDLE);

// SAFETY: a completion port handle is a kernel object reference, usable from
// any thread; every call on it is thread-safe.
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

/// A completion port on Windows.
#[derive(Debug)]
pub(crate) struct Port {
    raw: Raw,
    concurrency: usize,
    closed: AtomicBool,
    /// Associated handles, to cancel their operations when the port closes.
    handles: Mutex<Vec<Weak<Handle>>>,
    next_id: AtomicU64,
    running: Arc<Running>,
    waiting: AtomicUsize,
    in_flight: AtomicUsize,
    /// Posted packets not dequeued yet (the kernel does not count its queue).
    queued_posts: AtomicUsize,
    started: AtomicU64,
    completed: AtomicU64,
    pool: Arc<BufPool>,
}

impl Port {
    pub(crate) fn new(b: &Builder, concurrency: usize) -> io::Result<Port> {
        match b.backend {
            Backend::Auto | Backend::Iocp => {}
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the {other} backend exists only on Linux; use iocp or auto"),
                ))
            }
        }
        let n = u32::try_from(concurrency).unwrap_or(u32::MAX);
        let none = std::ptr::null_mut();
        // SAFETY: creating a new port; no handle is associated.
        let raw = unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, none, 0, n) };
        if raw.is_null() {
            return Err(super::last_error());
        }
        if b.backend == Backend::Auto {
            log::info!("ringport: using iocp: the Windows I/O completion port");
        }
        Ok(Port {
            raw: Raw(raw),
            concurrency,
            closed: AtomicBool::new(false),
            handles: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            running: Arc::default(),
            waiting: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            queued_posts: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            pool: Arc::new(BufPool::new(b.recv_buffers.0, b.recv_buffers.1)),
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        Backend::Iocp
    }

    pub(crate) fn backend_reason(&self) -> &str {
        "the Windows I/O completion port"
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    /// A single-thread port's first dequeue: the kernel's port has no such
    /// mode, so nothing changes here (the owner rule is the caller's).
    pub(crate) fn claim(&self) -> io::Result<()> {
        Ok(())
    }

    /// `close` already dequeues what it cancelled, from any thread.
    pub(crate) fn owner_drain(&self) {}

    /// The owner of a single-thread port exits.
    pub(crate) fn owner_exit(&self) {
        self.close();
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            queued: self.queued_posts.load(Relaxed),
            running: self.running.get(),
            waiting: self.waiting.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            started: self.started.load(Relaxed),
            completed: self.completed.load(Relaxed),
            pool_buffers: self.pool.free_len(),
        }
    }

    /// The buffers of pooled receives.
    pub(crate) fn pool(&self) -> &Arc<BufPool> {
        &self.pool
    }

    pub(crate) fn associate(self: &Arc<Self>, owned: Owned, key: u64) -> io::Result<Arc<Handle>> {
        if self.is_closed() {
            return Err(port_closed());
        }
        let h = Arc::new(Handle::new(owned, key, Arc::downgrade(self), self.raw.0)?);
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        if handles.len() >= 64 && handles.len().is_power_of_two() {
            handles.retain(|w| w.strong_count() > 0);
        }
        handles.push(Arc::downgrade(&h));
        Ok(h)
    }

    pub(crate) fn start(
        &self,
        handle: &Arc<Handle>,
        req: Request,
        user: u64,
    ) -> Result<OpId, StartError> {
        // No provided buffers here: a pooled receive takes its buffer now.
        let req = match req {
            Request::RecvPooled { buf: None } => Request::Recv(self.pool.take()),
            req => req,
        };
        if !handle.belongs_to(self) {
            return Err(req.refuse(other_port()));
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let mut st = handle.lock();
        if let Some(e) = st.refuse_reason() {
            return Err(req.refuse(e));
        }
        // Checked under the handle's lock: `close` cancels each handle under
        // it, so an operation is either refused here or cancelled there.
        if self.is_closed() {
            return Err(req.refuse(port_closed()));
        }
        let ov = Op::into_kernel(Op::new(id, user, handle.clone(), req));
        st.insert(id, ov);
        self.in_flight.fetch_add(1, SeqCst);
        // SAFETY: `ov` was just handed over; the handle's descriptor is open
        // (its close is deferred while `ov` is in `inflight`), and so is the port.
        match unsafe { Op::issue(ov, handle.raw(), self.raw.0) } {
            Ok(()) => {
                self.started.fetch_add(1, Relaxed);
                Ok(OpId::new(id))
            }
            Err(e) => {
                st.remove(id);
                drop(st);
                self.in_flight.fetch_sub(1, SeqCst);
                // SAFETY: the call failed before queuing anything: no packet
                // will ever carry `ov`, so it comes back here, once.
                let op = unsafe { Op::from_kernel(ov) };
                let Op { req, handle, .. } = *op;
                drop(handle);
                Err(req.refuse(e))
            }
        }
    }

    /// `PostQueuedCompletionStatus`. The packet travels boxed, as the
    /// `OVERLAPPED` pointer of a packet keyed [`POST_KEY`]; taken back in
    /// [`Port::take_entry`].
    pub(crate) fn post(&self, packet: Packet) -> io::Result<()> {
        if self.is_closed() {
            return Err(port_closed());
        }
        let ptr = Box::into_raw(Box::new(packet));
        self.queued_posts.fetch_add(1, Relaxed);
        // SAFETY: the port is open; `ptr` is never dereferenced by the kernel.
        if unsafe { PostQueuedCompletionStatus(self.raw.0, 0, POST_KEY, ptr.cast()) } == FALSE {
            let e = super::last_error();
            self.queued_posts.fetch_sub(1, Relaxed);
            // SAFETY: the post failed, so no packet carries `ptr`.
            drop(unsafe { Box::from_raw(ptr) });
            return Err(e);
        }
        self.completed.fetch_add(1, Relaxed);
        Ok(())
    }

    pub(crate) fn cancel(&self, handle: &Handle, op: Option<OpId>) -> io::Result<()> {
        if !handle.belongs_to(self) {
            return Err(other_port());
        }
        handle.cancel(op.map(OpId::raw))
    }

    /// Nothing is batched on Windows: each call reaches the kernel at once.
    pub(crate) fn submit(&self) -> io::Result<()> {
        Ok(())
    }

    /// The kernel frees the slot of a running thread that blocks by itself;
    /// this only keeps [`Stats::running`] in step.
    pub(crate) fn enter_blocking(&self) -> bool {
        if !thread::is_running_on(&self.running) {
            return false;
        }
        thread::leave();
        true
    }

    pub(crate) fn leave_blocking(&self) {
        thread::enter(&self.running);
    }

    /// `GetQueuedCompletionStatusEx`.
    /// `GetQueuedCompletionStatus`.
    pub(crate) fn get(&self, timeout: Option<Duration>) -> Result<Completion, GetError> {
        let mut out = Vec::with_capacity(1);
        self.get_many(&mut out, 1, timeout)?;
        out.pop().ok_or(GetError::TimedOut)
    }

    pub(crate) fn get_many(
        &self,
        out: &mut Vec<Completion>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        thread::leave();
        if self.is_closed() {
            return Err(GetError::Closed);
        }
        // Counted before the closed flag is read again: `close` sets the
        // flag before it reads the count, so either this thread sees the
        // flag, or `close` posts a wake packet for it.
        self.waiting.fetch_add(1, SeqCst);
        let r = if self.is_closed() {
            Err(GetError::Closed)
        } else {
            self.wait(out, max, timeout)
        };
        self.waiting.fetch_sub(1, SeqCst);
        if r.is_ok() {
            thread::enter(&self.running);
        }
        r
    }

    fn wait(
        &self,
        out: &mut Vec<Completion>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        let mut entries = vec![empty_entry(); max.clamp(1, MAX_BATCH)];
        loop {
            let ms = match deadline {
                None => u32::MAX, // INFINITE
                Some(None) => u32::MAX - 1,
                Some(Some(d)) => millis_until(d),
            };
            let mut got = Vec::new();
            match self.dequeue(&mut entries, ms, &mut got) {
                Ok(()) => {}
                Err(code) if code == WAIT_TIMEOUT => {
                    // Kernel waits can end a tick early: wait out the rest.
                    match deadline {
                        Some(Some(d)) if Instant::now() < d => continue,
                        _ => return Err(GetError::TimedOut),
                    }
                }
                Err(code) if code == ERROR_ABANDONED_WAIT_0 => return Err(GetError::Closed),
                Err(code) => return Err(GetError::Os(io::Error::from_raw_os_error(code as i32))),
            }
            if self.is_closed() {
                // Dropping `got` frees what the dequeued operations owned.
                return Err(GetError::Closed);
            }
            if !got.is_empty() {
                let n = got.len();
                out.append(&mut got);
                return Ok(n);
            }
        }
    }

    /// One `GetQueuedCompletionStatusEx`; every entry becomes a completion
    /// in `got`, except wake packets. `Err` is the Win32 error of the wait.
    fn dequeue(
        &self,
        entries: &mut [OVERLAPPED_ENTRY],
        ms: u32,
        got: &mut Vec<Completion>,
    ) -> Result<(), u32> {
        let mut n = 0u32;
        // SAFETY: `entries` is valid for writes of its length; not alertable.
        let ok = unsafe {
            GetQueuedCompletionStatusEx(
                self.raw.0,
                entries.as_mut_ptr(),
                entries.len() as u32,
                &mut n,
                ms,
                FALSE,
            )
        };
        if ok == FALSE {
            // SAFETY: reads the calling thread's last error.
            return Err(unsafe { GetLastError() });
        }
        for e in &entries[..n as usize] {
            // SAFETY: each entry was dequeued once, just now.
            if let Some(c) = unsafe { self.take_entry(e) } {
                got.push(c);
            }
        }
        Ok(())
    }

    /// Turns one dequeued entry back into what it carries.
    ///
    /// # Safety
    ///
    /// `e` is an entry just dequeued from this port, and is taken once.
    unsafe fn take_entry(&self, e: &OVERLAPPED_ENTRY) -> Option<Completion> {
        match e.lpCompletionKey {
            IO_KEY => {
                // SAFETY: packets keyed IO_KEY carry an operation handed over
                // by `Op::into_kernel` in `start`, whose kernel work is over.
                let op = unsafe { Op::from_kernel(e.lpOverlapped) };
                self.in_flight.fetch_sub(1, SeqCst);
                self.completed.fetch_add(1, Relaxed);
                Some(op.finish(e.dwNumberOfBytesTransferred))
            }
            POST_KEY => {
                // SAFETY: packets keyed POST_KEY carry the box made by `post`.
                let p = unsafe { Box::from_raw(e.lpOverlapped.cast::<Packet>()) };
                self.queued_posts.fetch_sub(1, Relaxed);
                Some(Completion::posted(*p))
            }
            _ => None, // WAKE_KEY
        }
    }

    /// Closes the port: waiters wake with `Closed`, every operation in flight
    /// is cancelled and its packet dequeued here (freeing what it owned), and
    /// queued posted packets are discarded.
    ///
    /// The kernel port itself stays open until the last reference to it goes
    /// ([`Drop`]): closing its handle while another thread may be about to
    /// wait on it could make that thread wait on a reused handle value.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, SeqCst) {
            return;
        }
        let handles: Vec<Arc<Handle>> = {
            let hs = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
            hs.iter().filter_map(Weak::upgrade).collect()
        };
        for h in &handles {
            h.cancel_all();
        }
        drop(handles);
        // Closing a port handle does not wake its waiters under Wine, and
        // this one is not closed yet anyway: one wake packet per waiter.
        for _ in 0..self.waiting.load(SeqCst) {
            // SAFETY: the port is open; a wake packet carries no pointer.
            unsafe {
                PostQueuedCompletionStatus(self.raw.0, 0, WAKE_KEY, std::ptr::null::<OVERLAPPED>())
            };
        }
        self.drain();
    }

    /// Dequeues until every operation came back (their buffers are freed)
    /// and no posted packet is left. Waiters still in the port take packets
    /// too; this thread only dequeues when none is left.
    fn drain(&self) {
        let limit = Instant::now() + DRAIN_LIMIT;
        let mut entries = vec![empty_entry(); 64];
        while self.in_flight.load(SeqCst) + self.queued_posts.load(SeqCst) > 0
            && Instant::now() < limit
        {
            if self.waiting.load(SeqCst) > 0 {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let mut got = Vec::new();
            let _ = self.dequeue(&mut entries, 20, &mut got);
        }
        let left = self.in_flight.load(SeqCst);
        if left > 0 {
            log::error!(
                "ringport: {left} operations did not come back after cancellation; their memory is leaked"
            );
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.close();
        // A post that raced with `close` may have slipped in after its drain;
        // nobody waits now, so this takes it back at once.
        self.drain();
        // SAFETY: nothing else can use the port now: every `CompletionPort`
        // and every handle's reference to it is gone.
        unsafe { CloseHandle(self.raw.0) };
    }
}

fn empty_entry() -> OVERLAPPED_ENTRY {
    OVERLAPPED_ENTRY {
        lpCompletionKey: 0,
        lpOverlapped: std::ptr::null_mut(),
        Internal: 0,
        dwNumberOfBytesTransferred: 0,
    }
}

/// Milliseconds left until `d`, rounded up so a wait never ends early.
fn millis_until(d: Instant) -> u32 {
    let left = d.saturating_duration_since(Instant::now());
    let ms = left.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX - 1).min(u32::MAX - 1)
}

fn port_closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "completion port is closed")
}

fn other_port() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "handle is associated with another port",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_to_whole_milliseconds() {
        let now = Instant::now();
        assert_eq!(millis_until(now), 0);
        let ms = millis_until(now + Duration::from_micros(1500));
        assert!((1..=2).contains(&ms), "{ms}");
        let far = millis_until(now + Duration::from_secs(100 * 86_400));
        assert_eq!(far, u32::MAX - 1, "never INFINITE by accident");
    }

    #[test]
    fn keys_tell_packets_apart() {
        assert_ne!(IO_KEY, POST_KEY);
        assert_ne!(IO_KEY, WAKE_KEY);
        assert_ne!(POST_KEY, WAKE_KEY);
    }
}
