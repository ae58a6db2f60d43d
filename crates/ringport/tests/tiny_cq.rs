//! Completion queue pressure: a ring with 8 completion entries and 10,000
//! operations. Nothing is lost, nothing stalls, no completion overflows.

mod util;

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use ringport::OpKind;
use util::each_backend;

const OPS: u64 = 10_000;

/// 10,000 file writes started at once, then dequeued.
#[test]
fn ten_thousand_writes_through_eight_cq_entries() {
    each_backend(|_, b| {
        let port = b.concurrency(1).entries(4).cq_entries(8).build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let h = port.associate(f, 1).unwrap();
        for i in 0..OPS {
            port.write_at(&h, (i as u32).to_le_bytes().to_vec(), i * 4, i)
                .unwrap();
        }
        let mut seen = vec![false; OPS as usize];
        for _ in 0..OPS {
            let mut c = util::get(&port);
            assert_eq!(c.kind(), OpKind::Write);
            assert_eq!(c.take_result().unwrap(), 4);
            assert!(!std::mem::replace(&mut seen[c.user() as usize], true));
        }
        assert!(seen.iter().all(|s| *s));
        let mut data = Vec::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        for (i, chunk) in data.chunks(4).enumerate() {
            assert_eq!(u32::from_le_bytes(chunk.try_into().unwrap()), i as u32);
        }
    });
}

/// Receives on many sockets complete in a storm while two workers dequeue and
/// re-arm them, with the tiny ring.
#[test]
fn socket_storm_through_a_tiny_ring() {
    each_backend(|backend, b| {
        let port = b.concurrency(2).entries(4).cq_entries(8).build().unwrap();
        const SOCKS: usize = 50;
        const ROUNDS: usize = 200; // 10,000 receives in all
        let mut peers = Vec::new();
        for s in 0..SOCKS {
            let (client, server) = util::tcp_pair();
            let h = port.associate(server, s as u64).unwrap();
            port.recv(&h, Vec::with_capacity(64), 0).unwrap();
            peers.push(client);
        }
        let received = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (port, received) = (port.clone(), received.clone());
                thread::spawn(move || {
                    while let Ok(mut c) = port.get(None) {
                        let n = c.take_result().unwrap();
                        assert!(n > 0);
                        received.fetch_add(n, Ordering::SeqCst);
                        let h = c.handle().unwrap().clone();
                        let mut buf = c.take_buf().unwrap();
                        buf.clear();
                        // The last re-arm may race the port's close below
                        // (the byte count is reached before it): refused then.
                        match port.recv(&h, buf, 0) {
                            Ok(_) => {}
                            Err(_) if port.is_closed() => break,
                            Err(e) => panic!("re-arming a receive failed: {e:?}"),
                        }
                    }
                })
            })
            .collect();
        for r in 0..ROUNDS {
            for p in peers.iter_mut() {
                util::write_all(p, &[r as u8]);
            }
        }
        let want = SOCKS * ROUNDS;
        util::wait_until("every byte received", || {
            received.load(Ordering::SeqCst) >= want
        });
        port.close();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(received.load(Ordering::SeqCst), want, "on {backend:?}");
    });
}
