//! The classic IOCP echo server, on ringport: one worker thread per CPU, all
//! dequeuing from one completion port.
//!
//! ```text
//! cargo run --release --example echo_server -- 127.0.0.1:7000
//! ```
//!
//! Unlike the C original it sends every byte (a partial send goes out again
//! from where it stopped), closes a connection on error or a zero-byte
//! receive (the peer closed), never reuses a buffer the kernel still owns,
//! and shuts down cleanly on a posted packet.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use ringport::{Completion, CompletionPort, Handle, OpKind, Packet};

/// Completion keys: which kind of handle a packet belongs to.
const LISTENER: u64 = 0;
const CONNECTION: u64 = 1;
/// A posted packet with this key tells a worker to exit.
const SHUTDOWN: u64 = u64::MAX;

const BUF_SIZE: usize = 16 * 1024;
/// Accepts kept in flight, so a burst of connections is not serialized.
const ACCEPTS: u64 = 16;

static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".into());
    let listener = TcpListener::bind(&addr)?;
    let port = CompletionPort::new(0)?; // concurrency = number of CPUs
    eprintln!(
        "echo server on {} ({})",
        listener.local_addr()?,
        port.backend_reason()
    );
    let listener = port.associate(listener, LISTENER)?;
    for _ in 0..ACCEPTS {
        port.accept(&listener, 0)?;
    }
    let workers: Vec<_> = (0..port.concurrency())
        .map(|_| {
            let port = port.clone();
            thread::spawn(move || worker(&port))
        })
        .collect();
    // Stop on end of input (Ctrl-D), or run until killed.
    io::stdin().read_line(&mut String::new())?;
    for _ in &workers {
        port.post(Packet {
            bytes: 0,
            key: SHUTDOWN,
            user: 0,
        })?;
    }
    for w in workers {
        w.join().expect("worker panicked")?;
    }
    eprintln!("served {} connections", CONNECTIONS.load(Ordering::Relaxed));
    Ok(())
}

/// The worker loop: dequeue a completion, act on it, start the next operation.
fn worker(port: &CompletionPort) -> io::Result<()> {
    loop {
        let c = port.get(None)?;
        if c.kind() == OpKind::Post && c.key() == SHUTDOWN {
            return Ok(());
        }
        if let Err(e) = handle(port, c) {
            eprintln!("worker: {e}");
        }
    }
}

fn handle(port: &CompletionPort, mut c: Completion) -> io::Result<()> {
    let handle = c
        .handle()
        .cloned()
        .expect("I/O completions carry their handle");
    let result = c.take_result();
    match (c.kind(), result) {
        (OpKind::Accept, Ok(_)) => {
            port.accept(&handle, 0)?; // keep the listener busy
            let (stream, _peer) = c.take_accepted().expect("accept gives a socket");
            stream.set_nodelay(true)?;
            let conn = port.associate(stream, CONNECTION)?;
            CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            port.recv(&conn, Vec::with_capacity(BUF_SIZE), 0)?;
        }
        // A failed accept (say, out of descriptors) must not stop accepting.
        (OpKind::Accept, Err(e)) => {
            eprintln!("accept: {e}");
            port.accept(&handle, 0)?;
        }
        (OpKind::Recv, Ok(0)) => handle.close(), // the peer closed its side
        (OpKind::Recv, Ok(_)) => {
            port.send(&handle, c.take_buf().expect("recv buffer"), 0)?;
        }
        (OpKind::Send, Ok(n)) => send_done(port, &handle, c.take_buf().expect("send buffer"), n)?,
        // Reset, broken pipe, aborted by close: drop the connection.
        (_, Err(_)) => handle.close(),
        (kind, Ok(_)) => unreachable!("no {kind:?} is ever started"),
    }
    Ok(())
}

/// After a send: the rest of a partial send goes again; otherwise the buffer
/// is reused for the next receive.
fn send_done(
    port: &CompletionPort,
    conn: &Handle,
    mut buf: Vec<u8>,
    sent: usize,
) -> io::Result<()> {
    if sent < buf.len() {
        buf.drain(..sent);
        port.send(conn, buf, 0)?;
    } else {
        buf.clear();
        port.recv(conn, buf, 0)?;
    }
    Ok(())
}
