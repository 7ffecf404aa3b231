//! `hearth-bench`: Hearth's benchmarks, apart from the product binary.
//!
//! - `hearth-bench intents`: intent → actuation latency on an in-process cluster.
//! - `hearth-bench compare`: Hearth against etcd side by side, as real processes; it runs the
//!   `hearth` binary (beside this one in the target directory, or `--hearth PATH`).
//!
//! SIGPIPE stays ignored (Rust's runtime ignores it before `main`; `main` says so again): hyper writes to its sockets with
//! `writev`, which raises SIGPIPE on a connection the other side closed, and the default
//! action would kill the in-process cluster mid-run (exit code 141). Only a failed write to
//! standard output ends the process as a closed pipe ends `cat` (`outln!`).

/// Prints a line on standard output; a closed pipe (`hearth-bench compare | head -3`) ends the
/// process quietly, as it ends `cat` (see [`stdout_line`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*))
    };
}

mod compare;
mod intents;
mod net;
mod supervisor;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "hearth-bench",
    about = "Measure Hearth: intent → actuation latency, or Hearth against etcd side by side"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit intents through the public API and time them until the device applies them.
    Intents {
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 7401)]
        base_port: u16,
    },
    /// Hearth against etcd on this machine, in one run: writes at 1/16/64 clients, failover
    /// after kill -9 of the leader, and Hearth-only rows (intents, audit verify, restart,
    /// witness footprint). Needs the etcd server binary (Debian: etcd-server) and the hearth
    /// binary (`cargo build -p hearth`).
    Compare(Box<compare::CompareArgs>),
}

/// One line on standard output. A closed pipe ends the process as SIGPIPE ends `cat` — only
/// after the write to standard output failed, never on a socket write; any other failure to
/// write is said on standard error (exit code 1), never a panic.
pub fn stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{args}").and_then(|()| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            #[cfg(unix)]
            // SAFETY: restores the default action of SIGPIPE and raises it on this thread; the
            // process ends there, as `cat` does on a closed pipe.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
            std::process::exit(141);
        }
        eprintln!("hearth-bench: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Where the `hearth` binary is: `--hearth PATH` (or `$HEARTH_BIN`), else beside this
/// executable (`target/debug/hearth` next to `target/debug/hearth-bench`; a test binary in
/// `target/debug/deps/` looks one folder up too).
pub fn find_hearth(given: Option<&Path>, this_exe: &Path) -> Result<PathBuf, String> {
    const BUILD: &str = "build it with `cargo build -p hearth` (the same profile as hearth-bench), \
                         or pass --hearth PATH (or set HEARTH_BIN)";
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!(
                "--hearth / HEARTH_BIN names {}, which is not a file",
                p.display()
            ))
        };
    }
    let name = format!("hearth{}", std::env::consts::EXE_SUFFIX);
    let dir = this_exe.parent();
    let candidates: Vec<PathBuf> = [dir, dir.and_then(Path::parent)]
        .into_iter()
        .flatten()
        .map(|d| d.join(&name))
        .collect();
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(format!(
            "no hearth binary beside {} (looked for {}): {BUILD}",
            this_exe.display(),
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    #[cfg(unix)]
    // SAFETY: sets this process's action for SIGPIPE to "ignore" (Rust's runtime has already
    // done so; this says it here, where the benchmarks depend on it).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let args = Args::parse();
    // The in-process intent cluster would otherwise warn about peers it stops.
    let default_level = match args.command {
        Command::Compare(_) => "error",
        Command::Intents { .. } => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .init();
    let res = match args.command {
        Command::Intents {
            count,
            concurrency,
            base_port,
        } => intents::intents(count, concurrency, base_port).await,
        Command::Compare(a) => compare::compare(*a).await,
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hearth_binary_is_found_beside_this_one_or_one_folder_up() {
        let t = tempfile::tempdir().unwrap();
        let debug = t.path().join("debug");
        let deps = debug.join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        let name = format!("hearth{}", std::env::consts::EXE_SUFFIX);
        // Missing: the error says how to build it.
        let e = find_hearth(None, &debug.join("hearth-bench")).unwrap_err();
        assert!(e.contains("cargo build -p hearth"), "{e}");
        assert!(e.contains(&debug.join(&name).display().to_string()), "{e}");
        std::fs::write(debug.join(&name), b"").unwrap();
        assert_eq!(
            find_hearth(None, &debug.join("hearth-bench")).unwrap(),
            debug.join(&name)
        );
        assert_eq!(
            find_hearth(None, &deps.join("hearth_bench-0123")).unwrap(),
            debug.join(&name)
        );
    }

    #[test]
    fn a_given_path_must_be_a_file() {
        let t = tempfile::tempdir().unwrap();
        let typo = t.path().join("hearht");
        let e = find_hearth(Some(&typo), Path::new("/x/hearth-bench")).unwrap_err();
        assert!(e.contains(&typo.display().to_string()), "{e}");
        // A folder is not a binary either.
        assert!(find_hearth(Some(t.path()), Path::new("/x/hearth-bench")).is_err());
        let real = t.path().join("hearth-old");
        std::fs::write(&real, b"").unwrap();
        assert_eq!(
            find_hearth(Some(&real), Path::new("/x/hearth-bench")).unwrap(),
            real
        );
    }
}
