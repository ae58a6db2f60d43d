//! Tying a descriptor to a port and untying it (`CreateIoCompletionPort`,
//! `FileReplaceCompletionInformation`), and one port per open file (R2).

use std::collections::HashMap;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use windows_sys::Wdk::Foundation::{NtQueryObject, ObjectBasicInformation};
use windows_sys::Wdk::Storage::FileSystem::{
    FileReplaceCompletionInformation, NtSetInformationFile, FILE_COMPLETION_INFORMATION,
};
use windows_sys::Win32::Foundation::{
    ERROR_INVALID_PARAMETER, FALSE, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    GetFileInformationByHandle, ReOpenFile, BY_HANDLE_FILE_INFORMATION, FILE_FLAG_OVERLAPPED,
    FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
use windows_sys::Win32::System::WindowsProgramming::PUBLIC_OBJECT_BASIC_INFORMATION;
use windows_sys::Win32::System::IO::{CreateIoCompletionPort, IO_STATUS_BLOCK};

use super::op::IO_KEY;

/// The identity of a file: volume serial number and file index.
pub(super) type FileId = (u32, u32, u32);

/// Every associated file in the process, by identity, with the caller's
/// original handles (to tell two opens of one file from two handles of one open).
fn registry() -> &'static Mutex<HashMap<FileId, Vec<usize>>> {
    static REG: OnceLock<Mutex<HashMap<FileId, Vec<usize>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
    // SAFETY: a type only; the one call through it passes two handles this
    // process holds, which is all `CompareObjectHandles` requires.
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
pub(super) fn register(original: &OwnedHandle) -> io::Result<FileId> {
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

pub(super) fn unregister(id: FileId, raw: usize) {
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
pub(super) fn reopen_overlapped(original: &OwnedHandle) -> io::Result<OwnedHandle> {
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
pub(super) fn attach(raw: usize, port: HANDLE) -> io::Result<()> {
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
pub(super) fn detach(raw: usize) {
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
