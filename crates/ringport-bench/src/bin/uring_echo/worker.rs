//! One worker: a ring, a listener, a buffer ring, and the connections it accepted.

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use crate::bufring::BufRing;

/// The buffer group id of the worker's buffer ring.
const BGID: u16 = 0;
const SQ_ENTRIES: u32 = 256;
const CQ_ENTRIES: u32 = 4096;

/// What a completion belongs to, in the top half of its `user_data`; the low
/// half is the connection's slot. Made by [`token`], read in [`Worker::complete`].
const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;

fn token(kind: u64, slot: usize) -> u64 {
    (kind << 32) | slot as u64
}

/// Received bytes waiting to be echoed: `len` bytes of buffer `bid`, `off` sent.
#[derive(Clone, Copy, Debug)]
struct Pending {
    bid: u16,
    off: u32,
    len: u32,
}

#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    /// A multishot receive is in flight.
    recv_armed: bool,
    /// The one send in flight (sends on a socket go one at a time, in order).
    sending: Option<Pending>,
    queue: VecDeque<Pending>,
    /// The peer closed or an error happened: no more receives.
    closing: bool,
    /// A send failed: what is queued is dropped.
    failed: bool,
}

/// How a worker sets up its ring and receives: the best shape, or one
/// lever of ringport's shared ring, to measure what that lever costs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Setup {
    /// `COOP_TASKRUN` instead of `SINGLE_ISSUER` + `DEFER_TASKRUN`.
    pub coop: bool,
    /// A single-shot receive per message (with a buffer picked from the
    /// ring, armed again after each) instead of one multishot receive.
    pub single_shot: bool,
}

/// A worker thread's state. The ring is made by the thread that uses it
/// (`SINGLE_ISSUER`), so a `Worker` is created and run on one thread.
pub struct Worker {
    ring: IoUring,
    single_shot: bool,
    bufs: BufRing,
    listener: TcpListener,
    conns: Slab<Conn>,
    /// Connections whose receive stopped because the buffer ring was empty.
    starved: Vec<usize>,
    gave_back: bool,
    setup: &'static str,
    cqes: Vec<(u64, i32, u32)>,
}

impl Worker {
    /// Sets up the ring (as `setup` says) and its buffer ring for `listener`.
    ///
    /// # Errors
    ///
    /// io_uring or provided-buffer rings are unavailable here.
    pub fn new(listener: TcpListener, how: Setup) -> io::Result<Worker> {
        let (ring, setup) = if how.coop {
            (build_coop()?, "COOP_TASKRUN (--coop)")
        } else {
            new_ring()?
        };
        let bufs = BufRing::register(&ring, BGID)?;
        Ok(Worker {
            ring,
            single_shot: how.single_shot,
            bufs,
            listener,
            conns: Slab::with_capacity(1024),
            starved: Vec::new(),
            gave_back: false,
            setup,
            cqes: Vec::with_capacity(CQ_ENTRIES as usize),
        })
    }

    /// A description of the ring setup in use.
    pub fn setup(&self) -> String {
        format!(
            "{}, multishot accept + {}, {} x {} KiB buffer ring per thread",
            self.setup,
            if self.single_shot {
                "single-shot recv (--single-shot)"
            } else {
                "multishot recv"
            },
            crate::bufring::COUNT,
            crate::bufring::SIZE / 1024
        )
    }

    /// Serves until a fatal error.
    ///
    /// # Errors
    ///
    /// The ring failed, or the kernel lacks multishot accept or receive.
    pub fn run(&mut self) -> io::Result<()> {
        self.push(accept_entry(self.listener.as_raw_fd()))?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            let cq = self.ring.completion();
            self.cqes
                .extend(cq.map(|c| (c.user_data(), c.result(), c.flags())));
            for i in 0..self.cqes.len() {
                let (ud, res, flags) = self.cqes[i];
                self.complete(ud, res, flags)?;
            }
            self.cqes.clear();
            if self.gave_back {
                self.gave_back = false;
                self.bufs.publish();
                self.rearm_starved()?;
            }
        }
    }

    fn complete(&mut self, user_data: u64, res: i32, flags: u32) -> io::Result<()> {
        let slot = (user_data & 0xffff_ffff) as usize;
        match user_data >> 32 {
            ACCEPT => self.accepted(res, flags),
            RECV => self.received(slot, res, flags),
            SEND => self.sent(slot, res),
            _ => Ok(()),
        }
    }

    /// Pushes one entry, submitting first if the submission queue is full.
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry made in this file points only at memory that
            // outlives its operation: the leaked buffers of `BufRing`, or none.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn accepted(&mut self, res: i32, flags: u32) -> io::Result<()> {
        if res >= 0 {
            // SAFETY: a successful accept returns a new descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            set_nodelay(fd.as_raw_fd());
            let raw = fd.as_raw_fd();
            let slot = self.conns.insert(Conn {
                fd,
                recv_armed: true,
                sending: None,
                queue: VecDeque::new(),
                closing: false,
                failed: false,
            });
            self.push(recv_entry(raw, slot, self.single_shot))?;
        } else if res == -libc::EINVAL {
            return Err(missing("multishot accept", "5.19", res));
        } else {
            eprintln!("uring_echo: accept: {}", io::Error::from_raw_os_error(-res));
        }
        if !cqueue::more(flags) {
            self.push(accept_entry(self.listener.as_raw_fd()))?;
        }
        Ok(())
    }

    fn received(&mut self, slot: usize, res: i32, flags: u32) -> io::Result<()> {
        let bid = cqueue::buffer_select(flags);
        let Some(conn) = self.conns.get_mut(slot) else {
            bid.into_iter().for_each(|b| self.bufs.give_back(b));
            return Ok(());
        };
        conn.recv_armed = cqueue::more(flags);
        match (res, bid) {
            (1.., Some(bid)) if !conn.failed => {
                let p = Pending {
                    bid,
                    off: 0,
                    len: res as u32,
                };
                let fd = conn.fd.as_raw_fd();
                let (rearm, idle) = (!conn.recv_armed, conn.sending.is_none());
                if idle {
                    conn.sending = Some(p);
                    self.push(send_entry(&self.bufs, fd, slot, p))?;
                } else {
                    conn.queue.push_back(p);
                }
                if rearm {
                    self.push(recv_entry(fd, slot, self.single_shot))?;
                    self.conns[slot].recv_armed = true;
                }
                return Ok(());
            }
            (_, bid) => {
                bid.into_iter().for_each(|b| self.bufs.give_back(b));
                self.gave_back |= bid.is_some();
            }
        }
        match res {
            r if r == -libc::ENOBUFS && !conn.closing => self.starved.push(slot),
            r if r == -libc::EINVAL => return Err(missing("multishot receive", "6.0", res)),
            _ => conn.closing = true, // 0: the peer closed; or an error
        }
        self.maybe_free(slot);
        Ok(())
    }

    fn sent(&mut self, slot: usize, res: i32) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(slot) else {
            return Ok(());
        };
        let Some(mut p) = conn.sending.take() else {
            return Ok(());
        };
        let fd = conn.fd.as_raw_fd();
        if res > 0 {
            p.off += res as u32;
            if p.off < p.len {
                conn.sending = Some(p);
                return self.push(send_entry(&self.bufs, fd, slot, p));
            }
        } else {
            conn.failed = true;
            conn.closing = true;
            self.bufs.give_back(p.bid);
            conn.queue
                .drain(..)
                .for_each(|q| self.bufs.give_back(q.bid));
            if conn.recv_armed {
                // SAFETY: `fd` is the connection's open descriptor; shutting it down
                // ends the multishot receive so the connection can be freed.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
            self.gave_back = true;
            self.maybe_free(slot);
            return Ok(());
        }
        self.bufs.give_back(p.bid);
        self.gave_back = true;
        if let Some(next) = conn.queue.pop_front() {
            conn.sending = Some(next);
            self.push(send_entry(&self.bufs, fd, slot, next))?;
        }
        self.maybe_free(slot);
        Ok(())
    }

    /// Frees a closing connection once the kernel holds nothing of it.
    fn maybe_free(&mut self, slot: usize) {
        let done = self
            .conns
            .get(slot)
            .is_some_and(|c| c.closing && !c.recv_armed && c.sending.is_none());
        if done {
            let conn = self.conns.remove(slot);
            conn.queue.iter().for_each(|q| self.bufs.give_back(q.bid));
            self.gave_back |= !conn.queue.is_empty();
        }
    }

    fn rearm_starved(&mut self) -> io::Result<()> {
        for slot in std::mem::take(&mut self.starved) {
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            if conn.closing || conn.recv_armed {
                continue;
            }
            conn.recv_armed = true;
            let fd = conn.fd.as_raw_fd();
            self.push(recv_entry(fd, slot, self.single_shot))?;
        }
        Ok(())
    }
}

/// A ring set up as ringport's shared ring is (`COOP_TASKRUN`): for `--coop`
/// (what `SINGLE_ISSUER` + `DEFER_TASKRUN` are worth, measured), and the
/// first fallback of [`new_ring`].
fn build_coop() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(SQ_ENTRIES)
}

/// The ring with the best setup the kernel accepts, and its name.
fn new_ring() -> io::Result<(IoUring, &'static str)> {
    let best = IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(SQ_ENTRIES);
    let e = match best {
        Ok(r) => return Ok((r, "SINGLE_ISSUER + DEFER_TASKRUN")),
        Err(e) => e,
    };
    eprintln!("uring_echo: SINGLE_ISSUER + DEFER_TASKRUN refused ({e}; needs Linux 6.1+)");
    if let Ok(r) = build_coop() {
        eprintln!("uring_echo: falling back to COOP_TASKRUN; figures are not the ceiling's");
        return Ok((r, "COOP_TASKRUN (fallback)"));
    }
    match IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)
    {
        Ok(r) => {
            eprintln!("uring_echo: falling back to a plain ring; figures are not the ceiling's");
            Ok((r, "plain ring (fallback)"))
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("io_uring unavailable: {e} (check kernel.io_uring_disabled and seccomp)"),
        )),
    }
}

fn missing(what: &str, version: &str, res: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(-res);
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("this kernel lacks {what} (needs Linux {version}+): {e}"),
    )
}

fn accept_entry(listener: RawFd) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(listener))
        .build()
        .user_data(token(ACCEPT, 0))
}

/// A receive into a buffer the kernel picks from the ring: multishot, or
/// one that ends after one completion (`received` arms it again).
fn recv_entry(fd: RawFd, slot: usize, single_shot: bool) -> squeue::Entry {
    let entry = if single_shot {
        opcode::Recv::new(
            types::Fd(fd),
            std::ptr::null_mut(),
            crate::bufring::SIZE as u32,
        )
        .buf_group(BGID)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT)
    } else {
        opcode::RecvMulti::new(types::Fd(fd), BGID).build()
    };
    entry.user_data(token(RECV, slot))
}

fn send_entry(bufs: &BufRing, fd: RawFd, slot: usize, p: Pending) -> squeue::Entry {
    opcode::Send::new(
        types::Fd(fd),
        bufs.addr(p.bid, p.off as usize),
        p.len - p.off,
    )
    .flags(libc::MSG_NOSIGNAL)
    .build()
    .user_data(token(SEND, slot))
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket; the option value points at a live c_int
    // of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
