//! Helpers shared by the conformance suite.
//!
//! Every test runs once per backend this machine can run. `RINGPORT_BACKEND`
//! (`io_uring`, `epoll`, `iocp`) narrows the run to one backend; a backend that
//! cannot run here is skipped with a printed reason, never passed silently.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ringport::{Backend, Builder, Completion, CompletionPort};

/// A generous bound for anything that should happen "soon": tests never
/// assert on speed, only that nothing hangs forever.
pub const LONG: Duration = Duration::from_secs(20);

/// The backends this test binary should cover, in a stable order.
pub fn backends() -> Vec<Backend> {
    let wanted: Vec<Backend> = match std::env::var("RINGPORT_BACKEND") {
        Ok(name) if !name.is_empty() && name != "all" => {
            vec![name.parse().expect("RINGPORT_BACKEND names a backend")]
        }
        _ => vec![Backend::IoUring, Backend::Epoll, Backend::Iocp],
    };
    let forced = wanted.len() == 1;
    let mut live = Vec::new();
    for backend in wanted {
        match CompletionPort::builder().backend(backend).build() {
            Ok(_) => live.push(backend),
            Err(e) => eprintln!("SKIP backend {backend}: {e}"),
        }
    }
    // A forced backend that cannot run here is skipped (with the reason
    // printed above); without one, at least one backend must run.
    assert!(
        forced || !live.is_empty(),
        "no backend can run on this machine; every test would be skipped"
    );
    live
}

/// Runs `f` once per backend, with a builder already set to that backend.
pub fn each_backend(mut f: impl FnMut(Backend, Builder)) {
    for backend in backends() {
        eprintln!("-- backend {backend}");
        f(backend, CompletionPort::builder().backend(backend));
    }
}

/// A port on `backend` with the given concurrency.
pub fn port(backend: Backend, concurrency: usize) -> CompletionPort {
    CompletionPort::builder()
        .backend(backend)
        .concurrency(concurrency)
        .build()
        .expect("port")
}

/// A connected pair of loopback TCP streams: (client, server side).
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    (client, server)
}

/// A listener on an ephemeral loopback port.
pub fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Posts a packet with only a caller value (`bytes` and `key` zero).
pub fn post(port: &CompletionPort, user: u64) -> io::Result<()> {
    port.post(ringport::Packet {
        bytes: 0,
        key: 0,
        user,
    })
}

/// Dequeues one completion, failing the test after [`LONG`].
pub fn get(port: &CompletionPort) -> Completion {
    port.get(Some(LONG))
        .unwrap_or_else(|e| panic!("no completion within {LONG:?}: {e}"))
}

/// Asserts that nothing is queued right now and nothing arrives for `quiet`.
pub fn assert_nothing_more(port: &CompletionPort, quiet: Duration) {
    if let Ok(c) = port.get(Some(quiet)) {
        panic!("unexpected extra completion: {c:?}");
    }
}

/// A deterministic byte pattern, so every echoed byte can be checked.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Reads exactly `n` bytes with a blocking socket, with a timeout.
pub fn read_n(stream: &mut TcpStream, n: usize) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(LONG))?;
    let mut v = vec![0; n];
    stream.read_exact(&mut v)?;
    Ok(v)
}

/// Writes all of `data` with a blocking socket.
pub fn write_all(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).expect("write");
}

/// Number of open descriptors of this process (Linux: `/proc/self/fd`;
/// Windows: the process's handle count).
#[cfg(not(windows))]
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[cfg(windows)]
pub fn open_fds() -> usize {
    let mut n = 0u32;
    // SAFETY: the pseudo-handle of this process is always valid; `n` is
    // valid for a write.
    if unsafe { win::GetProcessHandleCount(win::GetCurrentProcess(), &mut n) } == 0 {
        return 0;
    }
    n as usize
}

/// True when this Windows binary runs under Wine (ntdll exports
/// `wine_get_version`); always false elsewhere.
pub fn under_wine() -> bool {
    #[cfg(windows)]
    {
        // SAFETY: both names are NUL-terminated; ntdll is always loaded.
        unsafe {
            let ntdll = win::GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            !ntdll.is_null()
                && !win::GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_null()
        }
    }
    #[cfg(not(windows))]
    false
}

/// Under Wine, prints why the calling test is skipped and returns true: for
/// tests of kernel behaviour Wine does not reproduce (see TESTING.md). The
/// line starts with `SKIP (wine)` so that test.sh can count it.
pub fn skip_under_wine(test: &str, reason: &str) -> bool {
    if under_wine() {
        // Straight to stderr, past the test harness's output capture.
        let _ = writeln!(io::stderr(), "SKIP (wine) {test}: {reason}");
        return true;
    }
    false
}

#[cfg(windows)]
mod win {
    use std::ffi::c_void;

    #[link(name = "kernel32")]
    extern "system" {
        pub fn GetModuleHandleA(name: *const u8) -> *mut c_void;
        pub fn GetProcAddress(module: *mut c_void, name: *const u8) -> *mut c_void;
        pub fn GetCurrentProcess() -> *mut c_void;
        pub fn GetProcessHandleCount(process: *mut c_void, count: *mut u32) -> i32;
    }
}

/// Polls `cond` until it holds or [`LONG`] passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
