//! A one-line description of the machine and its load, printed with every figure.

use std::fs;

/// CPU count, CPU model, kernel release and the 1-minute load average.
pub fn describe() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "{cpus} CPUs ({}), Linux {}, load average {}",
        cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into()),
        load_average().unwrap_or_else(|| "?".into()),
    )
}

/// The `model name` of the first CPU in `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let info = fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The three load averages from `/proc/loadavg`.
pub fn load_average() -> Option<String> {
    let l = read_trim("/proc/loadavg")?;
    Some(l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn read_trim(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}
