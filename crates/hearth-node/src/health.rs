//! A node's liveness as it reports it to peers and people: its wall clock (and what it
//! concludes about it from its peers' clocks), whether its Raft core still runs, and the free
//! space on its data directory's file system.
//!
//! - The wall clock has a seam ([`WallClock::set_skew_ms`]) so tests can give one node a wrong
//!   clock without touching the machine's.
//! - The clock watch asks every peer's status (which carries the peer's clock) every few
//!   seconds, measures the offsets and asks `hearth_core::clock::judge`. A hub whose clock is
//!   `OFF` stops campaigning, hands leadership over if it leads, refuses to stamp new entries
//!   and says so (log, status, metric); when its clock is right again it campaigns again.
//! - A core that stopped (a fatal storage error such as ENOSPC, an openraft panic) is reported
//!   here and makes `hearth serve` exit non-zero so systemd restarts it.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use hearth_core::clock::{Sample, Verdict};

/// Free space below which a node warns (log, status, metric) before anything fails.
pub const DISK_WARN_BYTES: u64 = 256 * 1024 * 1024;

/// The node's wall clock: the system clock plus a skew (0 outside tests).
#[derive(Debug, Clone, Default)]
pub struct WallClock {
    skew_ms: Arc<AtomicI64>,
}

impl WallClock {
    /// Unix ms as this node believes it.
    pub fn now_ms(&self) -> u64 {
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        sys.saturating_add(self.skew_ms.load(Ordering::Relaxed))
            .max(0) as u64
    }

    /// Test seam: this node's clock reads the system's plus `ms` (negative: behind).
    pub fn set_skew_ms(&self, ms: i64) {
        self.skew_ms.store(ms, Ordering::Relaxed);
    }
}

/// Liveness as reported in a node's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthView {
    /// The node's wall clock when it answered (Unix ms).
    pub now_ms: u64,
    /// `OK`, `UNSURE`, `OFF` (empty: not judged yet, or a witness).
    pub clock: String,
    pub clock_detail: String,
    /// Why the Raft core stopped; empty while it runs.
    pub core_stopped: String,
    pub disk_free_bytes: Option<u64>,
    pub disk_warning: String,
    /// What the node has to say about its own data that the chain does not carry yet.
    pub notices: Vec<crate::datadir::Notice>,
}

impl HealthView {
    pub fn clock_off(&self) -> bool {
        self.clock == "OFF"
    }
}

/// The latest judgement of this node's clock.
#[derive(Debug, Default)]
pub struct ClockWatch {
    state: Mutex<Option<(Verdict, Vec<Sample>)>>,
}

impl ClockWatch {
    pub fn verdict(&self) -> Option<Verdict> {
        self.lock().as_ref().map(|(v, _)| v.clone())
    }

    pub fn is_off(&self) -> bool {
        self.verdict().is_some_and(|v| v.is_off())
    }

    /// Stores a new judgement; returns the previous verdict.
    pub fn set(&self, v: Verdict, samples: Vec<Sample>) -> Option<Verdict> {
        self.lock().replace((v, samples)).map(|(v, _)| v)
    }

    /// The largest measured offset to a peer (ms, absolute), for the metric.
    pub fn max_offset_ms(&self) -> u64 {
        self.lock().as_ref().map_or(0, |(_, s)| {
            s.iter()
                .map(|s| s.offset_ms().unsigned_abs())
                .max()
                .unwrap_or(0)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Verdict, Vec<Sample>)>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The warning threshold: [`DISK_WARN_BYTES`], or the environment variable
/// `HEARTH_DISK_WARN_BYTES` (read once; tests raise it to see the warning on any disk).
pub fn disk_warn_bytes() -> u64 {
    static T: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        std::env::var("HEARTH_DISK_WARN_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DISK_WARN_BYTES)
    })
}

/// Free bytes on the file system holding `dir`, and a warning when below [`disk_warn_bytes`].
pub fn disk(dir: &Path) -> (Option<u64>, String) {
    let warn = disk_warn_bytes();
    match fs2::available_space(dir) {
        Ok(free) if free < warn => (
            Some(free),
            format!(
                "only {} MiB free on the file system of {} (warning below {} MiB): the node stops \
                 when its log cannot be written; free space now",
                free / (1024 * 1024),
                dir.display(),
                warn / (1024 * 1024)
            ),
        ),
        Ok(free) => (Some(free), String::new()),
        Err(e) => (
            None,
            format!("cannot read the free space of {}: {e}", dir.display()),
        ),
    }
}
