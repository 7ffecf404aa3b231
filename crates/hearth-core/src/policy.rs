//! Household policies and the replicated rate-limit windows they read.
//!
//! Every policy but `Block` is *non-absolute*: an emergency intent overrides it for devices
//! that are `emergency_capable`. `Block` is absolute: even an emergency respects it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::intent::{FieldError, check_id};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rule {
    /// Never use this device (for `class`, or for every class).
    ExcludeDevice {
        device: String,
        #[serde(default)]
        class: Option<String>,
    },
    /// Intents of this class wait for a person's approval before anything is dispatched.
    RequireConfirmation { class: String },
    /// Between `start_minute` and `end_minute` (minutes after local midnight; the window may
    /// wrap past midnight) devices with any of `tags` (all devices if empty) are not actuated by
    /// `classes` (all classes if empty).
    QuietHours {
        start_minute: u16,
        end_minute: u16,
        #[serde(default)]
        classes: BTreeSet<String>,
        #[serde(default)]
        tags: BTreeSet<String>,
    },
    /// At most `max` intents per source within `window_secs`.
    RateLimitSource { max: u32, window_secs: u32 },
    /// At most `max` actions per device within `window_secs`.
    RateLimitDevice { max: u32, window_secs: u32 },
    /// Absolute: never actuate this device (for `class`, or for every class), emergencies included.
    Block {
        device: String,
        #[serde(default)]
        class: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub rule: Rule,
}

impl Policy {
    pub fn validate(&self) -> Result<(), FieldError> {
        check_id("id", &self.id)?;
        match &self.rule {
            Rule::ExcludeDevice { device, class } | Rule::Block { device, class } => {
                check_id("device", device)?;
                if let Some(c) = class {
                    check_id("class", c)?;
                }
            }
            Rule::RequireConfirmation { class } => check_id("class", class)?,
            Rule::QuietHours {
                start_minute,
                end_minute,
                ..
            } => {
                if *start_minute >= 1440 || *end_minute >= 1440 {
                    return Err(FieldError::new(
                        "start_minute",
                        "minutes after midnight must be below 1440",
                    ));
                }
            }
            Rule::RateLimitSource { max, window_secs }
            | Rule::RateLimitDevice { max, window_secs } => {
                if *max == 0 || *window_secs == 0 {
                    return Err(FieldError::new(
                        "max",
                        "max and window_secs must both be above zero",
                    ));
                }
            }
        }
        Ok(())
    }

    /// What a new policy must pass before anything is appended: [`Policy::validate`] plus the
    /// ids inside `quiet_hours`. `apply` re-checks committed entries with `validate` only,
    /// which must not change: replaying an older log must give the same state.
    pub fn validate_request(&self) -> Result<(), FieldError> {
        self.validate()?;
        if let Rule::QuietHours { classes, tags, .. } = &self.rule {
            for c in classes {
                check_id("classes", c)?;
            }
            for t in tags {
                check_id("tags", t)?;
            }
        }
        Ok(())
    }

    pub fn is_absolute(&self) -> bool {
        matches!(self.rule, Rule::Block { .. })
    }
}

/// Whether `minute` falls in `[start, end)`, wrapping past midnight.
pub fn in_window(start: u16, end: u16, minute: u16) -> bool {
    if start <= end {
        (start..end).contains(&minute)
    } else {
        minute >= start || minute < end
    }
}

/// Timestamps (ms, from the entry that accepted them) of recent intents per source and
/// actions per device. Part of the replicated state; changed only by applying entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindows {
    pub by_source: BTreeMap<String, Vec<u64>>,
    pub by_device: BTreeMap<String, Vec<u64>>,
    /// Accepted emergencies per source (they pass every other rate limit); kept only for
    /// [`MAX_EMERGENCY_WINDOW_SECS`]. Absent in states written before it existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub emergencies_by_source: BTreeMap<String, Vec<u64>>,
}

/// How many emergencies one source may send within a window. Emergencies bypass the
/// household's source limits, so this bound is separate and high; the leader writes the limit
/// it applies into each intent's entry (replaying an older entry, without one, applies none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyLimit {
    pub max: u32,
    pub window_secs: u32,
}

/// The default: a real emergency sends a few intents, not one every two seconds for a minute.
pub const DEFAULT_EMERGENCY_LIMIT: EmergencyLimit = EmergencyLimit {
    max: 30,
    window_secs: 60,
};

/// The longest emergency window that can be configured (and how long emergencies are kept).
pub const MAX_EMERGENCY_WINDOW_SECS: u32 = 3600;

impl EmergencyLimit {
    /// Checks a configured limit.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.max == 0 || self.window_secs == 0 || self.window_secs > MAX_EMERGENCY_WINDOW_SECS {
            return Err(FieldError::new(
                "emergency limit",
                format!(
                    "max must be above zero and window_secs within 1..={MAX_EMERGENCY_WINDOW_SECS}"
                ),
            ));
        }
        Ok(())
    }

    /// Why an emergency from `source` at `now_ms` is refused, or `None`.
    pub fn refuses(&self, rates: &RateWindows, source: &str, now_ms: u64) -> Option<String> {
        let n = count(
            rates.emergencies_by_source.get(source),
            now_ms,
            self.window_secs,
        );
        (n >= self.max as usize).then(|| {
            format!(
                "emergency rate limit: source {source:?} already sent {n} emergency intents in the \
                 last {} s (max {}); emergencies pass the household's other limits, not this one",
                self.window_secs, self.max
            )
        })
    }
}

impl RateWindows {
    pub fn count_source(&self, source: &str, now_ms: u64, window_secs: u32) -> usize {
        count(self.by_source.get(source), now_ms, window_secs)
    }

    pub fn count_device(&self, device: &str, now_ms: u64, window_secs: u32) -> usize {
        count(self.by_device.get(device), now_ms, window_secs)
    }

    /// Records an accepted intent and its actions; forgets what is older than `keep_secs`.
    pub fn record<'a>(
        &mut self,
        source: &str,
        devices: impl IntoIterator<Item = &'a str>,
        now_ms: u64,
        keep_secs: u32,
    ) {
        self.by_source
            .entry(source.to_string())
            .or_default()
            .push(now_ms);
        for d in devices {
            self.by_device
                .entry(d.to_string())
                .or_default()
                .push(now_ms);
        }
        let horizon = now_ms.saturating_sub(u64::from(keep_secs) * 1000);
        for m in [&mut self.by_source, &mut self.by_device] {
            m.values_mut().for_each(|v| v.retain(|t| *t >= horizon));
            m.retain(|_, v| !v.is_empty());
        }
        self.prune_emergencies(now_ms);
    }

    /// Records an accepted emergency of `source` (besides [`RateWindows::record`]).
    pub fn record_emergency(&mut self, source: &str, now_ms: u64) {
        self.emergencies_by_source
            .entry(source.to_string())
            .or_default()
            .push(now_ms);
        self.prune_emergencies(now_ms);
    }

    /// Forgets emergencies older than the longest window a limit can have.
    fn prune_emergencies(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(u64::from(MAX_EMERGENCY_WINDOW_SECS) * 1000);
        let m = &mut self.emergencies_by_source;
        m.values_mut().for_each(|v| v.retain(|t| *t >= horizon));
        m.retain(|_, v| !v.is_empty());
    }
}

fn count(v: Option<&Vec<u64>>, now_ms: u64, window_secs: u32) -> usize {
    let from = now_ms.saturating_sub(u64::from(window_secs) * 1000);
    v.map_or(0, |v| {
        v.iter().filter(|t| **t >= from && **t <= now_ms).count()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_wrap_midnight() {
        assert!(in_window(1320, 420, 1400) && in_window(1320, 420, 0) && in_window(1320, 420, 419));
        assert!(!in_window(1320, 420, 420) && !in_window(1320, 420, 720));
        assert!(in_window(600, 720, 600) && !in_window(600, 720, 720));
        for m in 0..1440 {
            assert!(!in_window(300, 300, m), "an empty window is never active");
        }
    }

    #[test]
    fn rate_windows_count_and_forget() {
        let mut r = RateWindows::default();
        for t in [1_000, 2_000, 3_000] {
            r.record("agent", ["siren"], t, 60);
        }
        assert_eq!(r.count_source("agent", 3_000, 60), 3);
        assert_eq!(r.count_source("agent", 3_000, 1), 2);
        assert_eq!(r.count_device("siren", 3_000, 60), 3);
        r.record("other", [], 200_000, 60);
        assert_eq!(
            r.count_source("agent", 200_000, 3600),
            0,
            "old entries are forgotten"
        );
        assert!(!r.by_device.contains_key("siren"));
    }

    #[test]
    fn validation_names_fields() {
        let bad = Policy {
            id: "q".into(),
            rule: Rule::QuietHours {
                start_minute: 1500,
                end_minute: 0,
                classes: BTreeSet::new(),
                tags: BTreeSet::new(),
            },
        };
        assert_eq!(bad.validate().unwrap_err().field, "start_minute");
        let bad = Policy {
            id: "r".into(),
            rule: Rule::RateLimitSource {
                max: 0,
                window_secs: 10,
            },
        };
        assert_eq!(bad.validate().unwrap_err().field, "max");
        let bad = Policy {
            id: "../x".into(),
            rule: Rule::RequireConfirmation {
                class: "notify".into(),
            },
        };
        assert_eq!(bad.validate().unwrap_err().field, "id");
    }
}
