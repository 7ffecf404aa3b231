//! Time as the cluster uses it: the time a leader stamps into an entry, whether an action's
//! dispatch deadline has passed, and whether a hub's wall clock can be trusted. Pure functions
//! over numbers; the node reads its clocks and its peers' answers and asks these.
//!
//! The rules:
//! - **Chain time never runs backwards.** A leader stamps `max(its wall clock, the last time
//!   the chain recorded)` ([`stamp`]); `apply` plans with the same maximum ([`effective`]), so
//!   rate windows and quiet hours see the time the chain says, even for entries stamped by a
//!   leader whose clock was behind.
//! - **An action that was not dispatched by its deadline never runs.** The deadline is fixed in
//!   the entry that made the action dispatchable (submit, or approval); a leader that finds it
//!   later records it `EXPIRED` instead of sending it ([`expired`]).
//! - **A hub whose clock is far off neither leads nor stamps** ([`judge`]): it measures its
//!   offset to each peer (the status probe answers with the peer's clock) and its clock is
//!   `Off` when it disagrees with a majority of the peers that agree with each other, or lags
//!   the chain's own time by more than the tolerance (a Pi that booted in 1970).

use serde::{Deserialize, Serialize};

/// How far a hub's clock may differ from its peers' (or lag the chain) before it is `Off`.
pub const DEFAULT_TOLERANCE_MS: u64 = 60_000;

/// The time a leader stamps into a new entry: its wall clock, but never before the last time
/// the chain recorded.
pub fn stamp(wall_ms: u64, chain_ms: u64) -> u64 {
    wall_ms.max(chain_ms)
}

/// The time `apply` plans an entry with: the entry's stamp, but never before the chain's time
/// (an entry stamped by a leader whose clock was behind counts as "now" in the chain).
pub fn effective(entry_ms: u64, chain_ms: u64) -> u64 {
    entry_ms.max(chain_ms)
}

/// Minutes after midnight (UTC until Hearth has a time-zone setting) of a time in ms.
pub fn minute_of_day(ms: u64) -> u16 {
    ((ms / 60_000) % 1440) as u16
}

/// Whether an action made dispatchable at `since_ms` (chain time) with a deadline of
/// `deadline_ms` must no longer be sent, judged by a leader whose time is `now_ms` (its wall
/// clock, never less than the chain's time). No deadline (entries older than deadlines): never.
///
/// The comparison is `now > since + deadline`: at exactly the deadline it may still be sent.
pub fn expired(since_ms: u64, deadline_ms: Option<u64>, now_ms: u64) -> bool {
    match deadline_ms {
        None => false,
        Some(d) => now_ms > since_ms.saturating_add(d),
    }
}

/// The deadline a leader writes into a new intent: the class's own, else `default_ms`, never
/// longer than `client_wait_ms` (what the client was told: after that it hears "failed").
pub fn deadline(class_ms: Option<u64>, default_ms: u64, client_wait_ms: u64) -> u64 {
    class_ms.unwrap_or(default_ms).min(client_wait_ms)
}

/// One peer's clock as measured through a status probe: it answered `peer_ms` while this hub's
/// clock read `sent_ms` when asking and `recv_ms` when the answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub peer: u64,
    pub sent_ms: u64,
    pub recv_ms: u64,
    pub peer_ms: u64,
}

impl Sample {
    /// The peer's clock minus this hub's (ms), assuming the answer was made half way.
    pub fn offset_ms(&self) -> i64 {
        let mid = (self.sent_ms as i128 + self.recv_ms as i128) / 2;
        (self.peer_ms as i128 - mid).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// The uncertainty of [`Sample::offset_ms`]: half the round trip.
    pub fn error_ms(&self) -> u64 {
        self.recv_ms.saturating_sub(self.sent_ms) / 2
    }
}

/// What a hub concludes about its own wall clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "clock", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Within the tolerance of the peers that agree (or no evidence against it).
    Ok,
    /// Peers disagree with each other too, or only one peer answered and it differs: which
    /// clock is wrong cannot be told. The hub still works; this is reported.
    Unsure { reason: String },
    /// This hub's clock is wrong: it must neither lead nor stamp.
    Off { reason: String },
}

impl Verdict {
    pub fn is_off(&self) -> bool {
        matches!(self, Verdict::Off { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Unsure { .. } => "UNSURE",
            Verdict::Off { .. } => "OFF",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Verdict::Ok => "",
            Verdict::Unsure { reason } | Verdict::Off { reason } => reason,
        }
    }
}

/// Judges this hub's clock from its peers' samples and the chain's time.
///
/// - Behind the chain by more than `tolerance_ms` (`now_ms + tolerance < chain_ms`) with no
///   peer agreeing with this clock: `Off` (a Pi booted without an RTC). With a peer agreeing,
///   the chain ran ahead (a fast leader stamped it before it was caught): `Unsure`.
/// - Otherwise, a peer whose offset (beyond the sample's own uncertainty) is within the
///   tolerance agrees with this hub. When at least two peers disagree, they outnumber the
///   peers that agree, and they agree with each other: `Off`. Any other difference (one peer
///   only, or peers that disagree among themselves): `Unsure`, reported but not acted on.
pub fn judge(now_ms: u64, chain_ms: u64, samples: &[Sample], tolerance_ms: u64) -> Verdict {
    let tol = tolerance_ms as i128;
    let differs = |s: &Sample| (s.offset_ms() as i128).abs() > tol + s.error_ms() as i128;
    let behind_chain = now_ms.saturating_add(tolerance_ms) < chain_ms;
    if behind_chain && samples.iter().any(|s| !differs(s)) {
        // A peer's clock agrees with this one: the chain's time ran ahead (a leader with a
        // fast clock stamped it before it was caught). Not this hub's fault; say so.
        return Verdict::Unsure {
            reason: format!(
                "the chain's time ({chain_ms} ms) is {} ms ahead of this hub's clock, which a \
                 peer's clock agrees with: a leader with a fast clock stamped it; new entries \
                 carry the chain's time until real time catches up",
                chain_ms - now_ms
            ),
        };
    }
    if behind_chain {
        return Verdict::Off {
            reason: format!(
                "this hub's clock reads {now_ms} ms, {} ms behind the last time the chain recorded \
                 ({chain_ms} ms): it is wrong (no RTC? no time sync?)",
                chain_ms - now_ms
            ),
        };
    }
    let off: Vec<&Sample> = samples.iter().filter(|s| differs(s)).collect();
    if off.is_empty() {
        return Verdict::Ok;
    }
    let agree = samples.len() - off.len();
    let describe = || {
        off.iter()
            .map(|s| format!("node {} {:+} ms", s.peer, s.offset_ms()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The disagreeing peers agree with each other when their offsets are close.
    let (lo, hi) = off.iter().fold((i128::MAX, i128::MIN), |(lo, hi), s| {
        let o = s.offset_ms() as i128;
        (lo.min(o), hi.max(o))
    });
    let consistent = hi - lo <= 2 * tol;
    if off.len() >= 2 && off.len() > agree && consistent {
        return Verdict::Off {
            reason: format!(
                "this hub's clock differs from its peers' by more than {tolerance_ms} ms \
                 ({}), and they agree with each other: it is wrong",
                describe()
            ),
        };
    }
    Verdict::Unsure {
        reason: format!(
            "clocks differ by more than {tolerance_ms} ms ({}); which one is wrong cannot be told \
             from {} peer(s)",
            describe(),
            samples.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEAR: u64 = 365 * 24 * 3600 * 1000;
    const NOW: u64 = 1_780_000_000_000; // 2026

    fn s(peer: u64, offset: i64) -> Sample {
        Sample {
            peer,
            sent_ms: NOW,
            recv_ms: NOW + 10,
            peer_ms: (NOW as i64 + 5 + offset) as u64,
        }
    }

    #[test]
    fn chain_time_never_runs_backwards() {
        let mut chain = 0;
        // Leaders with real, +1 y and -1 y clocks take turns.
        for wall in [
            NOW,
            NOW + YEAR,
            NOW - YEAR,
            NOW + 1000,
            NOW - 6 * 3600 * 1000,
        ] {
            let t = stamp(wall, chain);
            assert!(t >= chain);
            chain = effective(t, chain);
        }
        assert_eq!(chain, NOW + YEAR);
        assert_eq!(effective(5, 10), 10);
        assert_eq!(effective(15, 10), 15);
    }

    #[test]
    fn expiry_is_strictly_after_the_deadline() {
        assert!(!expired(1000, Some(500), 1500));
        assert!(expired(1000, Some(500), 1501));
        assert!(
            !expired(1000, None, u64::MAX),
            "old entries carry no deadline"
        );
        assert!(!expired(u64::MAX, Some(u64::MAX), u64::MAX), "no overflow");
        assert!(!expired(1000, Some(0), 1000));
        assert!(expired(1000, Some(0), 1001));
        // A leader whose clock is behind the stamp never sees it expired early.
        assert!(!expired(1000, Some(500), 10));
    }

    #[test]
    fn deadlines_never_exceed_what_the_client_waits() {
        assert_eq!(deadline(None, 5000, 5000), 5000);
        assert_eq!(deadline(Some(600_000), 5000, 5000), 5000);
        assert_eq!(deadline(Some(1000), 5000, 5000), 1000);
        assert_eq!(deadline(None, 30_000, 1500), 1500);
    }

    #[test]
    fn offsets_and_uncertainty() {
        let x = s(2, 3000);
        assert_eq!(x.offset_ms(), 3000);
        assert_eq!(x.error_ms(), 5);
        let back = Sample {
            peer: 2,
            sent_ms: 100,
            recv_ms: 50, // a clock stepped back mid-probe
            peer_ms: 0,
        };
        assert_eq!(back.error_ms(), 0);
        assert_eq!(back.offset_ms(), -75);
    }

    #[test]
    fn judging_a_clock() {
        let tol = DEFAULT_TOLERANCE_MS;
        assert_eq!(judge(NOW, 0, &[], tol), Verdict::Ok);
        assert_eq!(judge(NOW, 0, &[s(2, 100), s(3, -200)], tol), Verdict::Ok);
        // A Pi booted in 1970, the chain says 2026.
        assert!(judge(0, NOW, &[], tol).is_off());
        assert!(judge(NOW - 2 * tol, NOW, &[s(2, 2 * tol as i64)], tol).is_off());
        assert!(
            !judge(NOW - tol, NOW, &[], tol).is_off(),
            "within tolerance"
        );
        // The chain ran ahead (a fast leader stamped it) but a peer agrees with this clock:
        // not this hub's fault, so not OFF (else every right hub would stop).
        assert!(matches!(
            judge(NOW, NOW + YEAR, &[s(2, 20)], tol),
            Verdict::Unsure { .. }
        ));
        assert!(judge(NOW, NOW + YEAR, &[s(2, YEAR as i64)], tol).is_off());
        // Both peers say this hub is 6 h behind (they agree): off.
        let six_h = 6 * 3600 * 1000;
        assert!(judge(NOW, 0, &[s(2, six_h), s(3, six_h + 50)], tol).is_off());
        // This hub 1 year ahead.
        assert!(judge(NOW, 0, &[s(2, -(YEAR as i64)), s(3, -(YEAR as i64))], tol).is_off());
        // One peer only: either may be wrong.
        assert!(matches!(
            judge(NOW, 0, &[s(2, six_h)], tol),
            Verdict::Unsure { .. }
        ));
        // One peer agrees, one differs: the differing peer is the odd one.
        assert!(matches!(
            judge(NOW, 0, &[s(2, 10), s(3, six_h)], tol),
            Verdict::Unsure { .. }
        ));
        // The two peers disagree with each other as well.
        assert!(matches!(
            judge(NOW, 0, &[s(2, six_h), s(3, -six_h)], tol),
            Verdict::Unsure { .. }
        ));
        // A slow probe's uncertainty is not held against the clock.
        let slow = Sample {
            peer: 2,
            sent_ms: NOW,
            recv_ms: NOW + 2 * tol + 2000,
            peer_ms: NOW,
        };
        let slow3 = Sample { peer: 3, ..slow };
        assert_eq!(judge(NOW, 0, &[slow, slow3], tol), Verdict::Ok);
    }
}
