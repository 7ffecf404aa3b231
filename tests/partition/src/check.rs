//! The invariants every scenario ends with, as plain functions over the evidence the suite
//! collects from outside the cluster: each node's audit export, the device simulator's
//! journal, and what the client was told.

use std::collections::{BTreeMap, BTreeSet};

use hearth_core::device_protocol::{JournalEntry, Reply};
use hearth_core::domain::{Command, DomainState, EntryPos};
use hearth_core::export::{ExportLine, verify_export};

/// An intent the client saw acknowledged (committed).
#[derive(Debug, Clone)]
pub struct Ack {
    pub key: String,
    pub intent_id: String,
    pub index: u64,
}

/// A window in which a node (or, with `node: None`, every node) must not drive any device.
#[derive(Debug, Clone)]
pub struct Quiet {
    pub node: Option<u64>,
    pub from_ms: u64,
    pub to_ms: u64,
    pub why: String,
}

pub struct Evidence<'a> {
    /// `(node id, export lines)`, header first.
    pub exports: &'a [(u64, Vec<String>)],
    pub journal: &'a [JournalEntry],
    pub acked: &'a [Ack],
    /// Intents refused with "nothing was appended": they must never be in the chain.
    pub refused_upfront: &'a [String],
    pub quiet: &'a [Quiet],
    pub witnesses: &'a [u64],
}

/// The committed history, replayed from an export.
pub struct Chain {
    pub state: DomainState,
    pub last_index: Option<u64>,
    /// Every `(term, leader)` that wrote an entry.
    pub leaderships: BTreeSet<(u64, u64)>,
    /// For each term, the earliest time a leader of that term fixed for an intent.
    pub first_intent_at: BTreeMap<u64, u64>,
}

/// Replays an export's entries through the same pure `apply` the nodes use.
pub fn replay(lines: &[String]) -> Result<Chain, String> {
    let mut chain = Chain {
        state: DomainState::default(),
        last_index: None,
        leaderships: BTreeSet::new(),
        first_intent_at: BTreeMap::new(),
    };
    for (n, line) in lines.iter().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let l: ExportLine =
            serde_json::from_str(line).map_err(|e| format!("export line {n}: {e}"))?;
        chain.leaderships.insert((l.term, l.leader));
        chain.last_index = Some(l.index);
        if l.kind != "command" {
            continue;
        }
        let bytes = hex::decode(&l.payload).map_err(|e| format!("entry {}: {e}", l.index))?;
        let cmd = Command::decode(&bytes).map_err(|e| format!("entry {}: {e}", l.index))?;
        if let Command::SubmitIntent { at_ms, .. } = &cmd {
            let first = chain.first_intent_at.entry(l.term).or_insert(*at_ms);
            *first = (*first).min(*at_ms);
        }
        chain.state.apply(
            &cmd,
            EntryPos {
                index: l.index,
                term: l.term,
                leader: l.leader,
            },
        );
    }
    Ok(chain)
}

/// Actions committed but without an outcome yet (the suite waits for none before checking).
pub fn open_actions(chain: &Chain) -> Vec<String> {
    chain
        .state
        .outbox()
        .into_iter()
        .map(|(_, a)| a.id.clone())
        .collect()
}

/// Checks every invariant; returns the replayed chain (if the exports allowed one) and every
/// violation with its evidence.
pub fn check(e: &Evidence<'_>) -> (Option<Chain>, Vec<String>) {
    let mut bad = Vec::new();

    // 1. Every export verifies, and all are the same chain.
    for (node, lines) in e.exports {
        match verify_export(lines.iter().map(String::as_str)) {
            Ok(r) if r.failure.is_none() => {}
            Ok(r) => bad.push(format!(
                "node {node}: export does not verify: {:?}",
                r.failure
            )),
            Err(err) => bad.push(format!("node {node}: export unreadable: {err}")),
        }
    }
    if let Some((first_node, first)) = e.exports.first() {
        for (node, lines) in &e.exports[1..] {
            let (a, b) = (&first[1..], &lines[1..]);
            if a != b {
                let at = a.iter().zip(b).position(|(x, y)| x != y);
                bad.push(format!(
                    "chains differ: node {first_node} has {} entries, node {node} has {}; first difference at line {:?}",
                    a.len(),
                    b.len(),
                    at.map(|i| i + 1)
                ));
            }
        }
    }
    let chain = match e.exports.first().map(|(_, l)| replay(l)) {
        Some(Ok(c)) => c,
        Some(Err(err)) => {
            bad.push(format!("cannot replay the chain: {err}"));
            return (None, bad);
        }
        None => {
            bad.push("no export collected".into());
            return (None, bad);
        }
    };

    // 2. Every acknowledged intent is in the chain, at the index the client was told.
    for a in e.acked {
        match chain.state.intents.get(&a.intent_id) {
            None => bad.push(format!(
                "acknowledged intent {} (key {}) is not in the chain",
                a.intent_id, a.key
            )),
            Some(r) if r.index != a.index => bad.push(format!(
                "intent {} acknowledged at index {} but committed at {}",
                a.intent_id, a.index, r.index
            )),
            Some(_) => {}
        }
    }
    for id in e.refused_upfront {
        if chain.state.intents.contains_key(id) {
            bad.push(format!(
                "intent {id} was refused with \"nothing was appended\" but is in the chain"
            ));
        }
    }

    // 3. The device journal: only hubs send; every applied command belongs to a committed
    //    action, carries a token of a real leadership naming the deciding entry, was applied
    //    before any newer leadership existed, and no action id was applied twice.
    let mut applied = BTreeSet::new();
    for j in e.journal {
        let c = &j.command;
        if e.witnesses.contains(&c.sender) {
            bad.push(format!("witness {} sent a device command: {j:?}", c.sender));
        }
        for q in e.quiet {
            if q.node.is_none_or(|n| n == c.sender) && (q.from_ms..=q.to_ms).contains(&j.at_ms) {
                bad.push(format!(
                    "node {} sent a device command while it must not ({}): {j:?}",
                    c.sender, q.why
                ));
            }
        }
        if j.reply != Reply::Applied {
            continue;
        }
        if !applied.insert(c.action_id.clone()) {
            bad.push(format!("action {} applied twice: {j:?}", c.action_id));
        }
        let intent_id = c.action_id.split('/').next().unwrap_or_default();
        let Some(r) = chain.state.intents.get(intent_id) else {
            bad.push(format!(
                "device applied a command with no committed intent: {j:?}"
            ));
            continue;
        };
        match r.actions.iter().find(|a| a.id == c.action_id) {
            None => bad.push(format!(
                "device applied an action the intent does not have: {j:?}"
            )),
            Some(a) if a.action.device != c.device || a.action.state != c.state => {
                bad.push(format!(
                    "device applied {j:?} but the committed action is {:?}",
                    a.action
                ))
            }
            Some(_) => {}
        }
        if c.token.index != r.index || c.token.term < r.term {
            bad.push(format!(
                "token {:?} does not name the deciding entry (index {}, term {}): {j:?}",
                c.token, r.index, r.term
            ));
        }
        if !chain.leaderships.contains(&(c.token.term, c.token.leader)) {
            bad.push(format!(
                "token {:?} names a leadership that wrote nothing: {j:?}",
                c.token
            ));
        }
        if let Some((term, at)) = chain
            .first_intent_at
            .range(c.token.term + 1..)
            .find(|(_, at)| **at < j.at_ms)
        {
            bad.push(format!(
                "stale actuation: applied at {} under term {} although term {term} already led at {at}: {j:?}",
                j.at_ms, c.token.term
            ));
        }
    }
    (Some(chain), bad)
}

#[cfg(test)]
mod tests {
    use hearth_core::chain::{EntryKind, Record};
    use hearth_core::device_protocol::DeviceCommand;
    use hearth_core::domain::FencingToken;
    use hearth_core::export::{ExportHeader, ExportLine};
    use hearth_core::intent::{Intent, Location, Urgency};

    use super::*;

    fn export(node: u64, cmds: &[(u64, u64, Option<Command>)]) -> (u64, Vec<String>) {
        let mut lines = vec![serde_json::to_string(&ExportHeader::new(node, None)).unwrap()];
        let mut v = hearth_core::chain::ChainVerifier::new_genesis();
        for (i, (term, leader, cmd)) in cmds.iter().enumerate() {
            let rec = Record {
                index: i as u64,
                term: *term,
                leader: *leader,
                kind: if cmd.is_some() {
                    EntryKind::Command
                } else {
                    EntryKind::Blank
                },
                payload: cmd.as_ref().map(|c| c.encode()).unwrap_or_default(),
            };
            let h = hearth_core::chain::link_hash(&v.head(), &rec.encode());
            v.push(&rec.encode(), &h).unwrap();
            lines.push(serde_json::to_string(&ExportLine::new(&rec, &h)).unwrap());
        }
        (node, lines)
    }

    fn device() -> Command {
        Command::RegisterDevice {
            by: None,
            device: hearth_core::intent::Device {
                id: "siren".into(),
                name: "Siren".into(),
                location: Location::parse("location", "home").unwrap(),
                tags: Default::default(),
                sensors: Default::default(),
                actuators: [("siren".to_string(), ["on".to_string()].into())].into(),
                emergency_capable: true,
                emergency_actions: Default::default(),
                adapter: hearth_core::intent::Adapter::Sim {
                    address: "device-sim:7301".into(),
                },
            },
        }
    }

    fn submit(key: &str, at_ms: u64) -> Command {
        Command::SubmitIntent {
            intent: Intent {
                class: "ensure_safety".into(),
                urgency: Urgency::Emergency,
                subject: String::new(),
                location: Location::parse("location", "home").unwrap(),
                context: Default::default(),
                idempotency_key: key.into(),
                source: "suite".into(),
            },
            at_ms,
            minute_of_day: 0,
            key_scope: None,
            deadline_ms: None,
            emergency_limit: None,
            approval_timeout_ms: None,
        }
    }

    fn applied(action: &str, term: u64, leader: u64, index: u64, at_ms: u64) -> JournalEntry {
        JournalEntry {
            seq: 0,
            at_ms,
            command: DeviceCommand {
                action_id: action.into(),
                device: "siren".into(),
                capability: "siren".into(),
                state: "on".into(),
                token: FencingToken {
                    term,
                    leader,
                    index,
                },
                sender: leader,
            },
            reply: Reply::Applied,
        }
    }

    /// Term 1 led by node 1 (index 0..=2), term 2 led by node 2 from index 3.
    fn history() -> Vec<(u64, u64, Option<Command>)> {
        vec![
            (1, 1, None),
            (1, 1, Some(device())),
            (1, 1, Some(submit("k1", 1_000))),
            (2, 2, None),
            (2, 2, Some(submit("k2", 5_000))),
        ]
    }

    fn id(key: &str) -> String {
        hearth_core::domain::intent_id(key)
    }

    fn run(
        exports: &[(u64, Vec<String>)],
        journal: &[JournalEntry],
        acked: &[Ack],
        quiet: &[Quiet],
    ) -> Vec<String> {
        check(&Evidence {
            exports,
            journal,
            acked,
            refused_upfront: &[],
            quiet,
            witnesses: &[3],
        })
        .1
    }

    #[test]
    fn a_clean_history_passes() {
        let h = history();
        let ex = [export(1, &h), export(2, &h), export(3, &h)];
        let k1 = id("k1");
        let j = [
            applied(&format!("{k1}/0"), 1, 1, 2, 1_010),
            applied(&format!("{}/0", id("k2")), 2, 2, 4, 5_010),
        ];
        let acked = [Ack {
            key: "k1".into(),
            intent_id: k1,
            index: 2,
        }];
        assert_eq!(run(&ex, &j, &acked, &[]), Vec::<String>::new());
    }

    #[test]
    fn each_broken_invariant_is_reported() {
        let h = history();
        let ex = [export(1, &h), export(2, &h[..4])];
        let k1 = id("k1");
        let a1 = format!("{k1}/0");
        type Case = (&'static str, Vec<JournalEntry>, Vec<Ack>, Vec<Quiet>);
        let cases: Vec<Case> = vec![
            ("chains differ", vec![], vec![], vec![]),
            (
                "not in the chain",
                vec![],
                vec![Ack {
                    key: "lost".into(),
                    intent_id: id("lost"),
                    index: 9,
                }],
                vec![],
            ),
            (
                "applied twice",
                vec![applied(&a1, 1, 1, 2, 1_010), applied(&a1, 1, 1, 2, 1_020)],
                vec![],
                vec![],
            ),
            (
                "no committed intent",
                vec![applied("i-00/0", 1, 1, 2, 1_010)],
                vec![],
                vec![],
            ),
            (
                "does not name the deciding entry",
                vec![applied(&a1, 1, 1, 1, 1_010)],
                vec![],
                vec![],
            ),
            (
                "wrote nothing",
                vec![applied(&a1, 1, 2, 2, 1_010)],
                vec![],
                vec![],
            ),
            (
                "stale actuation",
                vec![applied(&a1, 1, 1, 2, 6_000)],
                vec![],
                vec![],
            ),
            (
                "witness 3 sent",
                vec![{
                    let mut j = applied(&a1, 1, 1, 2, 1_010);
                    j.command.sender = 3;
                    j
                }],
                vec![],
                vec![],
            ),
            (
                "while it must not",
                vec![applied(&a1, 1, 1, 2, 1_010)],
                vec![],
                vec![Quiet {
                    node: Some(1),
                    from_ms: 1_000,
                    to_ms: 2_000,
                    why: "isolated".into(),
                }],
            ),
        ];
        for (want, journal, acked, quiet) in cases {
            let exports: &[(u64, Vec<String>)] = if want == "chains differ" {
                &ex
            } else {
                &ex[..1]
            };
            let got = run(exports, &journal, &acked, &quiet);
            assert!(
                got.iter().any(|v| v.contains(want)),
                "expected a violation containing {want:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn a_tampered_export_fails() {
        let h = history();
        let (n, mut lines) = export(1, &h);
        lines[3] = lines[3].replace("\"term\":1", "\"term\":7");
        let got = run(&[(n, lines)], &[], &[], &[]);
        assert!(got.iter().any(|v| v.contains("does not verify")), "{got:?}");
    }

    #[test]
    fn refused_upfront_must_stay_out_of_the_chain() {
        let h = history();
        let ex = [export(1, &h)];
        let refused = [id("k2")];
        let got = check(&Evidence {
            exports: &ex,
            journal: &[],
            acked: &[],
            refused_upfront: &refused,
            quiet: &[],
            witnesses: &[],
        })
        .1;
        assert!(
            got.iter().any(|v| v.contains("nothing was appended")),
            "{got:?}"
        );
    }
}
