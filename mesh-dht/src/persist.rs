//! Optional persistence of the record store in a redb file.
//!
//! One row per entry: a key's regular value, or one subkey of its
//! dictionary, with the entry's publisher ([`pb::Persisted`] holding one
//! record). A subkey write therefore writes one row, not the key's whole
//! dictionary; writes that change a key's shape (a regular value replacing
//! a dictionary, evictions, expiry) rewrite that key's rows. On start-up
//! the rows are read back; a file redb cannot open as a database is moved
//! aside (`<file>.corrupt-<unix seconds>`) with an error in the log, and
//! the node starts with an empty store instead of not at all.

use std::path::{Path, PathBuf};

use mesh_core::{PeerId, Record};
use mesh_proto::dht as pb;
use prost::Message;
use redb::{Database, ReadableTable, TableDefinition, TableHandle};

use crate::DhtError;

/// Rows: `u32 key length (big-endian) ‖ key ‖ 0` for a regular value,
/// `… ‖ 1 ‖ subkey` for a subkey.
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");

/// A change to write.
pub(crate) enum Change {
    /// One entry written (the key's other entries unchanged).
    Entry(Record, PeerId),
    /// Everything `key` holds now (empty: the key is gone).
    Key(Vec<u8>, Vec<(Record, PeerId)>),
}

impl Change {
    /// The key it writes.
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Change::Entry(r, _) => &r.key,
            Change::Key(k, _) => k,
        }
    }
}

pub(crate) struct Persist {
    db: Database,
    path: PathBuf,
    /// Tests: make every write fail (a full disk, say).
    #[cfg(test)]
    pub(crate) fail_writes: std::sync::atomic::AtomicBool,
}

fn err(path: &Path, e: impl std::fmt::Display) -> DhtError {
    DhtError::Persistence(format!("{}: {e}", path.display()))
}

fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(key.len() + 5);
    row.extend_from_slice(&(key.len() as u32).to_be_bytes());
    row.extend_from_slice(key);
    row
}

/// The rows of `key`: from its regular value's row to past its last subkey.
fn key_rows(key: &[u8]) -> std::ops::Range<Vec<u8>> {
    let mut from = key_prefix(key);
    let mut to = from.clone();
    from.push(0);
    to.push(2);
    from..to
}

/// One row's entry and publisher; `None` when it does not decode.
fn decode_row(bytes: &[u8]) -> Option<(Record, PeerId)> {
    let p = pb::Persisted::decode(bytes).ok()?;
    let r = p.records.into_iter().next()?;
    let publisher = PeerId::from_bytes(p.publishers.first()?).ok()?;
    Some((Record::from(r), publisher))
}

fn row_key(key: &[u8], subkey: Option<&[u8]>) -> Vec<u8> {
    let mut row = key_prefix(key);
    match subkey {
        None => row.push(0),
        Some(sk) => {
            row.push(1);
            row.extend_from_slice(sk);
        }
    }
    row
}

/// Whether an error opening the file means its contents are not a usable
/// database (as opposed to a file we may not touch, or one in use).
fn is_corrupt(e: &redb::DatabaseError) -> bool {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => false,
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => !matches!(
            io.kind(),
            std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::NotFound
                | std::io::ErrorKind::ReadOnlyFilesystem
                | std::io::ErrorKind::StorageFull
        ),
        _ => true,
    }
}

impl Persist {
    pub(crate) fn open(path: &Path) -> Result<Self, DhtError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(path, e))?;
        }
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(e) if path.exists() && is_corrupt(&e) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut aside = path.as_os_str().to_owned();
                aside.push(format!(".corrupt-{secs}"));
                let aside = PathBuf::from(aside);
                std::fs::rename(path, &aside).map_err(|e| err(path, e))?;
                tracing::error!(
                    file = %path.display(),
                    moved_to = %aside.display(),
                    "the store file cannot be read ({e}); moved it aside and starting with an empty store"
                );
                Database::create(path).map_err(|e| err(path, e))?
            }
            Err(e) => return Err(err(path, e)),
        };
        let persist = Self {
            db,
            path: path.to_path_buf(),
            #[cfg(test)]
            fail_writes: Default::default(),
        };
        persist.migrate().map_err(|e| err(path, e))?;
        Ok(persist)
    }

    /// Creates the table; files of earlier versions (one row per key, table
    /// `records`) are converted to one row per entry.
    // redb's error is large; it is turned into a DhtError at once, by the
    // one caller (the same for write_inner).
    #[allow(clippy::result_large_err)]
    fn migrate(&self) -> Result<(), redb::Error> {
        const OLD: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
        let tx = self.db.begin_write()?;
        let mut entries = Vec::new();
        if tx.list_tables()?.any(|t| t.name() == "records") {
            {
                let old = tx.open_table(OLD)?;
                for row in old.iter()? {
                    let (_, v) = row?;
                    if let Ok(p) = pb::Persisted::decode(v.value()) {
                        for (r, publisher) in p.records.into_iter().zip(p.publishers) {
                            if let Ok(publisher) = PeerId::from_bytes(&publisher) {
                                entries.push((Record::from(r), publisher));
                            }
                        }
                    }
                }
            }
            tx.delete_table(OLD)?;
            tracing::info!(
                entries = entries.len(),
                "converted the store file to one row per entry"
            );
        }
        tx.open_table(ENTRIES)?;
        tx.commit()?;
        let changes: Vec<Change> = entries
            .into_iter()
            .map(|(r, p)| Change::Entry(r, p))
            .collect();
        if !changes.is_empty() {
            self.write_inner(&changes)?;
        }
        Ok(())
    }

    /// Every persisted entry with its publisher. Rows that do not decode
    /// are skipped with a warning rather than failing the start.
    pub(crate) fn load(&self) -> Result<Vec<(Record, PeerId)>, DhtError> {
        let tx = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let table = tx.open_table(ENTRIES).map_err(|e| err(&self.path, e))?;
        let mut out = Vec::new();
        let mut skipped = 0usize;
        for row in table.iter().map_err(|e| err(&self.path, e))? {
            let (_, v) = row.map_err(|e| err(&self.path, e))?;
            match decode_row(v.value()) {
                Some(entry) => out.push(entry),
                None => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(skipped, file = %self.path.display(), "skipped undecodable persisted entries");
        }
        Ok(out)
    }

    /// What the file holds for `key` (after a failed write: the state to
    /// go back to).
    pub(crate) fn load_key(&self, key: &[u8]) -> Result<Vec<(Record, PeerId)>, DhtError> {
        let tx = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let table = tx.open_table(ENTRIES).map_err(|e| err(&self.path, e))?;
        let rows = key_rows(key);
        let mut out = Vec::new();
        for row in table
            .range(rows.start.as_slice()..rows.end.as_slice())
            .map_err(|e| err(&self.path, e))?
        {
            let (_, v) = row.map_err(|e| err(&self.path, e))?;
            out.extend(decode_row(v.value()));
        }
        Ok(out)
    }

    /// Applies `changes` in one transaction.
    pub(crate) fn write(&self, changes: &[Change]) -> Result<(), DhtError> {
        #[cfg(test)]
        if self.fail_writes.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(err(&self.path, "test: writes fail"));
        }
        self.write_inner(changes).map_err(|e| err(&self.path, e))
    }

    #[allow(clippy::result_large_err)]
    fn write_inner(&self, changes: &[Change]) -> Result<(), redb::Error> {
        #[allow(clippy::result_large_err)]
        fn put(
            table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
            record: &Record,
            publisher: &PeerId,
        ) -> Result<(), redb::Error> {
            let value = pb::Persisted {
                records: vec![record.clone().into()],
                publishers: vec![publisher.to_bytes()],
            };
            table.insert(
                row_key(&record.key, record.subkey.as_deref()).as_slice(),
                value.encode_to_vec().as_slice(),
            )?;
            Ok(())
        }
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(ENTRIES)?;
            for change in changes {
                match change {
                    Change::Entry(record, publisher) => put(&mut table, record, publisher)?,
                    Change::Key(key, entries) => {
                        let rows = key_rows(key);
                        table
                            .retain_in(rows.start.as_slice()..rows.end.as_slice(), |_, _| false)?;
                        for (record, publisher) in entries {
                            put(&mut table, record, publisher)?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Most writes committed in one transaction by the writer.
const MAX_BATCH: usize = 64;

/// A write for the writer thread, and what to hand back when it is done.
pub(crate) struct WriteJob<T> {
    pub(crate) changes: Vec<Change>,
    pub(crate) token: T,
}

/// What the writer hands back: the job's token and whether the
/// transaction committed.
pub(crate) struct Written<T> {
    pub(crate) token: T,
    pub(crate) result: Result<(), WriteFailed>,
}

/// A batch that did not commit: why, and every key it wrote (to be put
/// back to what the file holds).
#[derive(Clone)]
pub(crate) struct WriteFailed {
    pub(crate) error: String,
    pub(crate) keys: Vec<Vec<u8>>,
}

/// Runs the writes of `jobs` on a thread of its own, as many as are queued
/// (up to [`MAX_BATCH`]) in one transaction, and hands each back on
/// `done`. The thread ends when every sender of `jobs` is gone; the
/// returned receiver resolves once it has, with its handle on the file
/// dropped (a restart may open the file again).
pub(crate) fn spawn_writer<T: Send + 'static>(
    persist: std::sync::Arc<Persist>,
    mut jobs: tokio::sync::mpsc::Receiver<WriteJob<T>>,
    done: tokio::sync::mpsc::Sender<Written<T>>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (exited_tx, exited) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("mesh-dht-persist".into())
        .spawn(move || {
            let _exited = ExitSignal(Some(exited_tx));
            let persist = persist;
            while let Some(first) = jobs.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let changes: Vec<Change> = batch
                    .iter_mut()
                    .flat_map(|j| std::mem::take(&mut j.changes))
                    .collect();
                let result = persist.write(&changes).map_err(|e| {
                    tracing::error!("{e}; the writes of this batch are refused");
                    WriteFailed {
                        error: e.to_string(),
                        keys: changes.iter().map(|c| c.key().to_vec()).collect(),
                    }
                });
                for job in batch {
                    let written = Written {
                        token: job.token,
                        result: result.clone(),
                    };
                    // Nobody listening (the node is stopping): the writes
                    // still go on until the queue is empty.
                    let _ = done.blocking_send(written);
                }
            }
        })?;
    Ok(exited)
}

/// Signals on drop, after the fields declared before it in the thread's
/// closure (the file handle) are gone.
struct ExitSignal(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::Expiration;

    fn rec(key: &str, subkey: Option<&str>, value: &str) -> Record {
        Record {
            key: key.into(),
            subkey: subkey.map(Into::into),
            value: value.into(),
            expiration: Expiration::from_millis(u64::MAX / 2),
        }
    }

    fn sorted(mut v: Vec<(Record, PeerId)>) -> Vec<(Record, PeerId)> {
        v.sort_by(|a, b| (&a.0.key, &a.0.subkey).cmp(&(&b.0.key, &b.0.subkey)));
        v
    }

    #[test]
    fn entries_are_rows_and_keys_are_rewritten_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = Persist::open(&dir.path().join("s.redb")).unwrap();
        let who = PeerId::random();
        // Keys that prefix each other stay apart ("a" and "ab").
        p.write(&[
            Change::Entry(rec("a", Some("x"), "1"), who),
            Change::Entry(rec("a", Some("y"), "2"), who),
            Change::Entry(rec("ab", None, "3"), who),
        ])
        .unwrap();
        p.write(&[Change::Entry(rec("a", Some("x"), "4"), who)])
            .unwrap();
        assert_eq!(
            sorted(p.load().unwrap()),
            vec![
                (rec("a", Some("x"), "4"), who),
                (rec("a", Some("y"), "2"), who),
                (rec("ab", None, "3"), who),
            ]
        );
        // A regular value replaces the dictionary; an empty key is removed.
        p.write(&[
            Change::Key("a".into(), vec![(rec("a", None, "5"), who)]),
            Change::Key("ab".into(), vec![]),
        ])
        .unwrap();
        assert_eq!(p.load().unwrap(), vec![(rec("a", None, "5"), who)]);
    }

    #[test]
    fn a_corrupted_file_is_moved_aside_and_the_store_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let p = Persist::open(&path).unwrap();
        assert!(p.load().unwrap().is_empty());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("s.redb.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(
            std::fs::read(dir.path().join(&aside[0])).unwrap(),
            vec![0x5a; 8192],
            "the bad file is kept as it was"
        );
        // The fresh file works.
        p.write(&[Change::Entry(rec("k", None, "v"), PeerId::random())])
            .unwrap();
        assert_eq!(p.load().unwrap().len(), 1);
    }

    #[test]
    fn files_of_one_row_per_key_are_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let who = PeerId::random();
        {
            const OLD: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(OLD).unwrap();
                let row = pb::Persisted {
                    records: vec![
                        rec("d", Some("x"), "1").into(),
                        rec("d", Some("y"), "2").into(),
                    ],
                    publishers: vec![who.to_bytes(), who.to_bytes()],
                };
                t.insert(&b"d"[..], row.encode_to_vec().as_slice()).unwrap();
            }
            tx.commit().unwrap();
        }
        let p = Persist::open(&path).unwrap();
        assert_eq!(
            sorted(p.load().unwrap()),
            vec![
                (rec("d", Some("x"), "1"), who),
                (rec("d", Some("y"), "2"), who)
            ]
        );
    }
}
