//! Descriptors as the caller hands them over, before association.

use std::io;
use std::os::windows::io::{AsRawSocket, AsSocket, BorrowedSocket, OwnedHandle, OwnedSocket};

use windows_sys::Win32::Networking::WinSock::{
    getsockopt, SOCKET, SOCKET_ERROR, SOL_SOCKET, SO_ACCEPTCONN,
};

use crate::handle::HandleKind;

/// A descriptor taken from a std or socket2 type, with what it is.
#[derive(Debug)]
pub(crate) struct Owned {
    pub(super) io: Unassociated,
    pub(super) kind: HandleKind,
}

#[derive(Debug)]
pub(super) enum Unassociated {
    Socket(OwnedSocket),
    File(OwnedHandle),
}

/// Types whose descriptor can be associated.
pub(crate) trait IntoOwned {
    fn into_owned(self) -> io::Result<Owned>;
}

impl IntoOwned for std::net::TcpListener {
    fn into_owned(self) -> io::Result<Owned> {
        Ok(Owned::socket(self.into(), HandleKind::Listener))
    }
}

impl IntoOwned for std::net::TcpStream {
    fn into_owned(self) -> io::Result<Owned> {
        Ok(Owned::socket(self.into(), HandleKind::Stream))
    }
}

impl IntoOwned for std::fs::File {
    fn into_owned(self) -> io::Result<Owned> {
        Ok(Owned {
            io: Unassociated::File(self.into()),
            kind: HandleKind::File,
        })
    }
}

impl IntoOwned for socket2::Socket {
    fn into_owned(self) -> io::Result<Owned> {
        let kind = if is_listening(self.as_socket())? {
            HandleKind::Listener
        } else if self.peer_addr().is_ok() {
            HandleKind::Stream
        } else {
            HandleKind::Socket
        };
        Ok(Owned::socket(self.into(), kind))
    }
}

/// `SO_ACCEPTCONN`: is the socket listening?
fn is_listening(s: BorrowedSocket<'_>) -> io::Result<bool> {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as i32;
    // SAFETY: `v` and `len` are valid for writes of the sizes given; the
    // socket is borrowed for the call.
    let r = unsafe {
        getsockopt(
            s.as_raw_socket() as SOCKET,
            SOL_SOCKET,
            SO_ACCEPTCONN,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    if r == SOCKET_ERROR {
        return Err(super::wsa_error());
    }
    Ok(v != 0)
}

impl Owned {
    fn socket(s: OwnedSocket, kind: HandleKind) -> Owned {
        Owned {
            io: Unassociated::Socket(s),
            kind,
        }
    }

    /// Takes the descriptor out of a std or socket2 value.
    pub(crate) fn from_io<T: IntoOwned>(io: T) -> io::Result<Owned> {
        io.into_owned()
    }
}
