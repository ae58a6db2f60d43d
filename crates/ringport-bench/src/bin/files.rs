//! 4 KiB random reads from a cached file at a fixed queue depth: ringport's
//! `read_at` (`ReadFile` with an offset) against `fio --ioengine=io_uring`
//! at the same depth, interleaved, median of `--runs` runs.
//!
//! ```text
//! cargo run --release -p ringport-bench --bin files -- [--depth 32] [--size-mib 256] [--duration 5]
//! ```
//!
//! The file (by default in the temp directory) is made once and read through
//! before the runs so that it sits in the page cache.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ringport::{CompletionPort, Handle};
use ringport_bench::args::Args;
use ringport_bench::{machine, stats};

const BLOCK: u64 = 4096;
const USAGE: &str = "usage: files [--depth 32] [--size-mib 256] [--duration 5] [--warmup 1] \
                     [--runs 3] [--file PATH]";

fn main() -> ExitCode {
    ringport_bench::args::main_with("files", USAGE, run)
}

struct Config {
    path: PathBuf,
    size: u64,
    depth: usize,
    duration: Duration,
    warmup: Duration,
}

fn run() -> Result<(), String> {
    let flags = ["depth", "size-mib", "duration", "warmup", "runs", "file"];
    let args = Args::parse(std::env::args().skip(1), &flags, &[]).map_err(|e| e.0)?;
    let e = |e: ringport_bench::args::ArgError| e.0;
    let depth: usize = args.get("depth", 32).map_err(e)?;
    let size_mib: u64 = args.get("size-mib", 256).map_err(e)?;
    let duration: f64 = args.get("duration", 5.0).map_err(e)?;
    let warmup: f64 = args.get("warmup", 1.0).map_err(e)?;
    let runs: usize = args.get("runs", 3).map_err(e)?;
    if !(1..=4096).contains(&depth) || !(1..=65536).contains(&size_mib) || runs == 0 {
        return Err("--depth in 1..=4096, --size-mib in 1..=65536, --runs at least 1".into());
    }
    if !(duration > 0.0 && duration < 3600.0 && (0.0..3600.0).contains(&warmup)) {
        return Err("--duration and --warmup are seconds in (0, 3600)".into());
    }
    let path = args.str("file").map_or_else(
        || std::env::temp_dir().join(format!("ringport-bench-{size_mib}MiB.dat")),
        PathBuf::from,
    );
    let cfg = Config {
        path,
        size: size_mib << 20,
        depth,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
    };
    prepare(&cfg.path, cfg.size).map_err(|e| format!("{}: {e}", cfg.path.display()))?;
    eprintln!("machine: {}", machine::describe());
    let (mut ours, mut fio) = (Vec::new(), Vec::new());
    let mut fio_error = None;
    for run in 1..=runs {
        let r = ringport_iops(&cfg).map_err(|e| format!("ringport: {e}"))?;
        eprintln!("run {run}/{runs}: ringport {r:.0} ops/s");
        ours.push(r);
        match fio_iops(&cfg) {
            Ok(f) => {
                eprintln!("run {run}/{runs}: fio {f:.0} ops/s");
                fio.push(f);
            }
            Err(e) => fio_error = Some(e),
        }
    }
    eprintln!("machine after: {}", machine::describe());
    report(&cfg, &ours, &fio, fio_error);
    Ok(())
}

fn report(cfg: &Config, ours: &[f64], fio: &[f64], fio_error: Option<String>) {
    let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    let (r, f) = (stats::median(ours), stats::median(fio));
    let per_run: Vec<f64> = ours.iter().zip(fio).map(|(a, b)| a / b).collect();
    println!(
        "| 4 KiB random reads, {} MiB cached file, queue depth {} | ops/s |",
        cfg.size >> 20,
        cfg.depth
    );
    println!("|---|---:|");
    println!("| ringport `read_at` + `get_many` | {} |", fmt(r));
    match fio_error {
        Some(e) => println!("| fio --ioengine=io_uring | not measured: {e} |"),
        None => {
            println!("| fio --ioengine=io_uring | {} |", fmt(f));
            let ratio = stats::median(&per_run).map_or("-".into(), |x| format!("{x:.2}x"));
            println!("| ringport / fio (median of per-run ratios) | {ratio} |");
        }
    }
}

/// Makes the file if it is missing or of another size, then reads it through
/// so it is in the page cache.
fn prepare(path: &Path, size: u64) -> io::Result<()> {
    if std::fs::metadata(path).map(|m| m.len()).ok() != Some(size) {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..(size >> 20) {
            chunk
                .chunks_mut(8)
                .for_each(|c| c.copy_from_slice(&rng.next().to_le_bytes()));
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
    }
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// xorshift64: cheap offsets, the same sequence every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn offset(&mut self, size: u64) -> u64 {
        (self.next() % (size / BLOCK)) * BLOCK
    }
}

/// Reads per second through a port with `depth` reads always in flight.
fn ringport_iops(cfg: &Config) -> io::Result<f64> {
    let port = CompletionPort::builder().concurrency(1).build()?;
    let file = port.associate(File::open(&cfg.path)?, 0)?;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..cfg.depth {
        start_read(
            &port,
            &file,
            Vec::with_capacity(BLOCK as usize),
            &mut rng,
            cfg.size,
        )?;
    }
    let mut out = Vec::with_capacity(64);
    let start = Instant::now();
    let mut counted_from = None;
    let mut done = 0u64;
    loop {
        let now = start.elapsed();
        if now >= cfg.warmup && counted_from.is_none() {
            counted_from = Some((Instant::now(), done));
        }
        if now >= cfg.warmup + cfg.duration {
            break;
        }
        out.clear();
        port.get_many(&mut out, 64, Some(Duration::from_secs(5)))?;
        for mut c in out.drain(..) {
            match c.take_result()? {
                n if n as u64 == BLOCK => {}
                n => return Err(io::Error::other(format!("short read of {n} bytes"))),
            }
            let mut buf = c.take_buf().unwrap_or_default();
            buf.clear();
            start_read(&port, &file, buf, &mut rng, cfg.size)?;
            done += 1;
        }
    }
    let (t0, d0) = counted_from.unwrap_or((Instant::now(), done));
    let ops = (done - d0) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    // Let the reads in flight finish before the port goes away.
    for _ in 0..cfg.depth {
        port.get(Some(Duration::from_secs(5)))?;
    }
    Ok(ops)
}

fn start_read(
    port: &CompletionPort,
    file: &Handle,
    buf: Vec<u8>,
    rng: &mut Rng,
    size: u64,
) -> io::Result<()> {
    port.read_at(file, buf, rng.offset(size), 0)?;
    Ok(())
}

/// `fio`'s read IOPS with its io_uring engine, same file, block size and depth.
fn fio_iops(cfg: &Config) -> Result<f64, String> {
    let out = Command::new("fio")
        .args([
            "--name=randread",
            "--rw=randread",
            "--bs=4k",
            "--ioengine=io_uring",
        ])
        .arg(format!("--filename={}", cfg.path.display()))
        .arg(format!("--size={}", cfg.size))
        .arg(format!("--iodepth={}", cfg.depth))
        .arg(format!("--runtime={}ms", cfg.duration.as_millis()))
        .arg(format!("--ramp_time={}ms", cfg.warmup.as_millis()))
        .args([
            "--time_based",
            "--direct=0",
            "--invalidate=0",
            "--norandommap",
        ])
        .args(["--randrepeat=0", "--output-format=json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("fio not found ({e}); Debian: apt-get install fio"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("fio failed: {}", err.lines().next().unwrap_or("")));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("fio output is not JSON: {e}"))?;
    v.pointer("/jobs/0/read/iops")
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| "fio JSON has no jobs[0].read.iops".into())
}
