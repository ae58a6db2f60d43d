//! Socket operations: `WSARecv`, `WSASend`, `AcceptEx`, `ConnectEx`.
//!
//! Each `start_*` returns `Ok(None)` when a packet will be queued (the call
//! succeeded at once or is pending: without skip-on-success both queue one),
//! `Ok(Some(code))` when the call failed at once with `code` (no packet: the
//! caller queues one carrying the error), and `Err` for a failure before the
//! call (no packet; the operation is refused).

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, TcpStream};
use std::os::windows::io::{FromRawSocket, IntoRawSocket};
use std::sync::OnceLock;

use socket2::{SockAddr, Socket, Type};
use windows_sys::core::GUID;
use windows_sys::Win32::Foundation::FALSE;
use windows_sys::Win32::Networking::WinSock::{
    bind, getsockname, setsockopt, AcceptEx, GetAcceptExSockaddrs, WSAGetLastError,
    WSAGetOverlappedResult, WSAIoctl, WSARecv, WSASend, LPFN_CONNECTEX,
    SIO_GET_EXTENSION_FUNCTION_POINTER, SOCKADDR, SOCKADDR_STORAGE, SOCKET, SOCKET_ERROR,
    SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, SO_UPDATE_CONNECT_CONTEXT, WSAEINVAL, WSAID_CONNECTEX,
    WSA_IO_PENDING,
};

use super::op::Op;
use crate::op::Request;

/// Room `AcceptEx` wants for each address: the largest address plus 16.
const ADDR_ROOM: u32 = (size_of::<SOCKADDR_STORAGE>() + 16) as u32;

/// What an accept owns while in flight: the socket `AcceptEx` connects (it
/// must exist before the call, unlike `accept(2)`), and the buffer it writes
/// the two addresses into.
pub(super) struct AcceptState {
    socket: Socket,
    addrs: [u8; 2 * ADDR_ROOM as usize],
}

/// `Ok(None)` for a call that queued a packet; `Ok(Some(error))` for one
/// that failed at once. `ok` is the call's own success test.
fn outcome(ok: bool) -> io::Result<Option<u32>> {
    if ok {
        return Ok(None);
    }
    // SAFETY: reads the calling thread's Winsock error; no arguments.
    match unsafe { WSAGetLastError() } {
        WSA_IO_PENDING => Ok(None),
        code => Ok(Some(code as u32)),
    }
}

/// `WSARecv` into the spare capacity of the request's buffer.
///
/// # Safety
///
/// `op` was handed to the kernel with [`Op::into_kernel`] and `sock` is open
/// until its packet is dequeued.
pub(super) unsafe fn start_recv(op: &mut Op, sock: usize) -> io::Result<Option<u32>> {
    let Request::Recv(buf) = &mut op.req else {
        unreachable!("start_recv on {:?}", op.req.kind())
    };
    let spare = buf.spare_capacity_mut();
    op.wsabuf.len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
    op.wsabuf.buf = spare.as_mut_ptr().cast();
    op.flags = 0;
    // SAFETY: the buffer, the descriptor and the flags word live in the boxed
    // operation until its packet is dequeued; the OVERLAPPED is its first field.
    let r = unsafe {
        WSARecv(
            sock as SOCKET,
            &op.wsabuf,
            1,
            std::ptr::null_mut(),
            &mut op.flags,
            &mut op.overlapped,
            None,
        )
    };
    outcome(r == 0)
}

/// `WSASend` of the whole request buffer.
///
/// # Safety
///
/// As [`start_recv`].
pub(super) unsafe fn start_send(op: &mut Op, sock: usize) -> io::Result<Option<u32>> {
    let Request::Send(buf) = &mut op.req else {
        unreachable!("start_send on {:?}", op.req.kind())
    };
    op.wsabuf.len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    op.wsabuf.buf = buf.as_mut_ptr();
    // SAFETY: as in `start_recv`; the kernel only reads the buffer.
    let r = unsafe {
        WSASend(
            sock as SOCKET,
            &op.wsabuf,
            1,
            std::ptr::null_mut(),
            0,
            &mut op.overlapped,
            None,
        )
    };
    outcome(r == 0)
}

/// `AcceptEx` on the listener `sock`, into a socket made here of the
/// listener's family.
///
/// # Safety
///
/// As [`start_recv`].
pub(super) unsafe fn start_accept(op: &mut Op, sock: usize) -> io::Result<Option<u32>> {
    let family = local_addr(sock)?.domain();
    let socket = Socket::new(family, Type::STREAM, None)?;
    let state = op.accept.insert(Box::new(AcceptState {
        socket,
        addrs: [0; 2 * ADDR_ROOM as usize],
    }));
    let mut received = 0u32;
    // SAFETY: the accept socket and the address buffer are boxed in the
    // operation until its packet is dequeued.
    let ok = unsafe {
        AcceptEx(
            sock as SOCKET,
            raw_socket(&state.socket),
            state.addrs.as_mut_ptr().cast(),
            0,
            ADDR_ROOM,
            ADDR_ROOM,
            &mut received,
            &mut op.overlapped,
        )
    };
    outcome(ok != FALSE)
}

/// Completes a successful accept: the new socket inherits the listener's
/// properties (`SO_UPDATE_ACCEPT_CONTEXT`), and the peer address comes from
/// `GetAcceptExSockaddrs`.
pub(super) fn finish_accept(
    state: AcceptState,
    listener: usize,
) -> io::Result<(TcpStream, SocketAddr)> {
    let AcceptState { socket, addrs } = state;
    let s = raw_socket(&socket);
    let l = listener as SOCKET;
    // SAFETY: both sockets are open; the option value is one SOCKET.
    let r = unsafe {
        setsockopt(
            s,
            SOL_SOCKET,
            SO_UPDATE_ACCEPT_CONTEXT,
            (&l as *const SOCKET).cast(),
            size_of::<SOCKET>() as i32,
        )
    };
    if r == SOCKET_ERROR {
        return Err(super::wsa_error());
    }
    let peer = peer_from_accept_buffer(&addrs)?;
    // SAFETY: the socket is ours alone; ownership moves into the stream.
    let stream = unsafe { TcpStream::from_raw_socket(socket.into_raw_socket()) };
    Ok((stream, peer))
}

/// The remote address `AcceptEx` wrote into its buffer.
fn peer_from_accept_buffer(addrs: &[u8; 2 * ADDR_ROOM as usize]) -> io::Result<SocketAddr> {
    let mut local: *mut SOCKADDR = std::ptr::null_mut();
    let mut remote: *mut SOCKADDR = std::ptr::null_mut();
    let (mut local_len, mut remote_len) = (0i32, 0i32);
    // SAFETY: `addrs` is the buffer the completed AcceptEx filled, with the
    // same sizes; the out pointers point into it.
    unsafe {
        GetAcceptExSockaddrs(
            addrs.as_ptr().cast(),
            0,
            ADDR_ROOM,
            ADDR_ROOM,
            &mut local,
            &mut local_len,
            &mut remote,
            &mut remote_len,
        )
    };
    let len = usize::try_from(remote_len).unwrap_or(0);
    if remote.is_null() || len == 0 || len > size_of::<SOCKADDR_STORAGE>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "AcceptEx gave no peer address",
        ));
    }
    // SAFETY: `remote` points to `len` initialised bytes inside `addrs`, and
    // the storage holds at least that many.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, storage_len| {
            std::ptr::copy_nonoverlapping(remote.cast::<u8>(), storage.cast::<u8>(), len);
            *storage_len = len as _;
            Ok(())
        })
    }?;
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "peer address is not IPv4 or IPv6",
        )
    })
}

/// `ConnectEx` to the request's address. `ConnectEx` wants a bound socket,
/// so an unbound one is bound to the unspecified address of its family first.
///
/// # Safety
///
/// As [`start_recv`].
pub(super) unsafe fn start_connect(op: &mut Op, sock: usize) -> io::Result<Option<u32>> {
    let Request::Connect(target) = &op.req else {
        unreachable!("start_connect on {:?}", op.req.kind())
    };
    bind_unspecified(sock, target)?;
    let connect_ex = connect_ex(sock)?;
    let addr = op.connect.insert(SockAddr::from(*target));
    // SAFETY: the address is boxed in the operation until its packet is
    // dequeued; no data is sent with the connect.
    let ok = unsafe {
        connect_ex(
            sock as SOCKET,
            addr.as_ptr().cast(),
            addr.len(),
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
            &mut op.overlapped,
        )
    };
    outcome(ok != FALSE)
}

/// Completes a successful connect, so that `getpeername`, `shutdown` and
/// friends work on the socket (`SO_UPDATE_CONNECT_CONTEXT`).
pub(super) fn finish_connect(sock: usize) -> io::Result<()> {
    // SAFETY: the socket is open; the option takes no value.
    let r = unsafe {
        setsockopt(
            sock as SOCKET,
            SOL_SOCKET,
            SO_UPDATE_CONNECT_CONTEXT,
            std::ptr::null(),
            0,
        )
    };
    if r == SOCKET_ERROR {
        return Err(super::wsa_error());
    }
    Ok(())
}

fn bind_unspecified(sock: usize, target: &SocketAddr) -> io::Result<()> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let any = SockAddr::from(any);
    // SAFETY: the socket is open and the address valid for its length.
    if unsafe { bind(sock as SOCKET, any.as_ptr().cast(), any.len()) } == SOCKET_ERROR {
        // SAFETY: reads the calling thread's Winsock error.
        match unsafe { WSAGetLastError() } {
            WSAEINVAL => {} // already bound by the caller: keep that address
            code => return Err(io::Error::from_raw_os_error(code)),
        }
    }
    Ok(())
}

/// `ConnectEx` is not exported; Winsock hands out its address per provider.
fn connect_ex(
    sock: usize,
) -> io::Result<
    // SAFETY: a type only; `start_connect` calls through it with the
    // arguments `ConnectEx` documents (see there).
    unsafe extern "system" fn(
        SOCKET,
        *const SOCKADDR,
        i32,
        *const core::ffi::c_void,
        u32,
        *mut u32,
        *mut windows_sys::Win32::System::IO::OVERLAPPED,
    ) -> windows_sys::core::BOOL,
> {
    static CONNECT_EX: OnceLock<usize> = OnceLock::new();
    if let Some(&f) = CONNECT_EX.get() {
        // SAFETY: only a non-null LPFN_CONNECTEX is ever stored.
        return Ok(unsafe { std::mem::transmute::<usize, LPFN_CONNECTEX>(f) }.expect("non-null"));
    }
    let guid: GUID = WSAID_CONNECTEX;
    let mut f: LPFN_CONNECTEX = None;
    let mut len = 0u32;
    // SAFETY: the in and out buffers are valid for the sizes given; the call
    // is synchronous (no OVERLAPPED).
    let r = unsafe {
        WSAIoctl(
            sock as SOCKET,
            SIO_GET_EXTENSION_FUNCTION_POINTER,
            (&guid as *const GUID).cast(),
            size_of::<GUID>() as u32,
            (&mut f as *mut LPFN_CONNECTEX).cast(),
            size_of::<LPFN_CONNECTEX>() as u32,
            &mut len,
            std::ptr::null_mut(),
            None,
        )
    };
    match f {
        Some(func) if r != SOCKET_ERROR => {
            let _ = CONNECT_EX.set(func as usize);
            Ok(func)
        }
        _ => Err(super::wsa_error()),
    }
}

/// The local address of a socket (for its family).
fn local_addr(sock: usize) -> io::Result<SockAddr> {
    // SAFETY: `getsockname` writes at most `len` bytes into the storage.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            if getsockname(sock as SOCKET, storage.cast(), len) == SOCKET_ERROR {
                Err(super::wsa_error())
            } else {
                Ok(())
            }
        })
    }?;
    Ok(addr)
}

/// The outcome of a dequeued socket operation, as a Winsock error.
pub(super) fn overlapped_result(op: &Op) -> io::Result<()> {
    let (mut bytes, mut flags) = (0u32, 0u32);
    // SAFETY: the operation's packet was dequeued, so the OVERLAPPED is
    // final; the socket is open (its handle defers close until `op_done`).
    let ok = unsafe {
        WSAGetOverlappedResult(
            op.handle.raw() as SOCKET,
            &op.overlapped,
            &mut bytes,
            FALSE,
            &mut flags,
        )
    };
    if ok == FALSE {
        return Err(super::wsa_error());
    }
    Ok(())
}

fn raw_socket(s: &Socket) -> SOCKET {
    use std::os::windows::io::AsRawSocket;
    s.as_raw_socket() as SOCKET
}
