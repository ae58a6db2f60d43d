//! A tiny `--flag value` parser for the bench binaries: one clear line on bad
//! input, never a panic, and no CLI dependency.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A command-line error, printed as one line by the binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

/// Parsed `--name value` pairs (and bare `--switch`es), checked against the
/// names a binary accepts.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parses `argv` (without the program name). `flags` take a value,
    /// `switches` do not; anything else is an error. `--help` is reported as
    /// `Err` with the message `"help"`.
    pub fn parse<I>(argv: I, flags: &[&str], switches: &[&str]) -> Result<Args, ArgError>
    where
        I: IntoIterator<Item = String>,
    {
        let mut values = HashMap::new();
        let mut it = argv.into_iter();
        while let Some(arg) = it.next() {
            if arg == "--help" || arg == "-h" {
                return Err(ArgError("help".into()));
            }
            let Some(name) = arg.strip_prefix("--") else {
                return Err(ArgError(format!("unexpected argument {arg:?}")));
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            if switches.contains(&name) {
                values.insert(name.to_string(), String::new());
            } else if flags.contains(&name) {
                let v = match inline.or_else(|| it.next()) {
                    Some(v) => v,
                    None => return Err(ArgError(format!("--{name} needs a value"))),
                };
                values.insert(name.to_string(), v);
            } else {
                return Err(ArgError(format!("unknown option --{name}")));
            }
        }
        Ok(Args { values })
    }

    /// The value of `--name` parsed as `T`, or `default` when absent.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, ArgError>
    where
        T::Err: fmt::Display,
    {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| ArgError(format!("--{name} {v:?}: {e}"))),
        }
    }

    /// The raw value of `--name`, if given.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// True when the switch `--name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

/// The command line of the peer echo servers: `--addr` (default
/// `127.0.0.1:0`) and `--threads` (default the number of CPUs, at least 1).
/// `--help` is reported as the error `"help"` (see [`main_with`]).
pub fn server_args() -> Result<(std::net::SocketAddr, usize), String> {
    server_args_with(&[]).map(|(addr, threads, _)| (addr, threads))
}

/// [`server_args`] that also accepts the given switches, returned as parsed.
///
/// # Errors
///
/// As for [`server_args`].
pub fn server_args_with(switches: &[&str]) -> Result<(std::net::SocketAddr, usize, Args), String> {
    let args =
        Args::parse(std::env::args().skip(1), &["addr", "threads"], switches).map_err(|e| e.0)?;
    let addr = args
        .str("addr")
        .unwrap_or("127.0.0.1:0")
        .parse()
        .map_err(|e| format!("--addr: {e}"))?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    match args.get("threads", cpus).map_err(|e| e.0)? {
        0 => Err("--threads must be at least 1".into()),
        n => Ok((addr, n, args)),
    }
}

/// The `main` of every benchmark binary: runs `run`, prints `usage` for
/// `--help` (reported by `run` as the error `"help"`), and turns any other
/// error into one line `name: error` and a failing exit status.
pub fn main_with(
    name: &str,
    usage: &str,
    run: impl FnOnce() -> Result<(), String>,
) -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e == "help" => {
            println!("{usage}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, ArgError> {
        Args::parse(
            v.iter().map(|s| s.to_string()),
            &["threads", "addr"],
            &["json"],
        )
    }

    #[test]
    fn values_switches_and_defaults() {
        let a = parse(&["--threads", "2", "--addr=127.0.0.1:0", "--json"]).unwrap();
        assert_eq!(a.get("threads", 1usize).unwrap(), 2);
        assert_eq!(a.str("addr"), Some("127.0.0.1:0"));
        assert!(a.has("json"));
        assert_eq!(parse(&[]).unwrap().get("threads", 7usize).unwrap(), 7);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(parse(&["--threads"]).is_err());
        assert!(parse(&["--nope", "1"]).is_err());
        assert!(parse(&["stray"]).is_err());
        let a = parse(&["--threads", "x"]).unwrap();
        assert!(a.get("threads", 1usize).is_err());
    }
}
