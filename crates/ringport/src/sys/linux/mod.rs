//! Linux: the port core in user space (queue, LIFO waiters, concurrency),
//! driving io_uring or, where that is unavailable, epoll.

mod backend;
mod bufring;
mod driver;
mod epoll;
mod handle;
mod op;
mod poller;
mod port;
mod posts;
mod queue;
mod thread;
mod uring;
mod waiters;

use std::io;

pub(crate) use handle::{Handle, Owned};
pub(crate) use port::Port;

/// `ECANCELED`: the Linux twin of `ERROR_OPERATION_ABORTED`.
pub(crate) fn is_aborted(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED)
}
