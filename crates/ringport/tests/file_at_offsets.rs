//! read_at / write_at: positioned file I/O that owns its buffers.

mod util;

use std::fs::File;
use std::io::{Read, Write};

use ringport::OpKind;
use util::{each_backend, port};

fn rw_file(dir: &tempfile::TempDir, name: &str) -> File {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join(name))
        .unwrap()
}

#[test]
fn writes_land_at_their_offsets() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let dir = tempfile::tempdir().unwrap();
        let h = port.associate(rw_file(&dir, "f"), 3).unwrap();
        // Out of order, with a gap between 5 and 10.
        port.write_at(&h, b"world".to_vec(), 10, 1).unwrap();
        port.write_at(&h, b"hello".to_vec(), 0, 2).unwrap();
        for _ in 0..2 {
            let mut c = util::get(&port);
            assert_eq!((c.kind(), c.key()), (OpKind::Write, 3));
            assert_eq!(c.take_result().unwrap(), 5);
            let want: &[u8] = if c.user() == 1 { b"world" } else { b"hello" };
            assert_eq!(c.take_buf().unwrap(), want, "buffer comes back intact");
        }
        let mut data = Vec::new();
        File::open(dir.path().join("f"))
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(data, b"hello\0\0\0\0\0world");
    });
}

#[test]
fn reads_fill_spare_capacity_at_offsets() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let dir = tempfile::tempdir().unwrap();
        let mut f = rw_file(&dir, "f");
        let content = util::pattern(1 << 20, 5);
        f.write_all(&content).unwrap();
        let h = port.associate(f, 1).unwrap();
        // A buffer with a prefix: the read appends after it.
        let mut buf = Vec::with_capacity(4096 + 3);
        buf.extend_from_slice(b"abc");
        port.read_at(&h, buf, 100_000, 1).unwrap();
        let mut c = util::get(&port);
        assert_eq!(c.take_result().unwrap(), 4096);
        let buf = c.take_buf().unwrap();
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(&buf[3..], &content[100_000..100_000 + 4096]);
        // A short read at the end of the file, then zero past it.
        port.read_at(&h, Vec::with_capacity(100), (1 << 20) - 10, 2)
            .unwrap();
        let mut c = util::get(&port);
        assert_eq!(c.take_result().unwrap(), 10);
        assert_eq!(c.take_buf().unwrap(), &content[(1 << 20) - 10..]);
        port.read_at(&h, Vec::with_capacity(100), 2 << 20, 3)
            .unwrap();
        let mut c = util::get(&port);
        assert_eq!(c.take_result().unwrap(), 0);
        assert!(c.take_buf().unwrap().is_empty());
    });
}

/// Many reads at random offsets in flight at once, all verified.
#[test]
fn many_reads_in_flight() {
    each_backend(|backend, _| {
        let port = port(backend, 2);
        let dir = tempfile::tempdir().unwrap();
        let mut f = rw_file(&dir, "f");
        let content = util::pattern(4 << 20, 9);
        f.write_all(&content).unwrap();
        let h = port.associate(f, 1).unwrap();
        let offsets: Vec<u64> = util::pattern(2000, 3)
            .chunks(2)
            .map(|c| u64::from(u16::from_le_bytes([c[0], c[1]])) * 61)
            .collect();
        for (i, off) in offsets.iter().enumerate() {
            port.read_at(&h, Vec::with_capacity(512), *off, i as u64)
                .unwrap();
        }
        for _ in 0..offsets.len() {
            let mut c = util::get(&port);
            let off = offsets[c.user() as usize] as usize;
            assert_eq!(c.take_result().unwrap(), 512);
            assert_eq!(c.take_buf().unwrap(), &content[off..off + 512]);
        }
    });
}

/// A read with no spare capacity is refused up front and the buffer handed
/// back: it could never make progress and would look like end of file.
#[test]
fn read_without_room_is_refused() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let dir = tempfile::tempdir().unwrap();
        let h = port.associate(rw_file(&dir, "f"), 1).unwrap();
        let e = port.read_at(&h, vec![1, 2], 0, 0).unwrap_err();
        assert_eq!(e.error().kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(e.into_buf().unwrap(), [1, 2]);
        assert_eq!(port.stats().in_flight, 0);
    });
}
