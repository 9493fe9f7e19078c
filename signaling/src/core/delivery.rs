//! The MLS delivery service: KeyPackages (checked against the uploader's account, topped
//! up when claims run them low), group registration, validated Commit/Welcome/Proposal
//! fan-out with epoch fencing, and stored-message delivery.
//!
//! Everything addressed to a device is stored first and delivered from the store, so a
//! device that is offline, or crashes before acknowledging, gets it at its next login, in
//! order. Online devices get it at once.

use std::time::Instant;

use sotto_proto::{
    AddedMember, CallId, DeviceAddr, DeviceId, ErrorBody, ErrorCode, Event, Handle, MlsKind,
    Response, RoomId, ServerMsg, Stored,
};

use super::{
    Core, Reply, SessionId, err,
    public_groups::{self, CommitEffects, Committer, TrackedGroup},
};
use crate::storage::{CommitOutcome, Group, NewKeyPackage};

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Longest MLS group id accepted.
const MAX_GROUP_ID: usize = 64;
/// Stored messages sent per batch when a device logs in.
const DELIVERY_BATCH: usize = 256;

impl Core {
    pub(super) fn upload_key_packages(
        &mut self,
        me: &DeviceAddr,
        packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
        replace: bool,
    ) -> Reply {
        let max_len = self.cfg.limits.max_key_package_len;
        if packages
            .iter()
            .chain(last_resort.iter())
            .any(|p| p.is_empty() || p.len() > max_len)
        {
            return Err(err(
                ErrorCode::Malformed,
                format!("a KeyPackage has 1 to {max_len} bytes"),
            ));
        }
        let have = if replace {
            0
        } else {
            self.storage.key_package_count(me)?
        };
        if have + packages.len() > self.cfg.limits.max_key_packages {
            tracing::info!(have, adding = packages.len(), "KeyPackage cap reached");
            return Err(err(
                ErrorCode::LimitReached {
                    what: "key packages".into(),
                },
                format!(
                    "a device stores at most {} KeyPackages and this one has {have}",
                    self.cfg.limits.max_key_packages
                ),
            ));
        }
        let identity_key = self
            .storage
            .account(&me.handle)?
            .ok_or_else(|| err(ErrorCode::Internal, "account missing"))?
            .identity_key;
        let check = |bytes: Vec<u8>, want_last_resort: bool| -> Result<NewKeyPackage, ErrorBody> {
            let checked =
                public_groups::check_key_package(&self.crypto, &bytes, &me.handle, &identity_key)?;
            if checked.last_resort != want_last_resort {
                return Err(err(
                    ErrorCode::InvalidKeyPackage,
                    if want_last_resort {
                        "the last-resort KeyPackage lacks the last_resort extension"
                    } else {
                        "a one-use KeyPackage carries the last_resort extension"
                    },
                ));
            }
            Ok(NewKeyPackage {
                package: bytes,
                key_ref: checked.key_ref,
            })
        };
        let packages = packages
            .into_iter()
            .map(|p| check(p, false))
            .collect::<Result<Vec<_>, _>>()?;
        let last_resort = last_resort.map(|p| check(p, true)).transpose()?;
        let stored = self
            .storage
            .add_key_packages(me, &packages, last_resort.as_ref(), replace)?;
        self.low_notified.remove(me);
        Ok(Response::KeyPackagesStored {
            one_time: stored.one_time.try_into().unwrap_or(u32::MAX),
            forgotten: stored.forgotten,
        })
    }

    pub(super) fn claim_key_package(
        &mut self,
        me: &DeviceAddr,
        handle: &Handle,
        device: Option<DeviceId>,
        now: Instant,
    ) -> Reply {
        self.account_rate(&me.handle, super::AccountRate::Claims, now)?;
        // A claim uses a one-use package up: were claims open to anyone, anyone could
        // drain a device down to its last-resort package.
        let Some(device) = self.device_beside(me, handle, device) else {
            return Err(err(
                ErrorCode::Forbidden,
                format!(
                    "a KeyPackage may be claimed only for a device of {handle} in a call or room with you"
                ),
            ));
        };
        let Some(c) = self.storage.claim_key_package(handle, Some(device), me)? else {
            return Err(err(
                ErrorCode::NotFound,
                format!("no KeyPackage available for {handle}"),
            ));
        };
        if c.last_resort {
            tracing::warn!("a last-resort KeyPackage was handed out");
            self.metrics
                .last_resort_claims
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let remaining = self.storage.key_package_count(&c.device)?;
        if remaining < self.cfg.limits.key_package_low_water
            && let Some(sid) = self.session_of(&c.device)
            && self.low_notified.insert(c.device.clone())
        {
            self.event(
                sid,
                Event::KeyPackagesLow {
                    remaining: remaining.try_into().unwrap_or(u32::MAX),
                },
            );
        }
        Ok(Response::KeyPackage {
            device: c.device,
            package: c.package,
            last_resort: c.last_resort,
        })
    }

    pub(super) fn create_group(
        &mut self,
        me: &DeviceAddr,
        group: &[u8],
        group_info: &[u8],
    ) -> Reply {
        if group.is_empty() || group.len() > MAX_GROUP_ID {
            return Err(err(
                ErrorCode::Malformed,
                format!("a group id has 1 to {MAX_GROUP_ID} bytes"),
            ));
        }
        self.may_create_group(me, group)?;
        let identity_key = self
            .storage
            .account(&me.handle)?
            .ok_or_else(|| err(ErrorCode::Internal, "account missing"))?
            .identity_key;
        // A room's group (relayed calls' included) names the service as its external
        // sender, so the service can propose removing whoever leaves its call.
        let is_room = match <[u8; 16]>::try_from(group) {
            Ok(id) => self.room_record(&RoomId(id))?.is_some(),
            Err(_) => false,
        };
        let service_key = self.sender.public().to_vec();
        let tracked = TrackedGroup::create(
            &self.crypto,
            group,
            group_info,
            &me.handle,
            &identity_key,
            is_room.then_some(service_key.as_slice()),
        )?;
        if self.orphaned_room_group(group) {
            // Nobody in the room's call is in the stored group, so nobody could let anyone
            // in: a participant starts it afresh.
            self.delete_group(group);
        }
        if !self.storage.create_group(group, me, &tracked.to_bytes()?)? {
            return Err(err(ErrorCode::InvalidState, "that group already exists"));
        }
        self.storage.set_group_info(group, 0, group_info)?;
        self.group_changed(group);
        Ok(Response::Ok)
    }

    /// A group's id is the id of the call or room it serves: only a party of that call, the
    /// room's owner, or a participant present in the room may create it (no one can squat
    /// another call's group id). A room's group lives while someone is in the room: the
    /// first to arrive creates it (or the owner prepares it), and it ends when the last one
    /// leaves; one that nobody present is in is started afresh.
    fn may_create_group(&mut self, me: &DeviceAddr, group: &[u8]) -> Result<(), ErrorBody> {
        if let Ok(id) = <[u8; 16]>::try_from(group) {
            if self.is_call_party(me, &CallId(id)) || self.is_present(me, &RoomId(id)) {
                return Ok(());
            }
            if self
                .room_record(&RoomId(id))?
                .is_some_and(|room| room.owner == me.handle)
            {
                return Ok(());
            }
        }
        Err(err(
            ErrorCode::GroupIdNotYours,
            "a group's id must be that of a call you are in or a room you are in",
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit(
        &mut self,
        me: &DeviceAddr,
        group: Vec<u8>,
        epoch: u64,
        commit: Vec<u8>,
        welcome: Option<Vec<u8>>,
        group_info: Option<Vec<u8>>,
        claimed_added: Vec<AddedMember>,
        claimed_removed: Vec<u32>,
    ) -> Reply {
        let (stored, my_leaf) = self.member_group(me, &group)?;
        let mut tracked = self.tracked(&group)?;
        if tracked.epoch() != epoch || stored.epoch != epoch {
            let current = stored.epoch;
            return Err(err(
                ErrorCode::StaleEpoch { current },
                format!("the group is at epoch {current}, the commit was made in {epoch}"),
            ));
        }
        let identity_key = self
            .storage
            .account(&me.handle)?
            .ok_or_else(|| err(ErrorCode::Internal, "account missing"))?
            .identity_key;
        let committer = Committer {
            leaf: my_leaf,
            handle: &me.handle,
            identity_key: &identity_key,
        };
        let effects = tracked.apply_commit(&self.crypto, &commit, &committer)?;
        let mut added = self.added_devices(&effects, me)?;
        if let Some(leaf) = effects.rejoined_at {
            added.push(AddedMember {
                device: me.clone(),
                leaf,
            });
        }
        let removed = effects.removed.clone();
        if (!claimed_added.is_empty() || !claimed_removed.is_empty())
            && (sorted(claimed_added.clone()) != sorted(added.clone())
                || sorted(claimed_removed) != removed)
        {
            return Err(err(
                ErrorCode::ClaimMismatch,
                "the commit does not add or remove what the request claims",
            ));
        }
        if welcome.is_some() == (added.is_empty() || effects.rejoined_at.is_some()) {
            return Err(err(
                ErrorCode::Malformed,
                "a Welcome goes with added members, and only then",
            ));
        }
        // Every commit leaves the new epoch's GroupInfo, so a member that cannot follow
        // can always rejoin from the current epoch.
        let Some(group_info) = group_info else {
            return Err(err(
                ErrorCode::InvalidCommit,
                "a commit carries the new epoch's GroupInfo",
            ));
        };
        tracked.check_group_info(&self.crypto, &group_info)?;
        // Commits go to every member of the epoch they were made in (the removed ones learn
        // of their removal); nothing is accepted that cannot be delivered.
        let others: Vec<DeviceAddr> = stored
            .members
            .iter()
            .map(|(d, _)| d.clone())
            .filter(|d| d != me)
            .collect();
        let joiners: Vec<DeviceAddr> = added
            .iter()
            .map(|a| a.device.clone())
            .filter(|d| d != me)
            .collect();
        self.check_queues(others.iter().chain(&joiners))?;
        let added_pairs: Vec<(DeviceAddr, u32)> =
            added.iter().map(|a| (a.device.clone(), a.leaf)).collect();
        let consumed: Vec<Vec<u8>> = effects.added.iter().map(|(r, _)| r.clone()).collect();
        let new_epoch = match self.storage.commit(
            &group,
            epoch,
            &added_pairs,
            &removed,
            &tracked.to_bytes()?,
            me,
            &consumed,
        )? {
            CommitOutcome::Accepted(e) => e,
            CommitOutcome::Stale(current) => {
                return Err(err(
                    ErrorCode::StaleEpoch { current },
                    format!("the group is at epoch {current}, the commit was made in {epoch}"),
                ));
            }
            CommitOutcome::NoGroup => return Err(err(ErrorCode::NotFound, "no such group")),
        };
        self.storage
            .set_group_info(&group, new_epoch, &group_info)?;
        let changed_group = group.clone();
        self.store_and_deliver(
            &others,
            &Stored::Mls {
                group: group.clone(),
                kind: MlsKind::Commit,
                epoch,
                from: me.clone(),
                data: commit,
            },
        )?;
        if let Some(w) = welcome {
            self.store_and_deliver(
                &joiners,
                &Stored::Mls {
                    group,
                    kind: MlsKind::Welcome,
                    epoch,
                    from: me.clone(),
                    data: w,
                },
            )?;
        }
        self.group_changed(&changed_group);
        Ok(Response::CommitAccepted {
            epoch: new_epoch,
            added,
            removed,
        })
    }

    /// Which device each leaf a commit adds belongs to: the one that published the
    /// KeyPackage, which the committer itself claimed from this server (and has not used
    /// in a commit yet).
    fn added_devices(
        &self,
        effects: &CommitEffects,
        committer: &DeviceAddr,
    ) -> Result<Vec<AddedMember>, ErrorBody> {
        effects
            .added
            .iter()
            .map(|(key_ref, leaf)| {
                let device = self
                    .storage
                    .key_package_owner(key_ref, committer)?
                    .ok_or_else(|| {
                        err(
                            ErrorCode::UnknownKeyPackage,
                            "the commit adds a KeyPackage this device did not claim from this server",
                        )
                    })?;
                Ok(AddedMember {
                    device,
                    leaf: *leaf,
                })
            })
            .collect()
    }

    pub(super) fn proposal(
        &mut self,
        me: &DeviceAddr,
        group: Vec<u8>,
        epoch: u64,
        proposal: Vec<u8>,
    ) -> Reply {
        let (stored, my_leaf) = self.member_group(me, &group)?;
        let current = stored.epoch;
        if current != epoch {
            return Err(err(
                ErrorCode::StaleEpoch { current },
                "proposal for another epoch",
            ));
        }
        let mut tracked = self.tracked(&group)?;
        tracked.apply_proposal(&self.crypto, &proposal, my_leaf)?;
        let others: Vec<DeviceAddr> = stored
            .members
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| d != me)
            .collect();
        self.check_queues(others.iter())?;
        self.storage.put_group_state(&group, &tracked.to_bytes()?)?;
        self.store_and_deliver(
            &others,
            &Stored::Mls {
                group,
                kind: MlsKind::Proposal,
                epoch,
                from: me.clone(),
                data: proposal,
            },
        )?;
        Ok(Response::Ok)
    }

    /// A member could not process an accepted commit. The server cannot check the tags
    /// that failed, so it records the report for the operator; the member recovers by
    /// rejoining from the stored GroupInfo (`GroupInfo`, then an external commit).
    pub(super) fn report_commit(
        &mut self,
        me: &DeviceAddr,
        group: &[u8],
        epoch: u64,
        reason: &str,
    ) -> Reply {
        self.member_group(me, group)?;
        let reason: String = reason.chars().take(200).collect();
        tracing::warn!(epoch, %reason, "a member rejected an accepted commit");
        self.metrics
            .commit_reports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::Ok)
    }

    /// The latest member-signed GroupInfo, for members of the group.
    pub(super) fn group_info(&mut self, me: &DeviceAddr, group: &[u8]) -> Reply {
        self.member_group(me, group)?;
        let (epoch, group_info) = self
            .storage
            .group_info(group)?
            .ok_or_else(|| err(ErrorCode::NotFound, "no GroupInfo stored for that group"))?;
        Ok(Response::GroupInfo { epoch, group_info })
    }

    /// Forgets a group and every delivery still queued for it (a call's group, when the
    /// call ends).
    pub(super) fn delete_group(&mut self, group: &[u8]) {
        match self.storage.delete_group(group) {
            Ok(dropped) => tracing::debug!(dropped, "group deleted"),
            Err(e) => tracing::error!(error = %e, "deleting a group failed"),
        }
    }

    /// The group as stored and `me`'s leaf in it, if `me` is a member.
    fn member_group(&mut self, me: &DeviceAddr, group: &[u8]) -> Result<(Group, u32), ErrorBody> {
        let g = self
            .storage
            .group(group)?
            .ok_or_else(|| err(ErrorCode::NotFound, "no such group"))?;
        let leaf = g
            .members
            .iter()
            .find(|(d, _)| d == me)
            .map(|(_, l)| *l)
            .ok_or_else(|| err(ErrorCode::NotAMember, "only members send to a group"))?;
        Ok((g, leaf))
    }

    /// The group's public MLS state.
    pub(super) fn tracked(&self, group: &[u8]) -> Result<TrackedGroup, ErrorBody> {
        let bytes = self
            .storage
            .group_state(group)?
            .ok_or_else(|| err(ErrorCode::NotFound, "no such group"))?;
        TrackedGroup::load(group, &bytes)
    }

    /// Fails with [`ErrorCode::QueueFull`] if any recipient's queue is full, so a message
    /// is either stored for everyone or for no one.
    pub(super) fn check_queues<'a>(
        &mut self,
        to: impl Iterator<Item = &'a DeviceAddr>,
    ) -> Result<(), ErrorBody> {
        for d in to {
            if self.storage.pending_count(d)? >= self.cfg.limits.max_pending {
                tracing::warn!("a device's message queue is full; message refused");
                self.metrics
                    .queue_drops
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(err(
                    ErrorCode::QueueFull,
                    format!("{d} has too many undelivered messages; try again later"),
                ));
            }
        }
        Ok(())
    }

    /// Stores `item` for each device and sends it at once to those online. Callers check
    /// the recipients' queues first ([`Self::check_queues`]), before they change anything
    /// else, so nothing is accepted that cannot be delivered.
    pub(super) fn store_and_deliver(
        &mut self,
        to: &[DeviceAddr],
        item: &Stored,
    ) -> Result<(), ErrorBody> {
        let bytes =
            sotto_proto::encode(item).map_err(|e| err(ErrorCode::TooLarge, e.to_string()))?;
        let group = match item {
            Stored::Mls { group, .. } => Some(group.as_slice()),
            _ => None,
        };
        let seqs = self.storage.enqueue(to, &bytes, group)?;
        for (d, seq) in to.iter().zip(seqs) {
            let Some(sid) = self.session_of(d) else {
                continue;
            };
            // What goes out is what the store holds, read back: one path for live and
            // replayed delivery, whatever backend (or test double) is behind the trait.
            let stored = self.storage.pending(d, seq.saturating_sub(1), 1)?;
            match stored
                .first()
                .map(|(s, b)| (*s, sotto_proto::decode::<Stored>(b)))
            {
                Some((s, Ok(item))) if s == seq => self.deliver(sid, seq, item),
                _ => tracing::error!(seq, "a message just stored cannot be read back"),
            }
        }
        Ok(())
    }

    fn deliver(&mut self, sid: SessionId, seq: u64, item: Stored) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            if seq <= s.delivered {
                return;
            }
            s.delivered = seq;
        }
        self.send(sid, ServerMsg::Delivery { seq, item });
    }

    /// Sends a freshly logged-in device everything stored for it, oldest first.
    pub(super) fn deliver_pending(&mut self, sid: SessionId) {
        let Some(super::SessionState::User(addr)) =
            self.sessions.get(&sid).map(|s| s.state.clone())
        else {
            return;
        };
        let mut after = 0;
        loop {
            let batch = match self.storage.pending(&addr, after, DELIVERY_BATCH) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "reading stored messages failed");
                    return;
                }
            };
            let n = batch.len();
            for (seq, bytes) in batch {
                after = seq;
                match sotto_proto::decode::<Stored>(&bytes) {
                    Ok(item) => self.deliver(sid, seq, item),
                    Err(e) => {
                        tracing::error!(error = %e, seq, "undecodable stored message skipped")
                    }
                }
            }
            if n < DELIVERY_BATCH {
                break;
            }
        }
    }
}
