//! The manager's embedded store (redb): the whole state, written in one transaction after
//! every applied command, read back at start. A manager restart loses nothing, and revisions
//! continue from where they were.
//!
//! The state is small (a thin manager: no images, no logs), so it is kept whole rather than as
//! a log of commands; redb makes each write atomic and crash-safe.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

use super::command::{Applied, Command};
use super::error::ManagerError;
use super::ipam::PoolConfig;
use super::state::State;

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const CURRENT: &str = "current";
/// The cluster's secrets (CA key, tokens): kept beside the state, never served with it.
const TRUST: &str = "trust";

/// What `shoal init` made: the CA, the manager's certificate, the join tokens.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrustRecord {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub manager_cert_pem: String,
    pub manager_key_pem: String,
    pub tokens: super::tokens::JoinTokens,
}

/// Why the store failed; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("manager store {path}: {cause}")]
pub struct StoreError {
    pub path: PathBuf,
    pub cause: String,
}

/// Why a command was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The manager refused it (the user's request is wrong).
    #[error(transparent)]
    Refused(#[from] ManagerError),
    /// It could not be written down: nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS gave no random bytes for a key: nothing changed.
    #[error("the operating system's random source failed: no key could be drawn")]
    Entropy,
}

/// The state and where it is kept.
#[derive(Debug)]
pub struct Manager {
    state: State,
    trust: Option<TrustRecord>,
    db: Database,
    path: PathBuf,
}

impl Manager {
    /// Opens the store at `path`: the state it holds, or a new cluster (`pool`) if it is new.
    pub fn open(path: &Path, pool: PoolConfig) -> Result<Manager, ApplyError> {
        let fail = |cause: String| StoreError {
            path: path.to_owned(),
            cause,
        };
        let db = Database::create(path).map_err(|e| fail(e.to_string()))?;
        let stored = read(&db, CURRENT).map_err(fail)?;
        let trust = match read(&db, TRUST).map_err(fail)? {
            Some(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| fail(format!("the stored trust does not decode ({e})")))?,
            ),
            None => None,
        };
        let state = match stored {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| fail(format!("the stored state does not decode ({e}); restore a backup or start a new cluster")))?,
            None => State::init(pool)?,
        };
        let manager = Manager {
            state,
            trust,
            db,
            path: path.to_owned(),
        };
        manager.save(&manager.state)?;
        Ok(manager)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Applies a command and writes the new state down before it counts: if the write fails
    /// the command is not applied.
    pub fn apply(&mut self, command: Command) -> Result<Applied, ApplyError> {
        let mut next = self.state.clone();
        let applied = next.apply(command)?;
        self.save(&next)?;
        self.state = next;
        Ok(applied)
    }

    /// The cluster's CA and tokens, once `shoal init` made them.
    pub fn trust(&self) -> Option<&TrustRecord> {
        self.trust.as_ref()
    }

    /// Keeps the trust record (init, or a token rotation).
    pub fn set_trust(&mut self, record: TrustRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&record).map_err(|e| self.fail(e.to_string()))?;
        self.write(TRUST, &bytes)?;
        self.trust = Some(record);
        Ok(())
    }

    fn fail(&self, cause: String) -> StoreError {
        StoreError {
            path: self.path.clone(),
            cause,
        }
    }

    fn save(&self, state: &State) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).map_err(|e| self.fail(e.to_string()))?;
        self.write(CURRENT, &bytes)
    }

    /// One value under `key`, in one transaction.
    fn write(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let fail = |e: &dyn std::fmt::Display| self.fail(e.to_string());
        let tx = self.db.begin_write().map_err(|e| fail(&e))?;
        {
            let mut table = tx.open_table(STATE).map_err(|e| fail(&e))?;
            table.insert(key, bytes).map_err(|e| fail(&e))?;
        }
        tx.commit().map_err(|e| fail(&e))
    }
}

fn read(db: &Database, key: &str) -> Result<Option<Vec<u8>>, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let table = match tx.open_table(STATE) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let value = table.get(key).map_err(|e| e.to_string())?;
    Ok(value.map(|v| v.value().to_vec()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::manager::model::{NetworkSpec, ServiceSpec};

    /// A folder removed when the test ends, also when it fails.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("shoal-store-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_restarted_manager_has_everything_and_revisions_continue() {
        let dir = TempDir::new("restart");
        let path = dir.0.join("manager.redb");
        let revision = {
            let mut manager = Manager::open(&path, PoolConfig::default()).unwrap();
            manager
                .apply(Command::CreateNetwork(NetworkSpec {
                    name: "public".into(),
                    ..Default::default()
                }))
                .unwrap();
            let spec = ServiceSpec {
                name: "web".into(),
                ..Default::default()
            };
            manager.apply(Command::CreateService(spec)).unwrap();
            // A refused command changes nothing on disk either.
            let again = ServiceSpec {
                name: "web".into(),
                ..Default::default()
            };
            assert!(matches!(
                manager.apply(Command::CreateService(again)),
                Err(ApplyError::Refused(_))
            ));
            manager.state().revision
        };
        let mut manager = Manager::open(&path, PoolConfig::default()).unwrap();
        assert_eq!(manager.state().revision, revision);
        assert!(
            manager.state().service("web").is_ok() && manager.state().network("public").is_ok()
        );
        let applied = manager
            .apply(Command::ScaleService {
                service: "web".into(),
                replicas: 2,
            })
            .unwrap();
        assert_eq!(applied.revision, revision + 1);
    }

    #[test]
    fn a_store_that_is_not_ours_is_refused_with_its_path() {
        let dir = TempDir::new("garbage");
        let path = dir.0.join("manager.redb");
        std::fs::write(&path, b"not a database at all").unwrap();
        let err = Manager::open(&path, PoolConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("manager.redb"), "{err}");
    }
}
