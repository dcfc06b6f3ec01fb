//! The embedded store: one redb file (copy-on-write B-trees, each write transaction committed
//! with an fsync, so a crash leaves the last committed state). redb's lock lets one process
//! use a file at a time; `batch` on one machine is its user. Expired entries are swept when
//! the file is opened.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use super::records::expired;
use super::StoreError;

const RESULTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("results");
const URLS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("urls");

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Results,
    Urls,
}

impl Table {
    fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        match self {
            Table::Results => RESULTS,
            Table::Urls => URLS,
        }
    }
}

#[derive(Clone)]
pub(crate) struct FileStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl FileStore {
    /// Opens (or creates) the file and sweeps expired entries; blocking.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::file(path, e);
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::file(
                path,
                "in use by another process (a file store serves one process; share a Redis store between several)",
            ),
            e => fail(&e),
        })?;
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        for table in [RESULTS, URLS] {
            let mut t = txn.open_table(table).map_err(|e| fail(&e))?;
            t.retain(|_, v| !expired(v)).map_err(|e| fail(&e))?;
        }
        txn.commit().map_err(|e| fail(&e))?;
        Ok(FileStore {
            db: Arc::new(db),
            path: path.to_owned(),
        })
    }

    /// Each key's value, in one read transaction; blocking.
    pub(crate) fn get_many(
        &self,
        table: Table,
        keys: &[[u8; 32]],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::file(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| fail(&e))?;
        let t = txn.open_table(table.definition()).map_err(|e| fail(&e))?;
        keys.iter()
            .map(|k| {
                t.get(&k[..])
                    .map(|v| v.map(|v| v.value().to_vec()))
                    .map_err(|e| fail(&e))
            })
            .collect()
    }

    /// Writes every entry in one transaction, durable when this returns; blocking.
    pub(crate) fn put_many(
        &self,
        entries: &[(Table, [u8; 32], Vec<u8>)],
    ) -> Result<(), StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::file(&self.path, e);
        let txn = self.db.begin_write().map_err(|e| fail(&e))?;
        for table in [Table::Results, Table::Urls] {
            let mut t = txn.open_table(table.definition()).map_err(|e| fail(&e))?;
            for (_, k, v) in entries.iter().filter(|(which, ..)| *which == table) {
                t.insert(&k[..], &v[..]).map_err(|e| fail(&e))?;
            }
        }
        txn.commit().map_err(|e| fail(&e))
    }

    /// Entries in the results table, expired or not (for tests and the operator's checks).
    pub(crate) fn len(&self) -> Result<u64, StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::file(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| fail(&e))?;
        let t = txn.open_table(RESULTS).map_err(|e| fail(&e))?;
        t.len().map_err(|e| fail(&e))
    }
}
