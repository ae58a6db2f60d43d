//! Associated descriptors: deferred close (R11) and one port per open file (R2).

use std::cell::UnsafeCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::epoll::Source;
use super::port::Port;
use super::waiters::lock;
use crate::handle::HandleKind;

/// A descriptor taken from a std or socket2 type, with what it is.
#[derive(Debug)]
pub(crate) struct Owned {
    fd: OwnedFd,
    kind: HandleKind,
}

/// Types whose descriptor can be associated.
pub(crate) trait IntoOwned {
    fn into_owned(self) -> io::Result<Owned>;
}

impl IntoOwned for std::net::TcpListener {
    fn into_owned(self) -> io::Result<Owned> {
        Ok(Owned::new(self.into(), HandleKind::Listener))
    }
}

impl IntoOwned for std::net::TcpStream {
    fn into_owned(self) -> io::Result<Owned> {
        Ok(Owned::new(self.into(), HandleKind::Stream))
    }
}

impl IntoOwned for std::fs::File {
    fn into_owned(self) -> io::Result<Owned> {
        Ok(Owned::new(self.into(), HandleKind::File))
    }
}

impl IntoOwned for socket2::Socket {
    fn into_owned(self) -> io::Result<Owned> {
        let kind = if self.listen_backlog_set()? {
            HandleKind::Listener
        } else if self.peer_addr().is_ok() {
            HandleKind::Stream
        } else {
            HandleKind::Socket
        };
        Ok(Owned::new(self.into(), kind))
    }
}

/// `socket2` has no direct "is listening" query; `SO_ACCEPTCONN` answers it.
trait ListenQuery {
    fn listen_backlog_set(&self) -> io::Result<bool>;
}

impl ListenQuery for socket2::Socket {
    fn listen_backlog_set(&self) -> io::Result<bool> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of the sizes given, and the
        // descriptor is owned by `self` for the duration of the call.
        let r = unsafe {
            libc::getsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(v != 0)
    }
}

impl Owned {
    fn new(fd: OwnedFd, kind: HandleKind) -> Owned {
        Owned { fd, kind }
    }

    /// Takes the descriptor out of a std or socket2 value.
    pub(crate) fn from_io<T: IntoOwned>(io: T) -> io::Result<Owned> {
        io.into_owned()
    }
}

/// The identity of an open file description: (device, inode).
type FileId = (u64, u64);

/// Every associated descriptor in the process, by open file identity. A
/// socket's identity is its own, so each has one entry of a few bytes, with
/// no allocation of its own (an idle connection's bytes are the budget that
/// counts, DESIGN.md section 5); only two opens of one regular file share an
/// identity, and the second and later of them are kept in `more`.
#[derive(Default)]
struct Registry {
    first: HashMap<FileId, RawFd>,
    more: HashMap<FileId, Vec<RawFd>>,
}

impl Registry {
    fn fds(&self, id: &FileId) -> impl Iterator<Item = RawFd> + '_ {
        let more = self.more.get(id).map(Vec::as_slice).unwrap_or_default();
        self.first
            .get(id)
            .copied()
            .into_iter()
            .chain(more.iter().copied())
    }

    fn insert(&mut self, id: FileId, raw: RawFd) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.first.entry(id) {
            e.insert(raw);
        } else {
            self.more.entry(id).or_default().push(raw);
        }
    }

    fn remove(&mut self, id: FileId, raw: RawFd) {
        let more = self.more.get_mut(&id);
        if self.first.get(&id) == Some(&raw) {
            match more.and_then(Vec::pop) {
                Some(next) => self.first.insert(id, next),
                None => self.first.remove(&id),
            };
        } else if let Some(fds) = more {
            fds.retain(|&f| f != raw);
        }
        if self.more.get(&id).is_some_and(Vec::is_empty) {
            self.more.remove(&id);
        }
    }
}

fn registry() -> &'static Mutex<Registry> {
    static REG: OnceLock<Mutex<Registry>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

fn file_id(fd: BorrowedFd<'_>) -> io::Result<FileId> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a live descriptor and `st` is valid for writes.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_dev, st.st_ino))
}

/// True when both descriptors refer to one open file description.
fn same_description(a: RawFd, b: RawFd) -> bool {
    if a == b {
        return true;
    }
    // SAFETY: kcmp only compares kernel objects of this process; no memory is passed.
    let pid = unsafe { libc::getpid() };
    // SAFETY: as above; KCMP_FILE (0) with two descriptor numbers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, 0, a, b) };
    // Without kcmp (seccomp, old kernel), sockets are still told apart by inode;
    // two opens of one regular file cannot be, so they are taken as distinct.
    r == 0
}

/// Records the descriptor, refusing one whose open file is already associated.
fn register(fd: BorrowedFd<'_>) -> io::Result<()> {
    let id = file_id(fd)?;
    let raw = fd.as_raw_fd();
    let mut reg = lock(registry());
    if reg.fds(&id).any(|other| same_description(other, raw)) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "this socket or file is already associated with a completion port",
        ));
    }
    reg.insert(id, raw);
    Ok(())
}

/// Forgets the descriptor, still open, that [`register`] recorded. Its
/// identity is asked again (an open descriptor's does not change), so a
/// handle does not keep 16 bytes for it.
fn unregister(fd: BorrowedFd<'_>, raw: RawFd) {
    match file_id(fd) {
        Ok(id) => lock(registry()).remove(id, raw),
        Err(e) => log::warn!("ringport: fstat of an associated descriptor failed: {e}"),
    }
}

/// The descriptor, until it is closed.
#[derive(Debug)]
struct HandleState {
    fd: Option<OwnedFd>,
}

/// An associated descriptor.
#[derive(Debug)]
pub(crate) struct Handle {
    key: u64,
    kind: HandleKind,
    raw: RawFd,
    port: Weak<Port>,
    state: Mutex<HandleState>,
    /// Set once by `close`, before it looks at what is in flight.
    closing: AtomicBool,
    /// A hint for the next pooled receive on io_uring: the last one left data
    /// in the socket (or none has completed yet), so try at once rather than
    /// wait for readability first.
    data_left: AtomicBool,
    /// The io_uring driver put the descriptor in its ring's file table
    /// (`Uring::fix`): entries name it there, and closing it clears the slot.
    fixed: AtomicBool,
    /// Tokens of the operations in flight. Touched only under the port's
    /// operations lock (through `Ops::inflight`), which `start` and the reaper
    /// hold anyway, so starting and finishing an operation take no lock of
    /// the handle's.
    inflight: UnsafeCell<Tokens>,
    /// The io_uring multishot receive behind this socket's pooled receives
    /// (see [`Multi`]); under the port's operations lock, as `inflight`.
    /// Inline, not boxed: a reap reaches it for every received message, and
    /// the box's load drew 8% of `finish_parts`' user-time samples under
    /// `perf record -e cpu-clock:u` (no change in CPU per message could be
    /// measured either way: BENCHMARKS.md, run BR). A socket with a multishot
    /// receive pays the same bytes as before (its box was as big); one that
    /// never arms one (single-shot, epoll, files) pays 32 more.
    multi: UnsafeCell<Multi>,
    /// The epoll registration of a socket on an epoll port.
    readiness: OnceLock<Arc<Source>>,
}

// 152 bytes with the `Arc`'s counts: glibc's 160-byte size class. Every
// connection holds one, so keep it there.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Handle>() <= 136);

// SAFETY: `inflight` and `multi` are only reached through
// `inflight_unchecked` and `multi_unchecked`, whose callers hold the port's
// operations lock; every other field is Sync.
unsafe impl Sync for Handle {}

impl Handle {
    /// Registers `owned` (R2) as a handle of `port`.
    pub(crate) fn new(owned: Owned, key: u64, port: Weak<Port>) -> io::Result<Handle> {
        register(owned.fd.as_fd())?;
        Ok(Handle {
            key,
            kind: owned.kind,
            raw: owned.fd.as_raw_fd(),
            port,
            state: Mutex::new(HandleState { fd: Some(owned.fd) }),
            closing: AtomicBool::new(false),
            data_left: AtomicBool::new(true),
            fixed: AtomicBool::new(false),
            inflight: UnsafeCell::new(Tokens::default()),
            multi: UnsafeCell::new(Multi::default()),
            readiness: OnceLock::new(),
        })
    }

    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    pub(crate) fn kind(&self) -> HandleKind {
        self.kind
    }

    /// The descriptor number (valid until the handle is closed and its last
    /// operation has completed).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.raw
    }

    /// The epoll registration, on an epoll port.
    pub(crate) fn readiness(&self) -> Option<&Arc<Source>> {
        self.readiness.get()
    }

    /// Records the epoll registration made at association.
    pub(crate) fn set_readiness(&self, src: Arc<Source>) -> io::Result<()> {
        self.readiness
            .set(src)
            .map_err(|_| io::Error::other("handle registered twice"))
    }

    pub(crate) fn belongs_to(&self, port: &Port) -> bool {
        std::ptr::eq(self.port.as_ptr(), port)
    }

    #[allow(clippy::mut_from_ref)] // exclusive by the port's lock, see below
    /// The tokens in flight.
    ///
    /// # Safety
    ///
    /// The caller holds the operations lock of this handle's port, and keeps
    /// no other reference from this function while it uses this one.
    pub(crate) unsafe fn inflight_unchecked(&self) -> &mut Tokens {
        // SAFETY: exclusive by this function's contract.
        unsafe { &mut *self.inflight.get() }
    }

    #[allow(clippy::mut_from_ref)] // exclusive by the port's lock, see below
    /// The multishot receive's state.
    ///
    /// # Safety
    ///
    /// As for [`inflight_unchecked`](Self::inflight_unchecked): the caller
    /// holds the port's operations lock and keeps no other reference from
    /// this function while it uses this one.
    pub(crate) unsafe fn multi_unchecked(&self) -> &mut Multi {
        // SAFETY: exclusive by this function's contract.
        unsafe { &mut *self.multi.get() }
    }

    /// Records an operation about to start in `inflight` (this handle's,
    /// under the port's lock), or an error if the handle is closed. From then
    /// on [`raw_fd`](Self::raw_fd) stays valid until
    /// [`op_done`](Self::op_done) for this token.
    pub(crate) fn op_begin(&self, token: u64, inflight: &mut Tokens) -> io::Result<()> {
        // `close` sets the flag before it takes the port's lock to read the
        // tokens: an operation recorded after that read sees it.
        if self.closing.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        inflight.push(token);
        Ok(())
    }

    /// The kernel is done with operation `token` (`inflight` as for
    /// `op_begin`). Returns the descriptor if the handle was closed and this
    /// was the last operation: the caller closes it with
    /// [`release_fd`](Self::release_fd), after the port's lock.
    pub(crate) fn op_done(&self, token: u64, inflight: &mut Tokens) -> Option<OwnedFd> {
        inflight.remove(token);
        if self.closing.load(Ordering::Acquire) && inflight.is_empty() {
            lock(&self.state).fd.take()
        } else {
            None
        }
    }

    /// See `data_left`: true until a pooled receive said the socket was empty.
    pub(crate) fn data_left(&self) -> bool {
        self.data_left.load(Ordering::Relaxed)
    }

    pub(crate) fn set_data_left(&self, left: bool) {
        self.data_left.store(left, Ordering::Relaxed);
    }

    /// See `fixed`.
    #[inline]
    pub(crate) fn is_fixed(&self) -> bool {
        self.fixed.load(Ordering::Relaxed)
    }

    /// Set once, at association, before any operation can be started.
    pub(crate) fn set_fixed(&self) {
        self.fixed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(port) = self.port.upgrade() else {
            // No port, so nothing in flight: close now.
            let fd = lock(&self.state).fd.take();
            self.release_fd(fd);
            return;
        };
        let (fd, tokens) = port.closing(self);
        self.release_fd(fd);
        if !tokens.is_empty() {
            port.cancel_tokens(&tokens);
        }
    }

    /// Under the port's lock (`inflight` as for `op_begin`), once `close` set
    /// the flag: the descriptor if nothing is in flight, else the tokens to
    /// cancel (the last one's completion closes it).
    pub(crate) fn closing(&self, inflight: &Tokens) -> (Option<OwnedFd>, Vec<u64>) {
        if inflight.is_empty() {
            (lock(&self.state).fd.take(), Vec::new())
        } else {
            (None, inflight.to_vec())
        }
    }

    /// Closes the descriptor [`op_done`](Self::op_done) or
    /// [`closing`](Self::closing) handed back, if any.
    pub(crate) fn release_fd(&self, fd: Option<OwnedFd>) {
        if let Some(fd) = fd {
            // Unregister first: once closed, the number may be reused at once.
            let port = self.port.upgrade();
            if let (Some(src), Some(port)) = (self.readiness.get(), &port) {
                port.forget(src);
            }
            unregister(fd.as_fd(), self.raw);
            match port {
                // Without the port its ring, and the file table, are gone.
                Some(port) => port.close_fd(fd, self.is_fixed()),
                None => drop(fd),
            }
        }
    }

    pub(crate) fn with_socket<R>(
        &self,
        f: impl FnOnce(socket2::SockRef<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        let st = lock(&self.state);
        match &st.fd {
            Some(fd) if !self.is_closed() => f(socket2::SockRef::from(fd)),
            _ => Err(closed_error()),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let fd = lock(&self.state).fd.take();
        let anchor = self.multi.get_mut().anchor;
        let port = if anchor != 0 {
            self.port.upgrade()
        } else {
            None
        };
        match (fd, port) {
            // The port's multishot receive is still armed on the socket: the
            // port stops it and closes the descriptor once that is safe.
            (Some(fd), Some(port)) => {
                unregister(fd.as_fd(), self.raw);
                let fixed = self.is_fixed();
                if let Some(fd) = port.anchor_dropped(anchor, fd, fixed) {
                    port.close_fd(fd, fixed);
                }
            }
            (fd, _) => self.release_fd(fd),
        }
    }
}

pub(crate) fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "handle is closed")
}

/// A socket's multishot receive on io_uring, which serves its pooled
/// receives: one `IORING_OP_RECV` with `IORING_RECV_MULTISHOT` stays armed in
/// the kernel (its token is the port's, with the anchor bit) and posts a
/// completion, with a buffer from the ring, each time data arrives. Each goes
/// to the oldest pooled receive waiting here; one that finds none waits in
/// `parked` for the next receive, which then completes at once. So a server
/// that receives, replies and receives again arms nothing per message: the
/// kernel keeps watching the socket. Each multishot receive ends after
/// [`PARK_LIMIT`] buffers' worth of bytes (its `optlen`), and the port arms
/// the next one only for a receive that waits: so at most that much waits
/// for a socket nobody receives on, and its peer is held back by TCP, as with
/// one receive at a time.
#[derive(Debug, Default)]
pub(crate) struct Multi {
    /// The armed multishot receive's token; 0 when none is armed.
    pub(crate) anchor: u64,
    /// The port asked the kernel to cancel the armed one (a close).
    pub(crate) stopping: bool,
    /// The oldest pooled receive waiting for data (its token), 0 for none.
    first: u64,
    /// Any more, oldest first: rare (one receive at a time is the rule).
    #[allow(clippy::box_collection)] // 8 bytes inline instead of 32
    more: Option<Box<VecDeque<u64>>>,
    /// Results that found no receive waiting: the buffer and the result.
    #[allow(clippy::box_collection)] // as above
    parked: Option<Box<VecDeque<Parked>>>,
}

/// A result kept for a socket's next pooled receive: the buffer the kernel
/// filled, if any, and the result.
pub(crate) type Parked = (Option<Vec<u8>>, i32);

/// Buffers' worth of bytes one multishot receive takes before it ends, and
/// so the most that waits for a socket nobody receives on (see [`Multi`]).
pub(crate) const PARK_LIMIT: usize = 4;

impl Multi {
    /// Queues a pooled receive's token behind those waiting.
    pub(crate) fn wait(&mut self, token: u64) {
        if self.first == 0 {
            self.first = token;
        } else {
            self.more.get_or_insert_with(Box::default).push_back(token);
        }
    }

    /// The oldest waiting receive, taken out.
    pub(crate) fn next_waiting(&mut self) -> Option<u64> {
        if self.first == 0 {
            return None;
        }
        let t = self.first;
        self.first = self.more.as_mut().and_then(|m| m.pop_front()).unwrap_or(0);
        Some(t)
    }

    /// Takes `token` out of the waiting receives; false if it was not there.
    pub(crate) fn unwait(&mut self, token: u64) -> bool {
        if token == 0 {
            return false;
        }
        if self.first == token {
            self.first = self.more.as_mut().and_then(|m| m.pop_front()).unwrap_or(0);
            return true;
        }
        let Some(more) = self.more.as_mut() else {
            return false;
        };
        match more.iter().position(|&t| t == token) {
            Some(i) => {
                more.remove(i);
                true
            }
            None => false,
        }
    }

    pub(crate) fn has_waiting(&self) -> bool {
        self.first != 0
    }

    /// Keeps a result for the next receive; returns how many wait now.
    pub(crate) fn park(&mut self, buf: Option<Vec<u8>>, res: i32) -> usize {
        let p = self.parked.get_or_insert_with(Box::default);
        p.push_back((buf, res));
        p.len()
    }

    /// The oldest parked result, taken out.
    pub(crate) fn unpark(&mut self) -> Option<Parked> {
        let p = self.parked.as_mut()?;
        let r = p.pop_front();
        if p.is_empty() {
            self.parked = None;
        }
        r
    }
}

/// The tokens of a handle's operations in flight: a connection has up to
/// three (a receive, a send, and on io_uring the socket's multishot receive
/// behind its pooled receives), kept inline so a connection costs no
/// allocation for them. With two inline slots, an echo connection spilled
/// the third on its first echo and kept the spill list: 143 B per idle
/// connection against single-shot receives' 349 B, most of it that list.
/// More spill into a boxed list, so the inline case stays 40 bytes.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    inline: [u64; 3],
    len: usize,
    #[allow(clippy::box_collection)] // 8 bytes inline instead of a `Vec`'s 24
    more: Option<Box<Vec<u64>>>,
}

impl Tokens {
    pub(crate) fn push(&mut self, token: u64) {
        if self.len < self.inline.len() {
            self.inline[self.len] = token;
            self.len += 1;
        } else {
            self.more.get_or_insert_with(Box::default).push(token);
        }
    }

    fn more(&self) -> &[u64] {
        self.more.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Removes `token`; false if it was not there.
    pub(crate) fn remove(&mut self, token: u64) -> bool {
        if let Some(more) = self.more.as_deref_mut() {
            if let Some(i) = more.iter().position(|&t| t == token) {
                more.swap_remove(i);
                return true;
            }
        }
        let Some(i) = self.inline[..self.len].iter().position(|&t| t == token) else {
            return false;
        };
        self.len -= 1;
        self.inline[i] = self.inline[self.len];
        // Keep the inline slots full while tokens wait in `more`.
        if let Some(t) = self.more.as_deref_mut().and_then(Vec::pop) {
            self.inline[self.len] = t;
            self.len += 1;
        }
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn to_vec(&self) -> Vec<u64> {
        let mut v = self.inline[..self.len].to_vec();
        v.extend_from_slice(self.more());
        v
    }
}

#[cfg(test)]
mod token_tests {
    use super::{Multi, Registry, Tokens};

    #[test]
    fn waiting_receives_go_oldest_first() {
        let mut m = Multi::default();
        assert_eq!(m.next_waiting(), None);
        for t in [5, 6, 7, 8] {
            m.wait(t);
        }
        assert!(m.unwait(7));
        assert!(!m.unwait(7), "taken once");
        assert!(!m.unwait(0), "0 is no token");
        assert!(m.unwait(5), "the oldest, too");
        assert_eq!(m.next_waiting(), Some(6));
        assert!(m.has_waiting());
        assert_eq!(m.next_waiting(), Some(8));
        assert!(!m.has_waiting());
        assert_eq!(m.next_waiting(), None);
    }

    #[test]
    fn parked_results_come_back_in_order() {
        let mut m = Multi::default();
        assert!(m.unpark().is_none());
        assert_eq!(m.park(Some(b"a".to_vec()), 1), 1);
        assert_eq!(m.park(None, 0), 2);
        assert_eq!(m.unpark(), Some((Some(b"a".to_vec()), 1)));
        assert_eq!(m.unpark(), Some((None, 0)));
        assert!(m.unpark().is_none());
        assert!(m.parked.is_none(), "nothing kept once empty");
    }

    #[test]
    fn registry_keeps_every_descriptor_of_an_identity() {
        let mut reg = Registry::default();
        let (a, b) = ((1, 7), (1, 8));
        reg.insert(a, 3);
        reg.insert(a, 4);
        reg.insert(a, 5);
        reg.insert(b, 6);
        let fds = |reg: &Registry, id| reg.fds(&id).collect::<Vec<_>>();
        assert_eq!(fds(&reg, a), [3, 4, 5]);
        reg.remove(a, 3);
        let mut left = fds(&reg, a);
        left.sort_unstable();
        assert_eq!(left, [4, 5], "the first one's place is taken by another");
        reg.remove(a, 4);
        reg.remove(a, 9); // never there
        assert_eq!(fds(&reg, a), [5]);
        reg.remove(a, 5);
        assert!(fds(&reg, a).is_empty());
        assert!(
            reg.first.len() == 1 && reg.more.is_empty(),
            "nothing left of a"
        );
        assert_eq!(fds(&reg, b), [6]);
    }

    #[test]
    fn inline_then_spill_then_back() {
        let mut t = Tokens::default();
        for x in 1..=3 {
            t.push(x);
        }
        // A receive, a send and a multishot receive: no allocation.
        assert!(t.more.is_none());
        for x in 4..=5 {
            t.push(x);
        }
        assert!(t.more.is_some());
        assert_eq!(t.to_vec().len(), 5);
        assert!(t.remove(1));
        assert!(t.remove(4));
        assert!(!t.remove(4));
        let mut v = t.to_vec();
        v.sort_unstable();
        assert_eq!(v, [2, 3, 5]);
        for x in [2, 3, 5] {
            assert!(t.remove(x));
        }
        assert!(t.is_empty());
        assert!(t.more().is_empty());
    }
}
