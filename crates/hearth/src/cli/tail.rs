//! `hearth audit tail`: chain entries as a person reads them — time, principal, device,
//! state and what happened — decoded from the entries' payloads (and the intents they name),
//! filtered by device, source and time, followed as they are applied; and the calls a node
//! refused, which are never in the chain (`--refused`).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use hearth_core::domain::{ActionOutcome, Command};
use hearth_proto::v1 as pb;
use hearth_proto::v1::audit_client::AuditClient;
use hearth_proto::v1::intents_client::IntentsClient;
use serde_json::{Value, json};

use super::args::Output;
use super::client::Client;
use super::{output, timefmt};

/// What `audit tail` keeps from the arguments.
pub struct TailArgs {
    pub count: u32,
    pub follow: bool,
    pub device: Option<String>,
    pub source: Option<String>,
    pub since: Option<u64>,
    pub scan: u32,
    pub out: Output,
}

/// One line of `audit tail`: an entry as a person reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    index: u64,
    term: u64,
    leader: u64,
    hash: String,
    /// The entry's own time (the leader's stamp), if it carries one.
    at_ms: Option<u64>,
    /// Otherwise: the time of the latest earlier entry that did (this one came after it).
    not_before_ms: Option<u64>,
    /// Who did it: a token's name, an intent's source, or the hub that recorded an outcome.
    principal: Option<String>,
    /// For intents and their outcomes: who asked.
    source: Option<String>,
    devices: Vec<String>,
    states: Vec<String>,
    intent: Option<String>,
    /// For an outcome: the action it is about.
    action: Option<String>,
    what: String,
}

impl Line {
    fn time_ms(&self) -> Option<u64> {
        self.at_ms.or(self.not_before_ms)
    }

    fn text(&self) -> String {
        let time = match (self.at_ms, self.not_before_ms) {
            (Some(t), _) => format!("  {}", timefmt::format_utc(t)),
            (None, Some(t)) => format!(">={}", timefmt::format_utc(t)),
            (None, None) => format!("  {:<20}", "-"),
        };
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        format!(
            "{time} {:>7}  {:<14} {:<16} {:<12} {}",
            self.index,
            self.principal.as_deref().unwrap_or("-"),
            list(&self.devices),
            list(&self.states),
            self.what
        )
    }

    fn json(&self) -> Value {
        json!({
            "refused": false,
            "index": self.index,
            "term": self.term,
            "leader": self.leader,
            "hash": self.hash,
            "at_ms": self.at_ms,
            "not_before_ms": self.not_before_ms,
            "time": self.time_ms().map(timefmt::rfc3339),
            "principal": self.principal,
            "source": self.source,
            "devices": self.devices,
            "states": self.states,
            "intent": self.intent,
            "action": self.action,
            "what": self.what,
        })
    }
}

const TAIL_HEADER: &str =
    "  TIME                   INDEX  PRINCIPAL      DEVICE           STATE        WHAT";

/// The name an outcome has in the API (`APPLIED`, `CANCELLED`, …) and its reason.
fn outcome_name(o: &ActionOutcome) -> (&'static str, &str) {
    match o {
        ActionOutcome::Applied => ("APPLIED", ""),
        ActionOutcome::AlreadyApplied => ("ALREADY_APPLIED", ""),
        ActionOutcome::StaleToken => ("STALE_TOKEN", ""),
        ActionOutcome::Failed { reason } => ("FAILED", reason),
        ActionOutcome::OutcomeUnknown { reason } => ("OUTCOME_UNKNOWN", reason),
        ActionOutcome::Expired { reason } => ("EXPIRED", reason),
        ActionOutcome::Cancelled { reason } => ("CANCELLED", reason),
        ActionOutcome::Denied { reason } => ("DENIED", reason),
    }
}

/// Turns chain entries into lines, in order, keeping what later entries need: the chain's
/// time so far, who submitted each intent, and the intents' actions (asked for once each).
struct Tailer<'a> {
    client: &'a Client,
    addr: &'a str,
    chain_ms: Option<u64>,
    sources: HashMap<String, String>,
    views: HashMap<String, Option<pb::IntentView>>,
    last_index: Option<u64>,
}

impl<'a> Tailer<'a> {
    fn new(client: &'a Client, addr: &'a str) -> Self {
        Self {
            client,
            addr,
            chain_ms: None,
            sources: HashMap::new(),
            views: HashMap::new(),
            last_index: None,
        }
    }

    /// The intent `id` as the node shows it (`None` if it cannot: not found, not allowed).
    async fn view(&mut self, id: &str) -> Option<pb::IntentView> {
        if let Some(v) = self.views.get(id) {
            return v.clone();
        }
        let v = match self.client.channel(self.addr) {
            Ok(ch) => IntentsClient::new(ch)
                .get(pb::GetIntentRequest { id: id.to_string() })
                .await
                .ok()
                .map(|r| r.into_inner()),
            Err(_) => None,
        };
        self.views.insert(id.to_string(), v.clone());
        v
    }

    /// The line of one entry, without what needs the intent's actions (see `fill`).
    fn decode(&mut self, e: &pb::AuditEntry) -> Line {
        let mut l = Line {
            index: e.index,
            term: e.term,
            leader: e.leader,
            hash: e.hash.clone(),
            at_ms: None,
            not_before_ms: self.chain_ms,
            principal: None,
            source: None,
            devices: Vec::new(),
            states: Vec::new(),
            intent: None,
            action: None,
            what: e.kind.clone(),
        };
        self.last_index = Some(e.index);
        let is_command = e.kind != "leader change" && !e.kind.starts_with("membership ");
        let cmd = if is_command {
            Command::decode(&e.payload).ok()
        } else {
            None
        };
        let stamp = |l: &mut Line, t: u64| {
            l.at_ms = Some(t);
            l.not_before_ms = None;
        };
        match cmd {
            None => {}
            Some(Command::TestRecord { .. }) => {}
            Some(Command::NodeNotice { node, at_ms, .. }) => {
                stamp(&mut l, at_ms);
                l.principal = Some(format!("node {node}"));
            }
            Some(Command::AdmitNode { by, at_ms, .. }) => {
                stamp(&mut l, at_ms);
                l.principal = Some(by);
            }
            Some(Command::RegisterDevice { device, by }) => {
                l.principal = by;
                l.devices = vec![device.id];
                l.states = vec!["registered".into()];
            }
            Some(Command::RemoveDevice { id, by }) => {
                l.principal = Some(by);
                l.devices = vec![id];
                l.states = vec!["removed".into()];
            }
            Some(
                Command::ApplyClass { by, .. }
                | Command::ApplyPolicies { by, .. }
                | Command::AddPolicy { by, .. }
                | Command::RemovePolicy { by, .. },
            ) => l.principal = by,
            Some(Command::SubmitIntent {
                intent,
                at_ms,
                key_scope,
                ..
            }) => {
                let id = hearth_core::domain::scoped_intent_id(
                    key_scope.as_deref(),
                    &intent.idempotency_key,
                );
                stamp(&mut l, at_ms);
                self.sources.insert(id.clone(), intent.source.clone());
                l.principal = Some(intent.source.clone());
                l.source = Some(intent.source);
                l.intent = Some(id);
            }
            Some(Command::Approve {
                intent_id,
                by,
                at_ms,
                ..
            }) => {
                if let Some(t) = at_ms {
                    stamp(&mut l, t);
                }
                l.principal = Some(by);
                l.source = self.sources.get(&intent_id).cloned();
                l.intent = Some(intent_id);
            }
            Some(Command::Deny {
                intent_id,
                by,
                at_ms,
                ..
            }) => {
                stamp(&mut l, at_ms);
                l.principal = Some(by);
                l.source = self.sources.get(&intent_id).cloned();
                l.intent = Some(intent_id);
            }
            Some(Command::ExpireApproval {
                intent_id, at_ms, ..
            }) => {
                stamp(&mut l, at_ms);
                l.principal = Some(hearth_core::approval::SYSTEM.to_string());
                l.source = self.sources.get(&intent_id).cloned();
                l.intent = Some(intent_id);
            }
            Some(Command::Refence {
                devices, by, at_ms, ..
            }) => {
                stamp(&mut l, at_ms);
                l.states = vec!["reset".into(); devices.len()];
                l.devices = devices;
                l.principal = Some(by);
                l.intent = Some(hearth_core::domain::DomainState::refence_id(e.index));
            }
            Some(Command::RecordOutcome {
                intent_id,
                action_id,
                outcome,
                ..
            }) => {
                let (name, reason) = outcome_name(&outcome);
                l.principal = Some(format!("node {}", e.leader));
                l.source = self.sources.get(&intent_id).cloned();
                l.what = if reason.is_empty() {
                    format!("{name} ({action_id})")
                } else {
                    format!("{name}: {reason} ({action_id})")
                };
                // The action's device and state are filled from the intent.
                l.action = Some(action_id);
                l.intent = Some(intent_id);
            }
            Some(Command::OperatorAct { by, .. }) => l.principal = Some(by),
            Some(Command::Promote { promotion }) => {
                stamp(&mut l, promotion.at_ms);
                l.principal = Some(promotion.operator);
            }
        }
        if let Some(t) = l.at_ms {
            self.chain_ms = Some(self.chain_ms.map_or(t, |c| c.max(t)));
        }
        l
    }

    /// Fills devices and states from the intent's actions (an intent line: all of them; an
    /// outcome line: its action).
    async fn fill(&mut self, l: &mut Line) {
        let Some(id) = l.intent.clone() else {
            return;
        };
        if !l.devices.is_empty() {
            return;
        }
        let Some(v) = self.view(&id).await else {
            return;
        };
        if let Some(action_id) = &l.action {
            // An outcome: the action it is about.
            if let Some(a) = v.actions.iter().find(|a| &a.id == action_id) {
                l.devices = vec![a.device.clone()];
                l.states = vec![a.state.clone()];
            }
        } else {
            l.devices = v.actions.iter().map(|a| a.device.clone()).collect();
            l.states = v.actions.iter().map(|a| a.state.clone()).collect();
            if l.devices.is_empty() {
                l.states = vec![v.status.clone()];
            }
        }
    }

    /// Whether `l` passes the source and time filters (the device filter needs `fill`).
    fn passes(&self, l: &Line, a: &TailArgs) -> bool {
        if let Some(s) = &a.source
            && l.principal.as_ref() != Some(s)
            && l.source.as_ref() != Some(s)
        {
            return false;
        }
        if let Some(since) = a.since
            && l.time_ms().is_none_or(|t| t < since)
        {
            return false;
        }
        true
    }
}

/// Whether the line's devices come from its intent, not filled yet.
fn wants_fill(l: &Line) -> bool {
    l.intent.is_some() && l.devices.is_empty()
}

async fn fetch_tail(
    client: &Client,
    addr: &str,
    count: u32,
) -> anyhow::Result<Vec<pb::AuditEntry>> {
    let mut c = AuditClient::new(client.channel(addr)?);
    Ok(c.tail(pb::TailRequest { count })
        .await
        .map_err(|s| client.rpc_err(addr, s))?
        .into_inner()
        .entries)
}

/// How many entries before the first shown are read to know the chain's time and the
/// intents' sources.
const LOOKBACK: u32 = 500;
/// The most `Audit.Tail` returns.
pub const MAX_TAIL: u32 = 10_000;

pub async fn tail(client: &Client, addr: &str, a: TailArgs) -> anyhow::Result<ExitCode> {
    let filtered = a.device.is_some() || a.source.is_some() || a.since.is_some();
    let window = if filtered {
        a.scan.max(a.count)
    } else {
        a.count
    }
    .saturating_add(LOOKBACK)
    .min(MAX_TAIL);
    let entries = fetch_tail(client, addr, window).await?;
    let mut t = Tailer::new(client, addr);
    let mut lines = Vec::new();
    for e in &entries {
        let mut l = t.decode(e);
        if !t.passes(&l, &a) {
            continue;
        }
        if let Some(d) = &a.device {
            if wants_fill(&l) {
                t.fill(&mut l).await;
            }
            if !l.devices.contains(d) {
                continue;
            }
        }
        lines.push(l);
    }
    let skip = lines.len().saturating_sub(a.count as usize);
    if !a.out.json() {
        outln!("{TAIL_HEADER}");
    }
    for mut l in lines.into_iter().skip(skip) {
        if wants_fill(&l) {
            t.fill(&mut l).await;
        }
        print_line(&l, a.out);
    }
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let mut batch = fetch_tail(client, addr, 200).await?;
        let from = t.last_index.map_or(0, |i| i + 1);
        if batch.first().is_some_and(|e| e.index > from) && t.last_index.is_some() {
            // More arrived than one batch holds: read back to where we were.
            batch = fetch_tail(client, addr, MAX_TAIL).await?;
        }
        for e in batch.iter().filter(|e| e.index >= from) {
            let mut l = t.decode(e);
            if !t.passes(&l, &a) {
                continue;
            }
            if wants_fill(&l) {
                t.fill(&mut l).await;
            }
            if a.device.as_ref().is_some_and(|d| !l.devices.contains(d)) {
                continue;
            }
            print_line(&l, a.out);
        }
    }
}

/// How often `--follow` asks for new entries.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

fn print_line(l: &Line, out: Output) {
    if out.json() {
        output::print(&l.json());
    } else {
        outln!("{}", l.text());
    }
}

fn refused_text(r: &pb::RefusedCall) -> String {
    format!(
        "  {} REFUSED  {:<14} {} {}: {} (node {}{})",
        timefmt::format_utc(r.at_ms),
        if r.principal.is_empty() {
            "-"
        } else {
            &r.principal
        },
        r.method,
        r.code,
        r.message,
        r.node_id,
        if r.peer.is_empty() {
            String::new()
        } else {
            format!(", from {}", r.peer)
        }
    )
}

/// `audit tail --refused`: the calls this node refused (never in the chain).
pub async fn tail_refused(client: &Client, addr: &str, a: TailArgs) -> anyhow::Result<ExitCode> {
    if a.device.is_some() {
        anyhow::bail!(
            "--device filters chain entries; a refused call names no device (drop --device, or \
             --refused)"
        );
    }
    let fetch = |since_ms: u64, count: u32| async move {
        let mut c = AuditClient::new(client.channel(addr)?);
        anyhow::Ok(
            c.refusals(pb::RefusalsRequest { count, since_ms })
                .await
                .map_err(|s| client.rpc_err(addr, s))?
                .into_inner(),
        )
    };
    let keep = |r: &pb::RefusedCall| a.source.as_ref().is_none_or(|s| &r.principal == s);
    let first = fetch(a.since.unwrap_or(0), 0).await?;
    let mut shown: Vec<pb::RefusedCall> = first.refused.into_iter().filter(|r| keep(r)).collect();
    let skip = shown.len().saturating_sub(a.count as usize);
    shown.drain(..skip);
    if !a.out.json() {
        outln!("  TIME                         PRINCIPAL      METHOD CODE: MESSAGE");
        if first.dropped > 0 {
            outln!(
                "  ({} older refusals were dropped: this node keeps its last {})",
                first.dropped,
                1024
            );
        }
    }
    let print = |r: &pb::RefusedCall| {
        if a.out.json() {
            output::print(&output::refused(r));
        } else {
            outln!("{}", refused_text(r));
        }
    };
    shown.iter().for_each(print);
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // The newest time printed, and what was printed at that very millisecond.
    let mut last = shown.last().map_or(a.since.unwrap_or(0), |r| r.at_ms);
    let mut at_last: Vec<pb::RefusedCall> =
        shown.iter().filter(|r| r.at_ms == last).cloned().collect();
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        for r in fetch(last, 0).await?.refused {
            if at_last.contains(&r) || !keep(&r) {
                continue;
            }
            print(&r);
            if r.at_ms > last {
                last = r.at_ms;
                at_last.clear();
            }
            at_last.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, leader: u64, cmd: &Command) -> pb::AuditEntry {
        pb::AuditEntry {
            index,
            term: 1,
            leader,
            kind: format!("entry {index}"),
            payload: cmd.encode(),
            hash: "ab".repeat(32),
        }
    }

    fn intent(source: &str) -> hearth_core::intent::Intent {
        hearth_core::intent::Intent {
            class: "ensure_safety".into(),
            urgency: hearth_core::intent::Urgency::Emergency,
            subject: String::new(),
            location: hearth_core::intent::Location::parse("l", "home").unwrap(),
            context: Default::default(),
            source: source.into(),
            idempotency_key: "k".into(),
        }
    }

    #[test]
    fn entries_say_who_which_device_and_when() {
        let client = Client::default();
        let mut t = Tailer::new(&client, "127.0.0.1:1");
        let blank = t.decode(&pb::AuditEntry {
            index: 1,
            kind: "leader change".into(),
            ..Default::default()
        });
        assert_eq!((blank.time_ms(), blank.principal.as_deref()), (None, None));
        assert!(blank.text().contains("leader change"));
        let submit = t.decode(&entry(
            2,
            1,
            &Command::SubmitIntent {
                intent: intent("ana"),
                at_ms: 1_796_143_202_000,
                minute_of_day: 0,
                deadline_ms: None,
                key_scope: Some("ana".into()),
                emergency_limit: None,
                approval_timeout_ms: None,
            },
        ));
        let id = hearth_core::domain::scoped_intent_id(Some("ana"), "k");
        assert_eq!(submit.at_ms, Some(1_796_143_202_000));
        assert_eq!(submit.intent.as_deref(), Some(id.as_str()));
        assert_eq!(submit.principal.as_deref(), Some("ana"));
        assert!(wants_fill(&submit), "its devices come from the intent");
        let outcome = t.decode(&entry(
            3,
            2,
            &Command::RecordOutcome {
                intent_id: id.clone(),
                action_id: format!("{id}/0"),
                outcome: ActionOutcome::Cancelled {
                    reason: "device siren removed by bob".into(),
                },
                token: hearth_core::domain::FencingToken {
                    term: 1,
                    leader: 2,
                    index: 2,
                },
            },
        ));
        // No time of its own: after the submission's.
        assert_eq!(outcome.at_ms, None);
        assert_eq!(outcome.not_before_ms, Some(1_796_143_202_000));
        assert!(
            outcome.text().contains(">=2026-12-01 16:40:02Z"),
            "{}",
            outcome.text()
        );
        assert_eq!(outcome.principal.as_deref(), Some("node 2"));
        assert_eq!(outcome.source.as_deref(), Some("ana"), "who asked");
        assert!(
            outcome
                .what
                .starts_with("CANCELLED: device siren removed by bob")
        );
        assert_eq!(outcome.action, Some(format!("{id}/0")));
        let removed = t.decode(&entry(
            4,
            2,
            &Command::RemoveDevice {
                id: "siren".into(),
                by: "bob".into(),
            },
        ));
        assert_eq!(removed.devices, ["siren"]);
        assert_eq!(removed.states, ["removed"]);
        assert_eq!(removed.principal.as_deref(), Some("bob"));
        assert!(!wants_fill(&removed));
        let j = removed.json();
        assert_eq!(j["principal"], "bob");
        assert_eq!(j["time"], "2026-12-01T16:40:02.000Z");
        assert!(j["at_ms"].is_null());
        // Filters: by source (a principal, or who asked), and time.
        let a = |source: Option<&str>, since: Option<u64>| TailArgs {
            count: 20,
            follow: false,
            device: None,
            source: source.map(String::from),
            since,
            scan: 100,
            out: Output {
                output: super::super::args::Format::Text,
            },
        };
        assert!(t.passes(&outcome, &a(Some("ana"), None)));
        assert!(t.passes(&outcome, &a(Some("node 2"), None)));
        assert!(!t.passes(&removed, &a(Some("ana"), None)));
        assert!(
            !t.passes(&blank, &a(None, Some(0))),
            "a line without a time"
        );
        assert!(t.passes(&removed, &a(None, Some(1_796_143_202_000))));
        assert!(!t.passes(&removed, &a(None, Some(1_796_143_202_001))));
        // An undecodable payload is shown as the node described it.
        let junk = t.decode(&pb::AuditEntry {
            index: 5,
            kind: "command (3 bytes)".into(),
            payload: b"xyz".to_vec(),
            ..Default::default()
        });
        assert_eq!(junk.what, "command (3 bytes)");
        assert_eq!(t.last_index, Some(5));
    }
}
