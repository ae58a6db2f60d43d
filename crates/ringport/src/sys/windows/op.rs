//! One overlapped operation in flight: an `OVERLAPPED` first, then everything
//! it owns until its packet is dequeued; and the one hand-off of it to the
//! kernel ([`Op::into_kernel`]) and back ([`Op::from_kernel`]).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use windows_sys::Win32::Foundation::{ERROR_HANDLE_EOF, HANDLE};
use windows_sys::Win32::Networking::WinSock::WSABUF;
use windows_sys::Win32::System::IO::{PostQueuedCompletionStatus, OVERLAPPED};

use super::handle::Handle as SysHandle;
use super::{file, socket};
use crate::completion::{Completion, OpId};
use crate::handle::Handle;
use crate::op::Request;

/// The completion key of every I/O packet. The caller's key lives in the
/// handle; the kernel's key only tells I/O, posted and wake packets apart.
pub(super) const IO_KEY: usize = 0;

/// An operation owned by the kernel between [`Op::into_kernel`] and
/// [`Op::from_kernel`]. `repr(C)` with the `OVERLAPPED` first, so the pointer
/// the kernel hands back in a packet is the pointer to the whole operation.
#[repr(C)]
pub(super) struct Op {
    pub(super) overlapped: OVERLAPPED,
    pub(super) id: u64,
    pub(super) user: u64,
    pub(super) handle: Arc<SysHandle>,
    /// The request, with the buffer the kernel reads or writes.
    pub(super) req: Request,
    /// `WSARecv`/`WSASend`: the one buffer descriptor, and the flags word.
    pub(super) wsabuf: WSABUF,
    pub(super) flags: u32,
    /// Accept: the pre-created socket and the address buffer `AcceptEx` fills.
    pub(super) accept: Option<Box<socket::AcceptState>>,
    /// Connect: the target address, in the form `ConnectEx` reads.
    pub(super) connect: Option<socket2::SockAddr>,
    /// A Win32 error the starting call returned at once. The port queues the
    /// packet itself then (the kernel queues none for a call that failed
    /// synchronously), so the failure still completes exactly once.
    pub(super) sync_error: Option<u32>,
}

impl Op {
    pub(super) fn new(id: u64, user: u64, handle: Arc<SysHandle>, req: Request) -> Box<Op> {
        Box::new(Op {
            // SAFETY: an all-zero OVERLAPPED is the documented initial value.
            overlapped: unsafe { std::mem::zeroed() },
            id,
            user,
            handle,
            req,
            wsabuf: WSABUF {
                len: 0,
                buf: std::ptr::null_mut(),
            },
            flags: 0,
            accept: None,
            connect: None,
            sync_error: None,
        })
    }

    /// Hands the operation to the kernel: the returned pointer is what the
    /// Win32 call gets as its `OVERLAPPED`, and the operation (buffer
    /// included) is freed only by [`Op::from_kernel`] once its packet is
    /// dequeued, or by the start path when the call queued no packet.
    pub(super) fn into_kernel(op: Box<Op>) -> *mut OVERLAPPED {
        Box::into_raw(op).cast()
    }

    /// Takes an operation back from the kernel; the reverse of
    /// [`Op::into_kernel`].
    ///
    /// # Safety
    ///
    /// `ov` came from [`Op::into_kernel`], and the kernel is done with it:
    /// its packet was dequeued, or the call that was given it queued none.
    /// Each pointer is taken back once.
    pub(super) unsafe fn from_kernel(ov: *mut OVERLAPPED) -> Box<Op> {
        // SAFETY: per the contract, `ov` is the start of a live `Box<Op>`
        // (`OVERLAPPED` is its first field in a `repr(C)` struct).
        unsafe { Box::from_raw(ov.cast::<Op>()) }
    }

    /// Starts the operation in the kernel.
    ///
    /// `Ok` means one packet will be queued for `ov` (by the kernel, or by
    /// the port for a synchronous failure); `Err` means none will, and the
    /// caller takes the operation back.
    ///
    /// # Safety
    ///
    /// `ov` came from [`Op::into_kernel`] and is not used by anyone else;
    /// `raw` is the handle's open descriptor and `port` the port it is
    /// associated with, both open until the packet is dequeued.
    pub(super) unsafe fn issue(ov: *mut OVERLAPPED, raw: usize, port: HANDLE) -> io::Result<()> {
        // SAFETY: per the contract, `ov` points to a live `Op` nobody else uses.
        let op = unsafe { &mut *ov.cast::<Op>() };
        // `op` is boxed and stays put until its packet is dequeued, so the
        // buffers and addresses each call is given outlive its kernel work.
        // SAFETY: as above; `raw` is open until then (this function's contract).
        let started = unsafe {
            match &op.req {
                Request::Recv(_) => socket::start_recv(op, raw),
                Request::Send(_) => socket::start_send(op, raw),
                Request::Accept => socket::start_accept(op, raw),
                Request::Connect(_) => socket::start_connect(op, raw),
                Request::Read(..) => file::start_read(op, raw),
                Request::Write(..) => file::start_write(op, raw),
                // `Port::start` turned every pooled receive into a `Recv`.
                Request::RecvPooled { .. } => unreachable!("pooled receive not converted"),
            }
        };
        match started {
            Ok(None) => Ok(()),
            Ok(Some(code)) => {
                op.sync_error = Some(code);
                // SAFETY: `port` is open; the packet carries `ov` back to a dequeue.
                if unsafe { PostQueuedCompletionStatus(port, 0, IO_KEY, ov) } == 0 {
                    return Err(super::last_error());
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Turns the dequeued packet into the completion, handing back everything
    /// the operation owned. `bytes` is the packet's byte count.
    pub(super) fn finish(mut self: Box<Op>, bytes: u32) -> Completion {
        let mut accepted = None;
        let result = match self.result(bytes) {
            Ok(n) => self.apply(n, &mut accepted),
            Err(e) => Err(e),
        };
        // Off the handle's list (which may close the descriptor) only now that
        // the socket calls above are done, and before the OVERLAPPED is freed
        // below, so that no `CancelIoEx` can name freed memory.
        self.handle.op_done(self.id);
        let Op {
            id,
            user,
            handle,
            req,
            ..
        } = *self;
        Completion {
            kind: req.kind(),
            key: handle.key(),
            user,
            id: Some(OpId::new(id)),
            result,
            buf: req.into_buf(),
            handle: Some(Handle { inner: handle }),
            accepted: accepted.map(Box::new),
        }
    }

    /// What a successful packet means for each kind of operation.
    fn apply(
        &mut self,
        n: usize,
        accepted: &mut Option<(TcpStream, SocketAddr)>,
    ) -> io::Result<usize> {
        match &mut self.req {
            Request::Recv(buf) | Request::Read(buf, _) => {
                debug_assert!(n <= buf.capacity() - buf.len());
                // SAFETY: the kernel wrote `n` bytes into the spare capacity
                // that started at `buf.len()`, and `n` is at most its size.
                unsafe { buf.set_len(buf.len() + n) };
                Ok(n)
            }
            Request::Accept => {
                let state = self.accept.take().expect("accept state");
                *accepted = Some(socket::finish_accept(*state, self.handle.raw())?);
                Ok(0)
            }
            Request::Connect(_) => socket::finish_connect(self.handle.raw()).map(|()| 0),
            Request::Send(_) | Request::Write(..) => Ok(n),
            Request::RecvPooled { .. } => unreachable!("pooled receive not converted"),
        }
    }

    /// The outcome the kernel recorded in the `OVERLAPPED` (or the start
    /// path's synchronous error), as bytes or a Win32/Winsock error.
    fn result(&self, bytes: u32) -> io::Result<usize> {
        let outcome = match self.sync_error {
            Some(code) => Err(io::Error::from_raw_os_error(code as i32)),
            None if self.handle.is_socket() => socket::overlapped_result(self),
            None => file::overlapped_result(self),
        };
        match outcome {
            Ok(()) => Ok(bytes as usize),
            // A read at or past the end of a file: zero bytes, as on Linux.
            Err(e) if e.raw_os_error() == Some(ERROR_HANDLE_EOF as i32) => Ok(0),
            Err(e) => Err(e),
        }
    }
}
