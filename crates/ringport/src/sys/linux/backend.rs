//! Which backend a port runs on, and why: `Backend::Auto` probes io_uring once
//! and falls back to epoll with the reason; a forced io_uring that cannot run
//! is an error that says why and how to fix it.

use std::io;
use std::sync::Arc;

use super::driver::Driver;
use super::epoll::Epoll;
use super::uring::Uring;
use crate::pool::BufPool;
use crate::port::{Backend, Builder};

/// Picks the backend the builder asks for: the driver, what is live, and why.
pub(crate) fn choose(b: &Builder, pool: &Arc<BufPool>) -> io::Result<(Driver, Backend, String)> {
    let cq = b
        .cq_entries
        .unwrap_or(b.entries.saturating_mul(4))
        .max(b.entries);
    let epoll = |why: String| -> io::Result<(Driver, Backend, String)> {
        let e = Epoll::new(cq as usize, pool.clone())?;
        let why = format!("{why} ({})", e.describe());
        Ok((Driver::Epoll(e), Backend::Epoll, why))
    };
    match b.backend {
        Backend::IoUring | Backend::Auto => {
            match Uring::new(
                b.entries,
                cq,
                pool.clone(),
                b.single_thread,
                b.multishot_recv,
                b.registered_files,
            ) {
                Ok(u) => {
                    let why = format!("io_uring available ({})", u.describe());
                    Ok((Driver::Uring(u), Backend::IoUring, why))
                }
                Err(e) if b.backend == Backend::IoUring => Err(uring_unavailable(e)),
                Err(e) => epoll(format!("{}; using epoll", uring_refusal(&e))),
            }
        }
        Backend::Epoll => epoll("epoll forced by Backend::Epoll".to_string()),
        Backend::Iocp => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the IOCP backend exists only on Windows",
        )),
    }
}

/// `kernel.io_uring_disabled`: 0 allows io_uring, 1 allows it only to
/// `kernel.io_uring_group`, 2 refuses it to everyone. `None` on kernels
/// without the knob (before 6.6).
fn io_uring_disabled() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Why io_uring could not be set up, in one phrase naming the cause.
fn uring_refusal(e: &io::Error) -> String {
    refusal_phrase(e, io_uring_disabled())
}

fn refusal_phrase(e: &io::Error, disabled: Option<u8>) -> String {
    match (e.raw_os_error(), disabled) {
        (Some(libc::EPERM), Some(2)) => {
            "io_uring disabled by kernel.io_uring_disabled=2 (EPERM)".into()
        }
        (Some(libc::EPERM), Some(1)) => {
            "io_uring restricted by kernel.io_uring_disabled=1 to kernel.io_uring_group (EPERM)"
                .into()
        }
        (Some(libc::EPERM), _) => "io_uring refused by seccomp (EPERM)".into(),
        (Some(libc::ENOSYS), _) => "io_uring not in this kernel (ENOSYS)".into(),
        (Some(libc::ENOMEM), _) => {
            "io_uring ring memory refused (ENOMEM; RLIMIT_MEMLOCK too low)".into()
        }
        (Some(_), _) => format!("io_uring setup failed: {e}"),
        // The port's own checks (missing opcodes or features) say it all.
        (None, _) => e.to_string(),
    }
}

/// The error for a forced io_uring that cannot be set up: why, and how to fix it.
fn uring_unavailable(e: io::Error) -> io::Error {
    let disabled = io_uring_disabled();
    let fix = match (e.raw_os_error(), disabled) {
        (Some(libc::EPERM), Some(2)) => "set sysctl kernel.io_uring_disabled=0, or use the epoll backend",
        (Some(libc::EPERM), Some(1)) => {
            "add this user to kernel.io_uring_group or set kernel.io_uring_disabled=0, or use the epoll backend"
        }
        (Some(libc::EPERM), _) => {
            "allow io_uring_setup, io_uring_enter and io_uring_register in the seccomp profile (Docker: --security-opt seccomp=<profile>), or use the epoll backend"
        }
        (Some(libc::ENOSYS), _) => "use Linux 5.19 or later, or the epoll backend",
        (Some(libc::ENOMEM), _) => "raise RLIMIT_MEMLOCK or ask for fewer entries, or use the epoll backend",
        _ => "use the epoll backend (Backend::Epoll, --backend epoll) or Backend::Auto",
    };
    let msg = format!("{}: {fix}", refusal_phrase(&e, disabled));
    io::Error::new(e.kind(), msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_cause() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(
            refusal_phrase(&eperm, Some(0)),
            "io_uring refused by seccomp (EPERM)"
        );
        assert_eq!(
            refusal_phrase(&eperm, None),
            "io_uring refused by seccomp (EPERM)"
        );
        assert!(refusal_phrase(&eperm, Some(2)).contains("kernel.io_uring_disabled=2"));
        assert!(refusal_phrase(&eperm, Some(1)).contains("io_uring_group"));
        let enosys = io::Error::from_raw_os_error(libc::ENOSYS);
        assert!(refusal_phrase(&enosys, Some(0)).contains("ENOSYS"));
        let own = io::Error::new(io::ErrorKind::Unsupported, "io_uring lacks opcodes SEND");
        assert_eq!(refusal_phrase(&own, None), "io_uring lacks opcodes SEND");
    }
}
