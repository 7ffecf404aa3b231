//! A simulated device's logic: what a careful device does with a command. Pure; the adapters
//! and `hearth device-sim` wrap it in I/O.
//!
//! Per device id it keeps the highest `(term, leader)` of any token it accepted and refuses
//! older ones (a stale leader cannot drive it), applies each action id at most once (a re-send
//! after a failover is acknowledged, not repeated), and journals every command with its reply.
//! A `hearth.refence` command (an administrator's audited `hearth device refence`, after the
//! cluster was re-formed and its terms started again from 1) replaces the remembered
//! high-water mark by the command's own leadership, once per action id.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::FencingToken;

/// A command as a device receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCommand {
    pub action_id: String,
    pub device: String,
    pub capability: String,
    /// An absolute state ("locked"), never a toggle.
    pub state: String,
    pub token: FencingToken,
    /// Node id of the hub that sent it.
    pub sender: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Applied,
    /// This action id was applied before; nothing changed.
    AlreadyApplied,
    /// The token's leadership is older than one this device has accepted.
    StaleToken {
        highest_term: u64,
        highest_leader: u64,
    },
    Refused {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub seq: u64,
    /// Wall-clock time the command was received (ms since the Unix epoch), as the caller
    /// gave it; evidence for fault tests that compare it with leadership changes.
    #[serde(default)]
    pub at_ms: u64,
    pub command: DeviceCommand,
    pub reply: Reply,
}

/// One simulator: any number of device ids, each with its own fence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimDevices {
    highest: BTreeMap<String, (u64, u64)>,
    applied: BTreeSet<String>,
    states: BTreeMap<(String, String), String>,
    journal: Vec<JournalEntry>,
}

impl SimDevices {
    /// Handles one command received at `at_ms` (wall clock, ms since the Unix epoch).
    pub fn receive(&mut self, cmd: DeviceCommand, at_ms: u64) -> Reply {
        let lead = cmd.token.leadership();
        let refence = cmd.capability == crate::domain::REFENCE_CAPABILITY;
        let reply = match self.highest.get(&cmd.device) {
            // A re-fence from a re-formed cluster: forget the older cluster's high-water mark
            // and take this token's leadership as the new one. Each re-fence (action id) is
            // applied once, so a late re-send of an old re-fence cannot lower the mark again.
            _ if refence && self.applied.contains(&cmd.action_id) => Reply::AlreadyApplied,
            _ if refence => {
                self.highest.insert(cmd.device.clone(), lead);
                self.applied.insert(cmd.action_id.clone());
                Reply::Applied
            }
            Some(h) if lead < *h => Reply::StaleToken {
                highest_term: h.0,
                highest_leader: h.1,
            },
            _ if cmd.state.is_empty() || cmd.capability.is_empty() => Reply::Refused {
                reason: "empty capability or state".into(),
            },
            _ if self.applied.contains(&cmd.action_id) => {
                self.highest.insert(
                    cmd.device.clone(),
                    lead.max(self.highest.get(&cmd.device).copied().unwrap_or(lead)),
                );
                Reply::AlreadyApplied
            }
            _ => {
                self.highest.insert(cmd.device.clone(), lead);
                self.applied.insert(cmd.action_id.clone());
                self.states.insert(
                    (cmd.device.clone(), cmd.capability.clone()),
                    cmd.state.clone(),
                );
                Reply::Applied
            }
        };
        let seq = self.journal.len() as u64;
        self.journal.push(JournalEntry {
            seq,
            at_ms,
            command: cmd,
            reply: reply.clone(),
        });
        reply
    }

    pub fn journal(&self) -> &[JournalEntry] {
        &self.journal
    }

    pub fn state(&self, device: &str, capability: &str) -> Option<&str> {
        self.states
            .get(&(device.to_string(), capability.to_string()))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(id: &str, term: u64, leader: u64, state: &str) -> DeviceCommand {
        DeviceCommand {
            action_id: id.into(),
            device: "door".into(),
            capability: "lock".into(),
            state: state.into(),
            token: FencingToken {
                term,
                leader,
                index: 7,
            },
            sender: leader,
        }
    }

    #[test]
    fn fences_stale_leaders_and_applies_each_action_once() {
        let mut d = SimDevices::default();
        assert_eq!(d.receive(cmd("a/0", 2, 1, "locked"), 0), Reply::Applied);
        assert_eq!(
            d.receive(cmd("a/0", 3, 2, "locked"), 0),
            Reply::AlreadyApplied,
            "re-send by a new leader"
        );
        assert_eq!(
            d.receive(cmd("b/0", 2, 1, "unlocked"), 0),
            Reply::StaleToken {
                highest_term: 3,
                highest_leader: 2
            }
        );
        assert_eq!(d.state("door", "lock"), Some("locked"));
        assert_eq!(d.receive(cmd("c/0", 3, 2, "unlocked"), 0), Reply::Applied);
        assert_eq!(d.journal().len(), 4);
        let applied = d
            .journal()
            .iter()
            .filter(|j| j.reply == Reply::Applied)
            .count();
        assert_eq!(applied, 2);
    }

    #[test]
    fn a_refence_resets_the_mark_once() {
        let mut d = SimDevices::default();
        // An older cluster reached term 9.
        assert_eq!(d.receive(cmd("old/0", 9, 2, "locked"), 0), Reply::Applied);
        // The re-formed cluster, term 2: refused until re-fenced.
        assert!(matches!(
            d.receive(cmd("new/0", 2, 1, "unlocked"), 0),
            Reply::StaleToken { .. }
        ));
        let mut rf = cmd("rf/0", 2, 1, "reset");
        rf.capability = crate::domain::REFENCE_CAPABILITY.into();
        assert_eq!(d.receive(rf.clone(), 0), Reply::Applied);
        assert_eq!(
            d.state("door", "lock"),
            Some("locked"),
            "a re-fence actuates nothing"
        );
        assert_eq!(d.receive(cmd("new/1", 2, 1, "unlocked"), 0), Reply::Applied);
        assert_eq!(d.receive(cmd("new/2", 3, 1, "locked"), 0), Reply::Applied);
        // The same re-fence again (a zombie's late re-send) does not lower the mark.
        let mut late = rf;
        late.token.term = 1;
        assert_eq!(d.receive(late, 0), Reply::AlreadyApplied);
        assert!(matches!(
            d.receive(cmd("stale/0", 2, 1, "unlocked"), 0),
            Reply::StaleToken { .. }
        ));
    }
}
