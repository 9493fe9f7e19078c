//! What the signaling service must not lose: accounts, devices, KeyPackages, MLS groups,
//! rooms and messages not yet delivered.
//!
//! [`Storage`] is the seam where a shared database can replace the embedded default when
//! one node is not enough (DESIGN §6); [`sqlite::SqliteStorage`] is that default.
//!
//! SQLite (rusqlite, bundled) rather than redb: the delivery service needs multi-row
//! transactions with secondary orderings (per-device queues by sequence, claims that delete
//! exactly one row, epoch fencing as a compare-and-set), which are one SQL statement each;
//! WAL mode survives `kill -9` without fsync on every write; and the schema carries over to
//! PostgreSQL when several nodes share state.

pub mod sqlite;

use sotto_proto::{DeviceAddr, DeviceId, Handle, RoomId};

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The handle.
    pub handle: Handle,
    /// Its Ed25519 identity key.
    pub identity_key: Vec<u8>,
    /// Its devices, in the order they were added.
    pub devices: Vec<DeviceId>,
}

/// A claimed KeyPackage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKeyPackage {
    /// Whose device it belongs to.
    pub device: DeviceAddr,
    /// The package.
    pub package: Vec<u8>,
    /// Whether it is the last-resort one (returned, not consumed).
    pub last_resort: bool,
}

/// A KeyPackage to store: its bytes and its MLS hash reference, by which a commit that
/// adds it names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKeyPackage {
    /// The serialized KeyPackage (an MLS message).
    pub package: Vec<u8>,
    /// Its hash reference (RFC 9420 §5.2).
    pub key_ref: Vec<u8>,
}

/// What an upload of KeyPackages left stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredKeyPackages {
    /// One-use packages the device now has.
    pub one_time: usize,
    /// Hash references of the packages the upload replaced that no claimer ever received:
    /// no Welcome can name them, so the device may delete their private keys.
    pub forgotten: Vec<Vec<u8>>,
}

/// An MLS group as the delivery service tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The current epoch.
    pub epoch: u64,
    /// Member devices and their leaves, as the server computed them from validated
    /// commits.
    pub members: Vec<(DeviceAddr, u32)>,
}

/// What an attempt to commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// It won: the group is now in this epoch.
    Accepted(u64),
    /// Another commit already took that epoch: this is the current one.
    Stale(u64),
    /// No such group.
    NoGroup,
}

/// A room as stored (who may join; who is in the call right now is session state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    /// The owner.
    pub owner: Handle,
    /// Handles invited, owner excluded.
    pub invited: Vec<Handle>,
}

/// A storage failure: the operation changed nothing.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

/// Result of storage operations.
pub type Result<T> = std::result::Result<T, StorageError>;

/// Durable state of the signaling service. Each method is atomic.
pub trait Storage: Send {
    /// Creates an account; `false` if the handle is taken.
    fn create_account(&mut self, handle: &Handle, identity_key: &[u8]) -> Result<bool>;
    /// The account of a handle.
    fn account(&self, handle: &Handle) -> Result<Option<Account>>;
    /// Adds a device to an account (idempotent).
    fn add_device(&mut self, device: &DeviceAddr) -> Result<()>;

    /// Stores one-use KeyPackages (after dropping the device's stored ones if `replace`)
    /// and, if given, replaces the last-resort one. Returns how many one-use packages the
    /// device now has, and which replaced packages nobody claimed.
    fn add_key_packages(
        &mut self,
        device: &DeviceAddr,
        packages: &[NewKeyPackage],
        last_resort: Option<&NewKeyPackage>,
        replace: bool,
    ) -> Result<StoredKeyPackages>;
    /// One-use KeyPackages stored for a device.
    fn key_package_count(&self, device: &DeviceAddr) -> Result<usize>;
    /// Takes one KeyPackage of `handle` (of `device` if given) for `claimer`: a one-use
    /// package is deleted as it is returned, so each goes to exactly one claimer; with none
    /// left, the last-resort package is returned and kept. Either way the claim (package
    /// reference, owner, claimer) is remembered for [`Self::key_package_owner`].
    fn claim_key_package(
        &mut self,
        handle: &Handle,
        device: Option<DeviceId>,
        claimer: &DeviceAddr,
    ) -> Result<Option<ClaimedKeyPackage>>;
    /// The device whose KeyPackage has this hash reference, if `claimer` claimed it and has
    /// not used the claim in a commit yet: how the server learns which device a commit
    /// adds, and why nobody can add a device with a package someone else claimed.
    fn key_package_owner(&self, key_ref: &[u8], claimer: &DeviceAddr)
    -> Result<Option<DeviceAddr>>;

    /// Appends an item to each device's queue, tagged with the MLS group it belongs to (so
    /// deleting the group drops it); returns the sequence numbers given.
    fn enqueue(&mut self, to: &[DeviceAddr], item: &[u8], group: Option<&[u8]>)
    -> Result<Vec<u64>>;
    /// Items waiting for a device.
    fn pending_count(&self, to: &DeviceAddr) -> Result<usize>;
    /// Items waiting for a device with sequence above `after`, oldest first.
    fn pending(&self, to: &DeviceAddr, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>>;
    /// Drops one item of a device's queue (acknowledgements are per message).
    fn ack(&mut self, to: &DeviceAddr, seq: u64) -> Result<()>;

    /// Registers a group at epoch 0 with `creator` at leaf 0 and its public MLS state;
    /// `false` if it exists.
    fn create_group(&mut self, group: &[u8], creator: &DeviceAddr, state: &[u8]) -> Result<bool>;
    /// A group's epoch and members.
    fn group(&self, group: &[u8]) -> Result<Option<Group>>;
    /// A group's public MLS state (the delivery service's `PublicGroup`, serialized).
    fn group_state(&self, group: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Replaces a group's public state within its epoch (a queued proposal).
    fn put_group_state(&mut self, group: &[u8], state: &[u8]) -> Result<()>;
    /// Epoch fencing: if the group is in `epoch`, moves it to `epoch + 1`, applies the
    /// membership change, stores the new public state and uses up `committer`'s claims of
    /// the `consumed` KeyPackages; otherwise reports the current epoch and changes nothing.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        group: &[u8],
        epoch: u64,
        added: &[(DeviceAddr, u32)],
        removed: &[u32],
        state: &[u8],
        committer: &DeviceAddr,
        consumed: &[Vec<u8>],
    ) -> Result<CommitOutcome>;
    /// Stores a member-signed GroupInfo for the group's `epoch` (replacing older ones).
    fn set_group_info(&mut self, group: &[u8], epoch: u64, info: &[u8]) -> Result<()>;
    /// The latest stored GroupInfo and its epoch.
    fn group_info(&self, group: &[u8]) -> Result<Option<(u64, Vec<u8>)>>;
    /// Deletes a group: its state, members, GroupInfo and every queued delivery tagged
    /// with it. Returns how many queued deliveries were dropped.
    fn delete_group(&mut self, group: &[u8]) -> Result<usize>;

    /// Creates a room owned by `owner`.
    fn create_room(&mut self, room: &RoomId, owner: &Handle) -> Result<()>;
    /// A room.
    fn room(&self, room: &RoomId) -> Result<Option<Room>>;
    /// Invites handles to a room (idempotent).
    fn invite(&mut self, room: &RoomId, handles: &[Handle]) -> Result<()>;
    /// Withdraws an invitation.
    fn uninvite(&mut self, room: &RoomId, handle: &Handle) -> Result<()>;
}
