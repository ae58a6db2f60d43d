//! One operation in flight: what it owns while the kernel works, and how it
//! turns into a [`Completion`] when the kernel hands it back.

use std::io;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use socket2::{SockAddr, SockAddrStorage};

use super::handle::Handle as SysHandle;
use crate::completion::{Completion, OpId, OpKind, Packet};
use crate::handle::Handle;
use crate::op::Request;
use crate::pool::BufPool;

/// An operation owned by the port from its start to its completion. It lives in
/// a `Box` in the port's slab, so the addresses the kernel was given (buffer,
/// socket address) stay put until the completion is reaped.
#[derive(Debug)]
pub(crate) struct Op {
    pub(crate) req: Request,
    pub(crate) user: u64,
    pub(crate) handle: Arc<SysHandle>,
    pub(crate) gen: u32,
    /// Connect: the target. Accept: filled in by the kernel. Boxed, and only
    /// for those two, so the many receives of idle connections stay small.
    pub(crate) addr: Option<Box<Addr>>,
    /// The port asked the kernel to cancel this operation.
    pub(crate) cancel_requested: bool,
    /// Times the operation was submitted again after the kernel cancelled it
    /// on its own (see `Port::complete`).
    pub(crate) resubmits: u16,
}

// 72 bytes, so its allocation is glibc's 80-byte size class: every idle
// connection holds one (its pending receive).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Op>() <= 72);

/// A packet as the port's queue holds it: 24 bytes, the size of a [`Packet`],
/// so a block of the queue is as small as a channel's of packets (the queue
/// keeps its emptied blocks, see `queue`, so few reach the allocator). A
/// posted packet is copied in (boxed only if its byte count does not fit 32
/// bits), a reaped operation's box moved in, and the [`Completion`] is made by
/// the thread that dequeues it. Every entry is made into its completion, even
/// one the port discards, so an accepted socket is never leaked.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A posted packet whose byte count fits in 32 bits (every count a
    /// program ported from Win32 posts: there it is a `DWORD`).
    Posted { bytes: u32, key: u64, user: u64 },
    /// A posted packet with a larger byte count.
    PostedLarge(Box<Packet>),
    /// The operation, its token and the kernel's result.
    Done(Box<Op>, u64, i32),
}

const _: () = assert!(std::mem::size_of::<Entry>() == std::mem::size_of::<Packet>());

impl Entry {
    #[inline]
    pub(crate) fn posted(p: Packet) -> Entry {
        match u32::try_from(p.bytes) {
            Ok(bytes) => Entry::Posted {
                bytes,
                key: p.key,
                user: p.user,
            },
            Err(_) => Entry::PostedLarge(Box::new(p)),
        }
    }

    /// `out.push(self.into_completion())`, with the completion made straight
    /// in the vector's free slot: one made on the stack and then copied in
    /// stalls the copy (its fields are stored piecewise and loaded back in
    /// 16-byte chunks, which store forwarding cannot serve). Always inlined,
    /// so an entry just popped from the queue comes here in registers.
    #[inline(always)]
    pub(crate) fn push_into(self, out: &mut Vec<Completion>) {
        if out.len() == out.capacity() {
            out.reserve(1);
        }
        let len = out.len();
        let slot = out.spare_capacity_mut()[0].as_mut_ptr();
        match self {
            // The common hand-off, field by field: even `write` of a whole
            // completion builds it on the stack first and copies it over.
            Entry::Posted { bytes, key, user } => {
                // SAFETY: `slot` is the vector's first free slot, valid for
                // writes and aligned; each field is written once, in place,
                // and together they make a whole `Completion`.
                unsafe {
                    std::ptr::addr_of_mut!((*slot).kind).write(OpKind::Post);
                    std::ptr::addr_of_mut!((*slot).key).write(key);
                    std::ptr::addr_of_mut!((*slot).user).write(user);
                    std::ptr::addr_of_mut!((*slot).id).write(None);
                    std::ptr::addr_of_mut!((*slot).result).write(Ok(bytes as usize));
                    std::ptr::addr_of_mut!((*slot).buf).write(None);
                    std::ptr::addr_of_mut!((*slot).handle).write(None);
                    std::ptr::addr_of_mut!((*slot).accepted).write(None);
                }
            }
            // SAFETY: as above; `finish_into` writes a whole completion.
            Entry::Done(op, token, res) => unsafe {
                spare::unbox(op).finish_into(token, res, slot)
            },
            e => {
                // SAFETY: as above; `write` fills the whole slot.
                unsafe { slot.write(e.into_completion()) }
            }
        }
        // SAFETY: the slot at `len`, within the capacity, was written just
        // above.
        unsafe { out.set_len(len + 1) };
    }

    #[inline]
    pub(crate) fn into_completion(self) -> Completion {
        match self {
            Entry::Posted { bytes, key, user } => Completion::posted(Packet {
                bytes: bytes as usize,
                key,
                user,
            }),
            Entry::PostedLarge(p) => Completion::posted(*p),
            Entry::Done(op, token, res) => spare::unbox(op).finish(token, res),
        }
    }
}

/// Allocations of finished operations, kept by each thread for the next
/// operations it starts. A worker dequeues a batch (every operation in it is
/// made into its completion, so freed) and then starts as many: glibc's
/// per-thread cache holds only 7 blocks of a size, so without this most of
/// those frees and allocations went to its arenas, with their locks.
mod spare {
    use std::alloc::Layout;
    use std::cell::RefCell;

    use super::Op;

    /// Allocations kept per thread, at most.
    const MAX: usize = 256;

    /// Each pointer is an allocation of `Layout::new::<Op>()` from the global
    /// allocator (a `Box<Op>`'s) that holds no value.
    struct Spare(Vec<*mut Op>);

    impl Drop for Spare {
        fn drop(&mut self) {
            for p in self.0.drain(..) {
                // SAFETY: allocated with this layout (see `Spare`), empty, and
                // owned by this list only.
                unsafe { std::alloc::dealloc(p.cast(), Layout::new::<Op>()) };
            }
        }
    }

    thread_local! {
        static SPARE: RefCell<Spare> = const { RefCell::new(Spare(Vec::new())) };
    }

    /// An allocation for one `Op` (`Layout::new::<Op>()`, from the global
    /// allocator, as a `Box<Op>`'s) that holds no value: a kept one if this
    /// thread has one. Writing a whole `Op` in makes it a valid `Box<Op>`'s.
    #[inline(always)]
    pub(super) fn alloc() -> *mut Op {
        let kept = SPARE.try_with(|s| s.borrow_mut().0.pop()).ok().flatten();
        if let Some(p) = kept {
            return p;
        }
        let layout = Layout::new::<Op>();
        // SAFETY: `Op` is not zero-sized (it holds an `Arc`), so the layout's
        // size is not zero.
        let p = unsafe { std::alloc::alloc(layout) }.cast::<Op>();
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        p
    }

    /// Moves the operation out of its box and keeps the allocation (or frees
    /// it when this thread keeps enough).
    #[inline(always)]
    pub(super) fn unbox(op: Box<Op>) -> Op {
        let p = Box::into_raw(op);
        // SAFETY: `p` comes from a live `Box<Op>`; its value is read out once
        // and the allocation is from then on treated as empty.
        let op = unsafe { p.read() };
        let kept = SPARE
            .try_with(|s| {
                let mut s = s.borrow_mut();
                if s.0.len() < MAX {
                    s.0.push(p);
                    true
                } else {
                    false
                }
            })
            .unwrap_or(false);
        if !kept {
            // SAFETY: as in `Spare::drop`: a `Box<Op>`'s allocation, empty.
            unsafe { std::alloc::dealloc(p.cast(), Layout::new::<Op>()) };
        }
        op
    }
}

/// A socket address the kernel reads (connect) or writes (accept).
#[derive(Debug)]
pub(crate) struct Addr {
    pub(crate) storage: SockAddrStorage,
    pub(crate) len: libc::socklen_t,
}

impl Addr {
    /// The address of an accept or connect; `None` for other operations.
    fn of(req: &Request) -> Option<Box<Addr>> {
        match req {
            Request::Accept => {
                let storage = SockAddrStorage::zeroed();
                let len = storage.size_of();
                Some(Box::new(Addr { storage, len }))
            }
            Request::Connect(target) => {
                let sa = SockAddr::from(*target);
                Some(Box::new(Addr {
                    len: sa.len(),
                    storage: sa.as_storage(),
                }))
            }
            _ => None,
        }
    }

    /// The address of an accept or connect, which `Op::new` always gives one.
    pub(crate) fn of_op(addr: &mut Option<Box<Addr>>) -> &mut Addr {
        addr.as_deref_mut()
            .expect("accept and connect carry an address")
    }
}

impl Op {
    pub(crate) fn new(req: Request, user: u64, handle: Arc<SysHandle>) -> Box<Op> {
        // The writes below name every field of `Op`; this pattern, without
        // `..`, stops compiling when a field is added, so none is left unwritten.
        #[allow(dead_code)]
        fn every_field(op: Op) {
            let Op {
                req: _,
                user: _,
                handle: _,
                gen: _,
                addr: _,
                cancel_requested: _,
                resubmits: _,
            } = op;
        }
        let addr = Addr::of(&req);
        let p = spare::alloc();
        // Written in place: built on the stack and copied over, the operation
        // was loaded back in 16-byte chunks just after its fields' narrower
        // stores, which store forwarding cannot serve.
        //
        // SAFETY: `p` is an allocation for one `Op` that holds no value (see
        // `spare::alloc`); each field is written once, and together they
        // make a whole `Op`, so the box owns a valid value.
        unsafe {
            std::ptr::addr_of_mut!((*p).req).write(req);
            std::ptr::addr_of_mut!((*p).user).write(user);
            std::ptr::addr_of_mut!((*p).handle).write(handle);
            std::ptr::addr_of_mut!((*p).gen).write(0);
            std::ptr::addr_of_mut!((*p).addr).write(addr);
            std::ptr::addr_of_mut!((*p).cancel_requested).write(false);
            std::ptr::addr_of_mut!((*p).resubmits).write(0);
            Box::from_raw(p)
        }
    }

    /// Hands a pooled receive the buffer the kernel picked for it.
    pub(crate) fn fill(&mut self, picked: Vec<u8>, pool: &BufPool) {
        if let Request::RecvPooled { buf } = &mut self.req {
            if let Some(old) = buf.replace(picked) {
                pool.give(old);
            }
        }
    }

    /// Turns the kernel's result (a byte count, a new descriptor, or `-errno`)
    /// into the completion, handing back everything the operation owned. The
    /// handle was told (`op_done`) when the operation was reaped.
    pub(crate) fn finish(self, token: u64, res: i32) -> Completion {
        let mut c = std::mem::MaybeUninit::<Completion>::uninit();
        // SAFETY: `c` is valid for writes and aligned, and `finish_into`
        // writes every field of it, so it is initialized after.
        unsafe {
            self.finish_into(token, res, c.as_mut_ptr());
            c.assume_init()
        }
    }

    #[inline(always)]
    /// [`finish`](Self::finish), writing the completion in place, field by
    /// field: one built on the stack and then copied costs a copy of it and
    /// stalls on store forwarding (see [`Entry::push_into`]).
    ///
    /// # Safety
    ///
    /// `slot` is valid for writes of a `Completion` and aligned; it holds no
    /// value (what it held is overwritten, not dropped). Every field is
    /// written, so it holds a whole completion after.
    pub(crate) unsafe fn finish_into(self, token: u64, res: i32, slot: *mut Completion) {
        let Op {
            mut req,
            user,
            handle,
            mut addr,
            resubmits,
            ..
        } = self;
        let kind = req.kind();
        let mut accepted = None;
        let result = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            match &mut req {
                Request::RecvPooled { buf: Some(buf), .. } => {
                    let n = (res as usize).min(buf.capacity());
                    // The kernel (or the epoll driver's recv) wrote `n` bytes
                    // at the start of this empty buffer.
                    // SAFETY: as above; `n` is within its capacity.
                    unsafe { buf.set_len(n) };
                    Ok(n)
                }
                Request::Recv(buf) | Request::Read(buf, _) => {
                    let n = res as usize;
                    debug_assert!(n <= buf.capacity() - buf.len());
                    // SAFETY: the kernel wrote `n` bytes into the spare capacity
                    // that started at `buf.len()`, and `n` is at most its size.
                    unsafe { buf.set_len(buf.len() + n) };
                    Ok(n)
                }
                Request::Accept => {
                    // SAFETY: a non-negative accept result is a new descriptor
                    // that nothing else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    let stream = TcpStream::from(fd);
                    let a = *addr.take().expect("accept carries an address");
                    // SAFETY: the kernel filled the storage and set its length
                    // for this socket's family.
                    let peer = unsafe { SockAddr::new(a.storage, a.len) }.as_socket();
                    match peer.map_or_else(|| stream.peer_addr(), Ok) {
                        Ok(peer) => {
                            accepted = Some((stream, peer));
                            Ok(0)
                        }
                        Err(e) => Err(e),
                    }
                }
                // A resubmitted connect waited for writability (see
                // `Uring::prepare`); the socket says how the connect ended.
                Request::Connect(_) if resubmits > 0 => connect_outcome(handle.raw_fd()),
                _ => Ok(res as usize),
            }
        };
        // SAFETY: this function's contract; each field is written once.
        unsafe {
            std::ptr::addr_of_mut!((*slot).kind).write(kind);
            std::ptr::addr_of_mut!((*slot).key).write(handle.key());
            std::ptr::addr_of_mut!((*slot).user).write(user);
            std::ptr::addr_of_mut!((*slot).id).write(Some(OpId::new(token)));
            std::ptr::addr_of_mut!((*slot).result).write(result);
            std::ptr::addr_of_mut!((*slot).buf).write(req.into_buf());
            std::ptr::addr_of_mut!((*slot).accepted).write(accepted.map(Box::new));
            std::ptr::addr_of_mut!((*slot).handle).write(Some(Handle { inner: handle }));
        }
    }
}

/// How a non-blocking connect ended, once its socket is writable.
fn connect_outcome(fd: i32) -> io::Result<usize> {
    // SAFETY: the handle defers closing `fd` while this operation is in flight,
    // and the borrow ends before this function returns.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match socket2::SockRef::from(&fd).take_error()? {
        None => Ok(0),
        Some(e) => Err(e),
    }
}
