//! The openmls provider: RustCrypto for crypto, and openmls's own SQLite storage provider
//! (`openmls_sqlite_storage`) for state — in memory for ephemeral devices (tests, bench),
//! in the profile's `mls.db` otherwise, so a restart loses no group state.

use std::path::Path;

use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use rusqlite::Connection;

use super::{MlsError, boxed};

/// Stored values as JSON.
#[derive(Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// Crypto and storage for one device.
pub struct Provider {
    crypto: RustCrypto,
    storage: SqliteStorageProvider<JsonCodec, Connection>,
}

impl Provider {
    /// State in memory only.
    pub fn in_memory() -> Result<Self, MlsError> {
        Self::with(
            Connection::open_in_memory()
                .map_err(|e| MlsError::local("opening MLS storage")(boxed(e)))?,
        )
    }

    /// State in the SQLite file at `path` (created if needed).
    pub fn open(path: &Path) -> Result<Self, MlsError> {
        Self::with(
            Connection::open(path).map_err(|e| MlsError::local("opening MLS storage")(boxed(e)))?,
        )
    }

    fn with(conn: Connection) -> Result<Self, MlsError> {
        let mut storage = SqliteStorageProvider::new(conn);
        storage
            .run_migrations()
            .map_err(|e| MlsError::local("preparing MLS storage")(boxed(e)))?;
        Ok(Self {
            crypto: RustCrypto::default(),
            storage,
        })
    }
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SqliteStorageProvider<JsonCodec, Connection>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}
