//! Opening the fjall database behind a store: the directory lock, the pre-open journal check,
//! and the engine settings both stores share.
//!
//! A store directory holds:
//!
//! ```text
//! <dir>/store.lock   an empty file; an exclusive advisory lock on it is held while the store is open
//! <dir>/db/          the fjall database (its journal files `*.jnl`, `version`, `keyspaces/`, ...)
//! ```
//!
//! plus whatever the store itself adds (the checkpoint store's summary marker). The lock is
//! taken before anything under `db/` is read, because the journal check may cut a torn tail and
//! must never do so under a database another process has open.

use std::fs;
use std::path::{Path, PathBuf};

use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions};

use crate::error::Location;
use crate::{StoreError, fjall_journal};

/// The fjall database directory inside a store directory.
pub const DB_DIR: &str = "db";
/// The lock file inside a store directory.
pub const LOCK_FILE: &str = "store.lock";
/// fjall's format marker file and the header it must start with (fjall 3).
const VERSION_FILE: &str = "version";
const VERSION_HEADER: [u8; 4] = [b'F', b'J', b'L', 3];

/// Key of a store's format marker in its meta keyspace.
const FORMAT_KEY: &str = "format";

/// Engine settings that differ between the stores.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Memtable size at which fjall flushes a keyspace to a table (and may drop old journals).
    pub memtable_bytes: u64,
    /// Block cache size.
    pub cache_bytes: u64,
}

/// An open fjall database with the store directory's lock.
pub struct Db {
    pub db: Database,
    pub path: PathBuf,
    /// Held (locked) for as long as the database is open.
    _lock: fs::File,
    tuning: Tuning,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Checks the store's format marker in `meta` (`what` names the store in the error), writing
    /// it (durably) into a new store.
    pub fn check_format(
        &self,
        meta: &Keyspace,
        format: &[u8],
        what: &str,
    ) -> Result<(), StoreError> {
        match meta.get(FORMAT_KEY).map_err(|e| {
            StoreError::fjall_reading(&self.path, e, "format marker", Location::Key(FORMAT_KEY))
        })? {
            Some(found) if &*found == format => Ok(()),
            Some(found) => Err(StoreError::UnsupportedFormat {
                path: self.path.clone(),
                found: format!(
                    "{what} format {:?} (this build reads {:?})",
                    String::from_utf8_lossy(&found),
                    String::from_utf8_lossy(format)
                ),
            }),
            None => {
                let mut batch = self
                    .db
                    .batch()
                    .durability(Some(fjall::PersistMode::SyncAll));
                batch.insert(meta, FORMAT_KEY, format);
                batch.commit().map_err(|e| StoreError::fjall(&self.path, e))
            }
        }
    }

    /// Locks `dir`, checks fjall's journal (cutting a torn tail), and opens the database,
    /// creating everything if needed. Returns the description of a cut tail, if any.
    pub fn open(dir: &Path, tuning: Tuning) -> Result<(Db, Option<String>), StoreError> {
        let created_dir = !dir.exists();
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { path: lock_path });
            }
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io(&lock_path, e)),
        }

        let path = dir.join(DB_DIR);
        let mut cut_tail = None;
        if path.exists() {
            if check_version(&path)? {
                cut_tail = fjall_journal::check_and_cut_tail(&path)?;
            } else {
                remove_unfinished(&path)?;
            }
        }
        let created_db = !path.exists();
        let db = Database::builder(&path)
            .journal_compression(CompressionType::None)
            .worker_threads(1)
            .cache_size(tuning.cache_bytes)
            .open()
            .map_err(|e| StoreError::fjall_reading(&path, e, "fjall database", Location::Open))?;
        // fjall fsyncs the database directory it creates, not the entry naming it: without
        // these, a crash soon after creation could lose the whole store.
        if created_db {
            sync_dir(dir)?;
        }
        if created_dir {
            sync_dir(parent_or_cwd(dir))?;
        }
        Ok((
            Db {
                db,
                path,
                _lock: lock,
                tuning,
            },
            cut_tail,
        ))
    }

    /// Opens (creating) a keyspace with this store's settings.
    pub fn keyspace(&self, name: &str) -> Result<Keyspace, StoreError> {
        let memtable = self.tuning.memtable_bytes;
        self.db
            .keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable)
            })
            .map_err(|e| StoreError::fjall_reading(&self.path, e, "fjall keyspace", Location::Open))
    }
}

/// True if `db` has fjall 3's version marker; false if it has none (an unfinished creation).
fn check_version(db: &Path) -> Result<bool, StoreError> {
    let path = db.join(VERSION_FILE);
    match fs::read(&path) {
        Ok(bytes) if bytes.starts_with(&VERSION_HEADER) => Ok(true),
        Ok(bytes) => Err(StoreError::UnsupportedFormat {
            path,
            found: format!(
                "fjall version marker {:?} (this build reads fjall format 3)",
                bytes.get(..4).unwrap_or(&bytes)
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// fjall writes its version marker last when it creates a database, and fails to create one
/// over a leftover `0.jnl`. A database directory without the marker is therefore a creation
/// that crashed before it finished: no data was ever written to it. Remove it so fjall can
/// create it afresh, but only after checking that it really holds nothing (no tables, journals
/// of zeros only); anything else is an error, never deleted.
fn remove_unfinished(db: &Path) -> Result<(), StoreError> {
    let keyspaces = db.join("keyspaces");
    let has_tables = match fs::read_dir(&keyspaces) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(StoreError::io(&keyspaces, e)),
    };
    let mut has_journal_data = false;
    for (_, journal) in fjall_journal::journal_files(db)? {
        let bytes = fs::read(&journal).map_err(|e| StoreError::io(&journal, e))?;
        has_journal_data |= bytes.iter().any(|b| *b != 0);
    }
    if has_tables || has_journal_data {
        return Err(StoreError::UnsupportedFormat {
            path: db.join(VERSION_FILE),
            found: "no fjall version marker, but the database holds data".into(),
        });
    }
    tracing::warn!(db = %db.display(), "removing an unfinished database creation (no version marker, no data)");
    fs::remove_dir_all(db).map_err(|e| StoreError::io(db, e))
}

/// Current wall-clock time in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn parent_or_cwd(dir: &Path) -> &Path {
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory, so a new entry in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}
