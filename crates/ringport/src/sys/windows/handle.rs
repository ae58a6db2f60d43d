//! Associated handles: one port per handle (R2), deferred close (R11).

use std::collections::HashMap;
use std::io;
use std::os::windows::io::{
    AsRawHandle, AsRawSocket, AsSocket, BorrowedSocket, FromRawHandle, OwnedHandle, OwnedSocket,
};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use windows_sys::Wdk::Foundation::{NtQueryObject, ObjectBasicInformation};
use windows_sys::Wdk::Storage::FileSystem::{
    FileReplaceCompletionInformation, NtSetInformationFile, FILE_COMPLETION_INFORMATION,
};
use windows_sys::Win32::Foundation::{
    ERROR_INVALID_PARAMETER, ERROR_NOT_FOUND, FALSE, GENERIC_READ, GENERIC_WRITE, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Networking::WinSock::{
    getsockopt, SOCKET, SOCKET_ERROR, SOL_SOCKET, SO_ACCEPTCONN,
};
use windows_sys::Win32::Storage::FileSystem::{
    GetFileInformationByHandle, ReOpenFile, BY_HANDLE_FILE_INFORMATION, FILE_FLAG_OVERLAPPED,
    FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
use windows_sys::Win32::System::WindowsProgramming::PUBLIC_OBJECT_BASIC_INFORMATION;
use windows_sys::Win32::System::IO::{
    CancelIoEx, CreateIoCompletionPort, IO_STATUS_BLOCK, OVERLAPPED,
};

use super::op::IO_KEY;
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

/// A descriptor taken from a std or socket2 type, with what it is.
#[derive(Debug)]
pub(crate) struct Owned {
    io: Unassociated,
    kind: HandleKind,
}

#[derive(Debug)]
enum Unassociated {
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

/// The identity of a file: volume serial number and file index.
type FileId = (u32, u32, u32);

/// Every associated file in the process, by identity, with the caller's
/// original handles (to tell two opens of one file from two handles of one open).
fn registry() -> &'static Mutex<HashMap<FileId, Vec<usize>>> {
    static REG: OnceLock<Mutex<HashMap<FileId, Vec<usize>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn file_id(h: &OwnedHandle) -> io::Result<FileId> {
    // SAFETY: an all-zero BY_HANDLE_FILE_INFORMATION is a valid value to overwrite.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: `h` is open and `info` valid for writes.
    if unsafe { GetFileInformationByHandle(h.as_raw_handle(), &mut info) } == FALSE {
        return Err(super::last_error());
    }
    Ok((
        info.dwVolumeSerialNumber,
        info.nFileIndexHigh,
        info.nFileIndexLow,
    ))
}

/// True when two handles refer to one kernel object (`CompareObjectHandles`,
/// Windows 10 and later). Where that call is missing, two handles to one file
/// count as the same, so a second open of an associated file is refused too.
fn same_object(a: usize, b: usize) -> bool {
    type Compare = unsafe extern "system" fn(HANDLE, HANDLE) -> windows_sys::core::BOOL;
    static COMPARE: OnceLock<Option<Compare>> = OnceLock::new();
    let compare = COMPARE.get_or_init(|| {
        // SAFETY: both names are NUL-terminated; a null module yields None.
        let f = unsafe {
            let m = GetModuleHandleA(c"kernelbase.dll".as_ptr().cast());
            if m.is_null() {
                return None;
            }
            GetProcAddress(m, c"CompareObjectHandles".as_ptr().cast())
        };
        // SAFETY: CompareObjectHandles has exactly this signature.
        f.map(|f| unsafe { std::mem::transmute::<_, Compare>(f) })
    });
    match compare {
        Some(f) => {
            // SAFETY: both handles are open for the duration of the call.
            let same = unsafe { f(a as HANDLE, b as HANDLE) };
            same != FALSE
        }
        None => true,
    }
}

/// Records the file, refusing one whose open file is already associated.
fn register(original: &OwnedHandle) -> io::Result<FileId> {
    let id = file_id(original)?;
    let raw = original.as_raw_handle() as usize;
    let mut reg = lock(registry());
    let handles = reg.entry(id).or_default();
    if handles.iter().any(|&other| same_object(other, raw)) {
        return Err(already_associated());
    }
    handles.push(raw);
    Ok(id)
}

fn unregister(id: FileId, raw: usize) {
    let mut reg = lock(registry());
    if let Some(handles) = reg.get_mut(&id) {
        handles.retain(|&h| h != raw);
        if handles.is_empty() {
            reg.remove(&id);
        }
    }
}

fn already_associated() -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        "this socket or file is already associated with a completion port",
    )
}

/// A second handle to the caller's file, opened for overlapped I/O (std opens
/// files for synchronous I/O, which a completion port cannot drive), with the
/// access the caller's handle was granted (read, write, or both).
fn reopen_overlapped(original: &OwnedHandle) -> io::Result<OwnedHandle> {
    let share = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;
    let attempts: Vec<u32> = match granted_access(original) {
        Some(access) => vec![access],
        None => vec![GENERIC_READ | GENERIC_WRITE, GENERIC_READ, GENERIC_WRITE],
    };
    let mut last = None;
    for access in attempts {
        // SAFETY: `original` is open; the call makes a new handle or fails.
        let h = unsafe {
            ReOpenFile(
                original.as_raw_handle(),
                access,
                share,
                FILE_FLAG_OVERLAPPED,
            )
        };
        if h != INVALID_HANDLE_VALUE && !h.is_null() {
            // SAFETY: `h` is a new handle that nothing else owns.
            return Ok(unsafe { OwnedHandle::from_raw_handle(h) });
        }
        last = Some(super::last_error());
    }
    Err(last.unwrap_or_else(|| io::Error::other("no access to reopen the file with")))
}

/// The access rights granted to a handle (`NtQueryObject`), if the system says.
fn granted_access(h: &OwnedHandle) -> Option<u32> {
    // SAFETY: an all-zero PUBLIC_OBJECT_BASIC_INFORMATION is a valid value.
    let mut info: PUBLIC_OBJECT_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
    let mut len = 0u32;
    // SAFETY: `h` is open; `info` and `len` are valid for writes of their size.
    let status = unsafe {
        NtQueryObject(
            h.as_raw_handle(),
            ObjectBasicInformation,
            (&mut info as *mut PUBLIC_OBJECT_BASIC_INFORMATION).cast(),
            std::mem::size_of::<PUBLIC_OBJECT_BASIC_INFORMATION>() as u32,
            &mut len,
        )
    };
    (status >= 0 && info.GrantedAccess != 0).then_some(info.GrantedAccess)
}

/// `CreateIoCompletionPort(handle, port, IO_KEY, 0)`.
fn attach(raw: usize, port: HANDLE) -> io::Result<()> {
    // SAFETY: both handles are open; the call only links them.
    let r = unsafe { CreateIoCompletionPort(raw as HANDLE, port, IO_KEY, 0) };
    if r.is_null() {
        let e = super::last_error();
        if e.raw_os_error() == Some(ERROR_INVALID_PARAMETER as i32) {
            // The kernel's answer for a handle already tied to a port.
            return Err(already_associated());
        }
        return Err(e);
    }
    Ok(())
}

/// Unties a socket from its port before it is closed, so that a duplicate of
/// it that stays open can be associated again (Windows 8.1 and later; a
/// failure is harmless and ignored: Wine 8 answers `STATUS_NOT_IMPLEMENTED`,
/// and the duplicate then stays tied to the old port).
fn detach(raw: usize) {
    let info = FILE_COMPLETION_INFORMATION {
        Port: std::ptr::null_mut(),
        Key: std::ptr::null_mut(),
    };
    // SAFETY: an all-zero IO_STATUS_BLOCK is a valid value to overwrite.
    let mut iosb: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is open; `info` and `iosb` are valid for the call.
    let _ = unsafe {
        NtSetInformationFile(
            raw as HANDLE,
            &mut iosb,
            (&info as *const FILE_COMPLETION_INFORMATION).cast(),
            std::mem::size_of::<FILE_COMPLETION_INFORMATION>() as u32,
            FileReplaceCompletionInformation,
        )
    };
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
    state: Mutex<State>,
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
            state: Mutex::new(State {
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
        // SAFETY: the handle is open (close is deferred while operations are
        // in flight), and `ov`, when not null, is an operation still in
        // flight: it leaves `inflight` (under this lock) before it is freed.
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
