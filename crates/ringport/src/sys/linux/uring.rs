//! The io_uring driver: one ring per port, shared by every thread.
//!
//! - Submissions are batched: entries wait in the submission queue until some
//!   thread enters the kernel (a dequeue, a waiting poller, or `submit`).
//! - The completion queue never loses an entry. The ring is sized generously,
//!   but operations are not admitted against its size: a receive on an idle
//!   socket may stay in the kernel for hours, and admission would starve every
//!   operation behind it. Instead the port requires `IORING_FEAT_NODROP`: when
//!   the completion queue is full the kernel keeps further entries on its
//!   overflow list and raises `IORING_SQ_CQ_OVERFLOW`, and every reap flushes
//!   that list (an enter with `GETEVENTS`) until the flag clears. Should the
//!   kernel ever drop an entry anyway (it could not allocate), the reap reports
//!   an error instead of carrying on without it.
//! - Entries that do not fit in a full submission queue wait in a backlog,
//!   pushed as soon as the kernel has taken the queue.
//! - Only the holder of the completion lock reaps. The poller holds it while it
//!   sleeps in the kernel, so a wake-up meant for it cannot be reaped by another
//!   thread (others only `try_lock`).
//! - A single-thread port (`Builder::single_thread`) has a ring of its own
//!   thread's: `SINGLE_ISSUER` + `DEFER_TASKRUN`, made disabled and enabled by
//!   the first thread that dequeues (its owner), after which the kernel takes
//!   system calls on it from that thread only. Every other thread only writes
//!   the submission queue, and wakes the owner through an eventfd whose read
//!   the owner keeps in flight; it never enters the kernel. See [`Single`].

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use super::bufring::{self, BufRing};
use super::driver::Wait;
use super::handle::PARK_LIMIT;
use super::op::{Addr, Op};
use super::poller::PollerLock;
use super::waiters::lock;
use crate::op::Request;
use crate::pool::BufPool;
use crate::port::thread_token;

/// `user_data` of the entry that wakes the poller.
pub(crate) const WAKE: u64 = u64::MAX;
/// `user_data` of cancellation entries (their own results are not needed).
pub(crate) const CANCEL: u64 = u64::MAX - 1;

/// The bit that marks a multishot receive's token (see `handle::Multi`):
/// the port's operation tokens keep it clear (their generations are 30 bits).
pub(crate) const ANCHOR: u64 = 1 << 62;
/// Set by the driver in the token it reports for a multishot receive's
/// completion when the kernel keeps the receive armed (`IORING_CQE_F_MORE`).
pub(crate) const MORE: u64 = 1 << 61;

/// `IORING_ENTER_GETEVENTS`, which neither `libc` nor the `io-uring` crate
/// exports for a raw `enter`.
const ENTER_GETEVENTS: u32 = 1;

/// How long another thread of a single-thread port waits before it looks at
/// the completion queue again (only `close` waits there).
const NAP: std::time::Duration = std::time::Duration::from_millis(1);

/// `IORING_RECVSEND_POLL_FIRST` (Linux 5.19, as buffer rings): wait for
/// readability before trying the receive. The `io-uring` crate keeps its
/// constants private; its `Recv` builder takes the flag through `ioprio`.
const POLL_FIRST: u16 = 1;

#[derive(Debug)]
struct Sq {
    /// Entries that did not fit in the submission queue, oldest first.
    backlog: VecDeque<squeue::Entry>,
}

/// Buffers the kernel picked for pooled receives, by token, from one reap, in
/// the order of their completions; with each, whether the receive left data
/// in the socket.
pub(crate) type Filled = Vec<(u64, Vec<u8>, bool)>;

/// What takes in a reap's `(token, result)` pairs and buffers, called by
/// the reaping thread before any later reap's (see `Driver::reap`).
pub(crate) type Finish<'a> = dyn FnMut(&mut Vec<(u64, i32)>, &mut Filled) + 'a;

/// What a single-thread port's ring adds (see the module docs).
#[derive(Debug)]
struct Single {
    /// `thread_token()` of the owner, 0 until a thread claims the ring.
    owner: AtomicU64,
    /// Written by other threads to wake the owner; the owner keeps one read
    /// of it in flight (token `WAKE`).
    eventfd: OwnedFd,
    /// Where that read puts the count: never freed (8 bytes per port), so a
    /// read the kernel still holds when the ring goes can write nowhere else.
    count: *mut u64,
}

// SAFETY: `count` is only handed to the kernel (never read or written by
// this process), and every other field is Send + Sync.
unsafe impl Send for Single {}
// SAFETY: as above.
unsafe impl Sync for Single {}

pub(crate) struct Uring {
    ring: IoUring,
    /// The provided-buffer ring of pooled receives, set up by the first one;
    /// `None` inside when the kernel has none (they then take a buffer at
    /// start).
    bufs: OnceLock<Option<BufRing>>,
    /// Set when the port gave up on operations the kernel still holds: the
    /// buffer ring must then outlive everything (it is leaked).
    leak_bufs: AtomicBool,
    sq: Mutex<Sq>,
    /// The port's receive buffers, for the buffer ring.
    pool: Arc<BufPool>,
    /// Held by the reaping thread; the value is the kernel's count of dropped
    /// completions last seen.
    cq: PollerLock<u32>,
    wake_pending: AtomicBool,
    flags: &'static str,
    /// Set for a single-thread port whose kernel took the flags.
    single: Option<Single>,
    /// Pooled receives go through a multishot receive per socket
    /// (`Builder::multishot_recv`); cleared if the kernel refuses one.
    multishot: AtomicBool,
    /// A multishot receive has worked here, so an `EINVAL` from one is the
    /// socket's and not a kernel without them.
    multishot_seen: AtomicBool,
    /// Slots of the ring's registered file table, 0 for none. A descriptor's
    /// slot is its own number, so an entry names it the same way either way
    /// (with `IOSQE_FIXED_FILE` when registered), and the kernel takes no
    /// reference to the file per operation (`fget` and `fput` were 1% of the
    /// server's CPU samples at 50 x 64 B).
    fixed: u32,
    /// Registered descriptors closed on a thread that may not enter a
    /// single-thread port's ring: the owner clears their slots and closes
    /// them at its next reap (a slot left set would keep the socket open).
    unfix_later: Mutex<UnfixLater>,
    unfix_pending: AtomicBool,
}

/// See `Uring::unfix_later`.
#[derive(Debug, Default)]
struct UnfixLater {
    fds: Vec<OwnedFd>,
    /// The table is unregistered (the port closed): close at once.
    gone: bool,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("sq_entries", &self.ring.params().sq_entries())
            .field("cq_entries", &self.ring.params().cq_entries())
            .field("flags", &self.flags)
            .finish()
    }
}

const NEEDED: [(u8, &str); 9] = [
    (opcode::Nop::CODE, "NOP"),
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Connect::CODE, "CONNECT"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
];

fn unsupported(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, what)
}

impl Uring {
    /// Sets up a ring with `entries` submission and `cq_entries` completion
    /// slots, and checks that the kernel has everything the port needs;
    /// `single`: for a single-thread port (a ring of the owner's own where
    /// the kernel has `DEFER_TASKRUN`, else a shared one); `multishot`: arm
    /// multishot receives; `registered_files`: set up the file table that
    /// [`Uring::fix`] puts associated descriptors in.
    pub(crate) fn new(
        entries: u32,
        cq_entries: u32,
        pool: Arc<BufPool>,
        single: bool,
        multishot: bool,
        registered_files: bool,
    ) -> io::Result<Uring> {
        let owned = if single {
            Self::owned_ring(entries, cq_entries)
        } else {
            None
        };
        // COOP_TASKRUN (5.19) saves an interrupt per completion; degrade without it.
        let (ring, flags, single) = match owned {
            Some((ring, single)) => (
                ring,
                "SINGLE_ISSUER|DEFER_TASKRUN|TASKRUN_FLAG (single thread)",
                Some(single),
            ),
            None => match IoUring::builder()
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .setup_cqsize(cq_entries)
                .build(entries)
            {
                Ok(r) => (r, "COOP_TASKRUN|TASKRUN_FLAG", None),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                    IoUring::builder().setup_cqsize(cq_entries).build(entries)?,
                    "plain",
                    None,
                ),
                Err(e) => return Err(e),
            },
        };
        if !ring.params().is_feature_nodrop() {
            return Err(unsupported(
                "io_uring lacks IORING_FEAT_NODROP (Linux 5.5)".into(),
            ));
        }
        if !ring.params().is_feature_ext_arg() {
            return Err(unsupported(
                "io_uring lacks IORING_FEAT_EXT_ARG (Linux 5.11)".into(),
            ));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let missing: Vec<&str> = NEEDED
            .iter()
            .filter(|(code, _)| !probe.is_supported(*code))
            .map(|(_, name)| *name)
            .collect();
        if !missing.is_empty() {
            return Err(unsupported(format!(
                "io_uring lacks opcodes {}",
                missing.join(", ")
            )));
        }
        let uring = Uring {
            ring,
            single,
            sq: Mutex::new(Sq {
                backlog: VecDeque::new(),
            }),
            pool,
            cq: PollerLock::new(0),
            wake_pending: AtomicBool::new(false),
            flags,
            bufs: OnceLock::new(),
            leak_bufs: AtomicBool::new(false),
            multishot: AtomicBool::new(multishot),
            multishot_seen: AtomicBool::new(false),
            fixed: 0,
            unfix_later: Mutex::new(UnfixLater::default()),
            unfix_pending: AtomicBool::new(false),
        };
        let mut uring = uring;
        if registered_files {
            uring.fixed = uring.file_table();
        }
        if uring.single.is_some() {
            // Registered now, while any thread may still register.
            uring.buf_ring();
        }
        Ok(uring)
    }

    /// A disabled `SINGLE_ISSUER` + `DEFER_TASKRUN` ring (Linux 6.1) and its
    /// wake-up eventfd; None where the kernel refuses either.
    fn owned_ring(entries: u32, cq_entries: u32) -> Option<(IoUring, Single)> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_r_disabled()
            .setup_cqsize(cq_entries)
            .build(entries);
        let ring = match ring {
            Ok(r) => r,
            Err(e) => {
                log::info!("ringport: no single-thread ring ({e}); the port shares its ring");
                return None;
            }
        };
        // SAFETY: eventfd(2) with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            log::info!("ringport: no eventfd ({e}); the port shares its ring");
            return None;
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let single = Single {
            owner: AtomicU64::new(0),
            eventfd,
            count: Box::into_raw(Box::new(0u64)),
        };
        Some((ring, single))
    }

    /// Registers an empty file table of one slot per descriptor number below
    /// the soft `RLIMIT_NOFILE` (at most 65,536; the kernel refuses more than
    /// the limit); its size, or 0 where the kernel has no sparse tables
    /// (before Linux 5.19) and descriptors are named by number only.
    fn file_table(&self) -> u32 {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given, which lives here.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return 0;
        }
        let n = lim.rlim_cur.min(1 << 16) as u32;
        match self.ring.submitter().register_files_sparse(n) {
            Ok(()) if n > 0 => n,
            Ok(()) => 0,
            Err(e) => {
                log::debug!("ringport: no registered file table ({e})");
                0
            }
        }
    }

    /// A single-thread port's ring that no thread claimed yet.
    fn unclaimed(&self) -> bool {
        self.single
            .as_ref()
            .is_some_and(|s| s.owner.load(Ordering::Acquire) == 0)
    }

    /// True when this thread may call `io_uring_register` on this ring: one
    /// that may enter it ([`Uring::may_enter`]), or any thread while a
    /// single-thread port's ring is unclaimed (still disabled, so the kernel
    /// takes register calls from any thread).
    fn may_register(&self) -> bool {
        self.may_enter() || self.unclaimed()
    }

    /// Puts descriptor `raw` in its slot of the file table; false when it
    /// stays unregistered (no table, a number beyond it, or a thread that
    /// may not register on this ring), and is then named by number.
    pub(crate) fn fix(&self, raw: RawFd) -> bool {
        let Ok(slot) = u32::try_from(raw) else {
            return false;
        };
        if slot >= self.fixed || !self.may_register() {
            return false;
        }
        // A racing claim makes this thread's call fail (`EEXIST`): unregistered.
        self.ring
            .submitter()
            .register_files_update(slot, &[raw])
            .is_ok()
    }

    /// Clears the slot of registered descriptor `fd` and closes it; false if
    /// this thread may not, and the descriptor waits for the owner's next
    /// reap ([`Uring::unfix_deferred`]), which the caller must see to: it
    /// counts one operation in flight for it, so that the owner enters the
    /// kernel and is woken (through the eventfd, here) to do it.
    pub(crate) fn unfix_and_close(&self, fd: OwnedFd) -> bool {
        if self.may_register() {
            match self.clear_slot(&fd) {
                Ok(()) => {
                    drop(fd);
                    return true;
                }
                // The owner claimed the ring meanwhile: hand it over below.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    log::warn!("ringport: clearing a registered file failed: {e}");
                    drop(fd);
                    return true;
                }
            }
        }
        let mut later = lock(&self.unfix_later);
        if later.gone {
            // The owner dropped the whole table (its port closed).
            drop(fd);
            return true;
        }
        later.fds.push(fd);
        drop(later);
        self.unfix_pending.store(true, Ordering::Release);
        self.wake_owner();
        false
    }

    fn clear_slot(&self, fd: &OwnedFd) -> io::Result<()> {
        let slot = fd.as_raw_fd() as u32;
        self.ring
            .submitter()
            .register_files_update(slot, &[-1])
            .map(drop)
    }

    /// The owner's part of [`Uring::unfix_and_close`]: clears the slots of
    /// the descriptors other threads left and closes them; how many.
    pub(crate) fn unfix_deferred(&self) -> usize {
        if !self.unfix_pending.load(Ordering::Acquire) || !self.may_enter() {
            return 0;
        }
        self.unfix_pending.store(false, Ordering::Relaxed);
        let fds = std::mem::take(&mut lock(&self.unfix_later).fds);
        for fd in &fds {
            if let Err(e) = self.clear_slot(fd) {
                log::warn!("ringport: clearing a registered file failed: {e}");
            }
        }
        fds.len()
    }

    /// The port closed and gave back its operations: the owner (or any
    /// thread, on a shared ring) unregisters the whole file table, so that a
    /// handle closed later closes at once on any thread. Returns how many
    /// descriptors were waiting for the owner ([`Uring::unfix_and_close`]),
    /// now closed.
    pub(crate) fn drop_file_table(&self) -> usize {
        if self.fixed == 0 || !self.may_register() {
            return 0;
        }
        let mut later = lock(&self.unfix_later);
        if later.gone {
            return 0;
        }
        if let Err(e) = self.ring.submitter().unregister_files() {
            log::debug!("ringport: unregistering the file table: {e}");
            return 0;
        }
        later.gone = true;
        self.unfix_pending.store(false, Ordering::Relaxed);
        std::mem::take(&mut later.fds).len()
    }

    /// True when this thread may enter the kernel on this ring: any thread on
    /// a shared ring, the owner on a single-thread one.
    #[inline]
    fn may_enter(&self) -> bool {
        match &self.single {
            None => true,
            Some(s) => s.owner.load(Ordering::Relaxed) == thread_token(),
        }
    }

    /// A single-thread port's first dequeue: the calling thread becomes the
    /// owner and enables the ring, which ties it to this thread.
    pub(crate) fn claim(&self) -> io::Result<()> {
        let Some(s) = &self.single else {
            return Ok(());
        };
        let me = thread_token();
        match s
            .owner
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(owner) if owner == me => return Ok(()),
            Err(_) => {
                return Err(io::Error::other(
                    "a single-thread port is dequeued by its owner only",
                ))
            }
        }
        self.ring.submitter().register_enable_rings()?;
        self.arm_wake();
        Ok(())
    }

    /// `close` of a single-thread port nobody claimed: the closing thread
    /// takes the ring, so that it can cancel and reap what was started.
    pub(crate) fn adopt(&self) {
        if self.unclaimed() {
            if let Err(e) = self.claim() {
                log::debug!("ringport: closing an unclaimed single-thread port: {e}");
            }
        }
    }

    /// The owner's read of the wake-up eventfd, queued for its next enter.
    fn arm_wake(&self) {
        let Some(s) = &self.single else {
            return;
        };
        let entry = opcode::Read::new(types::Fd(s.eventfd.as_raw_fd()), s.count.cast(), 8)
            .build()
            .user_data(WAKE);
        let mut sq = lock(&self.sq);
        // SAFETY: the read writes into `count`, which is never freed.
        let pushed = unsafe { self.ring.submission_shared().push(&entry) }.is_ok();
        if !pushed {
            sq.backlog.push_back(entry);
        }
    }

    /// The provided-buffer ring, set up on first use from `pool`'s settings.
    fn buf_ring(&self) -> Option<&BufRing> {
        self.bufs
            .get_or_init(|| match BufRing::new(&self.ring.submitter(), self.pool.clone()) {
                Ok(ring) => Some(ring),
                Err(e) => {
                    log::info!("ringport: no io_uring buffer ring ({e}); pooled receives take their buffer at start");
                    None
                }
            })
            .as_ref()
    }

    /// Buffers published in the provided-buffer ring.
    pub(crate) fn ring_buffers(&self) -> usize {
        self.bufs
            .get()
            .and_then(Option::as_ref)
            .map_or(0, BufRing::held)
    }

    /// The kernel keeps operations the port gave up on: leak the buffer ring
    /// with them rather than free memory it may still write.
    pub(crate) fn leak_buffers(&self) {
        self.leak_bufs.store(true, Ordering::Release);
    }

    /// The setup flags in use, for the backend reason.
    pub(crate) fn describe(&self) -> String {
        let files = match self.fixed {
            0 => String::new(),
            n => format!(", {n} registered file slots"),
        };
        format!(
            "{} sq, {} cq, {}{files}",
            self.ring.params().sq_entries(),
            self.ring.params().cq_entries(),
            self.flags
        )
    }

    /// Multishot receives are on: asked for, and not refused by the kernel.
    /// The buffer ring is checked when one is armed.
    pub(crate) fn multishot_on(&self) -> bool {
        self.multishot.load(Ordering::Relaxed)
    }

    /// The entry of a multishot receive on `fd` for pooled receives, under
    /// token `anchor`; `None` when they are off, or the kernel has no buffer
    /// ring (the receives then go one at a time).
    pub(crate) fn prepare_multi(
        &self,
        fd: RawFd,
        fixed: bool,
        anchor: u64,
    ) -> Option<squeue::Entry> {
        if !self.multishot.load(Ordering::Relaxed) {
            return None;
        }
        let ring = self.buf_ring()?;
        let entry = opcode::RecvMulti::new(types::Fd(fd), bufring::GROUP)
            .build()
            .user_data(anchor);
        let entry = with_fixed(entry, fixed);
        // It ends after this many bytes (it is armed again only for a
        // receive that waits), so at most that much waits for a socket.
        let cap = ring.buf_len().saturating_mul(PARK_LIMIT as u32);
        Some(with_optlen(entry, cap))
    }

    /// A multishot receive ended with `res`, which could be the kernel's
    /// refusal of multishot receives (before Linux 6.0): true if so, and
    /// pooled receives go one at a time from now on.
    pub(crate) fn multishot_refused(&self, res: i32) -> bool {
        if res != -libc::EINVAL || self.multishot_seen.load(Ordering::Relaxed) {
            return false;
        }
        if self.multishot.swap(false, Ordering::Relaxed) {
            log::info!(
                "ringport: no multishot receives (EINVAL); pooled receives go one at a time"
            );
        }
        true
    }

    /// Builds the entry for `op`. The entry points into `op`, which the port
    /// keeps boxed in its slab until the completion for `token` is reaped.
    pub(crate) fn prepare(&self, op: &mut Op, token: u64) -> squeue::Entry {
        let fd = types::Fd(op.handle.raw_fd());
        let entry = match &mut op.req {
            // Unless the last receive left data in the socket, the data is
            // not there yet (a server re-arms its receive as it sends the
            // reply): wait for readability first rather than fail a receive.
            Request::RecvPooled { buf } => match self.buf_ring() {
                Some(ring) => opcode::Recv::new(fd, std::ptr::null_mut(), ring.buf_len())
                    .buf_group(bufring::GROUP)
                    .ioprio(if op.handle.data_left() { 0 } else { POLL_FIRST })
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT),
                None => {
                    let (ptr, len) = spare(buf.get_or_insert_with(|| self.pool.take()));
                    opcode::Recv::new(fd, ptr, len).build()
                }
            },
            Request::Accept => {
                let a = Addr::of_op(&mut op.addr);
                opcode::Accept::new(
                    fd,
                    (&mut a.storage as *mut socket2::SockAddrStorage).cast(),
                    &mut a.len,
                )
                .flags(libc::SOCK_CLOEXEC)
                .build()
            }
            // Submitted again after a cancellation the port did not ask for:
            // the connect is under way in the kernel already, so wait for it
            // to finish instead of starting another.
            Request::Connect(_) if op.resubmits > 0 => {
                opcode::PollAdd::new(fd, libc::POLLOUT as u32).build()
            }
            Request::Connect(_) => {
                let a = Addr::of_op(&mut op.addr);
                opcode::Connect::new(
                    fd,
                    (&a.storage as *const socket2::SockAddrStorage).cast(),
                    a.len,
                )
                .build()
            }
            Request::Recv(buf) => {
                let (ptr, len) = spare(buf);
                opcode::Recv::new(fd, ptr, len).build()
            }
            Request::Send(buf) => opcode::Send::new(fd, buf.as_ptr(), clamp(buf.len()))
                .flags(libc::MSG_NOSIGNAL)
                .build(),
            Request::Read(buf, off) => {
                let (ptr, len) = spare(buf);
                opcode::Read::new(fd, ptr, len).offset(*off).build()
            }
            Request::Write(buf, off) => opcode::Write::new(fd, buf.as_ptr(), clamp(buf.len()))
                .offset(*off)
                .build(),
        };
        with_fixed(entry, op.handle.is_fixed()).user_data(token)
    }

    /// Queues entries, in order, under one lock; enters the kernel at once if
    /// `now`. Every entry is queued even when an error is returned (entering
    /// the kernel failed): the next enter submits it.
    ///
    /// # Safety
    ///
    /// Everything each entry points to must stay valid and unmoved until its
    /// completion is reaped from this ring.
    pub(crate) unsafe fn push(
        &self,
        entries: impl IntoIterator<Item = squeue::Entry>,
        now: bool,
    ) -> io::Result<()> {
        let mut sq = lock(&self.sq);
        {
            // SAFETY: the submission queue is only touched under `self.sq`.
            let mut q = unsafe { self.ring.submission_shared() };
            for entry in entries {
                // Behind older entries, or the queue is full: through the
                // backlog.
                // SAFETY: the caller guaranteed the entry's memory.
                if !sq.backlog.is_empty() || unsafe { q.push(&entry) }.is_err() {
                    sq.backlog.push_back(entry);
                }
            }
        }
        if sq.backlog.is_empty() {
            return if now { self.submit_locked() } else { Ok(()) };
        }
        self.refill(&mut sq, now)
    }

    /// Moves backlog entries into the ring while it has room, entering the
    /// kernel to make room; submits if `now`.
    fn refill(&self, sq: &mut Sq, now: bool) -> io::Result<()> {
        while let Some(entry) = sq.backlog.pop_front() {
            // SAFETY: the submission queue is only touched under `self.sq`.
            let mut q = unsafe { self.ring.submission_shared() };
            if q.is_full() {
                drop(q);
                if !self.may_enter() {
                    // The owner makes room at its next enter.
                    sq.backlog.push_front(entry);
                    self.wake_owner();
                    return Ok(());
                }
                match self.ring.submitter().submit() {
                    Ok(_) => {}
                    // The kernel is busy (a full overflow list on old
                    // kernels): the entry waits for the next reap.
                    Err(e) if is_transient(&e) => {}
                    Err(e) => {
                        sq.backlog.push_front(entry);
                        return Err(e);
                    }
                }
                // SAFETY: as above.
                q = unsafe { self.ring.submission_shared() };
            }
            // SAFETY: the caller of `push` guaranteed the entry's memory.
            if unsafe { q.push(&entry) }.is_err() {
                drop(q);
                sq.backlog.push_front(entry);
                break;
            }
        }
        if now {
            self.submit_locked()?;
        }
        Ok(())
    }

    fn submit_locked(&self) -> io::Result<()> {
        if !self.may_enter() {
            // The owner enters for everyone: wake it to submit.
            self.wake_owner();
            return Ok(());
        }
        // SAFETY: the submission queue is only touched under `self.sq`.
        let q = unsafe { self.ring.submission_shared() };
        let queued = q.len();
        let needed = queued > 0 || q.taskrun() || q.cq_overflow();
        drop(q);
        if needed {
            match self.enter_submit(queued) {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Enters the kernel to submit the `queued` entries of the submission
    /// queue, under `self.sq`. On a single-thread ring the enter also carries
    /// `GETEVENTS` (waiting for no completion), so the kernel runs the task
    /// work deferred to this thread, up to the moment it returns, in the same
    /// system call; the crate's `submit` asks for it only if the ring's
    /// `TASKRUN` flag was already up before the call, and work that came in
    /// after (a peer's next message, while the owner ran its handlers) then
    /// cost a second enter at the next dequeue. Measured with one worker at
    /// 10 x 16 KiB: about 0.5 enters per echoed message before, 0.31 to 0.35
    /// after (BENCHMARKS.md, "Runs AI to AN").
    fn enter_submit(&self, queued: usize) -> io::Result<usize> {
        if self.single.is_none() {
            return self.ring.submitter().submit();
        }
        let queued = u32::try_from(queued).unwrap_or(u32::MAX);
        // SAFETY: an enter without an argument pointer reads and writes
        // nothing of ours but the rings the kernel mapped; the caller holds
        // `self.sq`, and `queued` entries are in the queue (the kernel takes
        // at most what is there).
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(queued, 0, ENTER_GETEVENTS, None)
        }
    }

    /// Enters the kernel if entries are waiting in the queue, or if task work or
    /// an overflow is pending.
    pub(crate) fn submit(&self) -> io::Result<()> {
        let _sq = lock(&self.sq);
        self.submit_locked()
    }

    /// Asks the kernel to cancel the operation with this token; its completion
    /// still comes, with its own result or `-ECANCELED`. Returns true when the
    /// entry was still in the backlog: it never reached the kernel, and the
    /// caller completes it as cancelled.
    pub(crate) fn cancel(&self, token: u64, now: bool) -> io::Result<bool> {
        let mut sq = lock(&self.sq);
        if let Some(i) = sq.backlog.iter().position(|e| e.get_user_data() == token) {
            sq.backlog.remove(i);
            return Ok(true);
        }
        let entry = opcode::AsyncCancel::new(token).build().user_data(CANCEL);
        sq.backlog.push_back(entry);
        self.refill(&mut sq, now)?;
        Ok(false)
    }

    /// Asks the kernel to cancel `token`, queued behind every entry queued so
    /// far (its own, if still queued, included); submitted if `now`.
    pub(crate) fn cancel_behind(&self, token: u64, now: bool) -> io::Result<()> {
        let mut sq = lock(&self.sq);
        let entry = opcode::AsyncCancel::new(token).build().user_data(CANCEL);
        sq.backlog.push_back(entry);
        self.refill(&mut sq, now)
    }

    /// The kernel took every entry queued so far: nothing in the backlog or
    /// the submission queue.
    pub(crate) fn all_submitted(&self) -> bool {
        let sq = lock(&self.sq);
        // SAFETY: the submission queue is only touched under `self.sq`.
        let empty = unsafe { self.ring.submission_shared() }.is_empty();
        sq.backlog.is_empty() && empty
    }

    /// Wakes the poller out of the kernel. At most one wake-up is in flight.
    pub(crate) fn wake(&self) {
        if self.single.is_some() {
            return self.wake_owner();
        }
        if self.wake_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let _sq = lock(&self.sq);
        let entry = opcode::Nop::new().build().user_data(WAKE);
        // SAFETY: the submission queue is only touched under `self.sq`.
        let mut q = unsafe { self.ring.submission_shared() };
        if q.is_full() {
            drop(q);
            let _ = self.ring.submitter().submit();
            // SAFETY: as above.
            q = unsafe { self.ring.submission_shared() };
        }
        // SAFETY: a NOP points to no memory.
        if unsafe { q.push(&entry) }.is_err() {
            // The queue is still full: submitting those entries will produce
            // completions, which wake the poller just as well.
            self.wake_pending.store(false, Ordering::Release);
        }
        drop(q);
        let _ = self.submit_locked();
    }

    /// A single-thread port: wakes its owner if another thread calls, through
    /// the eventfd (the owner itself is awake). At most one write is pending.
    fn wake_owner(&self) {
        let Some(s) = &self.single else {
            return;
        };
        if self.may_enter() || self.wake_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to the port's eventfd.
        let n = unsafe { libc::write(s.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n != 8 {
            // Only a counter at its maximum refuses, and that wakes the read.
            log::debug!("ringport: eventfd write: {}", io::Error::last_os_error());
        }
    }

    /// Reaps completions into `out` as `(token, result)`; wake-up and cancel
    /// entries are consumed here. Returns after at most one sleep.
    pub(crate) fn reap(
        &self,
        wait: Wait<'_>,
        out: &mut Vec<(u64, i32)>,
        filled: &mut Filled,
        finish: &mut Finish<'_>,
    ) -> io::Result<()> {
        let guard = match wait {
            Wait::No => self.cq.try_lock(),
            // Gives up if the port serves this thread while it waits for the
            // lock (see `PollerLock`).
            Wait::For(t, still) => self.cq.lock_while(still, t),
        };
        let Some(mut dropped) = guard else {
            return Ok(());
        };
        let (result, consumed, nap) = self.reap_locked(wait, out, filled, &mut dropped);
        // Still under the lock: the port takes in what this reap found
        // before any later reap's, so the completions of one multishot
        // receive are handed out in the kernel's order.
        finish(out, filled);
        drop(dropped);
        if let Some(t) = nap {
            self.wake_owner();
            std::thread::sleep(t);
        }
        if consumed > 0 {
            let mut sq = lock(&self.sq);
            if !sq.backlog.is_empty() {
                self.refill(&mut sq, true)?;
            }
        }
        result
    }

    /// The part of [`Uring::reap`] under the completion lock: the result,
    /// how many entries it consumed, and how long to nap after.
    fn reap_locked(
        &self,
        wait: Wait<'_>,
        out: &mut Vec<(u64, i32)>,
        filled: &mut Filled,
        dropped: &mut u32,
    ) -> (io::Result<()>, usize, Option<std::time::Duration>) {
        let mut consumed = match self.drain(out, filled, dropped) {
            Ok(n) => n,
            Err(e) => return (Err(e), 1, None),
        };
        let mut result = Ok(());
        let mut nap = None;
        if let Wait::For(timeout, still) = wait {
            if consumed == 0 && still() {
                if self.may_enter() {
                    result = self.enter_wait(timeout);
                    match self.drain(out, filled, dropped) {
                        Ok(n) => consumed += n,
                        Err(e) => return (Err(e), consumed + 1, None),
                    }
                } else {
                    // Another thread of a single-thread port (only `close`
                    // waits here): the owner reaps; look again shortly.
                    nap = Some(timeout.map_or(NAP, |t| t.min(NAP)));
                }
            }
        }
        (result, consumed, nap)
    }

    /// Empties the completion queue, flushing the kernel's overflow list into
    /// it as often as needed (the owner's to do, on a single-thread port);
    /// returns how many entries it consumed.
    fn drain(
        &self,
        out: &mut Vec<(u64, i32)>,
        filled: &mut Filled,
        dropped: &mut u32,
    ) -> io::Result<usize> {
        let mut n = 0;
        loop {
            // SAFETY: the completion queue is only touched under `self.cq`,
            // which the caller holds (`dropped` lives in it).
            let q = unsafe { self.ring.completion_shared() };
            let lost = q.overflow();
            let mut rearm = false;
            for cqe in q {
                n += 1;
                rearm |= self.sort(&cqe, out, filled);
            }
            if rearm {
                self.arm_wake();
            }
            if lost != *dropped {
                let e = io::Error::other(format!(
                    "io_uring dropped {} completions (kernel out of memory)",
                    lost.wrapping_sub(*dropped)
                ));
                *dropped = lost;
                return Err(e);
            }
            // Lock order: `cq` (held by the caller), then `sq`.
            let _sq = lock(&self.sq);
            // SAFETY: the submission queue is only touched under `self.sq`.
            if !unsafe { self.ring.submission_shared() }.cq_overflow() || !self.may_enter() {
                return Ok(n);
            }
            // An enter with GETEVENTS moves the overflow list into the ring.
            match self.ring.submitter().submit() {
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Files one completion; called only by `drain`, under `self.cq`. True
    /// for the owner's eventfd read, which must be armed again.
    fn sort(&self, cqe: &cqueue::Entry, out: &mut Vec<(u64, i32)>, filled: &mut Filled) -> bool {
        match cqe.user_data() {
            WAKE => {
                self.wake_pending.store(false, Ordering::Release);
                // The eventfd read (a NOP on a shared ring) goes again unless
                // it failed for good, which would fail every time.
                let res = cqe.result();
                let again = res >= 0 || res == -libc::ECANCELED || res == -libc::EINTR;
                if !again {
                    log::warn!(
                        "ringport: the wake-up read failed: {}",
                        io::Error::from_raw_os_error(-res)
                    );
                }
                return self.single.is_some() && again;
            }
            CANCEL => {}
            mut token => {
                if token & ANCHOR != 0 && cqueue::more(cqe.flags()) {
                    token |= MORE;
                    self.multishot_seen.store(true, Ordering::Relaxed);
                }
                if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                    let ring = self.bufs.get().and_then(Option::as_ref);
                    let ring = ring.expect("a buffer is selected only from the port's ring");
                    let left = cqueue::sock_nonempty(cqe.flags());
                    // SAFETY: `sort` runs under `self.cq` (see `drain`), the
                    // lock of the queue this ring's completions come from.
                    let buf = unsafe { ring.take(bid) };
                    filled.push((token, buf, left));
                }
                out.push((token, cqe.result()));
            }
        }
        false
    }

    /// Submits what is queued and sleeps until one completion or the timeout.
    fn enter_wait(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        let ts;
        let mut args = types::SubmitArgs::new();
        if let Some(t) = timeout {
            ts = types::Timespec::from(t);
            args = args.timespec(&ts);
        }
        let r = {
            let _sq = lock(&self.sq);
            // What is queued goes in under the lock, as every submission does;
            // the wait itself happens without it so other threads can push
            // meanwhile. With nothing queued, the waiting enter alone is
            // enough: its `GETEVENTS` runs pending task work and flushes an
            // overflow as well.
            // SAFETY: the submission queue is only touched under `self.sq`.
            if unsafe { self.ring.submission_shared() }.is_empty() {
                Ok(0)
            } else {
                self.ring.submitter().submit()
            }
        };
        if let Err(e) = r {
            if !is_transient(&e) {
                return Err(e);
            }
        }
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if is_transient(&e) || e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `entry` naming its descriptor's slot in the file table if `fixed` (the
/// slot's number is the descriptor's, already in the entry).
#[inline]
fn with_fixed(entry: squeue::Entry, fixed: bool) -> squeue::Entry {
    if fixed {
        entry.flags(squeue::Flags::FIXED_FILE)
    } else {
        entry
    }
}

/// `entry` with its `optlen` set: for a multishot receive, the bytes after
/// which it ends (the kernel's `mshot_total_len`; kernels without it refuse
/// the entry with `EINVAL`, and the port then receives one at a time; this
/// machine's 6.18 has it). The `io-uring` crate has no builder method for it.
fn with_optlen(entry: squeue::Entry, optlen: u32) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    // SAFETY: `squeue::Entry` is `repr(C)` around the kernel's 64-byte
    // `io_uring_sqe` (checked above), which has no padding and no invalid
    // bit patterns: any 64 bytes are a valid value either way.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
    // `optlen` is the u32 at byte 44 of `struct io_uring_sqe`.
    raw[44..48].copy_from_slice(&optlen.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// Errors of `io_uring_enter` that mean "try again", not failure.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn spare(buf: &mut Vec<u8>) -> (*mut u8, u32) {
    let len = buf.len();
    let room = clamp(buf.capacity() - len);
    // SAFETY: `len` is within the allocation, so the pointer stays in bounds.
    (unsafe { buf.as_mut_ptr().add(len) }, room)
}

impl Drop for Uring {
    fn drop(&mut self) {
        let Some(ring) = self.bufs.take().flatten() else {
            return;
        };
        if self.leak_bufs.load(Ordering::Acquire) {
            std::mem::forget(ring);
        } else if !self.may_enter() {
            // A single-thread port dropped off its owner thread: the kernel
            // refuses this thread's register calls (EEXIST). The ring may
            // still go: the port gave back every operation before this drop
            // (else `leak_bufs` is set), so nothing can pick a buffer from it,
            // and the ring itself closes right after this.
            drop(ring);
        } else if let Err(e) = self.ring.submitter().unregister_buf_ring(bufring::GROUP) {
            // Still registered: the kernel may read the ring; keep it.
            log::warn!("ringport: unregistering the buffer ring failed: {e}");
            std::mem::forget(ring);
        }
    }
}
