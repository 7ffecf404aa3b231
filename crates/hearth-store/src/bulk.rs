//! Lengthening a stopped node's chain without Raft, for benchmarks and tests that need a long
//! chain quickly (`hearth-bench compare` times `audit verify` and a restart over a 1 M-entry
//! chain).
//!
//! [`extend_with_test_records`] appends `TestRecord` entries to the node's log, in chunks that
//! are each fsynced, and applies them to its state machine through the same store code a
//! running node uses (the chain hashes come out as if each had been committed one by one). The
//! entries carry the term and leader of the log's last entry, as if that leader had gone on
//! writing. Nothing here may run while the node does.

use std::path::{Path, PathBuf};

use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::TypeConfigExt;

use crate::types::{Entry, log_id};
use crate::{Command, LogStore, StateMachine, StoreError, TypeConfig};

/// Entries appended (and fsynced) at once.
const CHUNK: u64 = 20_000;

/// Why a chain could not be extended; nothing past the last fsynced chunk was kept.
#[derive(Debug, thiserror::Error)]
pub enum ExtendError {
    #[error(transparent)]
    Open(#[from] StoreError),
    #[error("the log in {0} is empty: start the node once so that it forms its cluster")]
    EmptyLog(PathBuf),
    #[error(
        "the state machine in {dir} has applied up to {applied:?}, the log ends at {last}: \
         stop the node cleanly (it applies its whole log) before extending its chain"
    )]
    NotApplied {
        dir: PathBuf,
        applied: Option<u64>,
        last: u64,
    },
    #[error("extending the chain in {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What [`extend_with_test_records`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extended {
    /// Entries appended (0 when the log already reached the asked-for index).
    pub appended: u64,
    /// The index of the log's last entry now.
    pub last_index: u64,
}

/// Appends `TestRecord` entries to the stopped node whose data directory is `data_dir` (its
/// `raft/` log and `state/` state machine) until its log ends at `last_index`, and applies
/// them; `text(i)` is the record text of entry `i`. The state machine must have applied the
/// whole log first (a node stopped cleanly has). A log that already reaches `last_index` is
/// left as it is.
pub async fn extend_with_test_records(
    data_dir: &Path,
    last_index: u64,
    mut text: impl FnMut(u64) -> String,
) -> Result<Extended, ExtendError> {
    let io = |source: std::io::Error| ExtendError::Io {
        dir: data_dir.to_path_buf(),
        source,
    };
    let mut log = LogStore::open(&data_dir.join("raft"))?;
    let mut sm = StateMachine::open(&data_dir.join("state"))?;
    let last = log
        .last_log_id()
        .map_err(io)?
        .ok_or_else(|| ExtendError::EmptyLog(data_dir.to_path_buf()))?;
    let applied = sm.applied().map_err(io)?;
    if applied != Some(last) {
        return Err(ExtendError::NotApplied {
            dir: data_dir.to_path_buf(),
            applied: applied.map(|a| a.index),
            last: last.index,
        });
    }
    let (term, leader) = (last.leader_id.term, last.leader_id.node_id);
    let mut next = last.index + 1;
    while next <= last_index {
        let end = (next + CHUNK - 1).min(last_index);
        let batch: Vec<Entry> = (next..=end)
            .map(|i| Entry {
                log_id: log_id(term, leader, i),
                payload: openraft::EntryPayload::Normal(Command(
                    hearth_core::domain::Command::TestRecord { text: text(i) }.encode(),
                )),
            })
            .collect();
        let (tx, rx) = TypeConfig::oneshot();
        log.append(batch.clone(), IOFlushed::signal(tx))
            .await
            .map_err(io)?;
        rx.await
            .map_err(|_| io(std::io::Error::other("the log dropped its flush callback")))?
            .map_err(io)?;
        sm.apply(futures::stream::iter(
            batch.into_iter().map(|e| Ok((e, None))),
        ))
        .await
        .map_err(io)?;
        next = end + 1;
    }
    sm.flush().await.map_err(io)?;
    Ok(Extended {
        appended: next - (last.index + 1),
        last_index: next - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogReader;

    /// A data directory whose log holds entry 0 (term 1, leader 1), applied or not.
    async fn seeded(dir: &Path, apply: bool) {
        let mut log = LogStore::open(&dir.join("raft")).unwrap();
        log.save_vote(&openraft::impls::Vote::new(1, 1))
            .await
            .unwrap();
        let e = Entry {
            log_id: log_id(1, 1, 0),
            payload: openraft::EntryPayload::Normal(Command(
                hearth_core::domain::Command::TestRecord {
                    text: "first".into(),
                }
                .encode(),
            )),
        };
        let (tx, rx) = TypeConfig::oneshot();
        log.append([e.clone()], IOFlushed::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        let mut sm = StateMachine::open(&dir.join("state")).unwrap();
        if apply {
            sm.apply(futures::stream::iter([Ok((e, None))]))
                .await
                .unwrap();
            sm.flush().await.unwrap();
        }
    }

    #[tokio::test]
    async fn extends_the_chain_so_that_it_verifies_and_names_each_record() {
        let d = tempfile::tempdir().unwrap();
        seeded(d.path(), true).await;
        let r = extend_with_test_records(d.path(), 45_000, |i| format!("r{i}"))
            .await
            .unwrap();
        assert_eq!(
            r,
            Extended {
                appended: 45_000,
                last_index: 45_000
            }
        );
        let mut log = LogStore::open_read_only(&d.path().join("raft")).unwrap();
        let sm = StateMachine::open(&d.path().join("state")).unwrap();
        let v = crate::audit::verify(&log, &sm).unwrap();
        assert_eq!(v.failure, None);
        assert_eq!(v.checked, 45_001);
        assert_eq!(v.head.map(|h| h.0), Some(45_000));
        let e = log.try_get_log_entries(20_001..20_002).await.unwrap();
        let openraft::EntryPayload::Normal(Command(bytes)) = &e[0].payload else {
            panic!("not a command: {e:?}");
        };
        assert_eq!(
            bytes,
            &hearth_core::domain::Command::TestRecord {
                text: "r20001".into()
            }
            .encode()
        );
        drop((log, sm));
        // A log that already reaches the index is left as it is.
        let again = extend_with_test_records(d.path(), 10, |_| unreachable!())
            .await
            .unwrap();
        assert_eq!(
            again,
            Extended {
                appended: 0,
                last_index: 45_000
            }
        );
    }

    #[tokio::test]
    async fn a_state_machine_behind_its_log_is_refused_and_nothing_is_appended() {
        let d = tempfile::tempdir().unwrap();
        seeded(d.path(), false).await;
        let e = extend_with_test_records(d.path(), 100, |i| format!("r{i}"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ExtendError::NotApplied {
                    applied: None,
                    last: 0,
                    ..
                }
            ),
            "{e}"
        );
        let log = LogStore::open(&d.path().join("raft")).unwrap();
        assert_eq!(log.last_log_id().unwrap().map(|l| l.index), Some(0));
    }

    #[tokio::test]
    async fn an_empty_data_directory_is_refused_and_left_empty() {
        let d = tempfile::tempdir().unwrap();
        let e = extend_with_test_records(d.path(), 10, |i| format!("r{i}"))
            .await
            .unwrap_err();
        assert!(matches!(e, ExtendError::EmptyLog(_)), "{e}");
        let log = LogStore::open(&d.path().join("raft")).unwrap();
        assert_eq!(log.last_log_id().unwrap(), None);
    }
}
