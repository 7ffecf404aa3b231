//! `hearth`: one binary for serving a node, running a local dev cluster, and inspecting the
//! cluster and its audit chain over the public gRPC API.

mod bench;
mod bench_compare;
mod cli;
mod dev;
mod domain_cli;
mod topology_cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    let default_level = if args.command.is_server() {
        "info,openraft=warn"
    } else if args.command.is_compare() {
        // Its in-process intent cluster would otherwise warn about peers it stops.
        "error"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
