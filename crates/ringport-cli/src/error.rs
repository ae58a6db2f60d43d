//! The tool's error: one line for a person, never a backtrace.

use std::fmt;
use std::io;

/// A failure the tool reports as one line on stderr before exiting non-zero.
#[derive(Debug)]
pub struct Error(String);

/// The tool's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with this message.
    pub fn msg(m: impl Into<String>) -> Error {
        Error(m.into())
    }

    /// An I/O error with what was being done when it happened.
    pub fn io(what: impl fmt::Display, e: &io::Error) -> Error {
        Error(format!("{what}: {}", describe(e)))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// An I/O error in plain words, with a hint for the usual suspects.
pub fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            format!("address already in use ({e}); stop the other server or pick another --addr")
        }
        io::ErrorKind::AddrNotAvailable => {
            format!("address not available on this machine ({e})")
        }
        io::ErrorKind::ConnectionRefused => {
            format!("connection refused ({e}); is `ringport serve` running there?")
        }
        io::ErrorKind::PermissionDenied => format!("permission denied ({e})"),
        _ => e.to_string(),
    }
}
