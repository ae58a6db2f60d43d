//! Associated handles: one port per handle (R2), deferred close (R11).

use std::collections::HashMap;
use std::io;
use std::os::windows::io::{AsRawHandle, AsRawSocket, OwnedHandle, OwnedSocket};
use std::sync::{MutexGuard, Weak};

use windows_sys::Win32::Foundation::{ERROR_NOT_FOUND, FALSE, HANDLE};
use windows_sys::Win32::System::IO::{CancelIoEx, OVERLAPPED};

use super::associate::{attach, detach, lock, register, reopen_overlapped, unregister, FileId};
use super::owned::{Owned, Unassociated};
use super::port::Port;
use crate::handle::HandleKind;

/// The descriptor itself: a socket, or a file handle.
#[derive(Debug)]
enum Io {
    Socket(OwnedSocket),
    /// The handle the port does I/O on (opened for overlapped I/O), and the
    /// caller's original handle, kept open while associated: it is how a
    /// duplicate of it is recognised (R2).
    File {
        io: OwnedHandle,
        original: OwnedHandle,
    },
}

impl Io {
    fn raw(&self) -> usize {
        match self {
            Io::Socket(s) => s.as_raw_socket() as usize,
            Io::File { io, .. } => io.as_raw_handle() as usize,
        }
    }
}

/// The descriptor and what is in flight on it.
#[derive(Debug)]
pub(super) struct State {
    io: Option<Io>,
    closing: bool,
    /// Operations in flight: id -> their OVERLAPPED (for `CancelIoEx`).
    inflight: HashMap<u64, usize>,
}

/// An associated socket or file.
#[derive(Debug)]
pub(crate) struct Handle {
    key: u64,
    kind: HandleKind,
    raw: usize,
    file_id: Option<FileId>,
    port: Weak<Port>,
    state: std::sync::Mutex<State>,
}

impl Handle {
    /// Associates `owned` with `port` (`CreateIoCompletionPort`).
    pub(super) fn new(
        owned: Owned,
        key: u64,
        port: Weak<Port>,
        port_raw: HANDLE,
    ) -> io::Result<Handle> {
        let (io, file_id) = match owned.io {
            Unassociated::Socket(s) => {
                attach(s.as_raw_socket() as usize, port_raw)?;
                (Io::Socket(s), None)
            }
            Unassociated::File(original) => {
                let id = register(&original)?;
                let io = match reopen_overlapped(&original) {
                    Ok(io) => io,
                    Err(e) => {
                        unregister(id, original.as_raw_handle() as usize);
                        return Err(e);
                    }
                };
                if let Err(e) = attach(io.as_raw_handle() as usize, port_raw) {
                    unregister(id, original.as_raw_handle() as usize);
                    return Err(e);
                }
                (Io::File { io, original }, Some(id))
            }
        };
        Ok(Handle {
            key,
            kind: owned.kind,
            raw: io.raw(),
            file_id,
            port,
            state: std::sync::Mutex::new(State {
                io: Some(io),
                closing: false,
                inflight: HashMap::new(),
            }),
        })
    }

    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    pub(crate) fn kind(&self) -> HandleKind {
        self.kind
    }

    /// The descriptor (a SOCKET or a HANDLE value); open while operations
    /// are in flight, since close is deferred until the last one is done.
    pub(super) fn raw(&self) -> usize {
        self.raw
    }

    pub(super) fn is_socket(&self) -> bool {
        self.file_id.is_none()
    }

    pub(super) fn belongs_to(&self, port: &Port) -> bool {
        std::ptr::eq(self.port.as_ptr(), port)
    }

    /// Locks the handle's state for starting an operation.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The kernel is done with operation `id`; closes the descriptor if the
    /// handle was closed and this was the last one.
    pub(super) fn op_done(&self, id: u64) {
        let io = {
            let mut st = lock(&self.state);
            st.inflight.remove(&id);
            if st.closing && st.inflight.is_empty() {
                st.io.take()
            } else {
                None
            }
        };
        self.release(io);
    }

    /// `CancelIoEx` for one operation, or all on the handle.
    pub(super) fn cancel(&self, id: Option<u64>) -> io::Result<()> {
        let st = lock(&self.state);
        let ov = match id {
            Some(id) => match st.inflight.get(&id) {
                Some(&ov) => ov as *const OVERLAPPED,
                None => return Err(not_found()),
            },
            None if st.inflight.is_empty() => return Err(not_found()),
            None => std::ptr::null(),
        };
        // Close is deferred while operations are in flight, so the handle is
        // open; an operation leaves `inflight` (under this lock) before it is freed.
        // SAFETY: the handle is open and `ov` is null or still in flight.
        if unsafe { CancelIoEx(self.raw as HANDLE, ov) } == FALSE {
            let e = super::last_error();
            if e.raw_os_error() == Some(ERROR_NOT_FOUND as i32) {
                return Err(not_found());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Port close: cancels whatever is in flight on the handle.
    pub(super) fn cancel_all(&self) {
        let st = lock(&self.state);
        if !st.inflight.is_empty() {
            // SAFETY: the handle is open (operations are in flight); NULL
            // cancels everything on it.
            unsafe { CancelIoEx(self.raw as HANDLE, std::ptr::null()) };
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closing
    }

    /// `closesocket`/`CloseHandle`, deferred: operations in flight are
    /// cancelled, and the descriptor closes when the last one is dequeued.
    pub(crate) fn close(&self) {
        let io = {
            let mut st = lock(&self.state);
            if st.closing {
                return;
            }
            st.closing = true;
            if st.inflight.is_empty() {
                st.io.take()
            } else {
                // SAFETY: the handle is open; NULL cancels everything on it.
                unsafe { CancelIoEx(self.raw as HANDLE, std::ptr::null()) };
                None
            }
        };
        self.release(io);
    }

    fn release(&self, io: Option<Io>) {
        match io {
            Some(Io::Socket(s)) => {
                detach(s.as_raw_socket() as usize);
                drop(s);
            }
            Some(Io::File { io, original }) => {
                if let Some(id) = self.file_id {
                    unregister(id, original.as_raw_handle() as usize);
                }
                drop(io);
                drop(original);
            }
            None => {}
        }
    }

    pub(crate) fn with_socket<R>(
        &self,
        f: impl FnOnce(socket2::SockRef<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        let st = lock(&self.state);
        match &st.io {
            Some(Io::Socket(s)) if !st.closing => f(socket2::SockRef::from(s)),
            Some(Io::File { .. }) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "handle is a file, not a socket",
            )),
            _ => Err(closed_error()),
        }
    }
}

impl State {
    /// Why no operation can start now, if so.
    pub(super) fn refuse_reason(&self) -> Option<io::Error> {
        (self.closing || self.io.is_none()).then(closed_error)
    }

    /// Records an operation handed to the kernel.
    pub(super) fn insert(&mut self, id: u64, ov: *mut OVERLAPPED) {
        self.inflight.insert(id, ov as usize);
    }

    /// Forgets an operation whose start failed (no packet will come).
    pub(super) fn remove(&mut self, id: u64) {
        self.inflight.remove(&id);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let io = lock(&self.state).io.take();
        self.release(io);
    }
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such operation in flight")
}

pub(crate) fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "handle is closed")
}
