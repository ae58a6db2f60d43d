//! Overlapped operations as the caller describes them, before a backend takes them.
//!
//! Every operation is defined once here; each backend turns a [`Request`] into
//! its own kernel call (an io_uring entry, a readiness retry, a Win32 call).

use std::io;
use std::net::SocketAddr;

use crate::completion::{OpKind, StartError};
use crate::handle::HandleKind;

/// One overlapped operation with everything it owns until it completes.
#[derive(Debug)]
pub(crate) enum Request {
    Accept,
    Connect(SocketAddr),
    Recv(Vec<u8>),
    /// A receive whose buffer comes from the port's pool when data arrives;
    /// `buf` holds it from then on (its length stays 0 until the completion
    /// sets it).
    RecvPooled {
        buf: Option<Vec<u8>>,
    },
    Send(Vec<u8>),
    Read(Vec<u8>, u64),
    Write(Vec<u8>, u64),
}

impl Request {
    pub(crate) fn kind(&self) -> OpKind {
        match self {
            Request::Accept => OpKind::Accept,
            Request::Connect(_) => OpKind::Connect,
            Request::Recv(_) | Request::RecvPooled { .. } => OpKind::Recv,
            Request::Send(_) => OpKind::Send,
            Request::Read(..) => OpKind::Read,
            Request::Write(..) => OpKind::Write,
        }
    }

    /// The buffer, handed back when the request is refused or completes.
    pub(crate) fn into_buf(self) -> Option<Vec<u8>> {
        match self {
            Request::Recv(b) | Request::Send(b) | Request::Read(b, _) | Request::Write(b, _) => {
                Some(b)
            }
            Request::RecvPooled { buf, .. } => buf,
            Request::Accept | Request::Connect(_) => None,
        }
    }

    /// `None` when `handle` can carry this request; else whether the
    /// operation suits the handle (so the buffer is full), for
    /// [`refuse_unfit`](Self::refuse_unfit). It reads the request in place,
    /// where the caller built it: a check that took the request and gave it
    /// back through a `Result` copied it in 16-byte loads just after the
    /// caller's 8-byte stores, which store forwarding cannot serve (17% of
    /// `start`'s user-time samples under `perf record -e cpu-clock:u`).
    #[inline]
    pub(crate) fn unfit(&self, handle: HandleKind) -> Option<bool> {
        let ok = matches!(
            (self, handle),
            (Request::Accept, HandleKind::Listener)
                | (Request::Connect(_), HandleKind::Socket)
                | (
                    Request::Recv(_) | Request::RecvPooled { .. } | Request::Send(_),
                    HandleKind::Stream | HandleKind::Socket
                )
                | (Request::Read(..) | Request::Write(..), HandleKind::File)
        );
        let full =
            matches!(self, Request::Recv(b) | Request::Read(b, _) if b.capacity() == b.len());
        if ok && !full {
            None
        } else {
            Some(ok)
        }
    }

    /// The refusal of [`unfit`](Self::unfit): `fits` says the operation suits
    /// the handle (so the buffer is full).
    #[cold]
    #[inline(never)]
    pub(crate) fn refuse_unfit(self, handle: HandleKind, fits: bool) -> StartError {
        let msg = if fits {
            "receive buffer has no spare capacity".to_string()
        } else {
            format!(
                "{:?} is not an operation for a {handle:?} handle",
                self.kind()
            )
        };
        self.refuse(io::Error::new(io::ErrorKind::InvalidInput, msg))
    }

    /// The refusal for this request, carrying its buffer back.
    pub(crate) fn refuse(self, error: io::Error) -> StartError {
        StartError::new(error, self.into_buf())
    }
}
