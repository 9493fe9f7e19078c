//! A device's profile directory: who this device is, and whom it has met.
//!
//! ```text
//! <profile>/identity.key   Ed25519 seed, 32 bytes, mode 0600 (the account's identity key;
//!                          it also signs the MLS credentials)
//! <profile>/device         this device's id
//! <profile>/contacts.json  handle → pinned identity key, first seen, verified
//! <profile>/mls.db         openmls state (SQLite), so a restart loses no group state
//! ```
//! Contacts are pinned on first use. A contact whose identity key changes is refused for
//! calls until the user verifies it again: that is how a key-substituting server is caught.
//! Every file is written atomically (temporary file, fsync, rename).

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sotto_proto::DeviceId;

/// Why a profile operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file's content is not what this version writes.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The identity key file is readable by others.
    #[error("{path} is readable by other users (mode {mode:o}); it must be 0600")]
    InsecureKeyFile {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// A contact presented a different identity key than the one pinned.
    #[error(
        "the identity key of {handle} has changed (pinned {pinned}, now {presented}). \
         This can mean they reinstalled, or that someone is intercepting. Calls to and from \
         {handle} are refused until you compare safety numbers and run `sotto contacts verify {handle}`."
    )]
    KeyChanged {
        /// The contact.
        handle: String,
        /// Fingerprint of the pinned key.
        pinned: String,
        /// Fingerprint of the key now presented.
        presented: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError + '_ {
    move |source| ProfileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A short fingerprint of an identity key, for messages.
pub fn key_fingerprint(key: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(key)[..8])
}

/// One pinned contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The pinned identity key, hex.
    pub identity_key: String,
    /// When it was first seen (Unix seconds).
    pub first_seen: u64,
    /// Whether the user compared safety numbers and confirmed it.
    pub verified: bool,
}

/// The account this profile logs in to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The handle.
    pub handle: String,
    /// The signaling server address.
    pub server: String,
    /// The server certificate's SHA-256 fingerprint (pinned).
    pub pin: String,
}

/// A room this profile knows: one it created or was invited to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownRoom {
    /// A name given locally (`room create --name`); others never see it.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether this profile's account owns it.
    #[serde(default)]
    pub owned: bool,
    /// Who invited us.
    #[serde(default)]
    pub invited_by: Option<String>,
    /// When it was first known (Unix seconds).
    #[serde(default)]
    pub first_seen: u64,
}

/// What checking a contact's key found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactStatus {
    /// First contact: the key is now pinned.
    New,
    /// The pinned key, not yet verified by the user.
    Known,
    /// The pinned key, verified.
    Verified,
}

/// A device profile on disk.
#[derive(Debug)]
pub struct Profile {
    dir: PathBuf,
    identity: SigningKey,
    device: DeviceId,
    contacts: BTreeMap<String, Contact>,
    account: Option<Account>,
    rooms: BTreeMap<String, KnownRoom>,
}

impl Profile {
    /// The profile's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the profile in `dir`, creating it (mode 0700) with a fresh identity key and
    /// device id on first use.
    pub fn open(dir: &Path) -> Result<Self, ProfileError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let key_path = dir.join("identity.key");
        let identity = match fs::read(&key_path) {
            Ok(bytes) => {
                let mode = fs::metadata(&key_path)
                    .map_err(io(&key_path))?
                    .permissions()
                    .mode()
                    & 0o777;
                if mode & 0o077 != 0 {
                    return Err(ProfileError::InsecureKeyFile {
                        path: key_path,
                        mode,
                    });
                }
                let seed: [u8; 32] = bytes.try_into().map_err(|_| ProfileError::Corrupt {
                    path: key_path.clone(),
                    reason: "not a 32-byte Ed25519 seed".into(),
                })?;
                SigningKey::from_bytes(&seed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| ProfileError::Io {
                    path: key_path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                write_atomic(&key_path, &seed, 0o600)?;
                SigningKey::from_bytes(&seed)
            }
            Err(e) => return Err(io(&key_path)(e)),
        };
        let device_path = dir.join("device");
        let device = match fs::read_to_string(&device_path) {
            Ok(s) => s.trim().parse().map_err(|_| ProfileError::Corrupt {
                path: device_path.clone(),
                reason: "not a device id".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = [0u8; 4];
                getrandom::fill(&mut b).map_err(|e| ProfileError::Io {
                    path: device_path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let id = u32::from_be_bytes(b);
                write_atomic(&device_path, id.to_string().as_bytes(), 0o600)?;
                id
            }
            Err(e) => return Err(io(&device_path)(e)),
        };
        let contacts_path = dir.join("contacts.json");
        let contacts = match fs::read(&contacts_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ProfileError::Corrupt {
                path: contacts_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&contacts_path)(e)),
        };
        let rooms_path = dir.join("rooms.json");
        let rooms = match fs::read(&rooms_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ProfileError::Corrupt {
                path: rooms_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&rooms_path)(e)),
        };
        let account_path = dir.join("account.json");
        let account = match fs::read(&account_path) {
            Ok(bytes) => {
                Some(
                    serde_json::from_slice(&bytes).map_err(|e| ProfileError::Corrupt {
                        path: account_path.clone(),
                        reason: e.to_string(),
                    })?,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&account_path)(e)),
        };
        Ok(Self {
            dir: dir.to_owned(),
            identity,
            device,
            contacts,
            account,
            rooms,
        })
    }

    /// The identity key.
    pub fn identity(&self) -> &SigningKey {
        &self.identity
    }

    /// This device's id.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The account, once created.
    pub fn account(&self) -> Option<&Account> {
        self.account.as_ref()
    }

    /// Records the account this profile logs in to.
    pub fn set_account(&mut self, account: Account) -> Result<(), ProfileError> {
        let path = self.dir.join("account.json");
        let bytes = serde_json::to_vec_pretty(&account).map_err(|e| ProfileError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes, 0o600)?;
        self.account = Some(account);
        Ok(())
    }

    /// Where openmls keeps its state for this profile.
    pub fn mls_db(&self) -> PathBuf {
        self.dir.join("mls.db")
    }

    /// Pinned contacts, by handle.
    pub fn contacts(&self) -> &BTreeMap<String, Contact> {
        &self.contacts
    }

    /// Trust on first use: pins an unknown contact's key; accepts the pinned key; refuses a
    /// different one with [`ProfileError::KeyChanged`].
    pub fn check_contact(
        &mut self,
        handle: &str,
        key: &[u8],
    ) -> Result<ContactStatus, ProfileError> {
        let presented = hex::encode(key);
        match self.contacts.get(handle) {
            Some(c) if c.identity_key == presented => Ok(if c.verified {
                ContactStatus::Verified
            } else {
                ContactStatus::Known
            }),
            Some(c) => Err(ProfileError::KeyChanged {
                handle: handle.to_owned(),
                pinned: key_fingerprint(&hex::decode(&c.identity_key).unwrap_or_default()),
                presented: key_fingerprint(key),
            }),
            None => {
                self.contacts.insert(
                    handle.to_owned(),
                    Contact {
                        identity_key: presented,
                        first_seen: SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                        verified: false,
                    },
                );
                self.save_contacts()?;
                Ok(ContactStatus::New)
            }
        }
    }

    /// The user compared safety numbers: pin `key` for `handle` and mark it verified.
    pub fn verify_contact(&mut self, handle: &str, key: &[u8]) -> Result<(), ProfileError> {
        let first_seen = self.contacts.get(handle).map_or_else(
            || {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            },
            |c| c.first_seen,
        );
        self.contacts.insert(
            handle.to_owned(),
            Contact {
                identity_key: hex::encode(key),
                first_seen,
                verified: true,
            },
        );
        self.save_contacts()
    }

    /// Rooms this profile knows, by id (hex).
    pub fn rooms(&self) -> &BTreeMap<String, KnownRoom> {
        &self.rooms
    }

    /// Records a room (or what is new about it: a name, who invited us); what was known
    /// before is kept where `room` says nothing.
    pub fn remember_room(&mut self, id: &str, room: KnownRoom) -> Result<(), ProfileError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let entry = self
            .rooms
            .entry(id.to_owned())
            .or_insert_with(|| KnownRoom {
                first_seen: now,
                ..KnownRoom::default()
            });
        if room.name.is_some() {
            entry.name = room.name;
        }
        if room.invited_by.is_some() {
            entry.invited_by = room.invited_by;
        }
        entry.owned |= room.owned;
        let path = self.dir.join("rooms.json");
        let bytes = serde_json::to_vec_pretty(&self.rooms).map_err(|e| ProfileError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes, 0o600)
    }

    fn save_contacts(&self) -> Result<(), ProfileError> {
        let path = self.dir.join("contacts.json");
        let bytes =
            serde_json::to_vec_pretty(&self.contacts).map_err(|e| ProfileError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        write_atomic(&path, &bytes, 0o600)
    }
}

/// Writes a file atomically with `mode`: temporary file, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ProfileError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_device_persist_with_private_modes() {
        let dir = tempfile::tempdir().expect("dir");
        let p = Profile::open(dir.path()).expect("create");
        let key = p.identity().to_bytes();
        let device = p.device();
        let mode = fs::metadata(dir.path().join("identity.key"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let again = Profile::open(dir.path()).expect("reopen");
        assert_eq!((again.identity().to_bytes(), again.device()), (key, device));
        fs::set_permissions(
            dir.path().join("identity.key"),
            fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(matches!(
            Profile::open(dir.path()),
            Err(ProfileError::InsecureKeyFile { .. })
        ));
    }

    #[test]
    fn contacts_are_pinned_on_first_use_and_a_changed_key_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let mut p = Profile::open(dir.path()).expect("create");
        assert_eq!(
            p.check_contact("@bob", &[1; 32]).expect("new"),
            ContactStatus::New
        );
        assert_eq!(
            p.check_contact("@bob", &[1; 32]).expect("known"),
            ContactStatus::Known
        );
        let err = p.check_contact("@bob", &[2; 32]).expect_err("changed");
        assert!(err.to_string().contains("has changed"), "{err}");
        // Survives a restart.
        let mut p = Profile::open(dir.path()).expect("reopen");
        assert!(matches!(
            p.check_contact("@bob", &[2; 32]),
            Err(ProfileError::KeyChanged { .. })
        ));
        p.verify_contact("@bob", &[2; 32]).expect("verify");
        assert_eq!(
            p.check_contact("@bob", &[2; 32]).expect("verified"),
            ContactStatus::Verified
        );
    }
}
