//! One client connection of the load generator: `pipeline` messages in
//! flight, one send and one receive in flight at most, every echoed byte
//! checked against the pattern.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;
use ringport::{Completion, Handle, OpKind};

use super::{lock, Run};

#[derive(Default)]
struct State {
    /// Stream offset up to which messages were issued.
    issued: u64,
    /// Stream offset up to which echoed bytes were checked.
    verified: u64,
    /// End offset and start time of each message in flight, oldest first.
    in_flight: VecDeque<(u64, Instant)>,
    sending: bool,
    /// Messages waiting for the send in flight.
    unsent: VecDeque<Vec<u8>>,
    done: bool,
}

pub(crate) struct Client {
    pub(crate) idx: usize,
    origin: u64,
    handle: Handle,
    state: Mutex<State>,
}

impl Client {
    pub(crate) fn new(idx: usize, handle: Handle) -> Client {
        Client {
            idx,
            origin: super::Pattern::origin(idx),
            handle,
            state: Mutex::new(State::default()),
        }
    }

    /// Issues the first `pipeline` messages and the first receive.
    pub(crate) fn start(&self, run: &Run) {
        let mut st = lock(&self.state);
        for _ in 0..run.cfg.pipeline {
            if let Err(e) = self.issue(run, &mut st) {
                return self.fail(run, &mut st, e);
            }
        }
        if let Err(e) = self.recv(run, Vec::with_capacity(run.recv_buf)) {
            self.fail(run, &mut st, e);
        }
    }

    fn issue(&self, run: &Run, st: &mut State) -> Result<(), String> {
        let size = run.cfg.size;
        let mut buf = Vec::with_capacity(size);
        run.pattern.fill(self.origin, st.issued, size, &mut buf);
        st.issued += size as u64;
        st.in_flight.push_back((st.issued, Instant::now()));
        if st.sending {
            st.unsent.push_back(buf);
            Ok(())
        } else {
            self.send(run, st, buf)
        }
    }

    fn send(&self, run: &Run, st: &mut State, buf: Vec<u8>) -> Result<(), String> {
        run.port
            .send(&self.handle, buf, 0)
            .map_err(|e| format!("send refused: {}", e.error()))?;
        st.sending = true;
        Ok(())
    }

    fn recv(&self, run: &Run, buf: Vec<u8>) -> Result<(), String> {
        run.port
            .recv(&self.handle, buf, 0)
            .map(drop)
            .map_err(|e| format!("receive refused: {}", e.error()))
    }

    /// A send or receive of this connection completed.
    pub(crate) fn completed(&self, run: &Run, mut c: Completion, hist: &mut Histogram<u64>) {
        let mut st = lock(&self.state);
        if st.done {
            return;
        }
        let buf = c.take_buf().unwrap_or_default();
        let r = match (c.kind(), c.take_result()) {
            (OpKind::Send, Ok(n)) => self.sent(run, &mut st, buf, n),
            (OpKind::Recv, Ok(0)) => Err("the server closed the connection".to_string()),
            (OpKind::Recv, Ok(n)) => self.received(run, &mut st, buf, n, hist),
            (k, Err(e)) => Err(format!("{k:?} failed: {e}")),
            (k, Ok(_)) => Err(format!("unexpected {k:?} completion")),
        };
        if let Err(e) = r {
            self.fail(run, &mut st, e);
        }
    }

    fn sent(&self, run: &Run, st: &mut State, mut buf: Vec<u8>, n: usize) -> Result<(), String> {
        st.sending = false;
        if n == 0 {
            return Err("send wrote nothing".into());
        }
        if n < buf.len() {
            buf.drain(..n);
            return self.send(run, st, buf);
        }
        match st.unsent.pop_front() {
            Some(next) => self.send(run, st, next),
            None => Ok(()),
        }
    }

    fn received(
        &self,
        run: &Run,
        st: &mut State,
        mut buf: Vec<u8>,
        n: usize,
        hist: &mut Histogram<u64>,
    ) -> Result<(), String> {
        let got = &buf[..n];
        if st.verified + n as u64 > st.issued {
            run.count_wrong(n);
            return Err(format!("{} bytes echoed that were never sent", n));
        }
        if !run.pattern.check(self.origin, st.verified, got) {
            run.count_wrong(n);
            return Err(format!(
                "echoed bytes differ from those sent at offset {}",
                st.verified
            ));
        }
        st.verified += n as u64;
        run.bytes_verified.fetch_add(n as u64, Ordering::Relaxed);
        let now = Instant::now();
        let stopping = run.stopping.load(Ordering::Relaxed);
        while let Some(&(end, t0)) = st.in_flight.front() {
            if end > st.verified {
                break;
            }
            st.in_flight.pop_front();
            run.msgs_total.fetch_add(1, Ordering::Relaxed);
            if t0 >= run.measure_from && !stopping {
                let ns = u64::try_from((now - t0).as_nanos()).unwrap_or(u64::MAX);
                hist.saturating_record(ns.max(1));
                run.msgs.fetch_add(1, Ordering::Relaxed);
            }
            if !stopping {
                self.issue(run, st)?;
            }
        }
        if st.in_flight.is_empty() && stopping {
            st.done = true;
            self.handle.close();
            run.finished.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        buf.clear();
        self.recv(run, buf)
    }

    fn fail(&self, run: &Run, st: &mut State, why: String) {
        if st.done {
            return;
        }
        st.done = true;
        self.handle.close();
        run.fail(self.idx, why);
    }

    /// Gives up on a connection that did not finish in time.
    pub(crate) fn abandon(&self, run: &Run) {
        let mut st = lock(&self.state);
        if !st.done {
            let n = st.in_flight.len();
            self.fail(run, &mut st, format!("{n} messages not echoed in time"));
        }
    }
}
