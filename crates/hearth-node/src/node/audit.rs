//! Reading the chain: verify, tail, export, and how an entry is described to people.

use hearth_core::Record;
use hearth_core::domain::Command as DomainCommand;
use hearth_store::audit;
use hearth_store::audit::Link;
use hearth_store::audit::NodeVerify;

use super::{Node, NodeError};

/// Decodes a record's payload for display.
pub fn describe(rec: &Record) -> String {
    match rec.kind {
        hearth_core::EntryKind::Blank => "leader change".to_string(),
        hearth_core::EntryKind::Membership => {
            format!("membership {}", String::from_utf8_lossy(&rec.payload))
        }
        hearth_core::EntryKind::Command => match DomainCommand::decode(&rec.payload) {
            Ok(DomainCommand::TestRecord { text }) => format!("test record {text:?}"),
            Ok(DomainCommand::OperatorAct { act, by }) => format!("{act} (by {by:?})"),
            Ok(DomainCommand::NodeNotice { node, text, .. }) => format!("node {node} {text}"),
            Ok(DomainCommand::AdmitNode {
                node,
                incarnation,
                by,
                reason,
                ..
            }) => format!(
                "node {node}'s data directory (incarnation {}) admitted to vote by {by}: {reason}",
                crate::datadir::short(&incarnation)
            ),
            Ok(DomainCommand::RegisterDevice { device, by }) => {
                format!("device {} registered{}", device.id, by_suffix(&by))
            }
            Ok(DomainCommand::RemoveDevice { id, by }) => {
                format!("device {id} removed by {by:?}")
            }
            Ok(DomainCommand::ApplyClass { class, by }) => {
                format!("intent class {} applied{}", class.name, by_suffix(&by))
            }
            Ok(DomainCommand::ApplyPolicies { policies, by }) => {
                format!("{} policies applied{}", policies.len(), by_suffix(&by))
            }
            Ok(DomainCommand::AddPolicy { policy, by }) => {
                format!("policy {} added{}", policy.id, by_suffix(&by))
            }
            Ok(DomainCommand::RemovePolicy { id, by }) => {
                format!("policy {id} removed{}", by_suffix(&by))
            }
            Ok(DomainCommand::SubmitIntent {
                intent, key_scope, ..
            }) => format!(
                "intent {} {} {:?} at {} from {}",
                hearth_core::domain::scoped_intent_id(
                    key_scope.as_deref(),
                    &intent.idempotency_key
                ),
                intent.class,
                intent.urgency,
                intent.location,
                intent.source
            ),
            Ok(DomainCommand::Approve {
                intent_id,
                by,
                reason,
                ..
            }) => match reason {
                Some(why) => format!("intent {intent_id} approved by {by} ({why:?})"),
                None => format!("intent {intent_id} approved by {by}"),
            },
            Ok(DomainCommand::Deny {
                intent_id,
                by,
                reason,
                ..
            }) => format!("intent {intent_id} denied by {by} ({reason:?})"),
            Ok(DomainCommand::ExpireApproval {
                intent_id, node, ..
            }) => format!(
                "intent {intent_id} denied by system: its approval expired (recorded by node {node})"
            ),
            Ok(DomainCommand::Refence {
                devices,
                by,
                reason,
                ..
            }) => format!("devices {devices:?} re-fenced by {by:?} ({reason:?})"),
            Ok(DomainCommand::Promote { promotion: p }) => format!(
                "node {} promoted to a one-node cluster by {:?} ({:?}){}{}; removed {:?}; last entry it had: {}",
                p.node,
                p.operator,
                p.reason,
                if p.forced { ", forced" } else { "" },
                if p.destructive { ", destructive" } else { "" },
                p.removed,
                match (p.last, &p.last_hash) {
                    (Some((t, i)), Some(h)) => format!("{i} (term {t}, hash {h})"),
                    (Some((t, i)), None) => format!("{i} (term {t})"),
                    _ => "none".into(),
                }
            ),
            Ok(DomainCommand::RecordOutcome {
                action_id,
                outcome,
                token,
                ..
            }) => format!(
                "action {action_id}: {outcome:?} (token term {} leader {} index {})",
                token.term, token.leader, token.index
            ),
            Err(_) => format!("command ({} bytes)", rec.payload.len()),
        },
    }
}

pub(super) fn by_suffix(by: &Option<String>) -> String {
    by.as_ref()
        .map(|b| format!(" by {b:?}"))
        .unwrap_or_default()
}

impl Node {
    /// Signs a checkpoint of this hub's applied head now, has the cluster's witness (if any)
    /// cosign it, and stores it; returns the last one when the head has not advanced.
    pub async fn checkpoint_now(&self) -> Result<crate::checkpoint::Made, NodeError> {
        self.serving_chain()?;
        self.checkpoints
            .checkpoint(crate::checkpoint::witness_member(&self.raft))
            .await
    }

    /// Verifies this node's chain.
    pub fn verify(&self) -> Result<NodeVerify, NodeError> {
        self.serving_chain()?;
        Ok(audit::verify(&self.log, &self.sm)?)
    }

    /// The last `n` applied links.
    pub fn tail(&self, n: u64) -> Result<Vec<Link>, NodeError> {
        self.serving_chain()?;
        let Some((last, _)) = self.sm.head()? else {
            return Ok(Vec::new());
        };
        let first_available = audit::start_point(&self.log, &self.sm)?
            .map(|(i, _)| i + 1)
            .unwrap_or(0);
        let from = last
            .saturating_sub(n.saturating_sub(1))
            .max(first_available);
        Ok(audit::links(&self.log, &self.sm, from, last)?)
    }

    /// This node's applied chain as export lines (docs/AUDIT-FORMAT.md).
    pub fn export_lines(&self) -> Result<Vec<String>, NodeError> {
        self.serving_chain()?;
        let anchor = audit::start_point(&self.log, &self.sm)?;
        let mut out = vec![
            serde_json::to_string(&hearth_core::export::ExportHeader::new(self.id, anchor))
                .map_err(std::io::Error::other)?,
        ];
        if let Some((last, _)) = self.sm.head()? {
            let from = anchor.map(|(i, _)| i + 1).unwrap_or(0);
            for l in audit::links(&self.log, &self.sm, from, last)? {
                out.push(
                    serde_json::to_string(&hearth_core::export::ExportLine::new(
                        &l.record, &l.hash,
                    ))
                    .map_err(std::io::Error::other)?,
                );
            }
        }
        Ok(out)
    }

    /// Applied links `from..=to`, for tests and cross-checks.
    pub fn links(&self, from: u64, to: u64) -> Result<Vec<Link>, NodeError> {
        Ok(audit::links(&self.log, &self.sm, from, to)?)
    }
}
