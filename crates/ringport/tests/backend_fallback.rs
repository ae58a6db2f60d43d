//! io_uring refused for real: a seccomp filter makes `io_uring_setup` fail
//! with `EPERM` (what Docker's default profile does), in one thread only. Auto
//! mode must fall back to epoll, say why in `backend_reason()` and in one log
//! line, and work; a forced io_uring must fail with an error that says why and
//! how to fix it.

#![cfg(target_os = "linux")]

mod util;

use std::io;
use std::sync::Mutex;
use std::thread;

use ringport::{Backend, CompletionPort, OpKind, Packet};

/// Log lines at info level and above, from every thread of this test binary.
struct Capture;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let line = format!("{} {}", r.level(), r.args());
            LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }

    fn flush(&self) {}
}

static LOGGER: Capture = Capture;

fn captured() -> Vec<String> {
    LINES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `AUDIT_ARCH_*` of the running architecture, which a seccomp filter must
/// check before it trusts a syscall number.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Makes `io_uring_setup` fail with `EPERM` in the calling thread (and any
/// thread it starts later), leaving every other system call alone. No
/// `SECCOMP_FILTER_FLAG_TSYNC`: the rest of the test process is untouched.
fn refuse_io_uring_in_this_thread() -> io::Result<()> {
    const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    const ARCH: u32 = 4; // offsetof(struct seccomp_data, arch)
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(ld, ARCH),
        jump(jeq, AUDIT_ARCH, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ld, NR),
        jump(jeq, libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only; it lets an
    // unprivileged thread install a filter.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `prog` points to `filter`, both alive for the call; the kernel
    // copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the refused thread saw.
struct Seen {
    backend: Backend,
    reason: String,
    forced: io::Error,
    epoll_forced: Backend,
}

fn in_refused_thread() -> Seen {
    thread::spawn(|| {
        refuse_io_uring_in_this_thread().expect("install the seccomp filter");
        let port = CompletionPort::builder()
            .backend(Backend::Auto)
            .concurrency(1)
            .build()
            .expect("auto falls back instead of failing");
        works(&port);
        let forced = CompletionPort::builder()
            .backend(Backend::IoUring)
            .build()
            .expect_err("io_uring is refused in this thread");
        let epoll = CompletionPort::builder()
            .backend(Backend::Epoll)
            .build()
            .expect("epoll still works");
        Seen {
            backend: port.backend(),
            reason: port.backend_reason().to_string(),
            forced,
            epoll_forced: epoll.backend(),
        }
    })
    .join()
    .expect("refused thread")
}

/// Post and get, then a receive through the port.
fn works(port: &CompletionPort) {
    port.post(Packet {
        bytes: 3,
        key: 4,
        user: 5,
    })
    .unwrap();
    let c = util::get(port);
    assert_eq!((c.kind(), c.key(), c.user()), (OpKind::Post, 4, 5));
    let (mut client, server) = util::tcp_pair();
    let sock = port.associate(server, 9).unwrap();
    port.recv(&sock, Vec::with_capacity(16), 1).unwrap();
    util::write_all(&mut client, b"fallback");
    let mut c = util::get(port);
    assert_eq!((c.kind(), c.key(), c.user()), (OpKind::Recv, 9, 1));
    assert_eq!(c.take_result().unwrap(), 8);
    assert_eq!(c.take_buf().unwrap(), b"fallback");
}

/// One test function, so the process-wide logger sees only this scenario.
#[test]
fn auto_falls_back_to_epoll_when_io_uring_is_refused() {
    log::set_logger(&LOGGER).expect("the only logger of this binary");
    log::set_max_level(log::LevelFilter::Info);

    let seen = in_refused_thread();
    eprintln!(
        "auto, io_uring refused: {:?}: {}",
        seen.backend, seen.reason
    );
    eprintln!("forced io_uring, refused: {}", seen.forced);

    assert_eq!(seen.backend, Backend::Epoll, "reason: {}", seen.reason);
    assert!(
        seen.reason.contains("EPERM") && seen.reason.contains("using epoll"),
        "the reason names the refusal: {}",
        seen.reason
    );
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if sysctl.is_empty() || sysctl == "0" {
        assert!(
            seen.reason
                .starts_with("io_uring refused by seccomp (EPERM)"),
            "{}",
            seen.reason
        );
    } else {
        eprintln!("kernel.io_uring_disabled={sysctl}: the reason names the sysctl");
        assert!(seen.reason.contains("io_uring_disabled"), "{}", seen.reason);
    }

    // Exactly one line from the port creation in auto mode, naming backend and cause.
    let lines: Vec<String> = captured()
        .into_iter()
        .filter(|l| l.contains("ringport"))
        .collect();
    assert_eq!(lines.len(), 1, "one log line: {lines:?}");
    assert!(lines[0].starts_with("INFO "), "{lines:?}");
    assert!(
        lines[0].contains("using epoll") && lines[0].contains("EPERM"),
        "{lines:?}"
    );

    // Forced io_uring: an error that says why and how to fix it.
    let msg = seen.forced.to_string();
    assert_eq!(
        seen.forced.raw_os_error(),
        None,
        "a message, not a bare errno"
    );
    assert_eq!(seen.forced.kind(), io::ErrorKind::PermissionDenied, "{msg}");
    assert!(msg.contains("EPERM"), "{msg}");
    assert!(
        msg.contains("epoll backend"),
        "says how to get going: {msg}"
    );
    assert_eq!(seen.epoll_forced, Backend::Epoll);

    // The filter stayed in its thread: here io_uring works as before (if the
    // machine has it at all).
    match CompletionPort::builder().backend(Backend::IoUring).build() {
        Ok(p) => assert_eq!(p.backend(), Backend::IoUring),
        Err(e) => eprintln!("SKIP the unfiltered check: io_uring unavailable here: {e}"),
    }
}
