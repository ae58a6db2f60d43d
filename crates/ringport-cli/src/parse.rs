//! Parsers for command-line values: addresses, sizes, durations, backends.
//! Each returns a message that fits on one line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ringport::Backend;

/// The largest message `bench` sends (and the largest `--max-buffered`).
pub const MAX_SIZE: usize = 16 << 20;

/// `HOST:PORT`, resolved to its first address.
pub fn addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("not a HOST:PORT address ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| "the name resolves to no address".to_string())
}

/// A byte count: `64`, `16K`, `16KiB`, `1M`, `2MB` (K and M are 1024-based).
pub fn size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 64, 16K or 1M)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?} has an unknown unit (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A message size for `bench`: at least 1 byte, at most [`MAX_SIZE`].
pub fn msg_size(s: &str) -> Result<usize, String> {
    match size(s)? {
        0 => Err("the message size must be at least 1 byte".into()),
        n if n > MAX_SIZE => Err(format!("{n} bytes is over the 16 MiB limit")),
        n => Ok(n),
    }
}

/// A duration: `5`, `1.5` (seconds), `500ms`, `2s`, `1m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 5, 1.5, 500ms)"))?;
    let secs = v * scale;
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A positive count in `1..=max`.
pub fn count(s: &str, what: &str, max: usize) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if n == 0 {
        return Err(format!("{what} must be at least 1"));
    }
    if n > max {
        return Err(format!("{what} must be at most {max}"));
    }
    Ok(n)
}

/// `auto`, `io_uring` (or `uring`), `epoll` or `iocp`.
pub fn backend(s: &str) -> Result<Backend, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Backend::Auto),
        "io_uring" | "uring" | "io-uring" => Ok(Backend::IoUring),
        "epoll" => Ok(Backend::Epoll),
        "iocp" => Ok(Backend::Iocp),
        _ => Err(format!(
            "unknown backend {s:?} (expected auto, io_uring or epoll)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("64"), Ok(64));
        assert_eq!(size("16K"), Ok(16384));
        assert_eq!(size("16KiB"), Ok(16384));
        assert_eq!(size("1M"), Ok(1 << 20));
        assert!(size("x").is_err());
        assert!(size("12Q").is_err());
        assert!(msg_size("0").is_err());
        assert!(msg_size("17M").is_err());
        assert_eq!(msg_size("16M"), Ok(16 << 20));
    }

    #[test]
    fn durations() {
        assert_eq!(duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(duration("-1").is_err());
        assert!(duration("soon").is_err());
        assert!(duration("nan").is_err());
    }

    #[test]
    fn addrs_and_backends() {
        assert!(addr("127.0.0.1:7000").is_ok());
        assert!(addr("nonsense").is_err());
        assert!(addr("127.0.0.1:99999").is_err());
        assert_eq!(backend("uring"), Ok(Backend::IoUring));
        assert!(backend("kqueue").is_err());
        assert!(count("0", "connections", 10).is_err());
        assert!(count("11", "connections", 10).is_err());
    }
}
