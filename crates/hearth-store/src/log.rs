//! The Raft log and vote, durable.
//!
//! `raft-log.bin` is an append-only file of frames `len:u32le ‖ crc32:u32le ‖ record`, where
//! `record` is the audit-chain layout of the entry (`hearth_core::Record`). Frames are in index
//! order with no holes; truncation cuts the file. `raft-meta.json` holds the vote and the last
//! purged log id and is replaced atomically (write temp, fsync, rename, fsync directory).
//!
//! Durability contract (docs/DESIGN.md §8, §9): `save_vote` returns only after the vote is on disk;
//! `append` makes entries readable before it returns and reports them flushed only after
//! `fdatasync`. Vote and log writes are each synced before they are acknowledged, so they can
//! never be reordered on disk.
//!
//! `append` does not wait for the disk: openraft calls it from its core task ("submit IO, do
//! not wait for the response"), so a wait there would stall replication and commits behind
//! every fsync. The write goes to the file at once; a flusher thread then runs one
//! `fdatasync` for every append queued while the previous one ran (group commit) and reports
//! them flushed in order. A vote is synced before `save_vote` returns, so entries of a new
//! term are always written after the vote that allows them.
//!
//! On open, a frame that is incomplete or fails its CRC at the very end of the file is a torn
//! write and is cut off with a warning (it was unacknowledged unless the state machine had
//! applied it; the node's startup checks that and then holds its vote until the cluster has
//! given the entry back, `hearth_node::datadir`); the same anywhere else is corruption,
//! reported with its index, and the node refuses to start.

use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use hearth_core::Record;
use openraft::alias::{LogIdOf, VoteOf};
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogIdT, TypeConfig, entry_to_record, log_id, record_to_entry};
use crate::{StoreError, io_err};

pub const LOG_FILE: &str = "raft-log.bin";
pub const META_FILE: &str = "raft-meta.json";
const FRAME_HEADER: u64 = 8;
/// Largest record accepted when reading back (a corrupt length must not allocate gigabytes).
pub const MAX_RECORD: u32 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
struct Frame {
    offset: u64,
    len: u32,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Meta {
    vote: Option<VoteOf<TypeConfig>>,
    last_purged: Option<LogIdT>,
}

struct Inner {
    dir: PathBuf,
    file: File,
    end: u64,
    /// Frame of index `first_index + i`.
    frames: Vec<Frame>,
    first_index: u64,
    last: Option<LogIdT>,
    meta: Meta,
    /// Queue of the flusher thread (`None` when opened read-only).
    flusher: Option<mpsc::Sender<IOFlushed<TypeConfig>>>,
}

/// The durable Raft log. Cloning shares the same open file.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

/// A frame read back from disk.
pub struct StoredRecord {
    pub bytes: Vec<u8>,
}

fn other(e: impl ToString) -> io::Error {
    io::Error::other(e.to_string())
}

/// Test seam for a full disk, usable in real processes: when the environment variable
/// `HEARTH_FAILPOINT_ENOSPC` names a path and that path exists, every append fails with
/// ENOSPC before writing anything (a test creates the file to fill the "disk", removes it to
/// free it). Unset (always, outside tests): one relaxed load per append.
fn enospc_failpoint() -> bool {
    static TRIGGER: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    TRIGGER
        .get_or_init(|| std::env::var_os("HEARTH_FAILPOINT_ENOSPC").map(PathBuf::from))
        .as_ref()
        .is_some_and(|p| p.exists())
}

/// Starts the thread that makes appends durable: it waits for a queued append, takes every
/// other one queued meanwhile, runs one `fdatasync` (which covers all bytes written before
/// it), and completes their callbacks in queue order. It ends when the store is dropped.
fn spawn_flusher(file: File) -> io::Result<mpsc::Sender<IOFlushed<TypeConfig>>> {
    let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
    std::thread::Builder::new()
        .name("hearth-log-fsync".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let res = file.sync_data();
                for cb in batch {
                    cb.io_completed(match &res {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    });
                }
            }
        })?;
    Ok(tx)
}

/// A node that is about to serve its log must still know its vote: without it, it could vote
/// twice in one term (two leaders). A log holding entries of a term above 0 means a vote of at
/// least that term was saved first (a leader saves its own, a follower its leader's), so a
/// missing vote file, or a vote of an older term, is damage, never a state Hearth writes.
/// (Term 0 is the cluster-forming entry, written before any vote.)
fn check_vote(
    meta_path: &Path,
    meta_present: bool,
    vote: Option<&VoteOf<TypeConfig>>,
    last: Option<&LogIdT>,
) -> Result<(), StoreError> {
    let Some(last) = last else { return Ok(()) };
    let log_term = last.leader_id.term;
    if log_term == 0 {
        return Ok(());
    }
    let vote_term = vote.map(|v| v.leader_id.term);
    if !meta_present || vote_term.is_none_or(|t| t < log_term) {
        return Err(StoreError::VoteLost {
            path: meta_path.to_path_buf(),
            vote_term,
            log_term,
            last_index: last.index,
        });
    }
    Ok(())
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, checking every frame; cuts a torn last frame.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_mode(dir, true)
    }

    /// Opens an existing log for inspection only: nothing is created, cut or written.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        Self::open_mode(dir, false)
    }

    fn open_mode(dir: &Path, writable: bool) -> Result<Self, StoreError> {
        if writable {
            crate::private::create_dir(dir).map_err(|e| io_err(dir, e))?;
        }
        let path = dir.join(LOG_FILE);
        let meta_path = dir.join(META_FILE);
        let (meta, meta_present): (Meta, bool) = match std::fs::read(&meta_path) {
            Ok(b) => (
                serde_json::from_slice(&b).map_err(|e| StoreError::CorruptMeta {
                    path: meta_path.clone(),
                    reason: e.to_string(),
                })?,
                true,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Meta::default(), false),
            Err(e) => return Err(io_err(&meta_path, e)),
        };
        let mut file = crate::private::options()
            .read(true)
            .append(writable)
            .create(writable)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| io_err(&path, e))?;

        let mut frames = Vec::new();
        let mut first_index = 0;
        let mut last: Option<LogIdT> = None;
        let mut pos: usize = 0;
        while pos < data.len() {
            let expected = last.as_ref().map(|l| l.index + 1);
            let at = expected.unwrap_or(0);
            let torn = |reason: &str| -> Result<(), StoreError> {
                tracing::warn!(path = %path.display(), index = at, offset = pos, reason,
                    "cutting off a torn write at the end of the Raft log (unacknowledged unless \
                     the state machine had applied it: that is checked next, and such a node is \
                     held and repaired from the cluster)");
                Ok(())
            };
            if data.len() - pos < FRAME_HEADER as usize {
                torn("incomplete frame header")?;
                break;
            }
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap_or_default());
            let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap_or_default());
            let body_start = pos + FRAME_HEADER as usize;
            let body_end = body_start.saturating_add(len as usize);
            if len > MAX_RECORD || body_end > data.len() {
                if len <= MAX_RECORD {
                    torn("incomplete frame")?;
                    break;
                }
                return Err(StoreError::CorruptLog {
                    path,
                    index: at,
                    reason: format!("frame length {len} is impossible"),
                });
            }
            let body = &data[body_start..body_end];
            if crc32fast::hash(body) != crc {
                if body_end == data.len() {
                    torn("checksum mismatch in the last frame")?;
                    break;
                }
                return Err(StoreError::CorruptLog {
                    path,
                    index: at,
                    reason: "checksum mismatch".into(),
                });
            }
            let rec = Record::decode(body).map_err(|e| StoreError::CorruptLog {
                path: path.clone(),
                index: at,
                reason: e.to_string(),
            })?;
            if let Some(exp) = expected
                && rec.index != exp
            {
                return Err(StoreError::CorruptLog {
                    path,
                    index: exp,
                    reason: format!("found index {} where {exp} was expected", rec.index),
                });
            }
            if frames.is_empty() {
                first_index = rec.index;
            }
            frames.push(Frame {
                offset: pos as u64,
                len,
            });
            last = Some(log_id(rec.term, rec.leader, rec.index));
            pos = body_end;
        }
        if pos < data.len() && writable {
            file.set_len(pos as u64).map_err(|e| io_err(&path, e))?;
            file.sync_all().map_err(|e| io_err(&path, e))?;
        }
        if writable {
            check_vote(&meta_path, meta_present, meta.vote.as_ref(), last.as_ref())?;
        }
        let flusher = if writable {
            let f = file.try_clone().map_err(|e| io_err(&path, e))?;
            Some(spawn_flusher(f).map_err(|e| io_err(&path, e))?)
        } else {
            None
        };
        // Drop what was purged (the bytes stay in the file; the log is never compacted).
        let mut store = Inner {
            dir: dir.to_path_buf(),
            file,
            end: pos as u64,
            frames,
            first_index,
            last,
            meta,
            flusher,
        };
        if let Some(p) = store.meta.last_purged {
            store.drop_through(p.index);
            if store.frames.is_empty() {
                store.last = Some(p);
            }
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(store)),
        })
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| other("log store lock poisoned by an earlier panic"))
    }

    /// First and last index present in the log.
    pub fn bounds(&self) -> io::Result<Option<(u64, u64)>> {
        let g = self.lock()?;
        Ok(g.last
            .as_ref()
            .and_then(|l| (!g.frames.is_empty()).then_some((g.first_index, l.index))))
    }

    /// Stored record bytes of `index` (the bytes the chain hashes), if present.
    pub fn record_bytes(&self, index: u64) -> io::Result<Option<Vec<u8>>> {
        let g = self.lock()?;
        g.read_frame(index)
    }

    pub fn last_log_id(&self) -> io::Result<Option<LogIdT>> {
        Ok(self.lock()?.last)
    }
}

impl Inner {
    fn frame(&self, index: u64) -> Option<Frame> {
        let i = index.checked_sub(self.first_index)?;
        self.frames.get(usize::try_from(i).ok()?).copied()
    }

    fn read_frame(&self, index: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(f) = self.frame(index) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; FRAME_HEADER as usize + f.len as usize];
        self.file.read_exact_at(&mut buf, f.offset)?;
        let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let body = buf.split_off(FRAME_HEADER as usize);
        if crc32fast::hash(&body) != crc {
            return Err(other(format!(
                "Raft log entry {index} failed its checksum on read: disk corruption"
            )));
        }
        Ok(Some(body))
    }

    fn drop_through(&mut self, index: u64) {
        let n = (index + 1)
            .saturating_sub(self.first_index)
            .min(self.frames.len() as u64);
        self.frames.drain(..n as usize);
        self.first_index += n;
        if self.frames.is_empty() {
            self.first_index = index + 1;
        }
    }

    fn write_meta(&self) -> io::Result<()> {
        let path = self.dir.join(META_FILE);
        let tmp = self.dir.join(format!("{META_FILE}.tmp"));
        let bytes = serde_json::to_vec(&self.meta).map_err(other)?;
        let mut f = crate::private::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// Removes entries after `index` (exclusive), or all with `None`.
    fn truncate_after(&mut self, index: Option<u64>) -> io::Result<()> {
        let keep = match index {
            None => 0,
            Some(i) => (i + 1)
                .saturating_sub(self.first_index)
                .min(self.frames.len() as u64) as usize,
        };
        if keep >= self.frames.len() {
            return Ok(());
        }
        let cut_at = self.frames[keep].offset;
        self.file.set_len(cut_at)?;
        self.end = cut_at;
        self.frames.truncate(keep);
        self.last = match self.frames.last() {
            Some(_) => {
                let idx = self.first_index + keep as u64 - 1;
                let body = self
                    .read_frame(idx)?
                    .ok_or_else(|| other("frame vanished"))?;
                let r = Record::decode(&body).map_err(other)?;
                Some(log_id(r.term, r.leader, r.index))
            }
            None => self.meta.last_purged,
        };
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let g = self.lock()?;
        let Some(last) = g.last.as_ref().map(|l| l.index) else {
            return Ok(Vec::new());
        };
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(g.first_index);
        let end = match range.end_bound() {
            Bound::Included(x) => (*x).min(last),
            Bound::Excluded(x) => match x.checked_sub(1) {
                Some(x) => x.min(last),
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => last,
        };
        let mut out = Vec::new();
        let mut i = start;
        while i <= end {
            let Some(body) = g.read_frame(i)? else { break };
            let rec = Record::decode(&body).map_err(other)?;
            out.push(record_to_entry(rec).map_err(other)?);
            i += 1;
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        Ok(self.lock()?.meta.vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let g = self.lock()?;
        Ok(LogState {
            last_purged_log_id: g.meta.last_purged,
            last_log_id: g.last.or_else(|| g.meta.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        let inner = self.inner.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || {
            let mut g = inner.lock().map_err(|_| other("log store lock poisoned"))?;
            g.meta.vote = Some(vote);
            g.write_meta()
        })
        .await
        .map_err(other)?
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut g = self.lock()?;
            let mut buf = Vec::new();
            let mut new_frames = Vec::new();
            let mut last = None;
            for entry in entries {
                // An append that overlaps the tail replaces it (openraft truncates first; this
                // keeps the file free of holes and duplicates whatever the caller does).
                if let Some(l) = g.last.as_ref()
                    && entry.log_id.index <= l.index
                    && new_frames.is_empty()
                {
                    g.truncate_after(entry.log_id.index.checked_sub(1))?;
                }
                let rec = entry_to_record(&entry).map_err(other)?;
                let start = buf.len();
                buf.extend_from_slice(&[0u8; FRAME_HEADER as usize]);
                rec.encode_into(&mut buf);
                let body_len = buf.len() - start - FRAME_HEADER as usize;
                let len = u32::try_from(body_len)
                    .ok()
                    .filter(|l| *l <= MAX_RECORD)
                    .ok_or_else(|| {
                        other(format!(
                            "entry {} is too large ({body_len} bytes)",
                            rec.index
                        ))
                    })?;
                let crc = crc32fast::hash(&buf[start + FRAME_HEADER as usize..]);
                buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
                buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
                new_frames.push((rec.index, start as u64, len));
                last = Some(entry.log_id);
            }
            if new_frames.is_empty() {
                callback.io_completed(Ok(()));
                return Ok(());
            }
            if enospc_failpoint() {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "No space left on device (os error 28) [failpoint HEARTH_FAILPOINT_ENOSPC]",
                ));
            }
            // Visible to readers when this returns; durable only after the sync below.
            g.file.write_all(&buf)?;
            let base = g.end;
            if g.frames.is_empty() {
                g.first_index = new_frames[0].0;
            }
            for (_, off, len) in new_frames {
                g.frames.push(Frame {
                    offset: base + off,
                    len,
                });
            }
            g.end += buf.len() as u64;
            g.last = last;
            // Queued under the lock, so flushes are reported in the order of the writes.
            let queue = g
                .flusher
                .as_ref()
                .ok_or_else(|| other("the Raft log was opened read-only"))?;
            queue
                .send(callback)
                .map_err(|_| other("the Raft log's flusher thread is gone"))?;
        }
        Ok(())
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let mut g = self.lock()?;
        g.truncate_after(last_log_id.map(|l| l.index))
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = inner.lock().map_err(|_| other("log store lock poisoned"))?;
            g.meta.last_purged = Some(log_id);
            g.write_meta()?;
            g.drop_through(log_id.index);
            if g.frames.is_empty() && g.last.as_ref().is_none_or(|l| l.index <= log_id.index) {
                g.last = Some(log_id);
            }
            Ok(())
        })
        .await
        .map_err(other)?
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;
    use crate::types::Command;

    fn entry(i: u64) -> Entry {
        Entry {
            log_id: log_id(1, 1, i),
            payload: EntryPayload::Normal(Command(format!("e{i}").into_bytes())),
        }
    }

    /// Appends entries of term 1, saving a vote of term 1 first as openraft does.
    async fn append(log: &mut LogStore, range: std::ops::Range<u64>) {
        use openraft::type_config::TypeConfigExt;
        if log.read_vote().await.unwrap().is_none() {
            log.save_vote(&openraft::impls::Vote::new(1, 1))
                .await
                .unwrap();
        }
        let (tx, rx) = TypeConfig::oneshot();
        log.append(range.map(entry), IOFlushed::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn reopen_keeps_entries_and_vote() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        append(&mut log, 0..5).await;
        let vote = openraft::impls::Vote::new(3, 2);
        log.save_vote(&vote).await.unwrap();
        log.truncate_after(Some(log_id(1, 1, 3))).await.unwrap();
        drop(log);
        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        let got = log.try_get_log_entries(0..10).await.unwrap();
        assert_eq!(got, (0..4).map(entry).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn appends_return_before_their_flush_and_are_all_reported_flushed_in_order() {
        use openraft::type_config::TypeConfigExt;
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&openraft::impls::Vote::new(1, 1))
            .await
            .unwrap();
        // Queue several appends without waiting: each is readable at once.
        let mut flushed = Vec::new();
        for b in 0..5u64 {
            let (tx, rx) = TypeConfig::oneshot();
            log.append((b * 10..b * 10 + 10).map(entry), IOFlushed::signal(tx))
                .await
                .unwrap();
            assert_eq!(log.bounds().unwrap(), Some((0, b * 10 + 9)));
            flushed.push(rx);
        }
        for rx in flushed {
            rx.await.unwrap().unwrap();
        }
        drop(log);
        let mut log = LogStore::open(dir.path()).unwrap();
        let got = log.try_get_log_entries(0..50).await.unwrap();
        assert_eq!(got, (0..50).map(entry).collect::<Vec<_>>());
        // A read-only store refuses to append instead of pretending to flush.
        let mut ro = LogStore::open_read_only(dir.path()).unwrap();
        let (tx, _rx) = TypeConfig::oneshot();
        assert!(ro.append([entry(50)], IOFlushed::signal(tx)).await.is_err());
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_mid_log_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        append(&mut log, 0..5).await;
        drop(log);
        let path = dir.path().join(LOG_FILE);
        let full = std::fs::read(&path).unwrap();

        // A half-written last frame: cut off, the rest survives.
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let log = LogStore::open(dir.path()).unwrap();
        assert_eq!(log.bounds().unwrap(), Some((0, 3)));
        drop(log);

        // A flipped byte inside entry 2: refuse, naming index 2.
        let mut bad = full.clone();
        let frame = 8 + 25 + 2; // every frame here is header + 25-byte record header + "eN"
        bad[2 * frame + 8 + 25] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        match LogStore::open(dir.path()) {
            Err(StoreError::CorruptLog { index, .. }) => assert_eq!(index, 2),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a corrupt log must not open"),
        }
    }

    /// Issue 14.3: a log without its vote file, or with a vote older than its last term, is
    /// refused at open (and named); read-only inspection still opens it.
    #[tokio::test]
    async fn a_lost_or_stale_vote_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        append(&mut log, 0..3).await; // entries of term 1
        log.save_vote(&openraft::impls::Vote::new(1, 1))
            .await
            .unwrap();
        drop(log);
        let meta = dir.path().join(META_FILE);
        let saved = std::fs::read(&meta).unwrap();

        std::fs::remove_file(&meta).unwrap();
        match LogStore::open(dir.path()) {
            Err(e @ StoreError::VoteLost { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("missing") && msg.contains(META_FILE), "{msg}");
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a log without its vote must not open for writing"),
        }
        assert!(!meta.exists(), "refusing must not write a vote file");
        assert!(LogStore::open_read_only(dir.path()).is_ok());

        // A vote of an older term than the log (an old copy of the file).
        let old = serde_json::to_vec(&Meta {
            vote: Some(openraft::impls::Vote::new(0, 1)),
            last_purged: None,
        })
        .unwrap();
        std::fs::write(&meta, old).unwrap();
        match LogStore::open(dir.path()) {
            Err(StoreError::VoteLost {
                vote_term: Some(0),
                log_term: 1,
                last_index: 2,
                ..
            }) => {}
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a stale vote must not open"),
        }

        // The right file opens again; a new, empty log needs no vote.
        std::fs::write(&meta, saved).unwrap();
        assert!(LogStore::open(dir.path()).is_ok());
        let empty = tempfile::tempdir().unwrap();
        assert!(LogStore::open(empty.path()).is_ok());
    }
}
