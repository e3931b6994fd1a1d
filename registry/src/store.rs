//! Durable storage of operator overrides, behind a trait.
//!
//! Only operator changes are durable; leases and instances are ephemeral and
//! come back by re-registration after a restart (Eureka's `syncUp`). The
//! trait is shaped so an etcd backend could implement it: a put and a delete
//! per key, and a full load at start.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::model::{Key, Override};
use switchyard_time::sync::lock;

/// Where operator overrides live.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Every stored override.
    fn load(&self) -> Result<BTreeMap<Key, Override>, StoreError>;
    /// Stores (or replaces) one override.
    fn put(&self, key: &Key, value: &Override) -> Result<(), StoreError>;
    /// Removes one override.
    fn delete(&self, key: &Key) -> Result<(), StoreError>;
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StoreError {
    /// The file involved.
    pub path: String,
    /// What failed.
    pub message: String,
}

/// Keeps overrides in memory only (no `data_dir`).
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<BTreeMap<Key, Override>>,
}

/// Keeps overrides in `<dir>/overrides.json`, rewritten atomically
/// (write to a temporary file, fsync, rename) on each change. Overrides are
/// few and rarely change, so one small file beats an embedded database.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    data: Mutex<BTreeMap<Key, Override>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    key: Key,
    value: Override,
}

// === impl MemoryStore ===

impl Store for MemoryStore {
    fn load(&self) -> Result<BTreeMap<Key, Override>, StoreError> {
        Ok(lock(&self.data).clone())
    }

    fn put(&self, key: &Key, value: &Override) -> Result<(), StoreError> {
        lock(&self.data).insert(key.clone(), value.clone());
        Ok(())
    }

    fn delete(&self, key: &Key) -> Result<(), StoreError> {
        lock(&self.data).remove(key);
        Ok(())
    }
}

// === impl FileStore ===

impl FileStore {
    /// Opens (creating the directory if needed) and reads the file.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let err = |e: std::io::Error| StoreError {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        fs::create_dir_all(dir).map_err(err)?;
        let path = dir.join("overrides.json");
        let data = match fs::read(&path) {
            Ok(bytes) => {
                let records: Vec<Record> =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                records.into_iter().map(|r| (r.key, r.value)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(err(e)),
        };
        Ok(Self {
            path,
            data: Mutex::new(data),
        })
    }

    fn write(&self, data: &BTreeMap<Key, Override>) -> Result<(), StoreError> {
        let err = |e: std::io::Error| StoreError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        };
        let records: Vec<Record> = data
            .iter()
            .map(|(key, value)| Record {
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&records).map_err(|e| StoreError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = fs::File::create(&tmp).map_err(err)?;
        file.write_all(&bytes).map_err(err)?;
        file.sync_all().map_err(err)?;
        fs::rename(&tmp, &self.path).map_err(err)
    }
}

impl Store for FileStore {
    fn load(&self) -> Result<BTreeMap<Key, Override>, StoreError> {
        Ok(lock(&self.data).clone())
    }

    fn put(&self, key: &Key, value: &Override) -> Result<(), StoreError> {
        let mut data = lock(&self.data);
        let mut next = data.clone();
        next.insert(key.clone(), value.clone());
        self.write(&next)?;
        *data = next;
        Ok(())
    }

    fn delete(&self, key: &Key) -> Result<(), StoreError> {
        let mut data = lock(&self.data);
        let mut next = data.clone();
        if next.remove(key).is_some() {
            self.write(&next)?;
            *data = next;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::State;

    #[test]
    fn file_store_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("sy-store-{}", rand::random::<u64>()));
        let key = Key {
            service: "hello".into(),
            instance_id: "h1".into(),
        };
        let value = Override {
            state: Some(State::OutOfService),
            weight: Some(7),
            updated_at: std::time::SystemTime::UNIX_EPOCH,
            reason: "disk swap".into(),
            expires_at: Some(
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(60),
            ),
        };
        {
            let store = FileStore::open(&dir).expect("open");
            store.put(&key, &value).expect("put");
        }
        let store = FileStore::open(&dir).expect("reopen");
        assert_eq!(store.load().expect("load").get(&key), Some(&value));
        store.delete(&key).expect("delete");
        assert!(
            FileStore::open(&dir)
                .expect("reopen")
                .load()
                .expect("load")
                .is_empty()
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
