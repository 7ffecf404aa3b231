//! The device protocol every adapter speaks (sim, MQTT, HTTP): the command a hub sends
//! ([`DeviceCommand`], fenced by its leadership token), the replies, which MQTT ack answers
//! which command ([`judge_ack`]), and the reference logic of a careful device — what the
//! simulator runs, and what a real device or the adapter in front of it should do. Pure; the
//! adapters and `hearth device-sim` wrap it in I/O.
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

/// What a device publishes on `<topic>/ack` (docs/INTENTS.md): the action id and fencing
/// token of the command it answers, and its reply, flat:
/// `{"action_id": "i-…/0", "token": {"term": 3, "leader": 1, "index": 42}, "reply": "applied"}`
/// (`"reason"` with `refused`; `"highest_term"`, `"highest_leader"` with `stale_token`).
/// Other fields are ignored (a device may add its own, e.g. a timestamp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub action_id: String,
    pub token: FencingToken,
    #[serde(flatten)]
    pub reply: Reply,
    /// For a device that shares a key with the hubs: lower-case hex of
    /// HMAC-SHA256(key, [`ack_mac_message`]). Required for such a device, ignored otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Ack {
    /// The ack answering `cmd` with `reply`, with its MAC if the device has a key.
    pub fn answer(cmd: &DeviceCommand, reply: Reply, key: Option<&[u8]>) -> Ack {
        let mac = key.map(|k| ack_mac(k, &cmd.action_id, &cmd.token, &reply));
        Ack {
            action_id: cmd.action_id.clone(),
            token: cmd.token,
            reply,
            mac,
        }
    }
}

/// What the ack MAC covers, one field a line: `hearth-ack-v1`, the action id, term, leader,
/// index, the reply, then `reason` (refused) or `highest_term` and `highest_leader`
/// (stale_token). docs/INTENTS.md shows an example.
pub fn ack_mac_message(action_id: &str, token: &FencingToken, reply: &Reply) -> Vec<u8> {
    let tail = match reply {
        Reply::Applied => "applied".to_string(),
        Reply::AlreadyApplied => "already_applied".to_string(),
        Reply::StaleToken {
            highest_term,
            highest_leader,
        } => format!("stale_token\n{highest_term}\n{highest_leader}"),
        Reply::Refused { reason } => format!("refused\n{reason}"),
    };
    format!(
        "hearth-ack-v1\n{action_id}\n{}\n{}\n{}\n{tail}",
        token.term, token.leader, token.index
    )
    .into_bytes()
}

fn mac_of(key: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// Lower-case hex HMAC-SHA256 of [`ack_mac_message`] under `key`.
pub fn ack_mac(key: &[u8], action_id: &str, token: &FencingToken, reply: &Reply) -> String {
    use hmac::Mac;
    let mut m = mac_of(key);
    m.update(&ack_mac_message(action_id, token, reply));
    hex::encode(m.finalize().into_bytes())
}

fn mac_ok(key: &[u8], ack: &Ack) -> bool {
    use hmac::Mac;
    let Some(given) = ack.mac.as_deref().and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let mut m = mac_of(key);
    m.update(&ack_mac_message(&ack.action_id, &ack.token, &ack.reply));
    m.verify_slice(&given).is_ok()
}

/// Largest ack read (bytes).
pub const MAX_ACK_BYTES: usize = 4096;

/// What an adapter waiting for the answer to `cmd` makes of a message on the ack topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckVerdict {
    /// The answer to this command: record it.
    Ours(Reply),
    /// Not an answer to this command; ignore it (and count it), keep waiting.
    Ignored(IgnoredAck),
}

/// Why a message on the ack topic was not taken as the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoredAck {
    /// A retained message: the broker's memory, not an answer to a command sent just now.
    Retained,
    TooLarge(usize),
    Unreadable(String),
    /// For another action (a late answer to an earlier command, or a forgery).
    OtherAction(String),
    /// This action id with another fencing token: not the command this hub sent.
    WrongToken(FencingToken),
    /// The device shares a key with the hubs and the MAC is missing or wrong.
    BadMac,
}

impl std::fmt::Display for IgnoredAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IgnoredAck::Retained => write!(f, "a retained message"),
            IgnoredAck::TooLarge(n) => write!(f, "{n} bytes (at most {MAX_ACK_BYTES})"),
            IgnoredAck::Unreadable(e) => write!(f, "unreadable: {e}"),
            IgnoredAck::OtherAction(id) => write!(f, "for another action ({id:?})"),
            IgnoredAck::WrongToken(t) => write!(
                f,
                "this action id with another fencing token ({}, {}, {})",
                t.term, t.leader, t.index
            ),
            IgnoredAck::BadMac => write!(f, "its MAC is missing or wrong for this device's key"),
        }
    }
}

/// Binds an ack to its command: only an ack naming the command's action id *and* its fencing
/// token (and, for a device with a `key`, a valid MAC over them and the reply) is its answer.
/// (Who may publish on the ack topic at all is the broker's ACL.)
pub fn judge_ack(
    cmd: &DeviceCommand,
    payload: &[u8],
    retained: bool,
    key: Option<&[u8]>,
) -> AckVerdict {
    let ignored = AckVerdict::Ignored;
    if retained {
        return ignored(IgnoredAck::Retained);
    }
    if payload.len() > MAX_ACK_BYTES {
        return ignored(IgnoredAck::TooLarge(payload.len()));
    }
    let ack: Ack = match serde_json::from_slice(payload) {
        Ok(a) => a,
        Err(e) => return ignored(IgnoredAck::Unreadable(e.to_string())),
    };
    if ack.action_id != cmd.action_id {
        return ignored(IgnoredAck::OtherAction(ack.action_id));
    }
    if ack.token != cmd.token {
        return ignored(IgnoredAck::WrongToken(ack.token));
    }
    if let Some(k) = key
        && !mac_ok(k, &ack)
    {
        return ignored(IgnoredAck::BadMac);
    }
    AckVerdict::Ours(ack.reply)
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

    #[test]
    fn a_keyed_device_is_believed_only_with_a_valid_mac() {
        let c = cmd("i-1/0", 3, 1, "locked");
        let key = b"porch-lock shared secret";
        let judge =
            |a: &Ack, k: Option<&[u8]>| judge_ack(&c, &serde_json::to_vec(a).unwrap(), false, k);
        for reply in [
            Reply::Applied,
            Reply::AlreadyApplied,
            Reply::StaleToken {
                highest_term: 9,
                highest_leader: 2,
            },
            Reply::Refused {
                reason: "jammed".into(),
            },
        ] {
            let good = Ack::answer(&c, reply.clone(), Some(key));
            assert_eq!(judge(&good, Some(key)), AckVerdict::Ours(reply.clone()));
            let bad = AckVerdict::Ignored(IgnoredAck::BadMac);
            // No MAC, another key, a MAC over another reply, garbage.
            assert_eq!(judge(&Ack::answer(&c, reply.clone(), None), Some(key)), bad);
            assert_eq!(
                judge(&Ack::answer(&c, reply.clone(), Some(b"other")), Some(key)),
                bad
            );
            let mut swapped = Ack::answer(&c, Reply::Applied, Some(key));
            if reply != Reply::Applied {
                swapped.reply = reply.clone();
                assert_eq!(judge(&swapped, Some(key)), bad);
            }
            swapped.mac = Some("zz".into());
            assert_eq!(judge(&swapped, Some(key)), bad);
        }
        // The MAC covers the token and the action id too.
        let mut other = cmd("i-1/0", 3, 1, "locked");
        other.token.index = 8;
        let moved = Ack::answer(&other, Reply::Applied, Some(key));
        let mut moved = moved;
        moved.token = c.token;
        assert_eq!(
            judge(&moved, Some(key)),
            AckVerdict::Ignored(IgnoredAck::BadMac)
        );
        // The documented example (docs/INTENTS.md).
        let t = FencingToken {
            term: 3,
            leader: 1,
            index: 42,
        };
        assert_eq!(
            String::from_utf8(ack_mac_message("i-5f0c2a9e1b7d3c48/0", &t, &Reply::Applied))
                .unwrap(),
            "hearth-ack-v1\ni-5f0c2a9e1b7d3c48/0\n3\n1\n42\napplied"
        );
        // …and its MAC under the documented example key (computed with Python's hmac).
        assert_eq!(
            ack_mac(
                b"example-key-0123456789",
                "i-5f0c2a9e1b7d3c48/0",
                &t,
                &Reply::Applied
            ),
            "9580adfa6dc27f7c1c50ab2decf622ad5114b80fdc5b01ad4ffd3df24a4361de"
        );
    }

    #[test]
    fn an_ack_is_the_answer_only_with_its_action_id_and_token() {
        let c = cmd("i-1/0", 3, 1, "locked");
        let tok = r#""token":{"term":3,"leader":1,"index":7}"#;
        // Exactly as docs/INTENTS.md documents it.
        let doc = format!(r#"{{"action_id":"i-1/0",{tok},"reply":"applied"}}"#);
        assert_eq!(
            judge_ack(&c, doc.as_bytes(), false, None),
            AckVerdict::Ours(Reply::Applied)
        );
        let refused =
            format!(r#"{{"action_id":"i-1/0",{tok},"reply":"refused","reason":"jammed","at":1}}"#);
        assert_eq!(
            judge_ack(&c, refused.as_bytes(), false, None),
            AckVerdict::Ours(Reply::Refused {
                reason: "jammed".into()
            })
        );
        let stale = format!(
            r#"{{"action_id":"i-1/0",{tok},"reply":"stale_token","highest_term":4,"highest_leader":2}}"#
        );
        assert_eq!(
            judge_ack(&c, stale.as_bytes(), false, None),
            AckVerdict::Ours(Reply::StaleToken {
                highest_term: 4,
                highest_leader: 2
            })
        );
        // What an adapter sends is what it reads.
        let ours = serde_json::to_vec(&Ack::answer(&c, Reply::AlreadyApplied, None)).unwrap();
        assert_eq!(
            judge_ack(&c, &ours, false, None),
            AckVerdict::Ours(Reply::AlreadyApplied)
        );
        let ignored = |p: &str, retained| match judge_ack(&c, p.as_bytes(), retained, None) {
            AckVerdict::Ignored(why) => why,
            other => panic!("{p} taken as {other:?}"),
        };
        assert_eq!(ignored(&doc, true), IgnoredAck::Retained);
        // The forged ack of the issue: right action id, no token.
        assert!(matches!(
            ignored(r#"{"action_id":"i-1/0","reply":"applied"}"#, false),
            IgnoredAck::Unreadable(_)
        ));
        // The shape the adapter used to read (reply nested): not the documented format.
        assert!(matches!(
            ignored(
                &format!(r#"{{"action_id":"i-1/0",{tok},"reply":{{"reply":"applied"}}}}"#),
                false
            ),
            IgnoredAck::Unreadable(_)
        ));
        assert_eq!(
            ignored(
                &format!(r#"{{"action_id":"i-2/0",{tok},"reply":"applied"}}"#),
                false
            ),
            IgnoredAck::OtherAction("i-2/0".into())
        );
        for t in [
            r#"{"term":3,"leader":1,"index":8}"#,
            r#"{"term":4,"leader":1,"index":7}"#,
            r#"{"term":3,"leader":2,"index":7}"#,
        ] {
            let p = format!(r#"{{"action_id":"i-1/0","token":{t},"reply":"applied"}}"#);
            assert!(
                matches!(ignored(&p, false), IgnoredAck::WrongToken(_)),
                "{t}"
            );
        }
        for junk in ["", "null", "{}", "[1]", r#"{"action_id":"i-1/0"}"#] {
            assert!(
                matches!(ignored(junk, false), IgnoredAck::Unreadable(_)),
                "{junk}"
            );
        }
        let big = format!(
            r#"{{"action_id":"i-1/0",{tok},"reply":"refused","reason":"{}"}}"#,
            "x".repeat(5000)
        );
        assert!(matches!(ignored(&big, false), IgnoredAck::TooLarge(_)));
        assert!(matches!(
            ignored(
                &format!(r#"{{"action_id":"i-1/0",{tok},"reply":"done"}}"#),
                false
            ),
            IgnoredAck::Unreadable(_)
        ));
    }

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
