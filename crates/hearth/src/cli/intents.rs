//! `hearth intent …`: submit, explain, get and watch intents; list the ones that wait for a
//! person, approve or deny them.

use std::process::ExitCode;

use futures::StreamExt;
use hearth_proto::v1 as pb;
use hearth_proto::v1::intents_client::IntentsClient;

use super::args::{IntentCmd, Output};
use super::client::Client;
use super::output;

/// Whether an intent in this state ended without doing what was asked (exit code 1).
fn unsuccessful(v: &pb::IntentView) -> bool {
    match v.status.as_str() {
        "no_action" => true,
        "done" => v
            .actions
            .iter()
            .any(|a| a.outcome != "APPLIED" && a.outcome != "ALREADY_APPLIED"),
        _ => false,
    }
}

/// An intent as text, or (--output json) one JSON object.
fn show(v: &pb::IntentView, out: Output) {
    if out.json() {
        output::print(&output::intent(v));
    } else {
        print_view(v);
    }
}

fn print_view(v: &pb::IntentView) {
    outln!(
        "intent {} [{}] class {} urgency {} (entry {})",
        if v.id.is_empty() { "-" } else { &v.id },
        v.status,
        v.class,
        v.urgency,
        v.index
    );
    if !v.waiting_for.is_empty() {
        outln!("  {}", v.waiting_for);
        if v.approval_expires_at_ms != 0 {
            outln!(
                "  expires at {}",
                super::timefmt::format_utc(v.approval_expires_at_ms)
            );
        }
    }
    if !v.approved_by.is_empty() {
        match v.approval_reason.as_str() {
            "" => outln!("  approved by {}", v.approved_by),
            why => outln!("  approved by {}: {why}", v.approved_by),
        }
    }
    if !v.denied_by.is_empty() {
        outln!(
            "  denied by {} at {}: {}",
            v.denied_by,
            super::timefmt::format_utc(v.denied_at_ms),
            v.denied_reason
        );
    }
    let waiting: std::collections::BTreeSet<&str> =
        v.waiting_actions.iter().map(String::as_str).collect();
    for a in &v.actions {
        let outcome = if a.outcome.is_empty() && waiting.contains(a.id.as_str()) {
            "held for approval".to_string()
        } else if a.outcome.is_empty() {
            "pending".to_string()
        } else {
            a.outcome.clone()
        };
        outln!(
            "  {:<22} {:<16} {:<10} -> {:<10} {} {}",
            a.id,
            a.device,
            a.capability,
            a.state,
            outcome,
            a.detail
        );
    }
    for r in &v.reads {
        outln!("  read sensors of {r}");
    }
    for n in &v.notes {
        outln!("  note: {n}");
    }
    if !v.nothing_to_do.is_empty() {
        outln!("  NOTHING WILL BE DONE: {}", v.nothing_to_do);
    }
}

async fn watch(client: &Client, addr: &str, id: &str, out: Output) -> anyhow::Result<ExitCode> {
    let mut c = IntentsClient::new(client.channel(addr)?);
    let mut s = c
        .watch(pb::GetIntentRequest { id: id.to_string() })
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner();
    let mut last = String::new();
    while let Some(ev) = s.next().await {
        let ev = ev.map_err(|s| client.rpc_err(addr, s))?;
        if out.json() {
            output::print(&output::event(&ev));
        } else {
            outln!("{:<18} {}", ev.stage, ev.detail);
        }
        last = ev.stage;
    }
    Ok(if last == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn run(client: &Client, cmd: IntentCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        IntentCmd::Send {
            target,
            intent,
            watch: w,
            dry_run,
            out,
        } => {
            let mut c = IntentsClient::new(client.channel(&target.addr)?);
            // Built once: a retry sends the same idempotency key, so it never runs twice.
            let req = intent.request(dry_run)?;
            let patience = std::time::Instant::now() + ELECTION_PATIENCE;
            let v = loop {
                match c.submit(req.clone()).await {
                    Ok(v) => break v.into_inner(),
                    Err(s) => match election_retry_after(&s) {
                        Some(wait) if std::time::Instant::now() + wait < patience => {
                            eprintln!(
                                "note: the cluster is electing a leader; sending the intent \
                                 again (same idempotency key) in {} ms",
                                wait.as_millis()
                            );
                            tokio::time::sleep(wait).await;
                        }
                        _ => return Err(client.rpc_err(&target.addr, s)),
                    },
                }
            };
            show(&v, out);
            if v.status == "no_action" || (dry_run && !v.nothing_to_do.is_empty()) {
                return Ok(ExitCode::from(1));
            }
            if w && !dry_run {
                return watch(client, &target.addr, &v.id, out).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        IntentCmd::Explain {
            target,
            intent,
            out,
        } => {
            let mut c = IntentsClient::new(client.channel(&target.addr)?);
            let v = c
                .explain(intent.request(true)?)
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            if out.json() {
                // The verdicts are in the object.
                output::print(&output::intent(&v));
                return Ok(ExitCode::SUCCESS);
            }
            print_view(&v);
            outln!("why:");
            for d in &v.verdicts {
                outln!(
                    "  {:<16} {:<4} {}",
                    d.device,
                    if d.included { "in" } else { "out" },
                    d.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        IntentCmd::Get { target, id, out } => {
            let mut c = IntentsClient::new(client.channel(&target.addr)?);
            let v = c
                .get(pb::GetIntentRequest { id })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            show(&v, out);
            Ok(if unsuccessful(&v) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        IntentCmd::Watch { target, id, out } => watch(client, &target.addr, &id, out).await,
        IntentCmd::Pending { target, out } => {
            let mut c = IntentsClient::new(client.channel(&target.addr)?);
            let p = c
                .list_pending(pb::ListPendingRequest {})
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            if out.json() {
                let list: Vec<serde_json::Value> = p
                    .intents
                    .iter()
                    .map(|v| output::pending(v, p.now_ms))
                    .collect();
                output::print(&serde_json::json!({ "now_ms": p.now_ms, "pending": list }));
            } else {
                print_pending(&p);
            }
            Ok(ExitCode::SUCCESS)
        }
        IntentCmd::Approve {
            target,
            id,
            reason,
            by,
            out,
        } => {
            let mut c = IntentsClient::new(client.channel(&target.addr)?);
            let v = c
                .approve(pb::ApproveRequest { id, by, reason })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            show(&v, out);
            Ok(ExitCode::SUCCESS)
        }
        IntentCmd::Deny {
            target,
            id,
            reason,
            by,
            out,
        } => {
            let mut c = IntentsClient::new(client.channel(&target.addr)?);
            let v = c
                .deny(pb::DenyRequest { id, reason, by })
                .await
                .map_err(|s| client.rpc_err(&target.addr, s))?
                .into_inner();
            show(&v, out);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `42s`, `5m03s`, `2h10m`: a short duration for a table column.
fn short(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// What a held intent waits to do: `front-door lock->unlocked, …`.
fn held_list(v: &pb::IntentView) -> String {
    let held: Vec<String> = v
        .actions
        .iter()
        .filter(|a| v.waiting_actions.contains(&a.id))
        .map(|a| format!("{} {}->{}", a.device, a.capability, a.state))
        .collect();
    if held.is_empty() {
        "(no device: reads only)".into()
    } else {
        held.join(", ")
    }
}

fn print_pending(p: &pb::ListPendingResponse) {
    if p.intents.is_empty() {
        outln!("no intent waits for approval");
        return;
    }
    outln!(
        "{:<18} {:<15} {:<12} {:<40} {:<10} {:>7} {:>10}",
        "ID",
        "CLASS",
        "ASKED BY",
        "WAITS FOR",
        "POLICY",
        "AGE",
        "EXPIRES IN"
    );
    for v in &p.intents {
        let expires = if v.approval_expires_at_ms == 0 {
            "never".to_string()
        } else {
            short(v.approval_expires_at_ms.saturating_sub(p.now_ms))
        };
        outln!(
            "{:<18} {:<15} {:<12} {:<40} {:<10} {:>7} {:>10}",
            v.id,
            v.class,
            v.source,
            held_list(v),
            v.approval_policies.join(","),
            short(p.now_ms.saturating_sub(v.at_ms)),
            expires
        );
    }
    outln!(
        "approve: hearth intent approve ID [--reason TEXT]; deny: hearth intent deny ID --reason TEXT"
    );
}

/// How long `intent send` keeps retrying while the cluster elects a leader (a few elections).
const ELECTION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// A refusal that says the cluster is electing a leader names when to retry
/// (`NO_QUORUM: electing a leader, retry in N ms: …`): that wait, bounded, or `None` for any
/// other error (a real NO_QUORUM, a refusal, a bad request) — those are never retried.
fn election_retry_after(s: &tonic::Status) -> Option<std::time::Duration> {
    if s.code() != tonic::Code::Unavailable {
        return None;
    }
    let rest = s.message().split("electing a leader, retry in ").nth(1)?;
    let ms: u64 = rest.split(" ms").next()?.trim().parse().ok()?;
    Some(std::time::Duration::from_millis(ms.clamp(50, 2_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_election_in_progress_is_retried() {
        let electing = tonic::Status::unavailable(
            "NO_QUORUM: electing a leader, retry in 1500 ms: node 2 has no leader",
        );
        assert_eq!(
            election_retry_after(&electing),
            Some(std::time::Duration::from_millis(1500))
        );
        let long = tonic::Status::unavailable("NO_QUORUM: electing a leader, retry in 90000 ms: x");
        assert_eq!(
            election_retry_after(&long),
            Some(std::time::Duration::from_millis(2000))
        );
        for other in [
            tonic::Status::unavailable(
                "NO_QUORUM: node 2 cannot reach a majority; peers answering: []",
            ),
            tonic::Status::invalid_argument("electing a leader, retry in 10 ms"),
            tonic::Status::unavailable("NO_QUORUM: electing a leader, retry in soon ms"),
            tonic::Status::resource_exhausted("emergency rate limit"),
        ] {
            assert_eq!(election_retry_after(&other), None, "{other:?}");
        }
    }
}
