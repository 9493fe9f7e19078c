//! The embedded default: one SQLite database file in the data directory, WAL mode.
//!
//! WAL with `synchronous=NORMAL` keeps every committed transaction across a process crash
//! (`kill -9` included: the OS still holds the written pages); only a power loss can drop
//! the last transactions, never corrupt the file.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use sotto_proto::{DeviceAddr, DeviceId, Handle, RoomId};

use super::{
    Account, ClaimedKeyPackage, CommitOutcome, Group, NewKeyPackage, Result, Room, Storage,
    StorageError, StoredKeyPackages,
};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS accounts (
    handle TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    handle TEXT NOT NULL REFERENCES accounts(handle),
    device INTEGER NOT NULL,
    added INTEGER NOT NULL,
    PRIMARY KEY (handle, device)
);
CREATE TABLE IF NOT EXISTS key_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    handle TEXT NOT NULL,
    device INTEGER NOT NULL,
    last_resort INTEGER NOT NULL,
    package BLOB NOT NULL,
    key_ref BLOB NOT NULL,
    claimed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS key_packages_by_device ON key_packages (handle, device, last_resort, id);
CREATE INDEX IF NOT EXISTS key_packages_by_ref ON key_packages (key_ref);
CREATE TABLE IF NOT EXISTS claimed_key_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_ref BLOB NOT NULL,
    handle TEXT NOT NULL,
    device INTEGER NOT NULL,
    claimer_handle TEXT NOT NULL,
    claimer_device INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS claimed_by_ref ON claimed_key_packages (key_ref);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    handle TEXT NOT NULL,
    device INTEGER NOT NULL,
    item BLOB NOT NULL,
    grp BLOB
);
CREATE INDEX IF NOT EXISTS queue_by_device ON queue (handle, device, seq);
CREATE INDEX IF NOT EXISTS queue_by_group ON queue (grp);
CREATE TABLE IF NOT EXISTS groups (
    id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    state BLOB NOT NULL,
    info_epoch INTEGER,
    info BLOB
);
CREATE TABLE IF NOT EXISTS group_members (
    grp BLOB NOT NULL REFERENCES groups(id),
    leaf INTEGER NOT NULL,
    handle TEXT NOT NULL,
    device INTEGER NOT NULL,
    PRIMARY KEY (grp, leaf)
);
CREATE TABLE IF NOT EXISTS rooms (
    id BLOB PRIMARY KEY,
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS room_invites (
    room BLOB NOT NULL REFERENCES rooms(id),
    handle TEXT NOT NULL,
    PRIMARY KEY (room, handle)
);
";

/// SQLite-backed [`Storage`].
pub struct SqliteStorage {
    db: Connection,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::init(Connection::open(path)?)
    }

    /// A database in memory, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(db: Connection) -> Result<Self> {
        migrate(&db)?;
        db.execute_batch(SCHEMA)?;
        db.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self { db })
    }
}

/// `PRAGMA user_version` of the current schema.
const SCHEMA_VERSION: i64 = 4;

/// Claimed KeyPackage references remembered (a commit adds a claimed package within
/// seconds; older claims are forgotten first).
const CLAIMS_REMEMBERED: i64 = 100_000;

/// Brings an older database to [`SCHEMA_VERSION`] in one transaction (a crash midway
/// leaves it as it was, and the next start migrates again).
///
/// Schema 1 (before validated handshakes) has KeyPackages without hash references and
/// groups without public state, which this version cannot check: those are dropped
/// (devices upload new packages at login; 1:1 groups live for one call), and so are the
/// queued deliveries, which belong to those groups or repeat stored room invitations.
/// Schema 2 recorded claims without their claimer: those are dropped too. Schema 3 did
/// not mark a claimed last-resort package (assumed claimed). Accounts, devices and rooms
/// are kept.
fn migrate(db: &Connection) -> Result<()> {
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let table_exists = |name: &str| -> Result<bool> {
        Ok(db.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?)
    };
    if version >= SCHEMA_VERSION || !table_exists("accounts")? {
        return Ok(());
    }
    tracing::info!(
        from = version,
        to = SCHEMA_VERSION,
        "migrating the database"
    );
    let queue_has_group: bool = db.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('queue') WHERE name = 'grp'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    let mut steps = String::from("BEGIN;\n");
    if version < 2 {
        steps.push_str(
            "DROP TABLE IF EXISTS key_packages;
             DROP TABLE IF EXISTS group_members;
             DROP TABLE IF EXISTS groups;
             DELETE FROM queue;\n",
        );
        if !queue_has_group {
            steps.push_str("ALTER TABLE queue ADD COLUMN grp BLOB;\n");
        }
    }
    if version < 3 {
        steps.push_str("DROP TABLE IF EXISTS claimed_key_packages;\n");
    }
    let key_packages_have_claimed: bool = db.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('key_packages') WHERE name = 'claimed'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    // Before schema 2 the table is dropped above and made afresh, with the column.
    if version >= 2 && table_exists("key_packages")? && !key_packages_have_claimed {
        // Unknown for older rows: count them as claimed, so none is called forgotten.
        steps.push_str(
            "ALTER TABLE key_packages ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;
             UPDATE key_packages SET claimed = 1;\n",
        );
    }
    steps.push_str(&format!("PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"));
    db.execute_batch(&steps)?;
    Ok(())
}

fn handle(s: String) -> Result<Handle> {
    Handle::parse(&s).map_err(|e| StorageError(format!("stored handle {s:?} is invalid: {e}")))
}

fn device_id(v: i64) -> Result<DeviceId> {
    DeviceId::try_from(v).map_err(|_| StorageError(format!("stored device id {v} out of range")))
}

fn u64_of(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StorageError(format!("stored value {v} is negative")))
}

fn i64_of(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StorageError(format!("value {v} too large to store")))
}

impl Storage for SqliteStorage {
    fn create_account(&mut self, h: &Handle, identity_key: &[u8]) -> Result<bool> {
        let n = self.db.execute(
            "INSERT INTO accounts (handle, identity_key) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![h.as_str(), identity_key],
        )?;
        Ok(n == 1)
    }

    fn account(&self, h: &Handle) -> Result<Option<Account>> {
        let Some(identity_key) = self
            .db
            .query_row(
                "SELECT identity_key FROM accounts WHERE handle = ?1",
                [h.as_str()],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = self.db.prepare_cached(
            "SELECT device FROM devices WHERE handle = ?1 ORDER BY added, device",
        )?;
        let devices = stmt
            .query_map([h.as_str()], |r| r.get::<_, i64>(0))?
            .map(|d| d.map_err(StorageError::from).and_then(device_id))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Account {
            handle: h.clone(),
            identity_key,
            devices,
        }))
    }

    fn add_device(&mut self, d: &DeviceAddr) -> Result<()> {
        self.db.execute(
            "INSERT INTO devices (handle, device, added)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(added), 0) + 1 FROM devices WHERE handle = ?1))
             ON CONFLICT DO NOTHING",
            params![d.handle.as_str(), d.device],
        )?;
        Ok(())
    }

    fn add_key_packages(
        &mut self,
        d: &DeviceAddr,
        packages: &[NewKeyPackage],
        last_resort: Option<&NewKeyPackage>,
        replace: bool,
    ) -> Result<StoredKeyPackages> {
        let tx = self.db.transaction()?;
        let mut forgotten = Vec::new();
        {
            // What goes and was never handed out: a one-use package in the table is
            // unclaimed (a claim deletes it); a last-resort one says so itself.
            let mut dropped = tx.prepare_cached(
                "DELETE FROM key_packages WHERE handle = ?1 AND device = ?2 AND last_resort = ?3
                 RETURNING key_ref, claimed",
            )?;
            let mut drop_kind = |last_resort: bool| -> Result<()> {
                let rows = dropped
                    .query_map(params![d.handle.as_str(), d.device, last_resort], |r| {
                        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, bool>(1)?))
                    })?;
                for row in rows {
                    let (key_ref, claimed) = row?;
                    if !claimed {
                        forgotten.push(key_ref);
                    }
                }
                Ok(())
            };
            if replace {
                drop_kind(false)?;
            }
            if last_resort.is_some() {
                drop_kind(true)?;
            }
            let mut ins = tx.prepare_cached(
                "INSERT INTO key_packages (handle, device, last_resort, package, key_ref)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for p in packages {
                ins.execute(params![
                    d.handle.as_str(),
                    d.device,
                    0,
                    p.package,
                    p.key_ref
                ])?;
            }
            if let Some(p) = last_resort {
                ins.execute(params![
                    d.handle.as_str(),
                    d.device,
                    1,
                    p.package,
                    p.key_ref
                ])?;
            }
        }
        tx.commit()?;
        Ok(StoredKeyPackages {
            one_time: self.key_package_count(d)?,
            forgotten,
        })
    }

    fn key_package_count(&self, d: &DeviceAddr) -> Result<usize> {
        let n: i64 = self.db.query_row(
            "SELECT COUNT(*) FROM key_packages WHERE handle = ?1 AND device = ?2 AND last_resort = 0",
            params![d.handle.as_str(), d.device],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn claim_key_package(
        &mut self,
        h: &Handle,
        device: Option<DeviceId>,
        claimer: &DeviceAddr,
    ) -> Result<Option<ClaimedKeyPackage>> {
        let tx = self.db.transaction()?;
        let one_use = tx
            .query_row(
                "DELETE FROM key_packages WHERE id = (
                     SELECT id FROM key_packages
                     WHERE handle = ?1 AND (?2 IS NULL OR device = ?2) AND last_resort = 0
                     ORDER BY id LIMIT 1)
                 RETURNING device, package, key_ref",
                params![h.as_str(), device],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .optional()?;
        let found = match one_use {
            Some((d, p, key_ref)) => Some((d, p, key_ref, false)),
            None => tx
                .query_row(
                    "UPDATE key_packages SET claimed = 1 WHERE id = (
                         SELECT id FROM key_packages
                         WHERE handle = ?1 AND (?2 IS NULL OR device = ?2) AND last_resort = 1
                         ORDER BY id LIMIT 1)
                     RETURNING device, package, key_ref",
                    params![h.as_str(), device],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            true,
                        ))
                    },
                )
                .optional()?,
        };
        if let Some((d, _, key_ref, _)) = &found {
            tx.execute(
                "INSERT INTO claimed_key_packages (key_ref, handle, device, claimer_handle, claimer_device)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key_ref, h.as_str(), d, claimer.handle.as_str(), claimer.device],
            )?;
            tx.execute(
                "DELETE FROM claimed_key_packages WHERE id <= last_insert_rowid() - ?1",
                [CLAIMS_REMEMBERED],
            )?;
        }
        let found = found.map(|(d, p, _, last_resort)| (d, p, last_resort));
        tx.commit()?;
        found
            .map(|(d, package, last_resort)| {
                Ok(ClaimedKeyPackage {
                    device: DeviceAddr {
                        handle: h.clone(),
                        device: device_id(d)?,
                    },
                    package,
                    last_resort,
                })
            })
            .transpose()
    }

    fn key_package_owner(
        &self,
        key_ref: &[u8],
        claimer: &DeviceAddr,
    ) -> Result<Option<DeviceAddr>> {
        let row = self
            .db
            .query_row(
                "SELECT handle, device FROM claimed_key_packages
                 WHERE key_ref = ?1 AND claimer_handle = ?2 AND claimer_device = ?3
                 LIMIT 1",
                params![key_ref, claimer.handle.as_str(), claimer.device],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        row.map(|(h, d)| {
            Ok(DeviceAddr {
                handle: handle(h)?,
                device: device_id(d)?,
            })
        })
        .transpose()
    }

    fn enqueue(
        &mut self,
        to: &[DeviceAddr],
        item: &[u8],
        group: Option<&[u8]>,
    ) -> Result<Vec<u64>> {
        let tx = self.db.transaction()?;
        let mut seqs = Vec::with_capacity(to.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO queue (handle, device, item, grp) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for d in to {
                ins.execute(params![d.handle.as_str(), d.device, item, group])?;
                seqs.push(u64_of(tx.last_insert_rowid())?);
            }
        }
        tx.commit()?;
        Ok(seqs)
    }

    fn pending_count(&self, to: &DeviceAddr) -> Result<usize> {
        let n: i64 = self.db.query_row(
            "SELECT COUNT(*) FROM queue WHERE handle = ?1 AND device = ?2",
            params![to.handle.as_str(), to.device],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn pending(&self, to: &DeviceAddr, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT seq, item FROM queue WHERE handle = ?1 AND device = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                to.handle.as_str(),
                to.device,
                i64_of(after)?,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )?;
        rows.map(|r| {
            let (s, item) = r?;
            Ok((u64_of(s)?, item))
        })
        .collect()
    }

    fn ack(&mut self, to: &DeviceAddr, seq: u64) -> Result<()> {
        self.db.execute(
            "DELETE FROM queue WHERE handle = ?1 AND device = ?2 AND seq = ?3",
            params![to.handle.as_str(), to.device, i64_of(seq)?],
        )?;
        Ok(())
    }

    fn create_group(&mut self, group: &[u8], creator: &DeviceAddr, state: &[u8]) -> Result<bool> {
        let tx = self.db.transaction()?;
        let n = tx.execute(
            "INSERT INTO groups (id, epoch, state) VALUES (?1, 0, ?2) ON CONFLICT DO NOTHING",
            params![group, state],
        )?;
        if n == 1 {
            tx.execute(
                "INSERT INTO group_members (grp, leaf, handle, device) VALUES (?1, 0, ?2, ?3)",
                params![group, creator.handle.as_str(), creator.device],
            )?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    fn group(&self, group: &[u8]) -> Result<Option<Group>> {
        let Some(epoch) = self
            .db
            .query_row("SELECT epoch FROM groups WHERE id = ?1", [group], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = self.db.prepare_cached(
            "SELECT handle, device, leaf FROM group_members WHERE grp = ?1 ORDER BY leaf",
        )?;
        let members = stmt
            .query_map([group], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .map(|row| {
                let (h, d, leaf) = row?;
                Ok((
                    DeviceAddr {
                        handle: handle(h)?,
                        device: device_id(d)?,
                    },
                    u32::try_from(leaf)
                        .map_err(|_| StorageError(format!("leaf {leaf} out of range")))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Group {
            epoch: u64_of(epoch)?,
            members,
        }))
    }

    fn group_state(&self, group: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .query_row("SELECT state FROM groups WHERE id = ?1", [group], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()?)
    }

    fn put_group_state(&mut self, group: &[u8], state: &[u8]) -> Result<()> {
        self.db.execute(
            "UPDATE groups SET state = ?2 WHERE id = ?1",
            params![group, state],
        )?;
        Ok(())
    }

    fn commit(
        &mut self,
        group: &[u8],
        epoch: u64,
        added: &[(DeviceAddr, u32)],
        removed: &[u32],
        state: &[u8],
        committer: &DeviceAddr,
        consumed: &[Vec<u8>],
    ) -> Result<CommitOutcome> {
        let tx = self.db.transaction()?;
        let n = tx.execute(
            "UPDATE groups SET epoch = epoch + 1, state = ?3 WHERE id = ?1 AND epoch = ?2",
            params![group, i64_of(epoch)?, state],
        )?;
        if n == 0 {
            let current = tx
                .query_row("SELECT epoch FROM groups WHERE id = ?1", [group], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()?;
            return match current {
                Some(e) => Ok(CommitOutcome::Stale(u64_of(e)?)),
                None => Ok(CommitOutcome::NoGroup),
            };
        }
        for leaf in removed {
            tx.execute(
                "DELETE FROM group_members WHERE grp = ?1 AND leaf = ?2",
                params![group, leaf],
            )?;
        }
        for (d, leaf) in added {
            tx.execute(
                "INSERT OR REPLACE INTO group_members (grp, leaf, handle, device) VALUES (?1, ?2, ?3, ?4)",
                params![group, leaf, d.handle.as_str(), d.device],
            )?;
        }
        for key_ref in consumed {
            tx.execute(
                "DELETE FROM claimed_key_packages WHERE id = (
                     SELECT id FROM claimed_key_packages
                     WHERE key_ref = ?1 AND claimer_handle = ?2 AND claimer_device = ?3
                     ORDER BY id LIMIT 1)",
                params![key_ref, committer.handle.as_str(), committer.device],
            )?;
        }
        tx.commit()?;
        Ok(CommitOutcome::Accepted(epoch + 1))
    }

    fn set_group_info(&mut self, group: &[u8], epoch: u64, info: &[u8]) -> Result<()> {
        self.db.execute(
            "UPDATE groups SET info_epoch = ?2, info = ?3
             WHERE id = ?1 AND (info_epoch IS NULL OR info_epoch <= ?2)",
            params![group, i64_of(epoch)?, info],
        )?;
        Ok(())
    }

    fn group_info(&self, group: &[u8]) -> Result<Option<(u64, Vec<u8>)>> {
        let row = self
            .db
            .query_row(
                "SELECT info_epoch, info FROM groups WHERE id = ?1 AND info IS NOT NULL",
                [group],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        row.map(|(e, info)| Ok((u64_of(e)?, info))).transpose()
    }

    fn delete_group(&mut self, group: &[u8]) -> Result<usize> {
        let tx = self.db.transaction()?;
        tx.execute("DELETE FROM group_members WHERE grp = ?1", [group])?;
        tx.execute("DELETE FROM groups WHERE id = ?1", [group])?;
        let dropped = tx.execute("DELETE FROM queue WHERE grp = ?1", [group])?;
        tx.commit()?;
        Ok(dropped)
    }

    fn create_room(&mut self, room: &RoomId, owner: &Handle) -> Result<()> {
        self.db.execute(
            "INSERT INTO rooms (id, owner) VALUES (?1, ?2)",
            params![&room.0[..], owner.as_str()],
        )?;
        Ok(())
    }

    fn room(&self, room: &RoomId) -> Result<Option<Room>> {
        let Some(owner) = self
            .db
            .query_row(
                "SELECT owner FROM rooms WHERE id = ?1",
                [&room.0[..]],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = self
            .db
            .prepare_cached("SELECT handle FROM room_invites WHERE room = ?1 ORDER BY handle")?;
        let invited = stmt
            .query_map([&room.0[..]], |r| r.get::<_, String>(0))?
            .map(|h| handle(h?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Room {
            owner: handle(owner)?,
            invited,
        }))
    }

    fn invite(&mut self, room: &RoomId, handles: &[Handle]) -> Result<()> {
        let tx = self.db.transaction()?;
        for h in handles {
            tx.execute(
                "INSERT INTO room_invites (room, handle) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![&room.0[..], h.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn uninvite(&mut self, room: &RoomId, h: &Handle) -> Result<()> {
        self.db.execute(
            "DELETE FROM room_invites WHERE room = ?1 AND handle = ?2",
            params![&room.0[..], h.as_str()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(h: &str, d: DeviceId) -> DeviceAddr {
        DeviceAddr {
            handle: Handle::parse(h).expect("handle"),
            device: d,
        }
    }

    #[test]
    fn accounts_and_devices() {
        let mut s = SqliteStorage::in_memory().expect("db");
        let alice = Handle::parse("@alice").expect("handle");
        assert!(s.create_account(&alice, &[1; 32]).expect("create"));
        assert!(
            !s.create_account(&alice, &[2; 32]).expect("create"),
            "taken"
        );
        s.add_device(&addr("@alice", 7)).expect("dev");
        s.add_device(&addr("@alice", 3)).expect("dev");
        s.add_device(&addr("@alice", 7)).expect("idempotent");
        let a = s.account(&alice).expect("get").expect("exists");
        assert_eq!((a.identity_key, a.devices), (vec![1; 32], vec![7, 3]));
    }

    fn kp(b: u8) -> NewKeyPackage {
        NewKeyPackage {
            package: vec![b],
            key_ref: vec![b, b],
        }
    }

    #[test]
    fn key_packages_are_claimed_once_and_last_resort_is_kept() {
        let mut s = SqliteStorage::in_memory().expect("db");
        let bob = Handle::parse("@bob").expect("handle");
        s.create_account(&bob, &[1; 32]).expect("create");
        let d = addr("@bob", 1);
        s.add_device(&d).expect("dev");
        assert_eq!(
            s.add_key_packages(&d, &[kp(1), kp(2)], Some(&kp(9)), false)
                .expect("add"),
            StoredKeyPackages {
                one_time: 2,
                forgotten: vec![]
            }
        );
        let carol = addr("@carol", 1);
        assert_eq!(
            s.key_package_owner(&[1, 1], &carol).expect("owner"),
            None,
            "not claimed yet"
        );
        let c = |s: &mut SqliteStorage| {
            s.claim_key_package(&bob, None, &addr("@carol", 1))
                .expect("claim")
                .map(|c| (c.package, c.last_resort))
        };
        assert_eq!(c(&mut s), Some((vec![1], false)));
        assert_eq!(
            s.key_package_owner(&[1, 1], &carol).expect("owner"),
            Some(d.clone())
        );
        assert_eq!(
            s.key_package_owner(&[1, 1], &addr("@mallory", 1))
                .expect("owner"),
            None,
            "only the claimer may add with it"
        );
        // A commit uses the claim up.
        s.create_group(b"g", &carol, b"s").expect("group");
        s.commit(
            b"g",
            0,
            &[(d.clone(), 1)],
            &[],
            b"s1",
            &carol,
            &[vec![1, 1]],
        )
        .expect("commit");
        assert_eq!(s.key_package_owner(&[1, 1], &carol).expect("owner"), None);
        assert_eq!(c(&mut s), Some((vec![2], false)));
        assert_eq!(c(&mut s), Some((vec![9], true)));
        assert_eq!(
            c(&mut s),
            Some((vec![9], true)),
            "last resort is never consumed"
        );
        assert_eq!(
            s.add_key_packages(&d, &[], Some(&kp(10)), false)
                .expect("replace last resort")
                .forgotten,
            Vec::<Vec<u8>>::new(),
            "a claimed last-resort package may still be named by a Welcome"
        );
        assert_eq!(c(&mut s), Some((vec![10], true)));
        assert_eq!(
            s.claim_key_package(&bob, Some(2), &carol).expect("claim"),
            None
        );
        // A last-resort claim is the claimer's too.
        assert_eq!(
            s.key_package_owner(&[10, 10], &carol).expect("owner"),
            Some(d.clone())
        );
        // A restarted device replaces its one-use packages instead of adding to them, and
        // learns which of the replaced ones nobody received.
        s.add_key_packages(&d, &[kp(3), kp(4)], Some(&kp(11)), false)
            .expect("add");
        assert_eq!(
            s.add_key_packages(&d, &[kp(5)], Some(&kp(12)), true)
                .expect("replace"),
            StoredKeyPackages {
                one_time: 1,
                forgotten: vec![vec![3, 3], vec![4, 4], vec![11, 11]]
            }
        );
        assert_eq!(c(&mut s), Some((vec![5], false)));
        assert_eq!(
            s.add_key_packages(&d, &[kp(6)], None, true)
                .expect("replace")
                .forgotten,
            Vec::<Vec<u8>>::new(),
            "the claimed one is gone from the table; the last resort stays"
        );
    }

    #[test]
    fn a_schema_1_database_opens() {
        let db = Connection::open_in_memory().expect("db");
        // Schema 1: KeyPackages without hash references (nor a claimed column).
        db.execute_batch(
            "CREATE TABLE accounts (handle TEXT PRIMARY KEY, identity_key BLOB NOT NULL);
             CREATE TABLE key_packages (id INTEGER PRIMARY KEY AUTOINCREMENT, handle TEXT NOT NULL,
                 device INTEGER NOT NULL, last_resort INTEGER NOT NULL, package BLOB NOT NULL);
             CREATE TABLE queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, handle TEXT NOT NULL,
                 device INTEGER NOT NULL, item BLOB NOT NULL);
             INSERT INTO accounts VALUES ('@bob', x'01');",
        )
        .expect("old schema");
        db.pragma_update(None, "user_version", 1).expect("version");
        let mut s = SqliteStorage::init(db).expect("migrated");
        let bob = Handle::parse("@bob").expect("handle");
        assert!(s.account(&bob).expect("account").is_some(), "accounts kept");
        s.add_device(&addr("@bob", 1)).expect("device");
        assert_eq!(
            s.add_key_packages(&addr("@bob", 1), &[kp(1)], None, true)
                .expect("add")
                .one_time,
            1
        );
    }

    #[test]
    fn a_schema_3_database_counts_its_packages_as_claimed() {
        let db = Connection::open_in_memory().expect("db");
        db.execute_batch(&SCHEMA.replace(",\n    claimed INTEGER NOT NULL DEFAULT 0", ""))
            .expect("old schema");
        db.pragma_update(None, "user_version", 3).expect("version");
        db.execute(
            "INSERT INTO accounts (handle, identity_key) VALUES ('@bob', x'01')",
            [],
        )
        .expect("account");
        db.execute(
            "INSERT INTO key_packages (handle, device, last_resort, package, key_ref)
             VALUES ('@bob', 1, 1, x'09', x'0909')",
            [],
        )
        .expect("package");
        let mut s = SqliteStorage::init(db).expect("migrated");
        let d = addr("@bob", 1);
        assert_eq!(
            s.add_key_packages(&d, &[kp(1)], Some(&kp(2)), true)
                .expect("replace")
                .forgotten,
            Vec::<Vec<u8>>::new(),
            "it may have been claimed"
        );
    }

    #[test]
    fn queue_is_ordered_and_acked() {
        let mut s = SqliteStorage::in_memory().expect("db");
        let (a, b) = (addr("@alice", 1), addr("@bob", 1));
        let s1 = s
            .enqueue(&[a.clone(), b.clone()], b"one", None)
            .expect("enq");
        let s2 = s
            .enqueue(std::slice::from_ref(&a), b"two", Some(b"g"))
            .expect("enq");
        let s3 = s
            .enqueue(std::slice::from_ref(&a), b"three", None)
            .expect("enq");
        assert!(s2[0] > s1[0]);
        let items: Vec<Vec<u8>> = s
            .pending(&a, 0, 10)
            .expect("pending")
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(
            items,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        // Acknowledgements are per message: acking the third keeps the first two.
        s.ack(&a, s3[0]).expect("ack");
        assert_eq!(s.pending_count(&a).expect("count"), 2);
        s.ack(&a, s1[0]).expect("ack");
        assert_eq!(s.pending_count(&a).expect("count"), 1);
        assert_eq!(s.pending_count(&b).expect("count"), 1);
        // Deleting a group drops what was queued for it.
        s.create_group(b"g", &a, b"state").expect("group");
        assert_eq!(s.delete_group(b"g").expect("delete"), 1);
        assert_eq!(s.pending_count(&a).expect("count"), 0);
        assert_eq!(s.group(b"g").expect("group"), None);
    }

    #[test]
    fn commits_are_fenced_per_epoch() {
        let mut s = SqliteStorage::in_memory().expect("db");
        let a = addr("@alice", 1);
        assert!(s.create_group(b"g", &a, b"s0").expect("create"));
        assert!(!s.create_group(b"g", &a, b"other").expect("create"));
        let b = addr("@bob", 1);
        assert_eq!(
            s.commit(b"g", 0, &[(b.clone(), 1)], &[], b"s1", &a, &[])
                .expect("commit"),
            CommitOutcome::Accepted(1)
        );
        assert_eq!(
            s.commit(b"g", 0, &[], &[1], b"lost", &a, &[])
                .expect("commit"),
            CommitOutcome::Stale(1)
        );
        assert_eq!(s.group_state(b"g").expect("state"), Some(b"s1".to_vec()));
        assert_eq!(
            s.commit(b"nope", 0, &[], &[], b"x", &a, &[])
                .expect("commit"),
            CommitOutcome::NoGroup
        );
        s.set_group_info(b"g", 1, b"info1").expect("info");
        s.set_group_info(b"g", 0, b"older").expect("info");
        assert_eq!(
            s.group_info(b"g").expect("info"),
            Some((1, b"info1".to_vec()))
        );
        assert_eq!(
            s.group(b"g").expect("g").expect("exists").members,
            vec![(a.clone(), 0), (b, 1)]
        );
        assert_eq!(
            s.commit(b"g", 1, &[], &[1], b"s2", &a, &[])
                .expect("commit"),
            CommitOutcome::Accepted(2)
        );
        assert_eq!(
            s.group(b"g").expect("g").expect("exists").members,
            vec![(a, 0)]
        );
    }

    #[test]
    fn rooms_and_invites() {
        let mut s = SqliteStorage::in_memory().expect("db");
        let room = RoomId([4; 16]);
        let (o, x) = (
            Handle::parse("@owner").expect("h"),
            Handle::parse("@xavier").expect("h"),
        );
        s.create_room(&room, &o).expect("room");
        s.invite(&room, &[x.clone(), x.clone()]).expect("invite");
        assert_eq!(
            s.room(&room).expect("room"),
            Some(Room {
                owner: o,
                invited: vec![x.clone()]
            })
        );
        s.uninvite(&room, &x).expect("uninvite");
        assert!(
            s.room(&room)
                .expect("room")
                .expect("exists")
                .invited
                .is_empty()
        );
    }
}
