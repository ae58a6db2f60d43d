//! The command line: bad input gets one clear line and a non-zero exit, never
//! a panic; `bench --json` prints one JSON object; the demo exits 0.

#![cfg(unix)] // the tests drive a child process with Unix signals and rlimits

mod util;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use ringport::{Backend, CompletionPort};
use util::{Server, BIN};

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run ringport")
}

/// Asserts a failure with exactly one line on stderr that mentions `needle`.
fn one_line_error(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err:?}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{args:?}: {err:?} does not mention {needle:?}"
    );
    assert!(err.starts_with("ringport: "), "{err:?}");
}

#[test]
fn malformed_address() {
    one_line_error(&["serve", "--addr", "nonsense"], "address");
    one_line_error(&["serve", "--addr", "127.0.0.1:99999"], "address");
    one_line_error(&["bench", "--addr", "1.2.3"], "address");
}

#[test]
fn address_in_use() {
    let Some(b) = util::backend() else { return };
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    one_line_error(&["serve", "--addr", &addr, "--backend", &b], "in use");
}

#[test]
fn unknown_backend() {
    one_line_error(&["serve", "--backend", "kqueue"], "unknown backend");
    one_line_error(&["bench", "--backend", "select"], "unknown backend");
}

#[test]
fn bad_counts_and_sizes() {
    one_line_error(&["bench", "--connections", "0"], "at least 1");
    one_line_error(&["bench", "--size", "0"], "at least 1 byte");
    one_line_error(&["bench", "--size", "17M"], "16 MiB");
    one_line_error(&["bench", "--size", "lots"], "not a size");
    one_line_error(&["bench", "--duration", "soon"], "not a duration");
    one_line_error(&["bench", "--threads", "0"], "at least 1");
    one_line_error(&["serve", "--max-buffered", "1"], "at least 4K");
    one_line_error(
        &["serve", "--ports", "some"],
        "expected auto, shared or per-thread",
    );
    one_line_error(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--ports",
            "per-thread",
            "--concurrency",
            "2",
        ],
        "--concurrency applies to a shared port",
    );
    one_line_error(&["frobnicate"], "unrecognized");
}

#[test]
fn nothing_listening() {
    let Some(b) = util::backend() else { return };
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    one_line_error(
        &[
            "bench",
            "--addr",
            &addr,
            "--duration",
            "0.2",
            "--backend",
            &b,
        ],
        "refused",
    );
}

#[test]
fn forced_backend_that_cannot_run_says_why() {
    let mut checked = 0;
    for (name, b) in [("io_uring", Backend::IoUring), ("epoll", Backend::Epoll)] {
        match CompletionPort::builder().backend(b).build() {
            Ok(_) => eprintln!("backend {name} runs here; nothing to refuse"),
            Err(_) => {
                one_line_error(&["serve", "--addr", "127.0.0.1:0", "--backend", name], name);
                one_line_error(&["demo", "--backend", name, "--duration", "0.1"], name);
                checked += 1;
            }
        }
    }
    eprintln!("{checked} unavailable backends checked");
}

#[test]
fn help_and_version_exit_zero() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["serve", "--help"],
        &["bench", "--help"],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

/// `ringport bench --addr <addr> --json` with `args`.
fn bench(addr: std::net::SocketAddr, args: &[&str]) -> std::process::Output {
    let addr = addr.to_string();
    let mut all = vec!["bench", "--addr", &addr, "--json"];
    all.extend_from_slice(args);
    run(&all)
}

/// One worker gets a single-thread port (on io_uring, a ring of its own), and
/// so does every worker with `--ports per-thread` (the default for two on
/// io_uring); `--shared-ring` and `--ports shared` keep the ordinary one. On
/// io_uring sockets go in the ring's registered file table unless
/// `--no-registered-files`. All echo every byte.
#[test]
fn one_worker_gets_a_single_thread_port() {
    let Some(b) = util::backend() else { return };
    for (args, single, files) in [
        (&["--threads", "1"][..], true, true),
        (&["--threads", "1", "--shared-ring"], false, true),
        (&["--threads", "2"], true, true),
        (&["--threads", "2", "--ports", "shared"], false, true),
        (&["--threads", "2", "--ports", "per-thread"], true, true),
        (&["--threads", "1", "--no-registered-files"], true, false),
        (
            &[
                "--threads",
                "2",
                "--no-registered-files",
                "--ports",
                "shared",
            ],
            false,
            false,
        ),
    ] {
        let server = Server::start(&b, args);
        if server.banner.contains("backend: io_uring") {
            assert_eq!(
                server.banner.contains("single thread"),
                single,
                "{args:?}: {}",
                server.banner
            );
            assert_eq!(
                server.banner.contains("registered file slots"),
                files,
                "{args:?}: {}",
                server.banner
            );
        }
        let out = bench(
            server.addr,
            &[
                "--connections",
                "8",
                "--size",
                "512",
                "--duration",
                "0.3",
                "--warmup",
                "0",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
        assert_eq!(v["errors"], 0, "{args:?}: {v}");
        assert!(v["msgs"].as_u64().unwrap() > 0, "{args:?}: {v}");
    }
}

#[test]
fn bench_json_is_one_object_with_every_field() {
    let Some(b) = util::backend() else { return };
    let server = Server::start(&b, &["--threads", "1"]);
    let out = bench(
        server.addr,
        &[
            "--connections",
            "4",
            "--size",
            "3000",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--pipeline",
            "2",
            "--threads",
            "1",
            "--backend",
            &b,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "{text:?}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON");
    for k in [
        "backend",
        "connections",
        "size",
        "pipeline",
        "duration_s",
        "msgs",
        "msgs_per_sec",
        "mb_per_sec",
        "p10_us",
        "p25_us",
        "p50_us",
        "p75_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "bytes_verified",
        "errors",
    ] {
        assert!(v.get(k).is_some(), "no {k} in {v}");
    }
    assert_eq!(v["connections"], 4);
    assert_eq!(v["size"], 3000);
    assert_eq!(v["errors"], 0);
    assert!(v["msgs"].as_u64().unwrap() > 0, "{v}");
    // Every message is 3000 bytes and all came back: a multiple of it.
    let verified = v["bytes_verified"].as_u64().unwrap();
    assert!(verified > 0 && verified % 3000 == 0, "{v}");
    let c = server.stop();
    assert_eq!(c.get("bytes_echoed"), verified);
    c.assert_clean(1);
}

#[test]
fn demo_runs_and_exits_zero_without_a_progress_bar_when_piped() {
    let Some(b) = util::backend() else { return };
    let out = run(&[
        "demo",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--connections",
        "4",
        "--backend",
        &b,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    for row in [
        "backend",
        "server threads",
        "msgs/s",
        "MB/s",
        "latency",
        "bytes verified",
    ] {
        assert!(stdout.contains(row), "no {row} row in {stdout}");
    }
    assert!(stdout.contains("│ errors         │ 0 "), "{stdout}");
    assert!(
        !stderr.contains('\u{1b}'),
        "a progress bar was drawn: {stderr:?}"
    );
    let _ = Duration::ZERO;
}

/// An echo server that flips one bit of the 1000th byte of each connection.
fn corrupting_echo_server() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = 0usize;
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if seen <= 1000 && 1000 < seen + n {
                        buf[1000 - seen] ^= 0x10;
                    }
                    seen += n;
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn bench_fails_when_a_byte_comes_back_wrong() {
    let Some(b) = util::backend() else { return };
    let out = bench(
        corrupting_echo_server(),
        &[
            "--connections",
            "2",
            "--size",
            "300",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--backend",
            &b,
        ],
    );
    assert!(!out.status.success(), "a wrong byte went unnoticed");
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).expect("JSON");
    assert_eq!(v["failed_connections"], 2, "{v}");
    assert_eq!(v["errors"], 2, "{v}");
    assert!(v["bytes_wrong"].as_u64().unwrap() > 0, "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("differ"), "{err}");
}
