//! Hand-off between two threads: ringport's `post` + `get` against
//! crossbeam-channel's unbounded channel doing the same job.
//!
//! Every workload spawns its threads, lines them up on a barrier, and times
//! only the hand-offs. Packets carry a sequence number that the receiver
//! checks, so a lost or reordered packet is an error, never a fast figure.

use std::fmt;
use std::io;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ringport::{Backend, CompletionPort, Packet};

/// How many packets one batched dequeue takes at most.
pub const BATCH: usize = 64;

/// What carries the packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A ringport [`CompletionPort`]: `post` (`PostQueuedCompletionStatus`)
    /// and `get` (`GetQueuedCompletionStatus`).
    Port,
    /// `crossbeam_channel::unbounded`: `send` and `recv`.
    Channel,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Port => "ringport post+get",
            Transport::Channel => "crossbeam unbounded",
        })
    }
}

/// The shape of the hand-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// One producer thread sends `n` packets as fast as it can; one consumer
    /// thread takes them one at a time (`get` / `recv`).
    Stream,
    /// As `Stream`, but the consumer takes up to [`BATCH`] at once
    /// (`get_many` / `recv` then `try_iter`).
    StreamBatched,
    /// Two threads bounce one packet back and forth `n` times (two queues,
    /// one per direction); measures wake-up latency, not queue throughput.
    PingPong,
    /// One thread posts [`BATCH`] packets, then takes them back in one
    /// batched dequeue, until `n` have gone through: what a packet costs
    /// the two ends without another core's cache in the way.
    OneThread,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pattern::Stream => "stream",
            Pattern::StreamBatched => "stream, batched dequeue",
            Pattern::PingPong => "ping-pong",
            Pattern::OneThread => "one thread, batches",
        })
    }
}

impl Pattern {
    /// Every pattern, in the order the reports list them.
    pub const ALL: [Pattern; 4] = [
        Pattern::Stream,
        Pattern::StreamBatched,
        Pattern::PingPong,
        Pattern::OneThread,
    ];
}

/// Runs `n` hand-offs (round trips for [`Pattern::PingPong`]) and returns
/// the time they took, thread start-up excluded.
///
/// # Errors
///
/// Creating the port failed, a thread could not be spawned, or a packet was
/// lost or came out of order.
pub fn run(transport: Transport, pattern: Pattern, n: u64) -> io::Result<Duration> {
    run_on(Backend::Auto, transport, pattern, n)
}

/// As [`run`], with the port on the given backend.
///
/// # Errors
///
/// As [`run`]; also when the backend is unavailable here.
pub fn run_on(
    backend: Backend,
    transport: Transport,
    pattern: Pattern,
    n: u64,
) -> io::Result<Duration> {
    match (transport, pattern) {
        (Transport::Port, Pattern::PingPong) => port_ping_pong(backend, n),
        (Transport::Port, Pattern::OneThread) => port_one_thread(backend, n),
        (Transport::Channel, Pattern::OneThread) => channel_one_thread(n),
        (Transport::Port, p) => port_stream(backend, n, p == Pattern::StreamBatched),
        (Transport::Channel, Pattern::PingPong) => channel_ping_pong(n),
        (Transport::Channel, p) => channel_stream(n, p == Pattern::StreamBatched),
    }
}

fn new_port(backend: Backend) -> io::Result<CompletionPort> {
    // Two threads use each port; let both run.
    CompletionPort::builder()
        .concurrency(2)
        .backend(backend)
        .build()
}

fn packet(seq: u64) -> Packet {
    Packet {
        bytes: 8,
        key: 1,
        user: seq,
    }
}

/// A channel's other end went away (a thread of the workload failed).
fn gone<E>(_: E) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "channel closed")
}

fn out_of_order(expected: u64, got: u64) -> io::Error {
    io::Error::other(format!("packet {got} arrived where {expected} was due"))
}

/// Checks that `got` is the packet due next, and counts it.
fn take_next(next: &mut u64, got: u64) -> io::Result<()> {
    if got != *next {
        return Err(out_of_order(*next, got));
    }
    *next += 1;
    Ok(())
}

fn join<T>(h: thread::JoinHandle<io::Result<T>>) -> io::Result<T> {
    h.join()
        .map_err(|_| io::Error::other("a hand-off thread panicked"))?
}

/// Spawns `consumer` and runs `producer` here once both are past a barrier;
/// returns what the consumer returns (its timing).
fn pair<P, C>(producer: P, consumer: C) -> io::Result<Duration>
where
    P: FnOnce() -> io::Result<()>,
    C: FnOnce() -> io::Result<Duration> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let b = barrier.clone();
    let h = thread::Builder::new()
        .name("handoff-consumer".into())
        .spawn(move || {
            b.wait();
            consumer()
        })?;
    barrier.wait();
    let produced = producer();
    let consumed = join(h);
    produced?;
    consumed
}

fn port_stream(backend: Backend, n: u64, batched: bool) -> io::Result<Duration> {
    let port = new_port(backend)?;
    let rx = port.clone();
    pair(
        move || (0..n).try_for_each(|i| port.post(packet(i))),
        move || {
            let start = Instant::now();
            let mut next = 0;
            let mut out = Vec::with_capacity(BATCH);
            while next < n {
                if !batched {
                    // One at a time, as the channel's `recv`: no vector.
                    take_next(&mut next, rx.get(None)?.user())?;
                    continue;
                }
                rx.get_many(&mut out, BATCH, None)?;
                for c in out.drain(..) {
                    take_next(&mut next, c.user())?;
                }
            }
            Ok(start.elapsed())
        },
    )
}

fn channel_stream(n: u64, batched: bool) -> io::Result<Duration> {
    let (tx, rx) = crossbeam_channel::unbounded::<Packet>();
    pair(
        move || (0..n).try_for_each(|i| tx.send(packet(i)).map_err(gone)),
        move || {
            let start = Instant::now();
            let mut next = 0;
            while next < n {
                let first = rx.recv().map_err(gone)?;
                let rest = rx.try_iter().take(if batched { BATCH - 1 } else { 0 });
                for p in std::iter::once(first).chain(rest) {
                    take_next(&mut next, p.user)?;
                }
            }
            Ok(start.elapsed())
        },
    )
}

/// How many packets the next batch of a one-thread run holds.
fn batch_after(sent: u64, n: u64) -> u64 {
    (n - sent).min(BATCH as u64)
}

fn port_one_thread(backend: Backend, n: u64) -> io::Result<Duration> {
    let port = new_port(backend)?;
    let mut out = Vec::with_capacity(BATCH);
    let mut next = 0;
    let start = Instant::now();
    while next < n {
        let k = batch_after(next, n);
        (next..next + k).try_for_each(|i| port.post(packet(i)))?;
        port.get_many(&mut out, BATCH, None)?;
        for c in out.drain(..) {
            take_next(&mut next, c.user())?;
        }
    }
    Ok(start.elapsed())
}

fn channel_one_thread(n: u64) -> io::Result<Duration> {
    let (tx, rx) = crossbeam_channel::unbounded::<Packet>();
    let mut next = 0;
    let start = Instant::now();
    while next < n {
        let k = batch_after(next, n);
        (next..next + k).try_for_each(|i| tx.send(packet(i)).map_err(gone))?;
        let first = rx.recv().map_err(gone)?;
        for p in std::iter::once(first).chain(rx.try_iter().take(BATCH - 1)) {
            take_next(&mut next, p.user)?;
        }
    }
    Ok(start.elapsed())
}

fn port_ping_pong(backend: Backend, n: u64) -> io::Result<Duration> {
    let (ping, pong) = (new_port(backend)?, new_port(backend)?);
    let (ping2, pong2) = (ping.clone(), pong.clone());
    pair(
        // The echoing side: take from `ping`, hand back on `pong`.
        move || {
            for _ in 0..n {
                let c = ping2.get(None)?;
                pong2.post(packet(c.user()))?;
            }
            Ok(())
        },
        move || {
            let start = Instant::now();
            for i in 0..n {
                ping.post(packet(i))?;
                let c = pong.get(None)?;
                if c.user() != i {
                    return Err(out_of_order(i, c.user()));
                }
            }
            Ok(start.elapsed())
        },
    )
}

fn channel_ping_pong(n: u64) -> io::Result<Duration> {
    let (ping_tx, ping_rx) = crossbeam_channel::unbounded::<Packet>();
    let (pong_tx, pong_rx) = crossbeam_channel::unbounded::<Packet>();
    pair(
        move || echo_channel(n, &ping_rx, &pong_tx),
        move || {
            let start = Instant::now();
            for i in 0..n {
                ping_tx.send(packet(i)).map_err(gone)?;
                let p = pong_rx.recv().map_err(gone)?;
                if p.user != i {
                    return Err(out_of_order(i, p.user));
                }
            }
            Ok(start.elapsed())
        },
    )
}

fn echo_channel(n: u64, rx: &Receiver<Packet>, tx: &Sender<Packet>) -> io::Result<()> {
    for _ in 0..n {
        let p = rx.recv().map_err(gone)?;
        tx.send(p).map_err(gone)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each workload completes and checks its packets; speed is not asserted.
    #[test]
    fn every_workload_runs() {
        if let Err(e) = new_port(Backend::Auto) {
            println!("SKIP handoff workloads: no completion port here: {e}");
            return;
        }
        for t in [Transport::Port, Transport::Channel] {
            for p in Pattern::ALL {
                run(t, p, 1000).unwrap_or_else(|e| panic!("{t} {p}: {e}"));
            }
        }
    }
}
