//! The Linux port: the user-space core (`waiters`) joined to a kernel driver.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use slab::Slab;

use super::backend::choose;
use super::driver::{Driver, Wait};
use super::epoll::Source;
use super::handle::{Handle, Owned, Tokens};
use super::op::{Entry, Op};
use super::thread;
use super::uring::{Filled, ANCHOR, MORE};
use super::waiters::{lock, Arrival, Core, Status, Waiter, AWAY_LIMIT};
use crate::completion::{Completion, GetError, OpId, Packet, StartError};
use crate::op::Request;
use crate::pool::BufPool;
use crate::port::{Backend, Builder, Stats};

/// How long closing the port waits for the kernel to give back cancelled
/// operations before it leaks their memory rather than free it under the kernel.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// How many times one operation is submitted again after the kernel cancelled
/// it on its own before the cancellation is passed on to the caller.
const RESUBMIT_LIMIT: u16 = 64;

/// Generations are 30 bits so that a token never has either top bit set: the
/// driver keeps bit 63 for its own entries, and bit 62 ([`ANCHOR`]) marks a
/// socket's multishot receive.
const GEN_MASK: u32 = 0x3fff_ffff;

/// An anchor token's generation is 29 bits: bit 61 is [`MORE`] in reports.
const ANCHOR_GEN_MASK: u32 = 0x1fff_ffff;

/// Operations in flight, owned by the port while the kernel works on them.
#[derive(Debug)]
struct Ops {
    slab: Slab<Box<Op>>,
    next_gen: u32,
    /// Operations accepted so far (`Stats::started`), counted under the lock
    /// `start` holds anyway.
    started: u64,
    /// io_uring entries of operations that threads running on the port
    /// started since their last dequeue: the next dequeue (or `blocking`, an
    /// exit, a poller about to sleep) moves them all into the submission
    /// queue under one lock of the ring's. Under this lock, so a cancel finds
    /// an entry either here or in the ring's queue.
    staged: Vec<io_uring::squeue::Entry>,
    /// The multishot receives in the kernel (see `handle::Multi`): each
    /// one's token ([`ANCHOR`], a generation and this index) and its socket,
    /// held weakly: the port's own receive must not keep a socket open that
    /// every user dropped (its `Drop` stops the receive).
    anchors: Slab<(u64, Weak<Handle>)>,
    closed: bool,
}

/// `user_data` of an operation: its slab index and a generation, so a stale
/// token (a late cancel) never names a later operation in the same slot.
/// Undone by [`Ops::take`].
fn token(index: usize, gen: u32) -> u64 {
    (u64::from(gen) << 32) | index as u64
}

/// The slab index and generation of a token; the reverse of [`token`].
fn split(token: u64) -> (usize, u32) {
    ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
}

impl Ops {
    /// Hands the operation over to the kernel's side: boxes it into the slab
    /// and returns its token. Undone by [`Ops::take`].
    fn insert(&mut self, mut op: Box<Op>) -> (u64, &mut Op) {
        self.next_gen = (self.next_gen + 1) & GEN_MASK;
        op.gen = self.next_gen;
        let entry = self.slab.vacant_entry();
        let t = token(entry.key(), op.gen);
        (t, entry.insert(op))
    }

    /// Takes the operation named by `token` back from the kernel's side; the
    /// reverse of [`Ops::insert`]. `None` for a token that names no live operation.
    fn take(&mut self, token: u64) -> Option<Box<Op>> {
        let (index, gen) = split(token);
        match self.slab.get(index) {
            Some(op) if op.gen == gen => Some(self.slab.remove(index)),
            _ => None,
        }
    }

    /// The live operation named by `token`, with the staged entries borrowed
    /// alongside.
    fn with_staged(&mut self, token: u64) -> Option<(&mut Op, &mut Vec<io_uring::squeue::Entry>)> {
        let (index, gen) = split(token);
        match self.slab.get_mut(index) {
            Some(op) if op.gen == gen => Some((op, &mut self.staged)),
            _ => None,
        }
    }

    /// The tokens in flight on `h`, which must be a handle of this port.
    fn inflight<'a>(&'a mut self, h: &'a Handle) -> &'a mut Tokens {
        // SAFETY: a handle's tokens are only reached here, under its port's
        // operations lock, which `&mut self` (inside the guard) proves held;
        // the returned borrow keeps `self` borrowed, so no second one exists.
        unsafe { h.inflight_unchecked() }
    }

    fn tokens(&self) -> Vec<u64> {
        let ops = self.slab.iter().map(|(i, op)| token(i, op.gen));
        ops.chain(self.anchors.iter().map(|(_, (a, _))| *a))
            .collect()
    }

    /// Anchor `a`'s place in `anchors`, if it is still in the kernel.
    fn anchor_index(&self, a: u64) -> Option<usize> {
        let i = (a & 0xffff_ffff) as usize;
        self.anchors.get(i).filter(|(t, _)| *t == a).map(|_| i)
    }
}

/// A descriptor waiting for its multishot receive's last completion (see
/// `Port::orphans`): the anchor's token, the descriptor, and whether it is in
/// the ring's file table.
type Orphan = (u64, OwnedFd, bool);

/// A completion port on Linux.
#[derive(Debug)]
pub(crate) struct Port {
    concurrency: usize,
    backend: Backend,
    reason: String,
    driver: Driver,
    core: Core,
    ops: Mutex<Ops>,
    /// `ops.staged` may be non-empty: a hint read without the lock, so a
    /// dequeue with nothing staged takes no lock for it.
    staged: AtomicBool,
    /// Descriptors of sockets dropped while their multishot receive's entry
    /// may not have reached the kernel yet (it names the socket by number):
    /// closed when its last completion comes, by anchor token.
    orphans: Mutex<Vec<Orphan>>,
    pool: Arc<BufPool>,
}

impl Port {
    pub(crate) fn new(b: &Builder, concurrency: usize) -> io::Result<Port> {
        let pool = Arc::new(BufPool::new(b.recv_buffers.0, b.recv_buffers.1));
        let (driver, backend, reason) = choose(b, &pool)?;
        match (b.backend, backend) {
            (Backend::Auto, Backend::IoUring) => log::info!("ringport: using io_uring: {reason}"),
            (Backend::Auto, _) => log::info!("ringport: {reason}"),
            _ => {}
        }
        Ok(Port {
            concurrency,
            backend,
            reason,
            driver,
            core: Core::new(concurrency),
            ops: Mutex::new(Ops {
                slab: Slab::new(),
                next_gen: 0,
                started: 0,
                staged: Vec::new(),
                anchors: Slab::new(),
                closed: false,
            }),
            staged: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            pool,
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn backend_reason(&self) -> &str {
        &self.reason
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = self.core.counts();
        Stats {
            queued: c.queued,
            running: c.running,
            waiting: c.waiting,
            in_flight: self.core.inflight(),
            started: lock(&self.ops).started,
            completed: c.completed,
            pool_buffers: self.pool.free_len() + self.driver.ring_buffers(),
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
        let handle = Arc::new(Handle::new(owned, key, Arc::downgrade(self))?);
        self.driver.associate(&handle)?;
        Ok(handle)
    }

    /// Drops the driver's registration of a handle about to close its descriptor.
    pub(crate) fn forget(&self, src: &Arc<Source>) {
        self.driver.forget(src);
    }

    pub(crate) fn start(
        &self,
        handle: &Arc<Handle>,
        req: Request,
        user: u64,
    ) -> Result<OpId, StartError> {
        if !handle.belongs_to(self) {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                "handle is associated with another port",
            );
            return Err(req.refuse(e));
        }
        let mut ops = lock(&self.ops);
        if ops.closed {
            return Err(req.refuse(port_closed()));
        }
        let pooled = matches!(req, Request::RecvPooled { .. });
        // Reserve the token first so the handle can record it.
        let next = token(ops.slab.vacant_key(), (ops.next_gen + 1) & GEN_MASK);
        if let Err(e) = handle.op_begin(next, ops.inflight(handle)) {
            return Err(req.refuse(e));
        }
        let (t, _) = ops.insert(Op::new(req, user, handle.clone()));
        debug_assert_eq!(t, next);
        self.core.op_started();
        // A thread between dequeues batches its submissions until its next
        // dequeue (or `blocking`, or its exit), which submits them in one
        // system call; the poller asleep in the kernel needs none of them to
        // wake, as completions wake it.
        let now = !thread::is_running_on(self);
        if pooled && self.driver.multishot() {
            match self.start_multi(&mut ops, handle, t, now) {
                Multishot::Waiting => {
                    if !ops.staged.is_empty() {
                        self.staged.store(true, Ordering::Relaxed);
                    }
                    ops.started += 1;
                    return Ok(OpId::new(t));
                }
                Multishot::Done(entry, fd) => {
                    ops.started += 1;
                    drop(ops);
                    handle.release_fd(fd);
                    self.queue_done(entry);
                    return Ok(OpId::new(t));
                }
                Multishot::NotArmed => {}
            }
        }
        let (op, staged) = ops.with_staged(t).expect("operation just inserted");
        // SAFETY: `op` is boxed in `self.ops` and stays there, unmoved, until
        // `finish_reaped` takes it back for this token (or `close` leaks it);
        // so are the operations of the staged entries.
        match unsafe { self.driver.start(op, t, now, staged) } {
            Ok(()) => {
                if !ops.staged.is_empty() {
                    self.staged.store(true, Ordering::Relaxed);
                }
                ops.started += 1;
                Ok(OpId::new(t))
            }
            Err(e) => {
                let op = ops.take(t).expect("operation just inserted");
                let fd = op.handle.op_done(t, ops.inflight(&op.handle));
                drop(ops);
                self.core.ops_done(1);
                op.handle.release_fd(fd);
                Err(op.req.refuse(e))
            }
        }
    }

    /// A pooled receive `t` (just inserted) on a port with multishot
    /// receives: it takes a result kept for the socket, or waits for the
    /// socket's multishot receive, arming one if none is.
    fn start_multi(&self, ops: &mut Ops, handle: &Arc<Handle>, t: u64, now: bool) -> Multishot {
        let armed = {
            // SAFETY: under the operations lock (`ops` is inside the guard);
            // the borrow ends with this block.
            let m = unsafe { handle.multi_unchecked() };
            if let Some((buf, res)) = m.unpark() {
                let mut last = Vec::new();
                let entry = self.complete_waiting(ops, t, buf, res, &mut last);
                let entry = entry.expect("operation just inserted");
                return Multishot::Done(entry, last.pop().map(|(_, fd)| fd));
            }
            m.wait(t);
            m.anchor != 0
        };
        if armed || self.arm(ops, handle, now) {
            return Multishot::Waiting;
        }
        // SAFETY: as above.
        unsafe { handle.multi_unchecked() }.unwait(t);
        Multishot::NotArmed
    }

    /// Arms a multishot receive on `handle`'s socket, which has none armed;
    /// false when the driver has none to arm.
    fn arm(&self, ops: &mut Ops, handle: &Arc<Handle>, now: bool) -> bool {
        ops.next_gen = (ops.next_gen + 1) & GEN_MASK;
        let gen = u64::from(ops.next_gen & ANCHOR_GEN_MASK);
        let a = ANCHOR | gen << 32 | ops.anchors.vacant_key() as u64;
        if !self.driver.arm_multi(handle, a, now) {
            return false;
        }
        ops.anchors.insert((a, Arc::downgrade(handle)));
        ops.inflight(handle).push(a);
        // SAFETY: under the operations lock; the borrow ends here.
        unsafe { handle.multi_unchecked() }.anchor = a;
        true
    }

    /// Takes pooled receive `w` out of the slab, done with `buf` and `res`;
    /// a descriptor its end closes goes to `last`.
    fn complete_waiting(
        &self,
        ops: &mut Ops,
        w: u64,
        buf: Option<Vec<u8>>,
        res: i32,
        last: &mut Vec<(Arc<Handle>, OwnedFd)>,
    ) -> Option<Entry> {
        let Some(mut op) = ops.take(w) else {
            if let Some(b) = buf {
                self.pool.give(b);
            }
            return None;
        };
        if let Some(fd) = op.handle.op_done(w, ops.inflight(&op.handle)) {
            last.push((op.handle.clone(), fd));
        }
        if let Some(b) = buf {
            op.fill(b, &self.pool);
        }
        Some(Entry::Done(op, w, res))
    }

    /// A completion of anchor `t` (with [`MORE`] if the kernel keeps it
    /// armed): hands the result to the oldest waiting receive or parks it,
    /// and when the multishot receive ended, arms another for the receives
    /// still waiting.
    fn anchor_reaped(
        &self,
        ops: &mut Ops,
        t: u64,
        res: i32,
        buf: Option<Vec<u8>>,
        done: &mut Vec<Entry>,
        last: &mut Vec<(Arc<Handle>, OwnedFd)>,
    ) {
        let more = t & MORE != 0;
        let a = t & !MORE;
        let Some(i) = ops.anchor_index(a) else {
            if let Some(b) = buf {
                self.pool.give(b);
            }
            return;
        };
        let Some(h) = ops.anchors[i].1.upgrade() else {
            // Every user dropped the socket, which stopped this receive.
            if let Some(b) = buf {
                self.pool.give(b);
            }
            if !more {
                ops.anchors.remove(i);
                // Out of the kernel: its socket's descriptor may close now.
                let mut orphans = lock(&self.orphans);
                if let Some(j) = orphans.iter().position(|(t, _, _)| *t == a) {
                    let (_, fd, fixed) = orphans.swap_remove(j);
                    drop(orphans);
                    self.close_fd(fd, fixed);
                }
            }
            return;
        };
        // `h` may end up the last reference: its `Drop` takes no lock of the
        // port's but the submission queue's and `orphans`.
        if !more {
            self.end_anchor(ops, &h, a, last);
        }
        // Not results of the socket's: the ring ran dry, the kernel cancelled
        // it (asked, or its thread exited), or it has no multishot receives.
        let refused = !more && self.driver.multishot_refused(res);
        let spent = !more && (res == -libc::ENOBUFS || res == -libc::ECANCELED || refused);
        if spent {
            if let Some(b) = buf {
                self.pool.give(b);
            }
        } else {
            // SAFETY: under the operations lock; the borrow ends with the
            // statement (`complete_waiting` takes no borrow of `h.multi`).
            let w = unsafe { h.multi_unchecked() }.next_waiting();
            match w {
                Some(w) => done.extend(self.complete_waiting(ops, w, buf, res, last)),
                None => {
                    // SAFETY: as above; the borrow ends with the statement.
                    unsafe { h.multi_unchecked() }.park(buf, res);
                }
            }
        }
        if more || h.is_closed() || ops.closed {
            return;
        }
        // SAFETY: as above; the borrow ends with the statement.
        if !unsafe { h.multi_unchecked() }.has_waiting() {
            return;
        }
        if !refused && self.arm(ops, &h, true) {
            return;
        }
        // No multishot receives: each waiting receive goes to the kernel alone.
        // SAFETY: as above.
        while let Some(w) = unsafe { h.multi_unchecked() }.next_waiting() {
            let Some((op, staged)) = ops.with_staged(w) else {
                continue;
            };
            // SAFETY: `op` stays boxed in `self.ops` until its token is
            // reaped, as for `start`; so do the staged entries'.
            if let Err(e) = unsafe { self.driver.start(op, w, true, staged) } {
                let res = -e.raw_os_error().unwrap_or(libc::EIO);
                done.extend(self.complete_waiting(ops, w, None, res, last));
            }
        }
    }

    /// Anchor `a` of `h` is out of the kernel: forget it, and hand back the
    /// results parked for a closed socket.
    fn end_anchor(
        &self,
        ops: &mut Ops,
        h: &Arc<Handle>,
        a: u64,
        last: &mut Vec<(Arc<Handle>, OwnedFd)>,
    ) {
        {
            // SAFETY: under the operations lock; the borrow ends with this block.
            let m = unsafe { h.multi_unchecked() };
            m.anchor = 0;
            m.stopping = false;
            if h.is_closed() {
                while let Some((buf, _)) = m.unpark() {
                    if let Some(b) = buf {
                        self.pool.give(b);
                    }
                }
            }
        }
        if let Some(i) = ops.anchor_index(a) {
            ops.anchors.remove(i);
        }
        if let Some(fd) = h.op_done(a, ops.inflight(h)) {
            last.push((h.clone(), fd));
        }
    }

    /// Stops anchor `a` (a close): the kernel is asked to cancel it, behind
    /// its own entry if that is still queued, and its last completion ends it.
    fn stop_anchor(&self, ops: &mut Ops, a: u64, now: bool) {
        let Some(h) = ops.anchor_index(a).and_then(|i| ops.anchors[i].1.upgrade()) else {
            return;
        };
        // SAFETY: under the operations lock; the borrow ends here.
        let m = unsafe { h.multi_unchecked() };
        if m.anchor != a {
            return;
        }
        // Asked before (too much parked): the cancel may still be queued.
        let r = if std::mem::replace(&mut m.stopping, true) {
            if now {
                self.driver.submit()
            } else {
                Ok(())
            }
        } else {
            self.driver.cancel_behind(a, now)
        };
        if let Err(e) = r {
            log::warn!("ringport: stopping a multishot receive failed: {e}");
        }
    }

    /// The last reference to a socket with multishot receive `a` armed is
    /// going (its `Drop`): stops the receive. True if its descriptor may
    /// close now (the kernel took every queued entry, so none names it by
    /// number any more); else it is given `fd`, and closes it when the
    /// receive's last completion comes.
    pub(crate) fn anchor_dropped(&self, a: u64, fd: OwnedFd, fixed: bool) -> Option<OwnedFd> {
        if let Err(e) = self.driver.cancel_behind(a, true) {
            log::warn!("ringport: stopping a multishot receive failed: {e}");
        }
        if self.driver.all_submitted() {
            return Some(fd);
        }
        lock(&self.orphans).push((a, fd, fixed));
        None
    }

    /// Closes a handle's descriptor; `fixed`: it is in the ring's file table
    /// (`Handle::is_fixed`), whose slot is cleared first.
    pub(crate) fn close_fd(&self, fd: OwnedFd, fixed: bool) {
        if !fixed {
            return drop(fd);
        }
        // Counted in flight first: one left for the owner of a single-thread
        // port makes it enter the kernel (as for an operation another
        // thread starts), where the driver's wake-up finds it.
        self.core.op_started();
        if self.driver.close_fixed(fd) {
            self.core.ops_done(1);
        }
    }

    /// The descriptors other threads left for this owner to close
    /// (`close_fd`), closed, and out of flight.
    #[inline]
    fn owner_closes(&self) {
        let n = self.driver.owner_closes();
        if n > 0 {
            self.core.ops_done(n);
        }
    }

    /// Queues one completion made outside a reap, and hands it out.
    fn queue_done(&self, entry: Entry) {
        let queued = self.core.enqueue(std::iter::once(entry));
        self.core.ops_done(1);
        if queued && self.core.hand_out(None) {
            self.driver.wake();
        }
    }

    #[inline]
    pub(crate) fn post(&self, packet: Packet) -> io::Result<()> {
        if self.core.is_closed() {
            return Err(port_closed());
        }
        if self.core.push_posted(packet) {
            self.driver.wake();
        }
        Ok(())
    }

    pub(crate) fn cancel(&self, handle: &Handle, op: Option<OpId>) -> io::Result<()> {
        if !handle.belongs_to(self) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "handle is associated with another port",
            ));
        }
        let mut tokens = lock(&self.ops).inflight(handle).to_vec();
        // A socket's multishot receive is the port's, not an operation.
        tokens.retain(|&x| x & ANCHOR == 0);
        if let Some(t) = op.map(OpId::raw) {
            tokens.retain(|&x| x == t);
        }
        if tokens.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such operation in flight",
            ));
        }
        self.cancel_tokens(&tokens);
        Ok(())
    }

    /// `Handle::close` of a handle of this port, after it set its flag: the
    /// descriptor if nothing is in flight, else the tokens to cancel.
    pub(crate) fn closing(&self, handle: &Handle) -> (Option<OwnedFd>, Vec<u64>) {
        let mut ops = lock(&self.ops);
        // SAFETY: under the operations lock; the borrow ends here.
        let a = unsafe { handle.multi_unchecked() }.anchor;
        if a != 0 {
            // The socket's own multishot receive must not hold its close:
            // stop it now, and once the kernel took its entries (which name
            // the socket by number), the descriptor no longer waits for it.
            self.stop_anchor(&mut ops, a, true);
            if self.driver.all_submitted() {
                ops.inflight(handle).remove(a);
            }
        }
        handle.closing(ops.inflight(handle))
    }

    /// Asks the driver to cancel each token; operations that never reached the
    /// kernel complete here, as cancelled.
    pub(crate) fn cancel_tokens(&self, tokens: &[u64]) {
        let mut never_sent = Vec::new();
        let targets: Vec<(u64, Arc<Handle>)> = {
            let mut ops = lock(&self.ops);
            for &a in tokens.iter().filter(|&&t| t & ANCHOR != 0) {
                self.stop_anchor(&mut ops, a, false);
            }
            tokens
                .iter()
                .filter(|&&t| t & ANCHOR == 0)
                .filter_map(|&t| {
                    let (op, staged) = ops.with_staged(t)?;
                    op.cancel_requested = true;
                    // Waiting for its socket's multishot receive: not in the
                    // kernel.
                    let waiting = matches!(op.req, Request::RecvPooled { .. })
                        // SAFETY: under the operations lock; the borrow ends here.
                        && unsafe { op.handle.multi_unchecked() }.unwait(t);
                    if waiting {
                        never_sent.push((t, -libc::ECANCELED));
                        return None;
                    }
                    // Still staged: it never reached the kernel.
                    if let Some(i) = staged.iter().position(|e| e.get_user_data() == t) {
                        staged.remove(i);
                        never_sent.push((t, -libc::ECANCELED));
                        return None;
                    }
                    Some((t, op.handle.clone()))
                })
                .collect()
        };
        for (t, handle) in &targets {
            match self.driver.cancel(*t, handle) {
                Ok(true) => never_sent.push((*t, -libc::ECANCELED)),
                Ok(false) => {}
                Err(e) => log::warn!("ringport: cancel failed: {e}"),
            }
        }
        if let Err(e) = self.driver.submit() {
            log::warn!("ringport: submitting cancellations failed: {e}");
        }
        drop(targets);
        let mut s = Scratch::take();
        s.raw.extend(never_sent);
        self.complete(&mut s, None);
        s.put_back();
    }

    /// Enters the kernel with what is queued, staged entries first.
    pub(crate) fn submit(&self) -> io::Result<()> {
        self.flush_staged();
        self.driver.submit()
    }

    /// Moves the entries threads staged into the kernel's queue.
    fn flush_staged(&self) {
        if !self.staged.load(Ordering::Relaxed) {
            return;
        }
        let mut ops = lock(&self.ops);
        self.staged.store(false, Ordering::Relaxed);
        // SAFETY: each staged entry's operation is boxed in `ops`, as for
        // `start`.
        unsafe { self.driver.flush(&mut ops.staged) };
    }

    /// Reaps what the kernel finished and queues it, handing it out to
    /// waiters; `me` is the calling thread if it is one of them.
    fn reap(&self, wait: Wait<'_>, me: Option<&Arc<Waiter>>) -> io::Result<()> {
        self.owner_closes();
        if let Wait::For(..) = wait {
            // A poller about to sleep takes what running threads staged, so
            // that none waits for a dequeue of theirs that may be far off.
            self.flush_staged();
        }
        let mut s = Scratch::take();
        let r = self.reap_into(wait, &mut s);
        self.complete(&mut s, me);
        s.put_back();
        // The wake-up may have been for these.
        self.owner_closes();
        r
    }

    /// Turns `(token, result)` pairs into completions and queues them, handing
    /// them out. `filled` holds the buffers the kernel picked for pooled
    /// receives.
    fn complete(&self, s: &mut Scratch, me: Option<&Arc<Waiter>>) {
        self.finish_reaped(s);
        let n = s.done.len();
        if n == 0 {
            return;
        }
        let queued = self.core.enqueue(s.done.drain(..));
        // Out of flight only once queued: a caller that waits for no
        // operation in flight and then posts finds its packet behind them.
        self.core.ops_done(n);
        if queued && self.core.hand_out(me) {
            self.driver.wake();
        }
    }

    /// The first half of [`Port::complete`]: takes the reaped operations back
    /// from the kernel's side into `s.done` and tells their handles; they are
    /// not queued yet, and still count in flight (the caller calls
    /// `Core::ops_done` once they are queued or taken).
    fn finish_reaped(&self, s: &mut Scratch) {
        let Scratch { raw, filled, done } = s;
        self.finish_parts(raw, filled, done);
    }

    /// Reaps into `s` and takes the operations back (`finish_reaped`),
    /// before any later reap's.
    fn reap_into(&self, wait: Wait<'_>, s: &mut Scratch) -> io::Result<()> {
        let Scratch { raw, filled, done } = s;
        let mut finish = |raw: &mut Vec<(u64, i32)>, filled: &mut Filled| {
            self.finish_parts(raw, filled, done);
        };
        self.driver.reap(wait, raw, filled, &mut finish)
    }

    /// [`Port::finish_reaped`] on the parts of a `Scratch`.
    fn finish_parts(&self, raw: &mut Vec<(u64, i32)>, filled: &mut Filled, done: &mut Vec<Entry>) {
        if raw.is_empty() {
            return;
        }
        // Descriptors whose last operation this was, closed after the lock.
        let mut last = Vec::new();
        {
            let mut ops = lock(&self.ops);
            let mut next = 0;
            for (t, res) in raw.drain(..) {
                let picked = pick(filled, &mut next, t);
                if t & ANCHOR != 0 {
                    let buf = picked.map(|(buf, _)| buf);
                    self.anchor_reaped(&mut ops, t, res, buf, done, &mut last);
                    continue;
                }
                let op = match self.resubmit(&mut ops, t, res) {
                    Ok(()) => None,
                    Err(res) => ops.take(t).map(|op| (op, res)),
                };
                let Some((mut op, res)) = op else {
                    if let Some((buf, _)) = picked {
                        self.pool.give(buf);
                    }
                    continue;
                };
                if let Some(fd) = op.handle.op_done(t, ops.inflight(&op.handle)) {
                    last.push((op.handle.clone(), fd));
                }
                if let Some((buf, left)) = picked {
                    op.handle.set_data_left(left);
                    op.fill(buf, &self.pool);
                }
                done.push(Entry::Done(op, t, res));
            }
        }
        for (_, buf, _) in filled.drain(..) {
            if buf.capacity() > 0 {
                self.pool.give(buf);
            }
        }
        for (handle, fd) in last {
            handle.release_fd(Some(fd));
        }
    }

    /// io_uring ties each request to the thread that submitted it and cancels
    /// it when that thread exits; Windows (since Vista) keeps I/O on a port's
    /// handles going when the issuing thread exits, and so does ringport: an
    /// `-ECANCELED` the port did not ask for is submitted again, from this
    /// living thread. Nothing was transferred (the kernel checks before it
    /// moves data). Likewise a pooled receive that found the buffer ring
    /// empty (`-ENOBUFS`: more receives landed between two reaps than the ring
    /// holds) goes again, now that the reap has refilled the ring. `Err(res)`
    /// means: complete it with `res`.
    fn resubmit(&self, ops: &mut Ops, t: u64, res: i32) -> Result<(), i32> {
        if !(res == -libc::ECANCELED || res == -libc::ENOBUFS) || ops.closed {
            return Err(res);
        }
        let Some((op, staged)) = ops.with_staged(t) else {
            return Err(res);
        };
        let pooled = matches!(op.req, Request::RecvPooled { .. });
        if res == -libc::ENOBUFS && !pooled {
            return Err(res);
        }
        if op.cancel_requested || op.resubmits >= RESUBMIT_LIMIT || op.handle.is_closed() {
            return Err(res);
        }
        op.resubmits += 1;
        // SAFETY: `op` stays boxed in `self.ops` until its token is reaped, as
        // for its first submission in `start`; so do the staged entries'.
        match unsafe { self.driver.start(op, t, true, staged) } {
            Ok(()) => Ok(()),
            Err(e) => Err(-e.raw_os_error().unwrap_or(libc::ECANCELED)),
        }
    }

    /// Gives back the calling thread's concurrency slot.
    pub(crate) fn release_slot(&self, me: Option<&Arc<Waiter>>) {
        if self.core.release(me) {
            self.driver.wake();
        }
    }

    pub(crate) fn enter_blocking(self: &Arc<Self>) -> bool {
        if !thread::is_running_on(self) {
            return false;
        }
        thread::take_running();
        self.release_slot(Some(&thread::waiter()));
        if let Err(e) = self.submit() {
            log::warn!("ringport: submit before blocking failed: {e}");
        }
        true
    }

    pub(crate) fn leave_blocking(self: &Arc<Self>) {
        self.core.reacquire();
        thread::set_running(self);
    }

    /// `GetQueuedCompletionStatus`.
    #[inline]
    pub(crate) fn get(self: &Arc<Self>, timeout: Option<Duration>) -> Result<Completion, GetError> {
        // The plain hand-off first (a running thread, nothing in flight, a
        // packet queued): the entry goes from the queue straight into the
        // completion, where each copy of it in between stalled on store
        // forwarding.
        if self.core.inflight() == 0 && thread::is_running_on(self) {
            if let Some(e) = self.core.take_one_again() {
                return Ok(e.into_completion());
            }
        }
        let take = |core: &Core, reaped: &mut Vec<Entry>| match reaped.pop() {
            Some(e) => Some(e),
            None => core.take_one_again(),
        };
        match self.get_fast(timeout, 1, take) {
            Ok(Some(e)) => Ok(e.into_completion()),
            Ok(None) => self.get_one_slow(timeout),
            Err(e) => Err(e),
        }
    }

    /// [`Port::get`] the slow way; out of line, so that the fast way builds
    /// its completion straight into the caller's place.
    #[inline(never)]
    fn get_one_slow(self: &Arc<Self>, timeout: Option<Duration>) -> Result<Completion, GetError> {
        let mut out = Vec::with_capacity(1);
        self.get_slow(&mut out, 1, timeout)?;
        out.pop().ok_or(GetError::TimedOut)
    }

    /// `GetQueuedCompletionStatusEx`.
    pub(crate) fn get_many(
        self: &Arc<Self>,
        out: &mut Vec<Completion>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        let take = |core: &Core, reaped: &mut Vec<Entry>| {
            if reaped.is_empty() {
                return core.take_again(out, max);
            }
            let n = reaped.len();
            out.reserve(n);
            reaped.drain(..).for_each(|e| e.push_into(out));
            Some(n)
        };
        if let Some(n) = self.get_fast(timeout, max, take)? {
            return Ok(n);
        }
        self.get_slow(out, max, timeout)
    }

    /// The first half of every dequeue: submit what this thread batched and
    /// reap what the kernel finished, then, for a thread that runs on this
    /// port, the lock-free way: it takes queued packets again at once and
    /// keeps its slot. With nothing queued and nothing in flight it watches
    /// the queue for a moment first (crossbeam's back-off, as a channel's
    /// receiver does), so a stream of posts from another busy thread costs no
    /// lock and no sleep. `take` takes at most `max`, from the entries this
    /// thread just reaped if it was given any, else from the queue.
    /// `Ok(None)`: take the slow way.
    #[inline]
    fn get_fast<T>(
        &self,
        timeout: Option<Duration>,
        max: usize,
        mut take: impl FnMut(&Core, &mut Vec<Entry>) -> Option<T>,
    ) -> Result<Option<T>, GetError> {
        // With nothing in flight there is nothing to submit (every entry
        // belongs to an operation, or is a wake-up, which goes at once) and
        // nothing to reap: a pure hand-off skips the kernel's rings. A stale
        // wake-up left in the completion queue is drained by the next poller
        // before it sleeps.
        let running = thread::is_running_on(self);
        if self.core.inflight() > 0 {
            return self.get_busy(running, max, take);
        }
        if !running {
            return Ok(None);
        }
        let no_spin = timeout == Some(Duration::ZERO);
        let backoff = Backoff::new();
        let mut none = Vec::new();
        loop {
            if let Some(t) = take(&self.core, &mut none) {
                return Ok(Some(t));
            }
            if no_spin || backoff.is_completed() {
                return Ok(None);
            }
            backoff.snooze();
        }
    }

    /// [`Port::get_fast`] with operations in flight: submit, reap without
    /// waiting, then take once.
    #[inline(never)]
    fn get_busy<T>(
        &self,
        running: bool,
        max: usize,
        mut take: impl FnMut(&Core, &mut Vec<Entry>) -> Option<T>,
    ) -> Result<Option<T>, GetError> {
        self.submit().map_err(GetError::Os)?;
        if !running {
            // `reap` closes what other threads left for the owner.
            if let Err(e) = self.reap(Wait::No, None) {
                self.hand_out();
                return Err(GetError::Os(e));
            }
            return Ok(None);
        }
        self.owner_closes();
        // What a running thread reaps here is its to take first: it has
        // given back its slot and takes again at once (`KeRemoveQueue`),
        // so no waiter is woken for packets this thread takes itself. When
        // nothing is queued ahead of them, the first `max` go straight to it,
        // as if queued and taken at once (the queue would hand it exactly
        // those), and the rest are queued.
        let mut s = Scratch::take();
        let r = self.reap_into(Wait::No, &mut s);
        let reaped = s.done.len();
        let direct = match r {
            Ok(()) => self.core.take_reaped(reaped, max),
            Err(_) => 0,
        };
        if reaped > direct {
            self.core.enqueue(s.done.drain(direct..));
        }
        let took = match r {
            Ok(()) => Ok(take(&self.core, &mut s.done)),
            Err(e) => Err(GetError::Os(e)),
        };
        debug_assert!(s.done.is_empty(), "`take` takes every entry handed to it");
        if reaped > 0 {
            // Queued or taken: out of flight (see `Port::complete`).
            self.core.ops_done(reaped);
        }
        s.put_back();
        // What this thread left (more than it takes, or all when it may
        // not run) goes to the waiters.
        self.hand_out();
        took
    }

    /// Hands queued packets to the waiters (see `Core::hand_out`).
    fn hand_out(&self) {
        if self.core.hand_out(None) {
            self.driver.wake();
        }
    }

    /// The second half: give back the slot, then take packets or wait for them.
    fn get_slow(
        self: &Arc<Self>,
        out: &mut Vec<Completion>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let me = thread::waiter();
        let holding = match thread::take_running() {
            Some(prev) if Arc::ptr_eq(&prev, self) => true,
            Some(prev) => {
                prev.release_slot(Some(&me));
                let _ = prev.submit();
                false
            }
            None => false,
        };
        let poll_only = timeout == Some(Duration::ZERO);
        match self.core.arrive(&me, out, max, poll_only, holding) {
            Arrival::Took(n) => {
                thread::set_running(self);
                Ok(n)
            }
            Arrival::Empty => Err(GetError::TimedOut),
            Arrival::Closed => Err(GetError::Closed),
            Arrival::Queued => self.wait(&me, out, deadline),
        }
    }

    /// Waits on the stack, or in the kernel as the poller, until served.
    fn wait(
        self: &Arc<Self>,
        me: &Arc<Waiter>,
        out: &mut Vec<Completion>,
        deadline: Option<Instant>,
    ) -> Result<usize, GetError> {
        // Before a waiter sleeps in the futex it watches its slot for a moment:
        // a packet handed over within microseconds then costs no wake-up.
        let backoff = Backoff::new();
        loop {
            let status = {
                let mut slot = me.slot();
                match slot.status {
                    Status::Served => {
                        let n = slot.got.len();
                        out.append(&mut slot.got);
                        slot.status = Status::Idle;
                        drop(slot);
                        thread::set_running(self);
                        return Ok(n);
                    }
                    Status::Closed => {
                        slot.status = Status::Idle;
                        return Err(GetError::Closed);
                    }
                    s => s,
                }
            };
            let remaining = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => match self.give_up(me) {
                        Status::Served | Status::Closed => continue,
                        _ => return Err(GetError::TimedOut),
                    },
                },
            };
            if status == Status::Polling {
                let still = || me.status() == Status::Polling;
                if let Err(e) = self.reap(Wait::For(remaining, &still), Some(me)) {
                    if self.give_up(me) == Status::Idle {
                        return Err(GetError::Os(e));
                    }
                }
            } else if !backoff.is_completed() {
                backoff.snooze();
            } else if self.core.poller_away() {
                // A running thread holds the poller's role: sleep at most
                // AWAY_LIMIT, then stand in for it if it is still away.
                std::thread::park_timeout(remaining.map_or(AWAY_LIMIT, |r| r.min(AWAY_LIMIT)));
                if self.core.poller_away() {
                    self.core.take_over(me);
                }
            } else {
                match remaining {
                    None => std::thread::park(),
                    Some(r) => std::thread::park_timeout(r),
                }
            }
        }
    }

    fn give_up(&self, me: &Arc<Waiter>) -> Status {
        let (status, wake) = self.core.leave(me);
        if wake {
            self.driver.wake();
        }
        status
    }

    /// Closes the port (R12): wakes every waiter, cancels every operation and
    /// waits for the kernel to give each one back before its memory is freed.
    pub(crate) fn close(&self) {
        let tokens = {
            let mut ops = lock(&self.ops);
            if ops.closed {
                return;
            }
            ops.closed = true;
            ops.tokens()
        };
        let (discarded, wake) = self.core.close();
        if wake {
            self.driver.wake();
        }
        drop(discarded);
        self.driver.adopt();
        self.cancel_tokens(&tokens);
        self.drain();
    }

    /// Waits for the kernel to give back every operation (cancelled by
    /// `close`) before their memory is freed, leaking it after `DRAIN_LIMIT`.
    /// Also the owner's part of a close by another thread of a single-thread
    /// port: only the owner enters the kernel there.
    pub(crate) fn drain(&self) {
        let limit = Instant::now() + DRAIN_LIMIT;
        let armed = || !lock(&self.ops).anchors.is_empty();
        while (self.core.inflight() > 0 || armed()) && Instant::now() < limit {
            let slice = Some(Duration::from_millis(20));
            if let Err(e) = self.reap(Wait::For(slice, &|| true), None) {
                log::warn!("ringport: draining the port failed: {e}");
                break;
            }
        }
        let closed = self.driver.drop_file_table();
        if closed > 0 {
            self.core.ops_done(closed);
        }
        let left = self.core.inflight() + lock(&self.ops).anchors.len();
        if left > 0 {
            // The kernel still holds these buffers: leaking them is the only
            // safe choice once we stop waiting.
            self.driver.leak_buffers();
            let mut ops = lock(&self.ops);
            for op in ops.slab.drain() {
                std::mem::forget(op);
            }
            for h in ops.anchors.drain() {
                std::mem::forget(h);
            }
            log::error!("ringport: {left} operations did not finish after cancellation; their memory is leaked");
        }
    }

    /// A dequeue of a single-thread port's owner found it closed (by another
    /// thread, which waits for this): give the cancelled operations back.
    pub(crate) fn owner_drain(&self) {
        self.drain();
    }

    /// A single-thread port's first dequeue (see `Builder::single_thread`).
    pub(crate) fn claim(&self) -> io::Result<()> {
        if self.is_closed() {
            // Nothing to claim: the dequeue reports the close.
            return Ok(());
        }
        self.driver.claim()
    }

    /// The owner of a single-thread port exits: close the port and wait for
    /// its operations here, where the kernel still takes this thread's calls.
    pub(crate) fn owner_exit(&self) {
        self.close();
        self.drain();
    }
}

/// How [`Port::start_multi`] started a pooled receive.
enum Multishot {
    /// It waits for its socket's multishot receive.
    Waiting,
    /// It took a parked result: its completion, and the descriptor it
    /// released (a close came meanwhile).
    Done(Entry, Option<OwnedFd>),
    /// No multishot receive could be armed: it goes to the kernel alone.
    NotArmed,
}

/// The vectors of one reap, kept by each thread between reaps so that a busy
/// port allocates none. Taken out while in use, so a reap inside a reap (none
/// is known) would only allocate afresh.
#[derive(Default)]
struct Scratch {
    raw: Vec<(u64, i32)>,
    filled: Filled,
    done: Vec<Entry>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Option<Box<Scratch>>> = const { std::cell::Cell::new(None) };
}

impl Scratch {
    fn take() -> Box<Scratch> {
        SCRATCH
            .try_with(std::cell::Cell::take)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn put_back(self: Box<Self>) {
        let _ = SCRATCH.try_with(|c| c.set(Some(self)));
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.close();
    }
}

fn port_closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "completion port is closed")
}

/// What the ring handed token `t`'s pooled receive, if anything: taken out of
/// `filled` (its place left empty). The driver files a picked buffer as it
/// reports its completion, so `filled` is in the order of the reaped
/// completions and `t`'s buffer, if it has one, is the entry at `next`: a
/// completion without one (a send, say) costs one comparison, not a search.
#[inline]
fn pick(filled: &mut Filled, next: &mut usize, t: u64) -> Option<(Vec<u8>, bool)> {
    let f = filled.get_mut(*next).filter(|f| f.0 == t)?;
    *next += 1;
    debug_assert!(f.1.capacity() > 0, "each buffer is picked once");
    Some((std::mem::take(&mut f.1), f.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        for (index, gen) in [(0, 1), (7, 42), (0xffff_ffff, GEN_MASK), (123_456, 0)] {
            assert_eq!(split(token(index, gen)), (index, gen));
        }
        assert_eq!(token(3, 2), 0x0000_0002_0000_0003);
    }

    #[test]
    fn tokens_never_use_the_top_bit() {
        // The driver keeps top-bit tokens for its own entries (WAKE, CANCEL).
        assert_eq!(token(usize::MAX & 0xffff_ffff, GEN_MASK) >> 63, 0);
    }

    fn ops() -> Ops {
        Ops {
            slab: Slab::new(),
            next_gen: 0,
            started: 0,
            staged: Vec::new(),
            anchors: Slab::new(),
            closed: false,
        }
    }

    fn op(user: u64) -> Box<Op> {
        let (_a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let owned = Owned::from_io(std::fs::File::from(std::os::fd::OwnedFd::from(b))).unwrap();
        let handle = Arc::new(Handle::new(owned, 0, std::sync::Weak::new()).unwrap());
        Op::new(Request::Send(Vec::new()), user, handle)
    }

    #[test]
    fn slab_reuse_gets_a_new_generation() {
        let mut ops = ops();
        let (t1, _) = ops.insert(op(1));
        let op1 = ops.take(t1).expect("live token");
        assert_eq!(op1.user, 1);
        // Same slot, new generation: the stale token names nothing.
        let (t2, _) = ops.insert(op(2));
        assert_eq!(split(t1).0, split(t2).0, "the slot is reused");
        assert_ne!(t1, t2);
        assert!(ops.take(t1).is_none());
        assert!(ops.with_staged(t1).is_none());
        assert_eq!(ops.with_staged(t2).map(|(o, _)| o.user), Some(2));
        assert_eq!(ops.tokens(), vec![t2]);
        assert_eq!(ops.take(t2).map(|o| o.user), Some(2));
        assert!(ops.take(t2).is_none(), "taken once");
    }

    #[test]
    fn generations_wrap_within_31_bits() {
        let mut ops = ops();
        ops.next_gen = GEN_MASK;
        let (t, _) = ops.insert(op(1));
        assert_eq!(split(t).1, 0);
        assert_eq!(t >> 63, 0);
    }
}
