//! A tokio echo server of the same shape as `ringport serve`: a multi-thread
//! runtime with `--threads N` workers, one task and one 16 KiB buffer per
//! connection. The peer that ringport is compared against.
//!
//! ```text
//! tokio_echo --addr 127.0.0.1:0 --threads 1
//! ```
//!
//! Prints `listening on <addr> (backend: tokio)` and exits 0 on SIGTERM or Ctrl-C.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

const BUF_SIZE: usize = 16 * 1024;
const USAGE: &str = "usage: tokio_echo [--addr 127.0.0.1:0] [--threads N (CPUs)]";

fn main() -> ExitCode {
    ringport_bench::args::main_with("tokio_echo", USAGE, || {
        let (addr, threads) = ringport_bench::args::server_args()?;
        serve(addr, threads).map_err(|e| format!("{addr}: {e}"))
    })
}

fn serve(addr: SocketAddr, threads: usize) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_io()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        println!(
            "listening on {} (backend: tokio, {threads} worker threads)",
            listener.local_addr()?
        );
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => { tokio::spawn(echo(stream)); }
                    // Out of descriptors and the like: keep accepting.
                    Err(e) => eprintln!("tokio_echo: accept: {e}"),
                },
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
            }
        }
    })
}

async fn echo(mut stream: TcpStream) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
