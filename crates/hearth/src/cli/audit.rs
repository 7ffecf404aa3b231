//! `hearth audit …`: the chain as a person reads it (tail, with refused calls), export,
//! verification, checkpoints and test records.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_client::AuditClient;
use hearth_proto::v1::cluster_client::ClusterClient;
use serde_json::{Value, json};

use super::args::{AuditCmd, CheckpointCmd, Output};
use super::client::Client;
use super::cluster::opt;
use super::output;
use super::tail::{MAX_TAIL, TailArgs, tail, tail_refused};

pub async fn run(client: &Client, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Tail {
            target,
            count,
            follow,
            device,
            source,
            since,
            scan,
            refused,
            out,
        } => {
            let a = TailArgs {
                count,
                follow,
                device,
                source,
                since,
                scan: scan.min(MAX_TAIL),
                out,
            };
            if refused {
                tail_refused(client, &target.addr, a).await
            } else {
                tail(client, &target.addr, a).await
            }
        }
        AuditCmd::Export { target, out } => export(client, &target.addr, out).await,
        AuditCmd::Verify {
            file,
            export: positional,
            checkpoints,
            trust_keys,
            data_dir,
            target,
            out,
        } => match (file.or(positional), data_dir) {
            (Some(f), _) => verify_file(&f, &checkpoints, &trust_keys, out),
            (None, _) if !checkpoints.is_empty() || !trust_keys.is_empty() => {
                anyhow::bail!(
                    "--checkpoint and --trust-key prove an export file: give it as EXPORTFILE \
                     (hearth audit export --out FILE writes one)"
                )
            }
            (None, Some(d)) => verify_data_dir(&d, out),
            (None, None) => verify_live(client, &target.addr, out).await,
        },
        AuditCmd::Checkpoint {
            command: CheckpointCmd::Now { target },
        } => checkpoint_now(client, &target.addr).await,
        AuditCmd::Checkpoint {
            command: CheckpointCmd::Export { target, out },
        } => checkpoint_export(client, &target.addr, out).await,
        AuditCmd::Append { target, text } => append(client, &target.addr, text).await,
    }
}

async fn export(client: &Client, addr: &str, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use futures::StreamExt;
    use std::io::Write;
    let mut c = AuditClient::new(client.channel(addr)?);
    let mut stream = c
        .export(pb::ExportRequest {})
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    let mut w: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    // A closed standard output ends the command as it ends `cat` (see `stdout_line`); a file
    // that cannot be written is an error.
    let to_stdout = out.is_none();
    let failed = |e: std::io::Error| -> anyhow::Error {
        if to_stdout {
            super::stdout_failed(e)
        } else {
            e.into()
        }
    };
    let mut lines = 0u64;
    while let Some(chunk) = stream.next().await {
        for l in chunk.map_err(|s| client.rpc_err(addr, s))?.lines {
            writeln!(w, "{l}").map_err(failed)?;
            lines += 1;
        }
    }
    w.flush().map_err(failed)?;
    if let Some(p) = out {
        eprintln!(
            "wrote {} entries to {}",
            lines.saturating_sub(1),
            p.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_file(
    path: &PathBuf,
    checkpoint_files: &[PathBuf],
    trust_keys: &[String],
    out: Output,
) -> anyhow::Result<ExitCode> {
    use hearth_core::checkpoint::{Trust, parse_file, parse_hex, verify_export_against};
    let human = !out.json();
    macro_rules! say {
        ($($t:tt)*) => {
            if human {
                outln!($($t)*);
            }
        };
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if !trust_keys.is_empty() && checkpoint_files.is_empty() {
        anyhow::bail!("--trust-key needs --checkpoint FILE: keys are checked on checkpoints");
    }
    let mut trust = Trust::default();
    for k in trust_keys {
        trust
            .pinned
            .insert(parse_hex::<32>("--trust-key", k).map_err(|e| anyhow::anyhow!("{e}: {k:?}"))?);
    }
    let mut code = ExitCode::SUCCESS;
    for cf in checkpoint_files {
        let ctext =
            std::fs::read_to_string(cf).with_context(|| format!("reading {}", cf.display()))?;
        let cps = parse_file(&ctext)
            .map_err(|e| anyhow::anyhow!("{} is not a valid checkpoint file: {e}", cf.display()))?;
        let r = verify_export_against(text.lines(), &cps, &trust)
            .with_context(|| format!("{} is not a Hearth audit export", path.display()))?;
        if !human {
            output::print(&json!({
                "file": path.display().to_string(),
                "checkpoints": cf.display().to_string(),
                "ok": r.ok(),
                "export": export_json(&r.export),
                "checkpoints_matched": r.matched,
                "checkpoint_failure": r.failure.as_ref().map(|f| f.to_string()),
            }));
        }
        match &r.export.failure {
            Some(f) => say!(
                "FAILED at index {}: {f} ({} entries before it verified)",
                f.index(),
                r.export.entries
            ),
            None => say!(
                "OK: {} entries ({}..={}) from node {} verify; head {}",
                r.export.entries,
                opt(r.export.first_index),
                opt(r.export.last_index),
                r.export.node,
                hex::encode(r.export.head)
            ),
        }
        match &r.failure {
            None => say!(
                "OK: {} checkpoint(s) of {} ({} signatures valid{}) match the export",
                r.matched,
                cf.display(),
                cps.iter()
                    .map(|c| 1 + usize::from(c.witness.is_some()))
                    .sum::<usize>(),
                if trust.pinned.is_empty() {
                    ", keys as written in the file"
                } else {
                    ", each signed by a trusted key"
                }
            ),
            Some(f) => say!("FAILED: {} ({f})", cf.display()),
        }
        if !r.ok() {
            code = ExitCode::from(1);
        }
    }
    if !checkpoint_files.is_empty() {
        return Ok(code);
    }
    let r = hearth_core::export::verify_export(text.lines())
        .with_context(|| format!("{} is not a Hearth audit export", path.display()))?;
    if !human {
        let mut v = export_json(&r);
        v["file"] = json!(path.display().to_string());
        output::print(&v);
    }
    match r.failure {
        None => {
            say!(
                "OK: {} entries ({}..={}) from node {} verify; head {}",
                r.entries,
                opt(r.first_index),
                opt(r.last_index),
                r.node,
                hex::encode(r.head)
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(f) => {
            say!(
                "FAILED at index {}: {f} ({} entries before it verified)",
                f.index(),
                r.entries
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The JSON of an export file's verification.
fn export_json(r: &hearth_core::export::ExportReport) -> Value {
    json!({
        "ok": r.failure.is_none(),
        "entries": r.entries,
        "node": r.node,
        "first_index": r.first_index,
        "last_index": r.last_index,
        "head": hex::encode(r.head),
        "failed_at": r.failure.as_ref().map(|f| f.index()),
        "reason": r.failure.as_ref().map(|f| f.to_string()),
    })
}

fn verify_data_dir(dir: &std::path::Path, out: Output) -> anyhow::Result<ExitCode> {
    let human = !out.json();
    macro_rules! say {
        ($($t:tt)*) => {
            if human {
                outln!($($t)*);
            }
        };
    }
    let result = hearth_node::node::verify_data_dir(dir);
    if !human {
        let v = match &result {
            Ok(r) => Some(json!({
                "ok": r.failure.is_none(),
                "entries": r.checked,
                "head_index": r.head.map(|(i, _)| i),
                "head": r.head.map(|(_, h)| hex::encode(h)),
                "failed_at": r.failure.as_ref().map(|f| f.index()),
                "reason": r.failure.as_ref().map(|f| f.to_string()),
            })),
            Err(hearth_node::StartError::Store(hearth_node::StoreError::CorruptLog {
                index,
                reason,
                path,
            })) => Some(json!({
                "ok": false, "entries": null, "head_index": null, "head": null,
                "failed_at": index,
                "reason": format!("the Raft log {} is corrupt ({reason})", path.display()),
            })),
            Err(_) => None,
        };
        if let Some(v) = v {
            output::print(&v);
        }
    }
    match result {
        Ok(r) => match r.failure {
            None => {
                say!(
                    "OK: {} entries verify; head {}",
                    r.checked,
                    r.head
                        .map(|(i, h)| format!("{i} {}", hex::encode(h)))
                        .unwrap_or_else(|| "-".into())
                );
                Ok(ExitCode::SUCCESS)
            }
            Some(f) => {
                say!("FAILED at index {}: {f}", f.index());
                Ok(ExitCode::from(1))
            }
        },
        Err(hearth_node::StartError::Store(hearth_node::StoreError::CorruptLog {
            index,
            reason,
            path,
        })) => {
            say!(
                "FAILED at index {index}: the Raft log {} is corrupt ({reason})",
                path.display()
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

async fn verify_live(client: &Client, addr: &str, out: Output) -> anyhow::Result<ExitCode> {
    let mut c = AuditClient::new(client.channel(addr)?);
    let r = c
        .verify(pb::VerifyRequest {})
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    if out.json() {
        output::print(&json!({
            "ok": r.ok,
            "entries": r.checked,
            "head_index": r.head_index,
            "head": (!r.head_hash.is_empty()).then_some(&r.head_hash),
            "anchor_index": r.anchor_index,
            "failed_at": r.first_bad_index,
            "reason": (!r.reason.is_empty()).then_some(&r.reason),
        }));
        return Ok(if r.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if r.ok {
        outln!(
            "OK: {} entries verify; head {} {}",
            r.checked,
            opt(r.head_index),
            r.head_hash
        );
        Ok(ExitCode::SUCCESS)
    } else {
        outln!("FAILED at index {}: {}", opt(r.first_bad_index), r.reason);
        Ok(ExitCode::from(1))
    }
}

async fn checkpoint_now(client: &Client, addr: &str) -> anyhow::Result<ExitCode> {
    let mut c = AuditClient::new(client.channel(addr)?);
    let r = c
        .checkpoint(pb::CheckpointRequest {})
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    outln!(
        "{} checkpoint at index {} head {}; {}",
        if r.fresh { "signed" } else { "last" },
        r.index,
        r.head,
        r.witness
    );
    outln!("{}", r.line);
    Ok(if r.fork {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

async fn checkpoint_export(
    client: &Client,
    addr: &str,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use futures::StreamExt;
    let mut c = AuditClient::new(client.channel(addr)?);
    let mut stream = c
        .export_checkpoints(pb::ExportCheckpointsRequest {})
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for l in chunk.map_err(|s| client.rpc_err(addr, s))?.lines {
            text.push_str(&l);
            text.push('\n');
        }
    }
    // Check what the node sent before keeping it.
    let cps = hearth_core::checkpoint::parse_file(&text)
        .map_err(|e| anyhow::anyhow!("node {addr} sent an invalid checkpoint file: {e}"))?;
    hearth_core::checkpoint::check_signatures(&cps, &Default::default())
        .map_err(|e| anyhow::anyhow!("node {addr} sent a bad checkpoint: {e}"))?;
    match &out {
        Some(p) => {
            use std::io::Write;
            let mut f =
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            eprintln!(
                "wrote {} checkpoints ({} cosigned) to {}",
                cps.len(),
                cps.iter().filter(|c| c.witness.is_some()).count(),
                p.display()
            );
        }
        None => {
            use std::io::Write;
            let mut o = std::io::stdout().lock();
            if let Err(e) = o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
                super::stdout_failed(e);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn append(client: &Client, addr: &str, text: String) -> anyhow::Result<ExitCode> {
    let mut c = ClusterClient::new(client.channel(addr)?);
    let r = c
        .append_test_record(pb::AppendTestRecordRequest { text })
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    outln!(
        "committed at index {} (term {}, leader {}), chain hash {}",
        r.index,
        r.term,
        r.leader,
        r.hash
    );
    Ok(ExitCode::SUCCESS)
}
