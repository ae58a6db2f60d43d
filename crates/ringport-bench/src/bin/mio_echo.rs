//! A mio echo server, the readiness-model peer: one thread per `--threads`,
//! each with its own `mio::Poll` and its own `SO_REUSEPORT` listener (the
//! usual way to run mio on several cores), one 16 KiB buffer per connection,
//! edge-triggered: read until `WouldBlock`, echo what was read, and wait for
//! writability only when the socket's send buffer is full.
//!
//! ```text
//! mio_echo --addr 127.0.0.1:0 --threads 1
//! ```
//!
//! Prints `listening on <addr> (backend: mio, ...)` and exits 0 on SIGTERM or
//! Ctrl-C.

use std::process::ExitCode;

const USAGE: &str = "usage: mio_echo [--addr 127.0.0.1:0] [--threads N (CPUs)]";

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    ringport_bench::args::main_with("mio_echo", USAGE, || {
        let (addr, threads) = ringport_bench::args::server_args()?;
        serve::run(addr, threads).map_err(|e| format!("{addr}: {e}"))
    })
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    eprintln!("mio_echo: the peer servers run on Linux only ({USAGE})");
    ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
mod serve {
    use std::io::{self, Read, Write};
    use std::net::SocketAddr;
    use std::thread;

    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};
    use ringport_bench::listen::{block_signals, listeners, wait_for};
    use slab::Slab;

    const BUF_SIZE: usize = 16 * 1024;
    const LISTENER: Token = Token(usize::MAX);

    /// Binds a listener per thread, starts the workers, waits for a signal.
    pub fn run(addr: SocketAddr, threads: usize) -> io::Result<()> {
        let (addr, listeners) = listeners(addr, threads)?;
        let signals = block_signals()?;
        for (i, l) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            let poll = Poll::new()?;
            thread::Builder::new()
                .name(format!("mio-echo-{i}"))
                .spawn(move || {
                    if let Err(e) = worker(poll, TcpListener::from_std(l)) {
                        eprintln!("mio_echo: worker {i}: {e}");
                        std::process::exit(1);
                    }
                })?;
        }
        println!("listening on {addr} (backend: mio, {threads} threads, epoll edge-triggered)");
        wait_for(&signals)
    }

    struct Conn {
        stream: TcpStream,
        buf: Vec<u8>,
        /// Bytes of `buf` received and not yet sent back: `buf[sent..filled]`.
        filled: usize,
        sent: usize,
    }

    impl Conn {
        /// Echoes until the socket has nothing more to read, or its send
        /// buffer is full; the next readable or writable edge drives it again.
        /// False when the connection is over.
        fn drive(&mut self) -> bool {
            loop {
                while self.sent < self.filled {
                    match self.stream.write(&self.buf[self.sent..self.filled]) {
                        Ok(0) => return false,
                        Ok(n) => self.sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return false,
                    }
                }
                self.sent = 0;
                self.filled = 0;
                match self.stream.read(&mut self.buf) {
                    Ok(0) => return false,
                    Ok(n) => self.filled = n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        }
    }

    fn worker(mut poll: Poll, mut listener: TcpListener) -> io::Result<()> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut conns: Slab<Conn> = Slab::new();
        let mut events = Events::with_capacity(256);
        loop {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events {
                if ev.token() == LISTENER {
                    accept_all(&poll, &listener, &mut conns);
                    continue;
                }
                let key = ev.token().0;
                let Some(conn) = conns.get_mut(key) else {
                    continue;
                };
                // Edge-triggered, registered for both: nothing to change
                // while it stays open.
                if !conn.drive() {
                    let mut c = conns.remove(key);
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
        }
    }

    fn accept_all(poll: &Poll, listener: &TcpListener, conns: &mut Slab<Conn>) {
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    if stream.set_nodelay(true).is_err() {
                        continue;
                    }
                    let entry = conns.vacant_entry();
                    let token = Token(entry.key());
                    // Both interests once, edge-triggered: a readable or a
                    // writable edge each drive the connection.
                    if poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        entry.insert(Conn {
                            stream,
                            buf: vec![0; BUF_SIZE],
                            filled: 0,
                            sent: 0,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Out of descriptors and the like: try again at the next edge.
                Err(e) => {
                    eprintln!("mio_echo: accept: {e}");
                    return;
                }
            }
        }
    }
}
