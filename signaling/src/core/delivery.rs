//! The MLS delivery service: KeyPackages, group registration, Commit/Welcome/Proposal
//! fan-out with epoch fencing, and stored-message delivery.
//!
//! Everything addressed to a device is stored first and delivered from the store, so a
//! device that is offline, or crashes before acknowledging, gets it at its next login, in
//! order. Online devices get it at once.

use std::time::Instant;

use sotto_proto::{
    AddedMember, DeviceAddr, DeviceId, ErrorBody, ErrorCode, Handle, MlsKind, Response, ServerMsg,
    Stored,
};

use super::{Core, Reply, SessionId, err};
use crate::storage::CommitOutcome;

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
        let have = self.storage.key_package_count(me)?;
        if have + packages.len() > self.cfg.limits.max_key_packages {
            tracing::info!(have, adding = packages.len(), "KeyPackage cap reached");
            return Err(err(
                ErrorCode::LimitReached {
                    what: "key packages".into(),
                },
                format!(
                    "a device stores at most {} KeyPackages; it has {have}",
                    self.cfg.limits.max_key_packages
                ),
            ));
        }
        self.storage
            .add_key_packages(me, &packages, last_resort.as_deref())?;
        Ok(Response::Ok)
    }

    pub(super) fn claim_key_package(
        &mut self,
        me: &DeviceAddr,
        handle: &Handle,
        device: Option<DeviceId>,
        now: Instant,
    ) -> Reply {
        self.account_rate(&me.handle, now)?;
        match self.storage.claim_key_package(handle, device)? {
            Some(c) => Ok(Response::KeyPackage {
                device: c.device,
                package: c.package,
                last_resort: c.last_resort,
            }),
            None => Err(err(
                ErrorCode::NotFound,
                format!("no KeyPackage available for {handle}"),
            )),
        }
    }

    pub(super) fn create_group(&mut self, me: &DeviceAddr, group: &[u8]) -> Reply {
        if group.is_empty() || group.len() > MAX_GROUP_ID {
            return Err(err(
                ErrorCode::Malformed,
                format!("a group id has 1 to {MAX_GROUP_ID} bytes"),
            ));
        }
        if !self.storage.create_group(group, me)? {
            return Err(err(ErrorCode::InvalidState, "that group already exists"));
        }
        Ok(Response::Ok)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit(
        &mut self,
        me: &DeviceAddr,
        group: Vec<u8>,
        epoch: u64,
        commit: Vec<u8>,
        welcome: Option<Vec<u8>>,
        added: Vec<AddedMember>,
        removed: Vec<u32>,
    ) -> Reply {
        let (_, others) = self.member_group(me, &group, "commit to")?;
        if welcome.is_some() == added.is_empty() {
            return Err(err(
                ErrorCode::Malformed,
                "a Welcome goes with added members, and only then",
            ));
        }
        for a in &added {
            let known = self
                .storage
                .account(&a.device.handle)?
                .is_some_and(|acc| acc.devices.contains(&a.device.device));
            if !known {
                return Err(err(ErrorCode::NotFound, format!("no device {}", a.device)));
            }
        }
        let added_pairs: Vec<(DeviceAddr, u32)> =
            added.iter().map(|a| (a.device.clone(), a.leaf)).collect();
        match self.storage.commit(&group, epoch, &added_pairs, &removed)? {
            CommitOutcome::Accepted(new_epoch) => {
                // The commit goes to every member of the epoch it was made in (the removed
                // ones learn of their removal), the Welcome to the devices it adds.
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
                    let joiners: Vec<DeviceAddr> = added.into_iter().map(|a| a.device).collect();
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
                Ok(Response::CommitAccepted { epoch: new_epoch })
            }
            CommitOutcome::Stale(current) => Err(err(
                ErrorCode::StaleEpoch { current },
                format!("the group is at epoch {current}, the commit was made in {epoch}"),
            )),
            CommitOutcome::NoGroup => Err(err(ErrorCode::NotFound, "no such group")),
        }
    }

    pub(super) fn proposal(
        &mut self,
        me: &DeviceAddr,
        group: Vec<u8>,
        epoch: u64,
        proposal: Vec<u8>,
    ) -> Reply {
        let (current, others) = self.member_group(me, &group, "propose to")?;
        if current != epoch {
            return Err(err(
                ErrorCode::StaleEpoch { current },
                "proposal for another epoch",
            ));
        }
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

    /// The group's current epoch and its members other than `me`, if `me` is a member.
    fn member_group(
        &mut self,
        me: &DeviceAddr,
        group: &[u8],
        action: &str,
    ) -> Result<(u64, Vec<DeviceAddr>), ErrorBody> {
        let g = self
            .storage
            .group(group)?
            .ok_or_else(|| err(ErrorCode::NotFound, "no such group"))?;
        if !g.members.iter().any(|(d, _)| d == me) {
            return Err(err(
                ErrorCode::Forbidden,
                format!("only members {action} a group"),
            ));
        }
        Ok((
            g.epoch,
            g.members
                .into_iter()
                .map(|(d, _)| d)
                .filter(|d| d != me)
                .collect(),
        ))
    }

    /// Stores `item` for each device (skipping full queues, which are logged and counted)
    /// and sends it at once to those online.
    pub(super) fn store_and_deliver(
        &mut self,
        to: &[DeviceAddr],
        item: &Stored,
    ) -> Result<(), ErrorBody> {
        let bytes =
            sotto_proto::encode(item).map_err(|e| err(ErrorCode::TooLarge, e.to_string()))?;
        let mut accepted = Vec::with_capacity(to.len());
        for d in to {
            if self.storage.pending_count(d)? >= self.cfg.limits.max_pending {
                tracing::warn!("a device's message queue is full; message dropped for it");
                self.metrics
                    .queue_drops
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                accepted.push(d.clone());
            }
        }
        let seqs = self.storage.enqueue(&accepted, &bytes)?;
        for (d, seq) in accepted.iter().zip(seqs) {
            if let Some(sid) = self.session_of(d) {
                self.deliver(sid, seq, item.clone());
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
