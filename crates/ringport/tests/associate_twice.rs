//! R2: a handle is associated with exactly one port; again is an error. An
//! operation that does not fit the handle is refused with its buffer.

mod util;

use std::net::TcpListener;

use ringport::{CompletionPort, HandleKind};
use util::{each_backend, port};

#[test]
fn same_descriptor_twice_is_refused() {
    each_backend(|backend, _| {
        let a = port(backend, 1);
        let b = port(backend, 1);
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        let dup = f.try_clone().unwrap();
        let dup2 = f.try_clone().unwrap();
        let h = a.associate(f, 1).unwrap();
        assert_eq!(h.kind(), HandleKind::File);
        let e = a.associate(dup, 2).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        let e = b.associate(dup2, 3).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
    });
}

/// Two opens of one file are two open files: each may be associated, and
/// each stays refused for its duplicates while the other comes and goes.
#[test]
fn two_opens_of_one_file_are_two_files() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let first = std::fs::File::create(&path).unwrap();
        let second = std::fs::File::open(&path).unwrap();
        let third = std::fs::File::open(&path).unwrap();
        let (dup2, dup3) = (second.try_clone().unwrap(), third.try_clone().unwrap());
        let h1 = port.associate(first, 1).unwrap();
        let h2 = port.associate(second, 2).unwrap();
        let h3 = port.associate(third, 3).unwrap();
        h1.close();
        drop(h1);
        let e = port.associate(dup2, 4).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        h2.close();
        drop(h2);
        let e = port.associate(dup3, 5).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        drop(h3);
    });
}

#[test]
fn sockets_too_and_free_again_after_close() {
    if util::skip_under_wine("sockets_too_and_free_again_after_close", "Wine 8 cannot untie a socket from its port (FileReplaceCompletionInformation is not implemented), so a duplicate of a closed handle stays tied") {
        return;
    }
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (l, _) = util::listener();
        let dup = l.try_clone().unwrap();
        let h = port.associate(l, 1).unwrap();
        assert_eq!(h.kind(), HandleKind::Listener);
        assert!(port.associate(dup.try_clone().unwrap(), 2).is_err());
        h.close();
        drop(h);
        // The association ends with the handle; the same socket (through a
        // duplicate that stayed open) can be associated again.
        let h2 = port.associate(dup, 3).unwrap();
        assert_eq!(h2.key(), 3);
    });
}

#[test]
fn kinds_follow_the_socket() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let (client, server) = util::tcp_pair();
        assert_eq!(
            port.associate(client, 1).unwrap().kind(),
            HandleKind::Stream
        );
        assert_eq!(
            port.associate(server, 1).unwrap().kind(),
            HandleKind::Stream
        );
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        assert_eq!(port.associate(s, 1).unwrap().kind(), HandleKind::Socket);
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        s.listen(8).unwrap();
        assert_eq!(port.associate(s, 1).unwrap().kind(), HandleKind::Listener);
    });
}

#[test]
fn wrong_operation_is_refused_with_the_buffer() {
    each_backend(|backend, _| {
        let port = port(backend, 1);
        let l = port
            .associate(TcpListener::bind("127.0.0.1:0").unwrap(), 1)
            .unwrap();
        let e = port.recv(&l, Vec::with_capacity(10), 0).unwrap_err();
        assert_eq!(e.error().kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(e.into_buf().unwrap().capacity(), 10);
        let dir = tempfile::tempdir().unwrap();
        let f = port
            .associate(std::fs::File::create(dir.path().join("f")).unwrap(), 2)
            .unwrap();
        let e = port.send(&f, vec![9; 3], 0).unwrap_err();
        assert_eq!(e.into_buf().unwrap(), [9, 9, 9]);
        assert!(port.accept(&f, 0).is_err());
        // A handle from another port is refused too.
        let other = CompletionPort::builder().backend(backend).build().unwrap();
        let e = other.write_at(&f, vec![1], 0, 0).unwrap_err();
        assert_eq!(e.into_buf().unwrap(), [1]);
        assert_eq!(port.stats().in_flight, 0);
    });
}
