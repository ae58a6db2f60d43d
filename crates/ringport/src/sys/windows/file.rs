//! File operations: `ReadFile` / `WriteFile` at the offset in the `OVERLAPPED`.
//!
//! The same return convention as `socket.rs`. A read at or past the end of
//! the file fails at once with `ERROR_HANDLE_EOF` on Windows; the port queues
//! its packet itself and it completes as zero bytes, as on Linux.

use std::io;

use windows_sys::Win32::Foundation::{GetLastError, ERROR_IO_PENDING, FALSE, HANDLE};
use windows_sys::Win32::Storage::FileSystem::{ReadFile, WriteFile};
use windows_sys::Win32::System::IO::GetOverlappedResult;

use super::op::Op;
use crate::op::Request;

fn outcome(ok: bool) -> io::Result<Option<u32>> {
    if ok {
        return Ok(None);
    }
    // SAFETY: reads the calling thread's last error; no arguments.
    match unsafe { GetLastError() } {
        ERROR_IO_PENDING => Ok(None),
        code => Ok(Some(code)),
    }
}

fn set_offset(op: &mut Op, offset: u64) {
    op.overlapped.Anonymous.Anonymous.Offset = offset as u32;
    op.overlapped.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
}

/// `ReadFile` into the spare capacity of the request's buffer.
///
/// # Safety
///
/// `op` was handed to the kernel with [`Op::into_kernel`] and `file` is an
/// open handle (opened for overlapped I/O) until its packet is dequeued.
pub(super) unsafe fn start_read(op: &mut Op, file: usize) -> io::Result<Option<u32>> {
    let Request::Read(buf, offset) = &mut op.req else {
        unreachable!("start_read on {:?}", op.req.kind())
    };
    let offset = *offset;
    let spare = buf.spare_capacity_mut();
    let (ptr, len) = (
        spare.as_mut_ptr(),
        u32::try_from(spare.len()).unwrap_or(u32::MAX),
    );
    set_offset(op, offset);
    // SAFETY: the buffer lives in the boxed operation until its packet is
    // dequeued; the OVERLAPPED is its first field and carries the offset.
    let ok = unsafe {
        ReadFile(
            file as HANDLE,
            ptr.cast(),
            len,
            std::ptr::null_mut(),
            &mut op.overlapped,
        )
    };
    outcome(ok != FALSE)
}

/// `WriteFile` of the whole request buffer.
///
/// # Safety
///
/// As [`start_read`].
pub(super) unsafe fn start_write(op: &mut Op, file: usize) -> io::Result<Option<u32>> {
    let Request::Write(buf, offset) = &op.req else {
        unreachable!("start_write on {:?}", op.req.kind())
    };
    let offset = *offset;
    let (ptr, len) = (buf.as_ptr(), u32::try_from(buf.len()).unwrap_or(u32::MAX));
    set_offset(op, offset);
    // SAFETY: as in `start_read`; the kernel only reads the buffer.
    let ok = unsafe {
        WriteFile(
            file as HANDLE,
            ptr,
            len,
            std::ptr::null_mut(),
            &mut op.overlapped,
        )
    };
    outcome(ok != FALSE)
}

/// The outcome of a dequeued file operation, as a Win32 error.
pub(super) fn overlapped_result(op: &Op) -> io::Result<()> {
    let mut bytes = 0u32;
    // SAFETY: the operation's packet was dequeued, so the OVERLAPPED is
    // final and `bWait = FALSE` never blocks; the handle is open until `op_done`.
    let ok = unsafe {
        GetOverlappedResult(op.handle.raw() as HANDLE, &op.overlapped, &mut bytes, FALSE)
    };
    if ok == FALSE {
        return Err(super::last_error());
    }
    Ok(())
}
