//! `ulimit -n 256` and more clients than that: the accept loop must neither
//! spin nor die, and must serve again once descriptors are free.

#![cfg(unix)] // the tests drive a child process with Unix signals and rlimits

mod util;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use util::{connect, echo, Opts, Server};

#[test]
fn accept_loop_survives_running_out_of_descriptors() {
    let Some(b) = util::backend() else { return };
    util::raise_nofile(4096);
    let mut server = Server::start_with(
        &b,
        Opts {
            args: &["--threads", "2"],
            nofile: Some(256),
        },
    );
    // More clients than the server has descriptors. Connects complete in
    // the kernel's backlog whether or not the server can accept them.
    let mut clients: Vec<TcpStream> = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)) {
            clients.push(s);
        }
    }
    assert!(
        clients.len() > 256,
        "only {} clients connected",
        clients.len()
    );
    thread::sleep(Duration::from_millis(300));
    // Out of descriptors, with connections waiting: the server must back
    // off, not spin on failing accepts.
    let cpu0 = util::cpu_time(server.pid());
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(1));
    let cpu = util::cpu_time(server.pid()) - cpu0;
    let wall = t0.elapsed();
    assert!(server.alive(), "the server died");
    assert!(
        cpu < wall / 4,
        "the server used {cpu:?} of CPU in {wall:?} while out of descriptors"
    );
    // Free the descriptors: the server accepts (and closes) the backlog and
    // serves a new client.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect(server.addr);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut back = [0u8; 5];
        use std::io::{Read, Write};
        if s.write_all(b"again").is_ok() && s.read_exact(&mut back).is_ok() {
            assert_eq!(&back, b"again");
            break;
        }
        assert!(Instant::now() < deadline, "the server never recovered");
        thread::sleep(Duration::from_millis(100));
    }
    let mut s = connect(server.addr);
    echo(&mut s, b"recovered");
    drop(s);
    thread::sleep(Duration::from_millis(300));
    let c = server.stop();
    assert!(c.get("accept_errors") > 0, "no accept failed: {c:?}");
    assert!(c.get("accept_errors") < 2000, "accept errors spun: {c:?}");
    assert!(c.get("accepted") > 256, "{c:?}");
    c.assert_clean(2);
}
