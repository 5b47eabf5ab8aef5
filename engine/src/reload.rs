//! What changes while the node runs: on SIGHUP the password file is read again and every shard
//! takes the new one on its next timer tick (10 ms), without dropping a call or a transaction.
//!
//! The signal thread reads and parses the file (never a shard: a shard must not block on disk),
//! then publishes the result here. A shard compares the generation with the one it has on each
//! tick, an atomic load, and only on a change takes the lock to clone the `Arc`. A file that
//! cannot be read or parsed changes nothing: the previous one stays in force and the reason is
//! logged.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::{info, warn};

use crate::auth::PasswordDb;
use crate::startup::read_password_file;

/// The password database as last read, shared by the signal thread and the shards.
#[derive(Debug)]
pub struct PasswordReload {
    path: PathBuf,
    current: Mutex<Arc<PasswordDb>>,
    generation: AtomicU64,
}

impl PasswordReload {
    /// The file at `path`, already read at start-up into `db`.
    pub fn new(path: PathBuf, db: Arc<PasswordDb>) -> PasswordReload {
        PasswordReload {
            path,
            current: Mutex::new(db),
            generation: AtomicU64::new(0),
        }
    }

    /// Reads the file again; on success the shards take it up. Returns what happened, for the
    /// log and for tests.
    pub fn reload(&self) -> Result<usize, String> {
        match read_password_file(&self.path) {
            Ok(db) => {
                let users = db.len();
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(db);
                self.generation.fetch_add(1, Ordering::Release);
                info!(path = %self.path.display(), users, "password file reloaded");
                Ok(users)
            }
            Err(e) => {
                warn!("password file not reloaded, the previous one stays in force: {e}");
                Err(e)
            }
        }
    }

    /// Bumped by every successful [`PasswordReload::reload`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The database as last read.
    pub fn current(&self) -> Arc<PasswordDb> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
