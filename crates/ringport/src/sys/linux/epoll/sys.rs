//! The system calls of the epoll driver: one helper turns `-1`/`errno` into
//! `io::Error` and retries `EINTR`; thin wrappers name each call once.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Runs a libc call that reports failure as `-1` with `errno`, retrying it
/// while it is interrupted by a signal (`EINTR`).
pub(super) fn syscall<T>(mut call: impl FnMut() -> T) -> io::Result<T>
where
    T: Copy + PartialEq + From<i8>,
{
    loop {
        let r = call();
        if r != T::from(-1) {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// The `-errno` form the port's completion path expects for a failed call.
pub(super) fn neg_errno(e: &io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(libc::EIO)
}

/// A new epoll instance.
pub(super) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers.
    let fd = syscall(|| unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: the call returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new non-blocking eventfd, the poller's doorbell.
pub(super) fn eventfd() -> io::Result<OwnedFd> {
    let flags = libc::EFD_CLOEXEC | libc::EFD_NONBLOCK;
    // SAFETY: eventfd takes no pointers.
    let fd = syscall(|| unsafe { libc::eventfd(0, flags) })?;
    // SAFETY: the call returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(op, fd)` with `events` and `data` (ignored for `EPOLL_CTL_DEL`).
pub(super) fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is valid for the duration of the call; the kernel copies it.
    syscall(|| unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) })?;
    Ok(())
}

/// Waits for events into `buf`; returns how many were written.
pub(super) fn epoll_wait(
    epfd: RawFd,
    buf: &mut [libc::epoll_event],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let ms = timeout_ms(timeout);
    let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
    // SAFETY: `buf` is valid for writes of `cap` events.
    let n = syscall(|| unsafe { libc::epoll_wait(epfd, buf.as_mut_ptr(), cap, ms) })?;
    Ok(n as usize)
}

/// Milliseconds for `epoll_wait`, rounded up so a short timeout never spins;
/// -1 waits forever.
fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

/// Adds `O_NONBLOCK` to the descriptor's file status flags.
pub(super) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer.
    let flags = syscall(|| unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: F_SETFL takes an integer argument, no pointer.
        syscall(|| unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    }
    Ok(())
}

/// True for a `SOCK_STREAM` socket.
pub(super) fn is_stream(fd: RawFd) -> io::Result<bool> {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are valid for writes of the sizes given.
    syscall(|| unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(ty == libc::SOCK_STREAM)
}

/// Adds one to the eventfd counter.
pub(super) fn eventfd_signal(fd: RawFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: `one` is valid for reads of its 8 bytes.
    syscall(|| unsafe { libc::write(fd, (&one as *const u64).cast(), 8) })?;
    Ok(())
}

/// Resets the eventfd counter to zero (nothing to read is not an error).
pub(super) fn eventfd_drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: `v` is valid for writes of its 8 bytes.
    let _ = syscall(|| unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(20))), 20);
        assert_eq!(timeout_ms(Some(Duration::from_secs(u64::MAX))), i32::MAX);
    }

    #[test]
    fn syscall_reports_errno() {
        // SAFETY: closing a descriptor number that is not open only fails.
        let e = syscall(|| unsafe { libc::close(-1) }).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        assert_eq!(neg_errno(&e), -libc::EBADF);
    }
}
