//! What a person sees: the progress bar (only on a terminal) and the tables.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bench::{Progress, Report};

/// A progress bar over `total`, drawn on stderr only when both stdout and
/// stderr are terminals; hidden otherwise.
pub fn progress_bar(total: Duration) -> ProgressBar {
    let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let pb = ProgressBar::with_draw_target(
        Some(u64::try_from(total.as_millis()).unwrap_or(u64::MAX)),
        if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("{spinner:.green} [{bar:40.cyan/blue}] {msg}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Updates the bar from a progress report, with the rate so far.
pub fn show(pb: &ProgressBar, p: Progress, warmup: Duration) {
    pb.set_position(u64::try_from(p.elapsed.as_millis()).unwrap_or(u64::MAX));
    let phase = if p.elapsed < warmup {
        "warming up"
    } else {
        "measuring"
    };
    let rate = p.msgs_total as f64 / p.elapsed.as_secs_f64().max(0.001);
    let failed = if p.failed > 0 {
        format!(", {} connections failed", p.failed)
    } else {
        String::new()
    };
    pb.set_message(format!(
        "{phase} {:.1}s  {} msgs/s{failed}",
        p.elapsed.as_secs_f64(),
        thousands(rate as u64)
    ));
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A byte count in the largest fitting binary unit.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// A two-column table with a title, boxed.
pub fn table(title: &str, rows: &[(String, String)]) -> String {
    let kw = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let vw = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    let inner = (kw + vw + 5).max(title.chars().count() + 4);
    let vw = inner - kw - 5;
    let mut s = String::new();
    s.push_str(&format!("┌{}┐\n", "─".repeat(inner)));
    s.push_str(&format!("│ {title:<w$} │\n", w = inner - 2));
    s.push_str(&format!(
        "├{}┬{}┤\n",
        "─".repeat(kw + 2),
        "─".repeat(vw + 2)
    ));
    for (k, v) in rows {
        s.push_str(&format!("│ {k:<kw$} │ {v:<vw$} │\n"));
    }
    s.push_str(&format!(
        "└{}┴{}┘\n",
        "─".repeat(kw + 2),
        "─".repeat(vw + 2)
    ));
    s
}

/// The rows every report shows: throughput, latency, verification.
pub fn report_rows(r: &Report) -> Vec<(String, String)> {
    let row = |k: &str, v: String| (k.to_string(), v);
    vec![
        row("connections", thousands(r.connections as u64)),
        row("message size", bytes(r.size as u64)),
        row("pipeline", r.pipeline.to_string()),
        row(
            "measured",
            format!("{:.1} s (after {:.1} s warm-up)", r.duration_s, r.warmup_s),
        ),
        row("messages", thousands(r.msgs)),
        row("msgs/s", thousands(r.msgs_per_sec as u64)),
        row(
            "MB/s",
            format!("{:.1} (echoed payload, one way)", r.mb_per_sec),
        ),
        row(
            "latency",
            format!(
                "p10 {}  p50 {}  p90 {}  p99 {}  p99.9 {}",
                micros(r.p10_us),
                micros(r.p50_us),
                micros(r.p90_us),
                micros(r.p99_us),
                micros(r.p999_us)
            ),
        ),
        row("bytes verified", bytes(r.bytes_verified)),
        row(
            "errors",
            if r.ok() {
                "0".to_string()
            } else {
                format!(
                    "{} ({} bytes wrong, {} connections failed)",
                    r.errors, r.bytes_wrong, r.failed_connections
                )
            },
        ),
    ]
}
