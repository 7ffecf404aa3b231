//! The `hearth` command line, by area: `args` (every command), `client` (how a command
//! reaches nodes: settings passed explicitly), `output` (`--output json`), then one module per
//! area of commands.

use std::process::ExitCode;

use anyhow::Context;

pub mod args;
mod audit;
pub mod client;
mod cluster;
mod devices;
mod intents;
mod output;
mod policy;
mod tail;
mod timefmt;
mod tokens;
mod topology;

pub use args::{Args, Command};
pub use client::{Client, ClientSettings};

/// Writes to standard output, ignoring a closed pipe (`hearth dev | head`): for servers, which
/// must go on to stop gracefully; client commands end quietly on SIGPIPE instead.
pub fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{args}");
}

/// One line on standard output for a client command (the `outln!` macro). A closed pipe ends
/// the process as SIGPIPE ends `cat` — only after the write to standard output failed, never
/// on a socket write; any other failure to write is said on standard error (exit code 1),
/// never a panic.
pub fn stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{args}").and_then(|()| o.flush()) {
        stdout_failed(e);
    }
}

/// Standard output could not be written: ends the process (see [`stdout_line`]).
pub fn stdout_failed(e: std::io::Error) -> ! {
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
    eprintln!("hearth: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// Resolves on Ctrl-C, SIGTERM (`docker stop`, systemd) or SIGHUP (the terminal closed): each
/// stops the node gracefully, handing leadership over first.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                tracing::info!("stop signal received: stopping gracefully");
                return;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM/SIGHUP; Ctrl-C only")
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs one command. The client settings (CA, token) are read here once and handed to the
/// commands that talk to nodes.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Command::Completions { shell } = args.command {
        return completions(shell);
    }
    let client = Client::new(ClientSettings::from_args(
        args.ca.as_deref(),
        args.token_file.as_deref(),
    )?);
    match args.command {
        Command::Completions { shell } => completions(shell),
        Command::InitPki { dir, nodes, renew } => tokens::init_pki(dir, nodes, renew),
        Command::Token { command } => tokens::run(command),
        Command::Serve {
            check_config: Some(file),
            ..
        } => {
            let problems = hearth_node::config::check_config_file(&file);
            for p in &problems {
                eprintln!("{}: {p}", file.display());
            }
            if problems.is_empty() {
                outln!("{}: OK", file.display());
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
        }
        Command::Serve { config, .. } => {
            let config = config.context("--config FILE is required")?;
            let cfg = hearth_node::NodeConfig::load(&config)?;
            hearth_node::server::serve(cfg, stop_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev {
            dir,
            base_port,
            topology,
            insecure,
        } => {
            crate::dev::run(dir, base_port, topology, insecure).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster { command } => cluster::run(&client, command).await,
        Command::Intent { command } => intents::run(&client, command).await,
        Command::Device { command } => devices::run(&client, command).await,
        Command::Policy { command } => policy::run(&client, command).await,
        Command::DeviceSim {
            listen,
            http,
            journal,
            mqtt,
            topic,
            mqtt_user,
            mqtt_password_file,
            mqtt_ca,
            mqtt_ack_key_file,
        } => {
            let login = devices::SimMqttLogin {
                user: mqtt_user.zip(mqtt_password_file),
                ca: mqtt_ca,
                ack_key_file: mqtt_ack_key_file,
            };
            devices::device_sim(listen, http, journal, mqtt.zip(topic), login).await
        }
        Command::Audit { command } => audit::run(&client, command).await,
    }
}

/// `hearth completions SHELL`: the completion script on standard output.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "hearth", &mut script);
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(&script).and_then(|()| o.flush()) {
        stdout_failed(e);
    }
    Ok(ExitCode::SUCCESS)
}
