//! The IOCP pattern of more worker threads than the port's concurrency
//! (`--threads 2 --concurrency 1`): every echo must still come back.
//!
//! A regression test: before the library's poller-lock fix (05bfaf2) both
//! workers ended up waiting as pollers (one asleep in `io_uring_enter` holding
//! the completion-queue lock, the other blocked on that lock), posted packets
//! no longer woke them, and the server stopped echoing after a few messages.

#![cfg(unix)] // the tests drive a child process with Unix signals and rlimits

mod util;

use std::time::Duration;

use util::{connect, echo, Server};

#[test]
fn echo_with_more_threads_than_concurrency() {
    let Some(b) = util::backend() else { return };
    let server = Server::start(&b, &["--threads", "2", "--concurrency", "1"]);
    let mut s = connect(server.addr);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for i in 0..2000u32 {
        echo(&mut s, &i.to_le_bytes());
    }
    drop(s);
    // The load generator's pattern (a new message as soon as the last one is
    // back, on several connections) is what stalls it.
    let addr = server.addr.to_string();
    let out = std::process::Command::new(util::BIN)
        .args([
            "bench",
            "--addr",
            &addr,
            "--connections",
            "4",
            "--duration",
            "1",
        ])
        .args(["--warmup", "0.1", "--backend", &b, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(100));
    let c = server.stop();
    c.assert_clean(2);
}
