//! CPU time of another process, from `/proc/<pid>/stat` (Linux).

use std::io;
use std::time::Duration;

/// User and system CPU time consumed so far by every thread of `pid`, apart
/// (fields 14 `utime` and 15 `stime` of `/proc/<pid>/stat`): the user part is
/// a server's own work, the system part mostly the kernel's TCP work, alike
/// for every server.
///
/// # Errors
///
/// The process is gone, `/proc` is not mounted, or the file is malformed.
pub fn cpu_times(pid: u32) -> io::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (user, system) = parse_stat_user_system(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })?;
    let hz = clock_ticks_per_second();
    Ok((ticks_to_duration(user, hz), ticks_to_duration(system, hz)))
}

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
///
/// # Errors
///
/// The process is gone or the file is malformed.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss_kib(&status).map(|k| k * 1024).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no VmRSS in /proc/{pid}/status"),
        )
    })
}

/// The `VmRSS:` line of a `/proc/<pid>/status`, in KiB.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raises this process's soft limit on open descriptors to its hard limit
/// (children inherit it); returns the new soft limit.
///
/// # Errors
///
/// The OS refused.
pub fn raise_fd_limit() -> io::Result<u64> {
    // SAFETY: rlimit is plain data, filled by getrlimit below.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit with soft <= hard.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur as u64)
}

/// `(utime, stime)` in clock ticks from the text of a `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may hold spaces, so the
/// fields are counted from the last `)`.
pub fn parse_stat_user_system(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": field 3 (state) is index 0, so utime (14) is 11, stime (15) 12.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

fn ticks_to_duration(ticks: u64, hz: u64) -> Duration {
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz.max(1))
}

/// `sysconf(_SC_CLK_TCK)`, 100 where it cannot be read.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let s = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat_user_system(s), Some((250, 50)));
        assert_eq!(parse_stat_user_system("garbage"), None);
        assert_eq!(parse_stat_user_system("1 (x) S 1 2"), None);
    }

    #[test]
    fn rss_line() {
        assert_eq!(parse_rss_kib("Name:\tx\nVmRSS:\t  1234 kB\n"), Some(1234));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_times(std::process::id()).is_ok());
        assert_eq!(ticks_to_duration(150, 100), Duration::from_millis(1500));
    }
}
