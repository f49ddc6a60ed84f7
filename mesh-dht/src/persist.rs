//! Optional persistence of the record store in a redb file.
//!
//! One table maps each key to a [`pb::Persisted`]: its entries and the
//! publisher of each. Every accepted write rewrites its key in one
//! transaction; on start-up the file is read back and expired entries are
//! dropped.

use std::path::{Path, PathBuf};

use mesh_core::{PeerId, Record};
use mesh_proto::dht as pb;
use prost::Message;
use redb::{Database, ReadableTable, TableDefinition};

use crate::DhtError;

/// One key's entries with the publisher of each.
pub(crate) type KeyEntries = (Vec<u8>, Vec<(Record, PeerId)>);

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

pub(crate) struct Persist {
    db: Database,
    path: PathBuf,
}

fn err(path: &Path, e: impl std::fmt::Display) -> DhtError {
    DhtError::Persistence(format!("{}: {e}", path.display()))
}

impl Persist {
    pub(crate) fn open(path: &Path) -> Result<Self, DhtError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(path, e))?;
        }
        let db = Database::create(path).map_err(|e| err(path, e))?;
        let tx = db.begin_write().map_err(|e| err(path, e))?;
        tx.open_table(RECORDS).map_err(|e| err(path, e))?;
        tx.commit().map_err(|e| err(path, e))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
        })
    }

    /// Every persisted entry with its publisher. Entries that do not decode
    /// are skipped with a warning rather than failing the start.
    pub(crate) fn load(&self) -> Result<Vec<(Record, PeerId)>, DhtError> {
        let tx = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let table = tx.open_table(RECORDS).map_err(|e| err(&self.path, e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| err(&self.path, e))? {
            let (k, v) = row.map_err(|e| err(&self.path, e))?;
            let Ok(p) = pb::Persisted::decode(v.value()) else {
                tracing::warn!(key = %String::from_utf8_lossy(k.value()), "skipping undecodable persisted key");
                continue;
            };
            for (r, publisher) in p.records.into_iter().zip(p.publishers) {
                match PeerId::from_bytes(&publisher) {
                    Ok(publisher) => out.push((Record::from(r), publisher)),
                    Err(_) => tracing::warn!("skipping persisted entry with a bad publisher id"),
                }
            }
        }
        Ok(out)
    }

    /// Rewrites the given keys: each to its entries, or removed when empty.
    pub(crate) fn write(&self, keys: &[KeyEntries]) -> Result<(), DhtError> {
        let tx = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        {
            let mut table = tx.open_table(RECORDS).map_err(|e| err(&self.path, e))?;
            for (key, entries) in keys {
                if entries.is_empty() {
                    table
                        .remove(key.as_slice())
                        .map_err(|e| err(&self.path, e))?;
                } else {
                    let p = pb::Persisted {
                        publishers: entries.iter().map(|(_, p)| p.to_bytes()).collect(),
                        records: entries.iter().map(|(r, _)| r.clone().into()).collect(),
                    };
                    table
                        .insert(key.as_slice(), p.encode_to_vec().as_slice())
                        .map_err(|e| err(&self.path, e))?;
                }
            }
        }
        tx.commit().map_err(|e| err(&self.path, e))
    }
}
