//! One operation as the epoll driver holds it: the system call it stands for,
//! with raw pointers into the port's boxed [`Op`], the twin of an io_uring
//! submission entry. Made by [`Io::prepare`] when the operation starts; the
//! pointers stop being used when the driver reports the token, after which the
//! port takes the `Op` back (`Ops::take`).

use std::os::fd::RawFd;
use std::sync::Arc;

use super::sys::{neg_errno, syscall};
use crate::op::Request;
use crate::pool::BufPool;
use crate::sys::linux::op::{Addr, Op};

/// Which readiness an operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dir {
    /// Readable: accept, recv.
    Read,
    /// Writable: connect, send.
    Write,
}

/// What one attempt at the system call found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Attempt {
    /// Finished: a byte count, a new descriptor, or `-errno`.
    Done(i32),
    /// Not ready (`EAGAIN`, a connect in progress): wait for readiness.
    Again,
}

#[derive(Debug)]
enum Call {
    Accept {
        addr: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
    },
    Connect {
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
        started: bool,
    },
    Recv {
        buf: *mut u8,
        len: usize,
    },
    /// A pooled receive: a buffer is taken from `pool` for each attempt and
    /// kept in `slot` once data (or end of file) came.
    RecvPooled {
        slot: *mut Option<Vec<u8>>,
        pool: *const BufPool,
    },
    /// `sent` bytes are gone already: a send completes when all have gone.
    Send {
        buf: *const u8,
        len: usize,
        sent: usize,
    },
    Read {
        buf: *mut u8,
        len: usize,
        off: u64,
    },
    Write {
        buf: *const u8,
        len: usize,
        off: u64,
    },
}

/// An operation in the driver's hands.
#[derive(Debug)]
pub(super) struct Io {
    pub(super) token: u64,
    fd: RawFd,
    call: Call,
}

// The pointers name memory of an `Op` that the port keeps boxed and unmoved
// until the token is reported.
// SAFETY: only the thread holding the `Io` (under its queue's lock) uses them.
unsafe impl Send for Io {}

/// Largest transfer asked of one call, so a byte count always fits the `i32`
/// result (the kernel caps one transfer below 2 GiB anyway).
const MAX_IO: usize = i32::MAX as usize;

impl Io {
    /// Describes `op` for the driver. The pointers taken here stay valid while
    /// the port keeps `op` in its slab, that is until the driver reports
    /// `token` (see [`Io::attempt`]); `pool`, the port's, outlives every
    /// operation (the driver holds it).
    pub(super) fn prepare(op: &mut Op, token: u64, pool: &Arc<BufPool>) -> Io {
        let fd = op.handle.raw_fd();
        let call = match &mut op.req {
            Request::Accept => {
                let a = Addr::of_op(&mut op.addr);
                Call::Accept {
                    addr: (&mut a.storage as *mut socket2::SockAddrStorage).cast(),
                    len: &mut a.len,
                }
            }
            Request::Connect(_) => {
                let a = Addr::of_op(&mut op.addr);
                Call::Connect {
                    addr: (&a.storage as *const socket2::SockAddrStorage).cast(),
                    len: a.len,
                    started: false,
                }
            }
            Request::Recv(buf) => {
                let (buf, len) = spare(buf);
                Call::Recv { buf, len }
            }
            Request::RecvPooled { buf } => Call::RecvPooled {
                slot: buf,
                pool: Arc::as_ptr(pool),
            },
            Request::Send(buf) => Call::Send {
                buf: buf.as_ptr(),
                len: buf.len().min(MAX_IO),
                sent: 0,
            },
            Request::Read(buf, off) => {
                let (buf, len) = spare(buf);
                Call::Read {
                    buf,
                    len,
                    off: *off,
                }
            }
            Request::Write(buf, off) => Call::Write {
                buf: buf.as_ptr(),
                len: buf.len().min(MAX_IO),
                off: *off,
            },
        };
        Io { token, fd, call }
    }

    /// The readiness this operation waits for; `None` for file operations,
    /// which epoll cannot wait on and which are simply run.
    pub(super) fn dir(&self) -> Option<Dir> {
        match self.call {
            Call::Accept { .. } | Call::Recv { .. } | Call::RecvPooled { .. } => Some(Dir::Read),
            Call::Connect { .. } | Call::Send { .. } => Some(Dir::Write),
            Call::Read { .. } | Call::Write { .. } => None,
        }
    }

    /// True when this receive, having returned `res`, emptied the socket: a
    /// stream socket hands over all it holds, up to the buffer size, so a
    /// short read means nothing more is there (data that arrives later raises
    /// a new edge).
    pub(super) fn drained(&self, res: i32) -> bool {
        match self.call {
            Call::Recv { len, .. } => res > 0 && (res as usize) < len,
            // SAFETY: the pool outlives the operation (the driver holds an `Arc`).
            Call::RecvPooled { pool, .. } => res > 0 && (res as usize) < unsafe { (*pool).size() },
            _ => false,
        }
    }

    /// The result to report when the operation is cancelled: `None` means it
    /// never transferred anything and completes as cancelled; a send that
    /// already moved bytes completes with that count instead.
    pub(super) fn cancel_result(&self) -> Option<i32> {
        match self.call {
            Call::Send { sent, .. } if sent > 0 => Some(sent as i32),
            _ => None,
        }
    }

    /// Tries the system call once (a send goes on until it would block).
    ///
    /// # Safety
    ///
    /// The `Op` this `Io` was prepared from must still be in the port's slab,
    /// unmoved: the driver has not reported this token yet.
    pub(super) unsafe fn attempt(&mut self) -> Attempt {
        let fd = self.fd;
        // In every arm the pointers name the live `Op`'s memory: its address
        // storage and length, the spare capacity of a receive buffer (`len`
        // bytes writable), the bytes of a send buffer (`len` readable).
        // SAFETY: as above, by this function's contract.
        unsafe {
            match &mut self.call {
                Call::Accept { addr, len } => accept(fd, *addr, *len),
                Call::Connect { addr, len, started } => connect(fd, *addr, *len, started),
                Call::Recv { buf, len } => recv(fd, *buf, *len),
                Call::RecvPooled { slot, pool } => recv_pooled(fd, &mut **slot, &**pool),
                Call::Send { buf, len, sent } => send(fd, *buf, *len, sent),
                Call::Read { buf, len, off } => Attempt::Done(pread(fd, *buf, *len, *off)),
                Call::Write { buf, len, off } => Attempt::Done(pwrite(fd, *buf, *len, *off)),
            }
        }
    }
}

/// Accepts one connection; its address goes to `addr`.
///
/// # Safety
///
/// `addr` is valid for writes of `*len` bytes and `len` for reads and writes.
unsafe fn accept(fd: RawFd, addr: *mut libc::sockaddr, len: *mut libc::socklen_t) -> Attempt {
    // SAFETY: forwarded from this function's contract.
    once(syscall(|| unsafe {
        libc::accept4(fd, addr, len, libc::SOCK_CLOEXEC)
    }))
}

/// Receives what is there into a buffer from `pool`, kept in `slot` unless
/// nothing came (the buffer goes back to the pool then).
fn recv_pooled(fd: RawFd, slot: &mut Option<Vec<u8>>, pool: &BufPool) -> Attempt {
    let mut buf = slot.take().unwrap_or_else(|| pool.take());
    let cap = buf.capacity().min(MAX_IO);
    // SAFETY: the spare capacity of `buf` (it is empty) is `cap` writable bytes.
    let attempt = unsafe { recv(fd, buf.as_mut_ptr(), cap) };
    match attempt {
        // The port sets the length from the result when it completes.
        Attempt::Done(n) if n >= 0 => *slot = Some(buf),
        _ => pool.give(buf),
    }
    attempt
}

/// Receives what is there.
///
/// # Safety
///
/// `buf` is valid for writes of `len` bytes.
unsafe fn recv(fd: RawFd, buf: *mut u8, len: usize) -> Attempt {
    // SAFETY: forwarded from this function's contract.
    once(syscall(|| unsafe { libc::recv(fd, buf.cast(), len, 0) }))
}

/// Reads at an offset.
///
/// # Safety
///
/// `buf` is valid for writes of `len` bytes.
unsafe fn pread(fd: RawFd, buf: *mut u8, len: usize, off: u64) -> i32 {
    // SAFETY: forwarded from this function's contract.
    result(syscall(|| unsafe {
        libc::pread(fd, buf.cast(), len, off as libc::off_t)
    }))
}

/// Writes at an offset.
///
/// # Safety
///
/// `buf` is valid for reads of `len` bytes.
unsafe fn pwrite(fd: RawFd, buf: *const u8, len: usize, off: u64) -> i32 {
    // SAFETY: forwarded from this function's contract.
    result(syscall(|| unsafe {
        libc::pwrite(fd, buf.cast(), len, off as libc::off_t)
    }))
}

/// Sends until everything is gone or the socket is full.
///
/// # Safety
///
/// `buf` is valid for reads of `len` bytes, and `*sent <= len`.
unsafe fn send(fd: RawFd, buf: *const u8, len: usize, sent: &mut usize) -> Attempt {
    loop {
        let rest = len - *sent;
        let r = syscall(|| {
            // SAFETY: `*sent <= len`, so `buf + sent` and `rest` stay within the buffer.
            unsafe { libc::send(fd, buf.add(*sent).cast(), rest, libc::MSG_NOSIGNAL) }
        });
        match r {
            Ok(n) => {
                *sent += n as usize;
                if *sent >= len || n == 0 {
                    return Attempt::Done(*sent as i32);
                }
            }
            Err(e) if would_block(&e) => return Attempt::Again,
            // Bytes already gone are reported as a short send; the error
            // shows up on the next operation.
            Err(_) if *sent > 0 => return Attempt::Done(*sent as i32),
            Err(e) => return Attempt::Done(neg_errno(&e)),
        }
    }
}

/// A non-blocking connect: started once, then checked each time the socket
/// becomes writable.
///
/// # Safety
///
/// `addr` is valid for reads of `len` bytes.
unsafe fn connect(
    fd: RawFd,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    started: &mut bool,
) -> Attempt {
    if *started {
        return connect_outcome(fd);
    }
    *started = true;
    // SAFETY: forwarded from this function's contract.
    match syscall(|| unsafe { libc::connect(fd, addr, len) }) {
        Ok(_) => Attempt::Done(0),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || would_block(&e) => Attempt::Again,
        Err(e) => Attempt::Done(neg_errno(&e)),
    }
}

/// How a connect in progress stands once the socket reports writable.
fn connect_outcome(fd: RawFd) -> Attempt {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for writes of the sizes given.
    let r = syscall(|| unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    });
    match r {
        Err(e) => return Attempt::Done(neg_errno(&e)),
        Ok(_) if err != 0 => return Attempt::Done(-err),
        Ok(_) => {}
    }
    // No error yet: connected, or still in progress (a stale readiness).
    let mut addr = socket2::SockAddrStorage::zeroed();
    let mut alen = addr.size_of();
    // SAFETY: `addr` and `alen` are valid for writes of the storage size.
    let r = syscall(|| unsafe {
        libc::getpeername(
            fd,
            (&mut addr as *mut socket2::SockAddrStorage).cast(),
            &mut alen,
        )
    });
    match r {
        Ok(_) => Attempt::Done(0),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Attempt::Again,
        Err(e) => Attempt::Done(neg_errno(&e)),
    }
}

/// One call: `EAGAIN` waits for readiness, anything else is the result.
fn once<T: TryInto<i32>>(r: std::io::Result<T>) -> Attempt {
    match r {
        Err(e) if would_block(&e) => Attempt::Again,
        r => Attempt::Done(result(r)),
    }
}

/// A call's outcome as the port's `i32` result.
fn result<T: TryInto<i32>>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(n) => n.try_into().unwrap_or(i32::MAX),
        Err(e) => neg_errno(&e),
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN))
}

fn spare(buf: &mut Vec<u8>) -> (*mut u8, usize) {
    let len = buf.len();
    let room = (buf.capacity() - len).min(MAX_IO);
    // SAFETY: `len` is within the allocation, so the pointer stays in bounds.
    (unsafe { buf.as_mut_ptr().add(len) }, room)
}
