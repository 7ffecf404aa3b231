//! What peers told this node when they refused it (e.g. "node 2 refuses node 1: removed by a
//! forced promotion"), kept so the refused node can say why in its status and errors instead
//! of only "no quorum". Process-wide, keyed by the refused node's id (tests run several nodes
//! in one process).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Notices older than this are no longer reported.
const FRESH: Duration = Duration::from_secs(60);

/// (when it was last logged, when it was last seen, message)
type Book = BTreeMap<(u64, u64), (Instant, Instant, String)>;

fn book() -> &'static Mutex<Book> {
    static BOOK: OnceLock<Mutex<Book>> = OnceLock::new();
    BOOK.get_or_init(Mutex::default)
}

/// Records that node `by` refused node `node` with `message`. Returns true when this is news
/// (first time, another message, or the last one is old): the caller logs it then, so a refusal
/// repeated on every heartbeat is logged once a minute.
pub fn record(node: u64, by: u64, message: &str) -> bool {
    let mut g = book().lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    match g.get_mut(&(node, by)) {
        Some((logged, seen, m)) if m == message && now.duration_since(*logged) <= FRESH => {
            *seen = now;
            false
        }
        _ => {
            g.insert((node, by), (now, now, message.to_string()));
            true
        }
    }
}

/// Recent refusals of node `node`: (refusing node, message).
pub fn recent(node: u64) -> Vec<(u64, String)> {
    let g = book().lock().unwrap_or_else(|p| p.into_inner());
    g.iter()
        .filter(|((n, _), (_, seen, _))| *n == node && seen.elapsed() <= FRESH)
        .map(|((_, by), (_, _, m))| (*by, m.clone()))
        .collect()
}

/// Refusals of node `node` seen at or after `t` (e.g. since this incarnation started), however
/// old: (refusing node, message). Evidence that the refusing node runs.
pub fn since(node: u64, t: Instant) -> Vec<(u64, String)> {
    let g = book().lock().unwrap_or_else(|p| p.into_inner());
    g.iter()
        .filter(|((n, _), (_, seen, _))| *n == node && *seen >= t)
        .map(|((_, by), (_, _, m))| (*by, m.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_refusal_is_news_once_and_is_reported_for_its_node_only() {
        assert!(record(901, 902, "go away"));
        assert!(!record(901, 902, "go away"));
        assert!(record(901, 902, "go away, differently"));
        assert_eq!(recent(901), vec![(902, "go away, differently".to_string())]);
        assert!(recent(902).is_empty());
    }
}
