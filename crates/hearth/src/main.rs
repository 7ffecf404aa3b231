//! `hearth`: one binary for serving a node, running a local dev cluster, and inspecting the
//! cluster and its audit chain over the public gRPC API.

/// Prints a line on standard output for a client command: a closed pipe (`hearth audit tail |
/// head -1`) ends the command quietly, as it ends `cat`. SIGPIPE itself stays ignored in every
/// command — hyper writes to its sockets with `writev`, which raises SIGPIPE on a connection
/// the other side closed, and the default action would kill a command (or the in-process
/// cluster of `hearth dev`) mid-request with exit code 141.
macro_rules! outln {
    () => {
        $crate::cli::stdout_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::stdout_line(format_args!($($arg)*))
    };
}

mod cli;
mod dev;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    #[cfg(unix)]
    if args.command.is_server() {
        // A node's files are its user's only (the data directory is tightened too).
        // SAFETY: umask only changes this process's file-creation mask.
        unsafe {
            libc::umask(0o077);
        }
    }
    let default_level = if args.command.is_server() {
        // openraft warns on every failed heartbeat and append to a peer that is down (several
        // lines a second); Hearth logs "peer N unreachable since …" once a minute instead.
        "info,openraft=warn,openraft::core::heartbeat=error,openraft::replication=error,openraft::core::raft_core=error,openraft::engine::handler::replication_handler=error"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr (`hearth serve 2>&1 | tee log`, then Ctrl-C) must not turn into a
        // panic while the node hands its leadership over.
        .log_internal_errors(false)
        .init();
    match cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
