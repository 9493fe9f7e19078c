//! A signaling server that lies about keys, for tests that clients catch it: the real
//! server with its storage wrapped, so every answer is the real protocol except the one
//! the attack changes. It answers directory lookups honestly (so trust on first use and
//! directory checks alone would pass) and substitutes MLS material underneath.

use std::sync::{Arc, Mutex};

use sotto_client::mls::MlsDevice;
use sotto_proto::{DeviceAddr, DeviceId, Handle, MlsKind, RoomId, Stored};
use sotto_signaling::storage::{
    Account, ClaimedKeyPackage, CommitOutcome, Group, NewKeyPackage, Result, Room, Storage,
    StoredKeyPackages,
};

/// What the hostile server does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Nothing: an honest server (the control).
    None,
    /// Hands out a KeyPackage of its own (credential naming the victim, its own key)
    /// when anyone claims one of `victim`'s.
    SubstituteKeyPackage,
    /// The same for the first claim only, and then also accepts a commit that adds it,
    /// as the victim's device (as a server that gave up checking would): a careless
    /// member's commit brings the substitute into the group.
    SubstituteKeyPackageOnce,
    /// Replaces the Welcome for a 1:1 call with one for a group of its own making, in
    /// which a member of its own claims to be the caller.
    SubstituteWelcomeMember,
    /// Flips a bit in the membership tag (a MAC the server cannot check) of the first
    /// commit it delivers to the victim, after accepting it: the victim cannot process an
    /// accepted commit.
    CorruptFirstCommitTag,
    /// The same, and then hands the victim, who asks for the GroupInfo to rejoin, one of
    /// a group of its own making with the call's id (two members of its own).
    CorruptCommitThenForgeGroupInfo,
}

/// What the attacker saw and did, for the test's assertions.
#[derive(Debug, Default)]
pub struct Log {
    /// KeyPackages substituted.
    pub packages_substituted: u32,
    /// Welcomes substituted.
    pub welcomes_substituted: u32,
    /// Commits whose tag was corrupted on the way to the victim.
    pub commits_corrupted: u32,
    /// GroupInfos forged.
    pub group_infos_forged: u32,
    /// Commits the delivery service accepted, by group.
    pub commits: Vec<Vec<u8>>,
}

/// The wrapping storage.
pub struct Hostile {
    inner: Box<dyn Storage>,
    attack: Attack,
    victim: Handle,
    impostor: Handle,
    /// The attacker's own MLS identities (kept alive: their groups' secrets are theirs).
    attackers: Mutex<Vec<MlsDevice>>,
    /// Substituted packages: the claimer, and the device the server is to say it is.
    substituted: Mutex<Vec<(DeviceAddr, DeviceAddr)>>,
    log: Arc<Mutex<Log>>,
}

impl Hostile {
    /// Wraps `inner`. `victim` is whose KeyPackages are substituted; `impostor` is the
    /// handle the attacker's own member claims in a substituted Welcome.
    pub fn wrap(
        inner: Box<dyn Storage>,
        attack: Attack,
        victim: &str,
        impostor: &str,
        log: Arc<Mutex<Log>>,
    ) -> Box<dyn Storage> {
        Box::new(Self {
            inner,
            attack,
            victim: crate::h(victim),
            impostor: crate::h(impostor),
            attackers: Mutex::new(Vec::new()),
            substituted: Mutex::new(Vec::new()),
            log,
        })
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A Welcome into the attacker's own group `id`: an attacker member naming the
    /// impostor, and the recipient (through one of its real KeyPackages, which the server
    /// holds anyway).
    fn forged_welcome(&mut self, id: &[u8], recipient: &DeviceAddr) -> Option<Vec<u8>> {
        let package = self
            .inner
            .claim_key_package(&recipient.handle, Some(recipient.device), recipient)
            .ok()??
            .package;
        let attacker = MlsDevice::new(self.impostor.as_str()).ok()?;
        let mut group = attacker.create_group_with_id(id).ok()?;
        let commit = group.add(&attacker, &[package]).ok()?;
        group.merge_pending(&attacker).ok()?;
        self.keep(attacker);
        commit.welcome
    }

    fn keep(&self, attacker: MlsDevice) {
        self.attackers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(attacker);
    }

    /// The GroupInfo of a group of the attacker's own with id `id`: two members, neither
    /// of them anyone the victim knows.
    fn forged_group_info(&self, id: &[u8]) -> Option<Vec<u8>> {
        let ghost = MlsDevice::new("@ghost1").ok()?;
        let other = MlsDevice::new("@ghost2").ok()?;
        let mut group = ghost.create_group_with_id(id).ok()?;
        let commit = group.add(&ghost, &[other.key_package().ok()?]).ok()?;
        group.merge_pending(&ghost).ok()?;
        self.keep(ghost);
        self.keep(other);
        commit.group_info
    }
}

impl Storage for Hostile {
    fn create_account(&mut self, handle: &Handle, identity_key: &[u8]) -> Result<bool> {
        self.inner.create_account(handle, identity_key)
    }
    fn account(&self, handle: &Handle) -> Result<Option<Account>> {
        self.inner.account(handle)
    }
    fn add_device(&mut self, device: &DeviceAddr) -> Result<()> {
        self.inner.add_device(device)
    }
    fn add_key_packages(
        &mut self,
        device: &DeviceAddr,
        packages: &[NewKeyPackage],
        last_resort: Option<&NewKeyPackage>,
        replace: bool,
    ) -> Result<StoredKeyPackages> {
        self.inner
            .add_key_packages(device, packages, last_resort, replace)
    }
    fn key_package_count(&self, device: &DeviceAddr) -> Result<usize> {
        self.inner.key_package_count(device)
    }
    fn claim_key_package(
        &mut self,
        handle: &Handle,
        device: Option<DeviceId>,
        claimer: &DeviceAddr,
    ) -> Result<Option<ClaimedKeyPackage>> {
        let real = self.inner.claim_key_package(handle, device, claimer)?;
        let once = self.attack == Attack::SubstituteKeyPackageOnce;
        if !(self.attack == Attack::SubstituteKeyPackage
            || once && self.log().packages_substituted == 0)
            || *handle != self.victim
        {
            return Ok(real);
        }
        let Some(real) = real else { return Ok(None) };
        if once {
            self.substituted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((claimer.clone(), real.device.clone()));
        }
        let attacker = MlsDevice::new(handle.as_str())
            .map_err(|e| sotto_signaling::storage::StorageError(e.to_string()))?;
        let package = attacker
            .key_package()
            .map_err(|e| sotto_signaling::storage::StorageError(e.to_string()))?;
        self.keep(attacker);
        self.log().packages_substituted += 1;
        Ok(Some(ClaimedKeyPackage { package, ..real }))
    }
    fn key_package_owner(
        &self,
        key_ref: &[u8],
        claimer: &DeviceAddr,
    ) -> Result<Option<DeviceAddr>> {
        let real = self.inner.key_package_owner(key_ref, claimer)?;
        if real.is_some() {
            return Ok(real);
        }
        // A package the server never stored: the substitute, if this claimer got one.
        let subs = self
            .substituted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(subs
            .iter()
            .find(|(c, _)| c == claimer)
            .map(|(_, d)| d.clone()))
    }
    fn enqueue(
        &mut self,
        to: &[DeviceAddr],
        item: &[u8],
        group: Option<&[u8]>,
    ) -> Result<Vec<u64>> {
        if self.attack == Attack::SubstituteWelcomeMember
            && let [recipient] = to
            && let Ok(Stored::Mls {
                group: g,
                kind: MlsKind::Welcome,
                epoch,
                from,
                ..
            }) = sotto_proto::decode::<Stored>(item)
            && let Some(forged) = self.forged_welcome(&g, recipient)
        {
            let swapped = Stored::Mls {
                group: g,
                kind: MlsKind::Welcome,
                epoch,
                from,
                data: forged,
            };
            let bytes = sotto_proto::encode(&swapped)
                .map_err(|e| sotto_signaling::storage::StorageError(e.to_string()))?;
            self.log().welcomes_substituted += 1;
            return self.inner.enqueue(to, &bytes, group);
        }
        if matches!(
            self.attack,
            Attack::CorruptFirstCommitTag | Attack::CorruptCommitThenForgeGroupInfo
        ) && self.log().commits_corrupted == 0
            && let [recipient] = to
            && recipient.handle == self.victim
            && let Ok(Stored::Mls {
                group: g,
                kind: MlsKind::Commit,
                epoch,
                from,
                mut data,
            }) = sotto_proto::decode::<Stored>(item)
            && from.handle != self.victim
            && let Some(last) = data.last_mut()
        {
            *last ^= 0x01;
            let tampered = Stored::Mls {
                group: g,
                kind: MlsKind::Commit,
                epoch,
                from,
                data,
            };
            let bytes = sotto_proto::encode(&tampered)
                .map_err(|e| sotto_signaling::storage::StorageError(e.to_string()))?;
            self.log().commits_corrupted += 1;
            return self.inner.enqueue(to, &bytes, group);
        }
        self.inner.enqueue(to, item, group)
    }
    fn pending_count(&self, to: &DeviceAddr) -> Result<usize> {
        self.inner.pending_count(to)
    }
    fn pending(&self, to: &DeviceAddr, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.inner.pending(to, after, limit)
    }
    fn ack(&mut self, to: &DeviceAddr, seq: u64) -> Result<()> {
        self.inner.ack(to, seq)
    }
    fn create_group(&mut self, group: &[u8], creator: &DeviceAddr, state: &[u8]) -> Result<bool> {
        self.inner.create_group(group, creator, state)
    }
    fn group(&self, group: &[u8]) -> Result<Option<Group>> {
        self.inner.group(group)
    }
    fn group_state(&self, group: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.group_state(group)
    }
    fn put_group_state(&mut self, group: &[u8], state: &[u8]) -> Result<()> {
        self.inner.put_group_state(group, state)
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
        let outcome = self
            .inner
            .commit(group, epoch, added, removed, state, committer, consumed)?;
        if matches!(outcome, CommitOutcome::Accepted(_)) {
            self.log().commits.push(group.to_vec());
        }
        Ok(outcome)
    }
    fn set_group_info(&mut self, group: &[u8], epoch: u64, info: &[u8]) -> Result<()> {
        self.inner.set_group_info(group, epoch, info)
    }
    fn group_info(&self, group: &[u8]) -> Result<Option<(u64, Vec<u8>)>> {
        let real = self.inner.group_info(group)?;
        if self.attack == Attack::CorruptCommitThenForgeGroupInfo
            && self.log().commits_corrupted > 0
            && let Some((epoch, _)) = real
            && let Some(forged) = self.forged_group_info(group)
        {
            self.log().group_infos_forged += 1;
            return Ok(Some((epoch, forged)));
        }
        Ok(real)
    }
    fn delete_group(&mut self, group: &[u8]) -> Result<usize> {
        self.inner.delete_group(group)
    }
    fn create_room(&mut self, room: &RoomId, owner: &Handle) -> Result<()> {
        self.inner.create_room(room, owner)
    }
    fn room(&self, room: &RoomId) -> Result<Option<Room>> {
        self.inner.room(room)
    }
    fn invite(&mut self, room: &RoomId, handles: &[Handle]) -> Result<()> {
        self.inner.invite(room, handles)
    }
    fn uninvite(&mut self, room: &RoomId, handle: &Handle) -> Result<()> {
        self.inner.uninvite(room, handle)
    }
}

/// How a call through a hostile server went, for both sides.
pub struct Outcome {
    /// The caller's result.
    pub alice: std::result::Result<sotto_client::call::CallReport, sotto_client::call::CallError>,
    /// The callee's result.
    pub bob: std::result::Result<sotto_client::call::CallReport, sotto_client::call::CallError>,
    /// What the attacker did.
    pub log: Arc<Mutex<Log>>,
    /// The server (still running, for its metrics).
    pub server: crate::TestServer,
}

/// @alice calls @bob through a server playing `attack` against @bob (its own members
/// claim to be @alice), each side with its options; bob answers within 10 s.
pub async fn call_through(
    attack: Attack,
    alice_opts: sotto_client::call::CallOptions,
    bob_opts: sotto_client::call::CallOptions,
) -> Outcome {
    use sotto_client::call::Endpoint;
    let log = Arc::new(Mutex::new(Log::default()));
    let l = log.clone();
    let server = crate::server_with_storage(
        |_| {},
        move |inner| Hostile::wrap(inner, attack, "@bob", "@alice", l),
    )
    .await;
    let addr = server.running.addr;
    let endpoint = |handle: &'static str| {
        Endpoint::connect(
            addr,
            &server.pin,
            crate::h(handle),
            crate::key_for(handle),
            1,
        )
    };
    let mut alice = endpoint("@alice").await.expect("alice");
    let mut bob = endpoint("@bob").await.expect("bob");
    let callee = tokio::spawn(async move {
        bob.answer(&bob_opts, std::time::Duration::from_secs(10))
            .await
    });
    let alice = alice.call(&crate::h("@bob"), &alice_opts).await;
    let bob = callee.await.expect("join");
    Outcome {
        alice,
        bob,
        log,
        server,
    }
}
