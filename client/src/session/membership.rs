//! Who is in the room's group (DESIGN §4.5). Joining is an Add and a Welcome. Leaving,
//! removal by the owner and disconnection all end with the service, as the group's
//! external sender, proposing the Remove; a member commits it. Every present member
//! computes the same needs (devices the roster shows without a leaf to add, the service's
//! Remove proposals to commit); the member with the lowest present leaf commits them
//! after a short batch window, so a burst of joins costs one commit, and if it has not
//! after its turn the next in line does (one slow member never stalls the room). The
//! delivery service fences epochs, so two members committing at once cost one a retry,
//! never a fork.
//!
//! Every credential a change brings in is checked against the directory and the pins
//! before it is applied. A commit that brings in a key that does not check out (someone
//! is substituting keys, and a member added it unchecked) ends a one-to-one call; in a
//! room the member is reported and quarantined: no media key of an epoch it is in is
//! derived (our frames stay in the epoch before, its frames are never decrypted) while
//! we commit its removal, and we leave if that fails. A commit we cannot follow makes us
//! rejoin by external commit from the GroupInfo the delivery service keeps.

use std::{collections::HashMap, time::Duration, time::Instant};

use sotto_proto::{DeviceAddr, ErrorCode, Handle, MlsKind, Request, Response, Stored};

use super::{
    Answer, Asked, CommitKind, Env, LeftReason, RoomEvent, RoomSession, Stage, trust::Verdict,
};
use crate::mls::{CallGroup, GroupEvent, StagedMessage};

/// Devices one commit adds at most: a bigger storm lands in a few commits, each within
/// the server's request rates and its Welcome within the frame size.
const MAX_ADDS: usize = 50;
/// A claim that failed is not retried for this long.
const CLAIM_BACKOFF: Duration = Duration::from_secs(5);
/// After a commit the server refused for a reason other than a lost race.
const COMMIT_BACKOFF: Duration = Duration::from_secs(2);
/// A roster that should follow someone else's commit is waited for at most this long.
const ROSTER_WAIT: Duration = Duration::from_secs(2);
/// A burst of changes is committed at most this long after its first.
const MAX_BATCH: Duration = Duration::from_secs(1);
/// How often we try to rejoin an epoch that keeps moving.
const REJOIN_TRIES: u32 = 3;

/// Our own membership work in progress.
#[derive(Default)]
pub(super) struct Plan {
    /// When the current needs were first seen.
    since: Option<Instant>,
    /// When we commit them if nobody before us in line has.
    due_at: Option<Instant>,
    /// KeyPackages being claimed for an Add.
    claiming: Option<Claiming>,
    /// A commit of ours the server has not answered.
    committing: Option<CommitKind>,
    /// Our group while its external commit (a rejoin) is out.
    rejoining: Option<CallGroup>,
    rejoin_tries: u32,
    /// The needs last seen, and when they last changed.
    last_needs: Option<(Vec<DeviceAddr>, Vec<u32>)>,
    last_change: Option<Instant>,
    /// A Welcome opened and waiting for its members' directory keys.
    welcome: Option<crate::mls::StagedJoin>,
    /// The group we started for an empty room, until the server accepts it.
    creating: Option<CallGroup>,
    /// When the roster first showed us at a leaf while we wait for a Welcome.
    leaf_seen: Option<Instant>,
    failed: HashMap<DeviceAddr, Instant>,
    not_before: Option<Instant>,
}

/// Credentials that did not check out, brought into the group by someone else's commit.
/// Matched by credential, not leaf (leaves are reused, and a rejoin renumbers them); a
/// credential once refused stays refused for the session.
pub(super) struct Quarantine {
    /// (identity, signature key) of each.
    creds: Vec<(Vec<u8>, Vec<u8>)>,
    /// Who the first claimed to be, and why it was refused.
    verdict: Verdict,
}

struct Claiming {
    waiting: usize,
    packages: Vec<Vec<u8>>,
}

impl Plan {
    /// When the session must look at the plan again.
    pub(super) fn due(&self) -> Option<Instant> {
        if self.busy() { None } else { self.due_at }
    }

    /// While waiting to be let in: when to look again at a roster that has us at a leaf.
    pub(super) fn admission_check(&self) -> Option<Instant> {
        self.leaf_seen.map(|t| t + ROSTER_WAIT)
    }

    /// When a refused attempt may be made again.
    pub(super) fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    fn busy(&self) -> bool {
        self.claiming.is_some()
            || self.committing.is_some()
            || self.rejoining.is_some()
            || self.creating.is_some()
    }
}

/// What handling the first queued handshake did.
enum Handled {
    /// Done with it: acknowledge.
    Done,
    /// It waits (for lookups, or for our own commit's answer).
    Wait,
}

impl RoomSession {
    /// Handles queued deliveries for our group in order; one that waits blocks the rest.
    pub(super) fn process_handshakes(&mut self, env: &mut Env<'_>, now: Instant) {
        while let Some((seq, item)) = self.handshakes.front().cloned() {
            if self.plan.busy() || self.stage == Stage::Left {
                return;
            }
            let Stored::Mls {
                kind, epoch, data, ..
            } = item
            else {
                self.handshakes.pop_front();
                continue;
            };
            match self.handshake(env, kind, epoch, &data, now) {
                Handled::Done => {
                    self.handshakes.pop_front();
                    self.out.push_back(super::Output::Ack(seq));
                }
                Handled::Wait => return,
            }
        }
    }

    fn handshake(
        &mut self,
        env: &mut Env<'_>,
        kind: MlsKind,
        epoch: u64,
        data: &[u8],
        now: Instant,
    ) -> Handled {
        match (kind, self.stage) {
            // Not in the room yet: whether a handshake applies depends on the join's answer.
            (_, Stage::Entering) => Handled::Wait,
            (MlsKind::Welcome, Stage::AwaitingWelcome) => self.welcome(env, data, now),
            (MlsKind::Commit, Stage::Member | Stage::Leaving) => {
                self.commit_in(env, epoch, data, now)
            }
            (MlsKind::Proposal, Stage::Member | Stage::Leaving) => {
                self.proposal_in(env, epoch, data);
                Handled::Done
            }
            _ => {
                tracing::debug!(?kind, "dropping a handshake that does not apply now");
                Handled::Done
            }
        }
    }

    /// A Welcome into the room's group: joined only if every member checks out.
    fn welcome(&mut self, env: &mut Env<'_>, data: &[u8], now: Instant) -> Handled {
        // Opening a Welcome uses up its KeyPackage's private key: one waiting for lookups
        // is kept opened, never opened twice.
        let staged = match self.plan.welcome.take() {
            Some(s) => s,
            None => match env.mls.stage_join(data) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "a Welcome for the room does not open");
                    return Handled::Done;
                }
            },
        };
        if staged.group_id() != self.room.0 {
            // The server labelled another group's Welcome as this room's.
            tracing::warn!("a Welcome labelled for this room is for another group: ignored");
            return Handled::Done;
        }
        if let Some(v) = self.pair_missing(&staged.members()) {
            self.refused(env, v);
            return Handled::Done;
        }
        match self.dir.check_all(&staged.members(), env.pins) {
            Err(v) => {
                self.refused(env, v);
                Handled::Done
            }
            Ok(ask) if !ask.is_empty() => {
                self.lookup(ask);
                self.plan.welcome = Some(staged);
                Handled::Wait
            }
            Ok(_) => {
                match staged.join(env.mls) {
                    Ok(g) => {
                        self.group = Some(g);
                        self.stage = Stage::Member;
                        self.entered_group(env, now);
                    }
                    Err(e) => tracing::warn!(error = %e, "joining from a Welcome failed"),
                }
                Handled::Done
            }
        }
    }

    /// Another member's commit.
    fn commit_in(&mut self, env: &mut Env<'_>, epoch: u64, data: &[u8], now: Instant) -> Handled {
        let Some(group) = self.group.as_mut() else {
            return Handled::Done;
        };
        let ours = group.epoch();
        if epoch < ours {
            return Handled::Done;
        }
        if epoch > ours {
            tracing::warn!(epoch, ours, "missed a commit: rejoining");
            self.start_rejoin(env, ours, "missed a commit".into());
            return Handled::Done;
        }
        let staged = match group.stage(env.mls, data) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "an accepted commit does not process: rejoining");
                self.start_rejoin(env, epoch, e.to_string());
                return Handled::Done;
            }
        };
        if matches!(staged, StagedMessage::Proposal(_)) {
            return Handled::Done;
        }
        let known = group.members();
        let fresh: Vec<_> = staged
            .new_credentials()
            .into_iter()
            .filter(|c| {
                !known
                    .iter()
                    .any(|m| m.identity == c.identity && m.signature_key == c.signature_key)
            })
            .collect();
        // Every credential the commit brings in is decided before anything is applied.
        let mut ask: Vec<Handle> = Vec::new();
        let mut bad: Vec<(Vec<u8>, Vec<u8>, Verdict)> = Vec::new();
        for c in &fresh {
            match self.dir.check(c, env.pins) {
                Verdict::Member(_) => {}
                Verdict::Ask(h) => {
                    if !ask.contains(&h) {
                        ask.push(h);
                    }
                }
                v => bad.push((c.identity.clone(), c.signature_key.clone(), v)),
            }
        }
        match bad.first() {
            _ if !ask.is_empty() => {
                self.lookup(ask);
                Handled::Wait
            }
            // A one-to-one call has no one to remove a stranger for: it ends.
            Some((_, _, v)) if self.opts.only.is_some() => {
                self.refused(env, v.clone());
                Handled::Done
            }
            _ => {
                let applied = self.group.as_mut().map(|g| g.apply(env.mls, staged));
                if !bad.is_empty() && matches!(applied, Some(Ok(GroupEvent::EpochAdvanced { .. })))
                {
                    self.quarantine_members(&bad);
                }
                match applied {
                    Some(Ok(GroupEvent::EpochAdvanced { .. })) => {
                        self.roster_stale_until = Some(now + ROSTER_WAIT);
                        self.on_new_epoch(env, now);
                    }
                    Some(Ok(GroupEvent::Removed)) => self.removed_from_group(env),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "applying a commit failed: rejoining");
                        self.start_rejoin(env, epoch, e.to_string());
                    }
                    None => {}
                }
                Handled::Done
            }
        }
    }

    /// A standalone proposal: only the service's Remove of the current epoch is kept, for
    /// the member whose turn it is to commit (members never send proposals of their own).
    fn proposal_in(&mut self, env: &mut Env<'_>, epoch: u64, data: &[u8]) {
        let Some(group) = self.group.as_mut() else {
            return;
        };
        if epoch != group.epoch() {
            // A proposal is good for its epoch only; the service proposes again.
            return;
        }
        match group.stage(env.mls, data) {
            Ok(staged) => match staged.service_removal() {
                Some(leaf) => {
                    tracing::debug!(leaf, "the service proposes a removal");
                    if let Err(e) = group.apply(env.mls, staged) {
                        tracing::warn!(error = %e, "could not store the service's proposal");
                    }
                }
                None => tracing::warn!("ignoring a proposal that is not the service's Remove"),
            },
            Err(e) => tracing::warn!(error = %e, "a proposal does not process"),
        }
    }

    /// The group now holds members whose keys did not check out: report them, and keep
    /// them out of every media key until our (or another member's) commit removes them.
    fn quarantine_members(&mut self, bad: &[(Vec<u8>, Vec<u8>, Verdict)]) {
        for (_, _, v) in bad {
            if let Verdict::Refused { shown, reason } = v {
                tracing::warn!(%shown, %reason, "a commit brought in a member whose key does not check out: removing it");
                self.status.refused_members += 1;
                self.emit(RoomEvent::MemberRefused {
                    shown: shown.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let q = self.quarantine.get_or_insert_with(|| Quarantine {
            creds: Vec::new(),
            verdict: bad[0].2.clone(),
        });
        for (id, key, _) in bad {
            if !q.creds.iter().any(|(i, k)| i == id && k == key) {
                q.creds.push((id.clone(), key.clone()));
            }
        }
    }

    /// Whether the group holds a quarantined credential; if it does, its removal is
    /// committed unless other membership work is under way (which moves us on when it is
    /// answered, and this is asked again).
    pub(super) fn quarantined(&mut self, env: &mut Env<'_>) -> bool {
        let (Some(q), Some(group)) = (self.quarantine.as_ref(), self.group.as_ref()) else {
            return false;
        };
        let leaves: Vec<u32> = group
            .members()
            .into_iter()
            .filter(|m| {
                q.creds
                    .iter()
                    .any(|(id, key)| &m.identity == id && &m.signature_key == key)
            })
            .map(|m| m.leaf)
            .collect();
        if leaves.is_empty() {
            return false;
        }
        if !self.plan.busy() {
            let made = self.group.as_mut().map(|g| g.remove(env.mls, &leaves));
            match made {
                Some(Ok(c)) => {
                    self.plan.committing = Some(CommitKind::Remove);
                    self.ask(
                        Asked::Commit(CommitKind::Remove),
                        c.into_request(self.room.0.to_vec()),
                    );
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "could not make the removal: leaving");
                    self.leave_quarantined(env);
                }
                None => {}
            }
        }
        true
    }

    /// The removal of a quarantined member cannot be made or was refused: we leave
    /// rather than stay in a group with it.
    fn leave_quarantined(&mut self, env: &mut Env<'_>) {
        if let Some(q) = self.quarantine.take() {
            self.refused(env, q.verdict);
        }
    }

    /// A credential did not check out: nothing more is encrypted to this group.
    fn refused(&mut self, env: &mut Env<'_>, v: Verdict) {
        let (handle, reason) = match v {
            Verdict::Refused { shown, reason } => (shown, reason),
            other => (format!("{other:?}"), "unexpected verdict".into()),
        };
        tracing::warn!(%handle, %reason, "a member's key did not check out: leaving the room");
        self.ask(Asked::Leave, Request::LeaveRoom { room: self.room });
        self.end(env, LeftReason::KeyMismatch { handle, reason });
    }

    /// A commit removed us. Still wanted in the room (a blip, not a leave): we wait to be
    /// added again, with new keys and a new media connection for the new leaf.
    fn removed_from_group(&mut self, env: &mut Env<'_>) {
        if let Some(mut g) = self.group.take() {
            let _ = g.delete(env.mls);
        }
        self.keys = None;
        self.switch_at = None;
        self.members.clear();
        self.retire_link();
        self.link_asked = false;
        self.plan.due_at = None;
        if self.stage == Stage::Leaving {
            self.end(env, LeftReason::Left);
        } else {
            tracing::info!("removed from the room's group: waiting to be added again");
            self.stage = Stage::AwaitingWelcome;
        }
    }

    /// Devices to add (as the roster shows them) and leaves to remove (as the service
    /// proposed).
    fn needs(&self, now: Instant) -> (Vec<DeviceAddr>, Vec<u32>) {
        let add = self
            .roster
            .iter()
            .filter(|e| e.leaf.is_none() && e.device != self.me)
            .filter(|e| {
                self.opts
                    .only
                    .as_ref()
                    .is_none_or(|o| o.contains(&e.device))
            })
            .filter(|e| self.plan.failed.get(&e.device).is_none_or(|t| *t <= now))
            .map(|e| e.device.clone())
            .collect();
        // The service never sends a device the proposal that removes it, so our own leaf
        // is not among these.
        let remove = self
            .group
            .as_ref()
            .map(|g| g.pending_removals())
            .unwrap_or_default();
        (add, remove)
    }

    /// Our place in line among the present members (0 commits first).
    fn turn(&self) -> Option<usize> {
        let own = self.leaf()?;
        let mut present: Vec<u32> = self
            .members
            .iter()
            .filter(|(l, h)| {
                self.roster
                    .iter()
                    .any(|e| e.leaf == Some(**l) && &e.device.handle == *h)
            })
            .map(|(l, _)| *l)
            .collect();
        present.sort_unstable();
        present.iter().position(|l| *l == own)
    }

    /// Commits the roster's needs when it is our turn (else a self-update when one is
    /// due).
    pub(super) fn maybe_commit(&mut self, env: &mut Env<'_>, now: Instant) {
        if self.plan.busy() || !self.handshakes.is_empty() {
            // What is under way moves us on when it is answered.
            self.plan.due_at = None;
            return;
        }
        if self.quarantined(env) {
            // Nothing else until the member whose key did not check out is out.
            return;
        }
        if self.self_update_due.is_some_and(|t| t <= now) {
            return self.commit_update(env, now);
        }
        if let Some(t) = self.roster_stale_until.filter(|t| now < *t) {
            self.plan.due_at = Some(t);
            return;
        }
        let (add, remove) = self.needs(now);
        let Some(turn) = self.turn() else {
            self.plan.due_at = None;
            return;
        };
        if add.is_empty() && remove.is_empty() {
            self.plan.since = None;
            self.plan.last_needs = None;
            self.plan.due_at = None;
            return;
        }
        // Debounced: wait until no new need for `batch`, but never longer than
        // MAX_BATCH after the first, so a storm of joins is one or two commits.
        let since = *self.plan.since.get_or_insert(now);
        if self.plan.last_needs.as_ref() != Some(&(add.clone(), remove.clone())) {
            self.plan.last_needs = Some((add.clone(), remove.clone()));
            self.plan.last_change = Some(now);
        }
        let quiet =
            (self.plan.last_change.unwrap_or(since) + self.opts.batch).min(since + MAX_BATCH);
        let mut due = quiet + self.opts.commit_turn * turn as u32;
        if let Some(nb) = self.plan.not_before {
            due = due.max(nb);
        }
        self.plan.due_at = Some(due);
        if now < due {
            return;
        }
        if !remove.is_empty() {
            self.commit_remove(env, &remove, now);
        } else {
            self.claim(add);
        }
    }

    /// A one-to-one call's group (from a Welcome, or offered to rejoin) must hold the
    /// other party: one that does not is someone else's group, refused in the peer's name.
    fn pair_missing(&self, members: &[crate::mls::MemberCredential]) -> Option<Verdict> {
        let peer = self.opts.only.as_ref()?.first()?;
        let named = peer.handle.as_str().as_bytes();
        if members.iter().any(|m| m.identity == named) {
            return None;
        }
        Some(Verdict::Refused {
            shown: peer.handle.to_string(),
            reason: "the call's group does not hold it".into(),
        })
    }

    /// When a self-update is due, if nothing under way holds it back.
    pub(super) fn self_update_timer(&self) -> Option<Instant> {
        let free = self.stage == Stage::Member && !self.plan.busy() && self.handshakes.is_empty();
        self.self_update_due.filter(|_| free)
    }

    /// Commits a refresh of our own leaf: a new epoch, new media keys for everyone.
    fn commit_update(&mut self, env: &mut Env<'_>, now: Instant) {
        let Some(group) = self.group.as_mut() else {
            return;
        };
        self.self_update_due = None;
        match group.update(env.mls) {
            Ok(c) => {
                tracing::info!("committing a self-update");
                self.plan.committing = Some(CommitKind::Update);
                self.ask(
                    Asked::Commit(CommitKind::Update),
                    c.into_request(self.room.0.to_vec()),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not make a self-update");
                self.self_update_due = self.opts.self_update_every.map(|d| now + d);
            }
        }
    }

    /// Commits the service's Remove proposals (by reference).
    fn commit_remove(&mut self, env: &mut Env<'_>, leaves: &[u32], now: Instant) {
        let Some(group) = self.group.as_mut() else {
            return;
        };
        match group.commit_proposals(env.mls) {
            Ok(c) => {
                tracing::info!(?leaves, "committing removals");
                self.plan.committing = Some(CommitKind::Remove);
                self.ask(
                    Asked::Commit(CommitKind::Remove),
                    c.into_request(self.room.0.to_vec()),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not make a remove commit");
                self.plan.not_before = Some(now + COMMIT_BACKOFF);
            }
        }
    }

    /// Claims a KeyPackage of every device to add (after their directory keys are known,
    /// so each package is checked as it arrives), at most [`MAX_ADDS`] at a time: the
    /// rest of a storm goes in the next commit, so one commit's claims, lookups and
    /// Welcome stay within the server's rates and frame size.
    fn claim(&mut self, mut devices: Vec<DeviceAddr>) {
        devices.truncate(MAX_ADDS);
        let unknown: Vec<_> = devices
            .iter()
            .map(|d| d.handle.clone())
            .filter(|h| !self.dir.knows(h))
            .collect();
        if !unknown.is_empty() {
            self.lookup(unknown);
            self.plan.due_at = None;
            return;
        }
        self.plan.claiming = Some(Claiming {
            waiting: devices.len(),
            packages: Vec::new(),
        });
        for d in devices {
            self.ask(
                Asked::Claim(d.clone()),
                Request::ClaimKeyPackage {
                    handle: d.handle.clone(),
                    device: Some(d.device),
                },
            );
        }
    }

    /// A claim was answered: the package is kept only if its credential is the device's
    /// account's; once every claim is in, one commit adds them all.
    pub(super) fn claimed(
        &mut self,
        env: &mut Env<'_>,
        d: DeviceAddr,
        answer: Answer,
        now: Instant,
    ) {
        let package = match answer {
            Answer::Ok(Response::KeyPackage { package, .. }) => Some(package),
            other => {
                tracing::warn!(device = %d.handle, answer = ?other, "could not claim a KeyPackage");
                None
            }
        };
        let mut refusal = None;
        let careless = self.opts.test_add_unchecked;
        let checked = package.filter(|p| {
            if careless {
                return true;
            }
            let verdict = env
                .mls
                .key_package_credential(p)
                .map(|c| self.dir.check(&c, env.pins));
            match verdict {
                Ok(Verdict::Member(h)) if h == d.handle => true,
                other => {
                    tracing::warn!(device = %d.handle, verdict = ?other.as_ref().ok(),
                        "a KeyPackage handed out for a joiner is not its account's: not adding it");
                    refusal = Some(match other {
                        Ok(Verdict::Refused { reason, .. }) => reason,
                        Ok(Verdict::Member(h)) => {
                            format!("the KeyPackage handed out for it names {h}")
                        }
                        _ => "its KeyPackage's credential could not be read".into(),
                    });
                    false
                }
            }
        });
        if let (Some(reason), Some(_)) = (refusal, self.opts.only.as_ref()) {
            // A call with one other party: a substituted package is an attack on this
            // call, not a joiner to skip. Nothing was encrypted to it.
            let shown = d.handle.to_string();
            return self.refused(env, Verdict::Refused { shown, reason });
        }
        let Some(c) = self.plan.claiming.as_mut() else {
            return;
        };
        match checked {
            Some(p) => c.packages.push(p),
            None => {
                self.plan.failed.insert(d, now + CLAIM_BACKOFF);
            }
        }
        c.waiting = c.waiting.saturating_sub(1);
        if c.waiting > 0 {
            return;
        }
        let packages = self
            .plan
            .claiming
            .take()
            .map(|c| c.packages)
            .unwrap_or_default();
        if packages.is_empty() {
            return;
        }
        if self.quarantined(env) {
            // The group holds a member whose key did not check out: its removal first
            // (the joiners are claimed again after it).
            return;
        }
        let Some(group) = self.group.as_mut() else {
            return;
        };
        match group.add(env.mls, &packages) {
            Ok(c) => {
                tracing::info!(joiners = packages.len(), "committing additions");
                self.plan.committing = Some(CommitKind::Add);
                self.ask(
                    Asked::Commit(CommitKind::Add),
                    c.into_request(self.room.0.to_vec()),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not make an add commit");
                self.plan.not_before = Some(now + COMMIT_BACKOFF);
            }
        }
    }

    /// The server answered one of our commits.
    pub(super) fn commit_answered(
        &mut self,
        env: &mut Env<'_>,
        kind: CommitKind,
        answer: Answer,
        now: Instant,
    ) {
        self.plan.committing = None;
        if kind == CommitKind::Rejoin {
            return self.rejoin_answered(env, answer, now);
        }
        let Some(group) = self.group.as_mut() else {
            return;
        };
        match answer {
            Answer::Ok(Response::CommitAccepted { added, removed, .. }) => {
                if let Err(e) = group.merge_pending(env.mls) {
                    tracing::warn!(error = %e, "could not merge our accepted commit: rejoining");
                    let epoch = group.epoch();
                    self.start_rejoin(env, epoch, e.to_string());
                    return;
                }
                for e in &mut self.roster {
                    if let Some(a) = added.iter().find(|a| a.device == e.device) {
                        e.leaf = Some(a.leaf);
                    } else if e.leaf.is_some_and(|l| removed.contains(&l)) {
                        e.leaf = None;
                    }
                }
                self.status.commits += 1;
                self.status.self_updates += u64::from(kind == CommitKind::Update);
                self.plan.since = None;
                self.on_new_epoch(env, now);
            }
            Answer::Refused(e) if matches!(e.code, ErrorCode::StaleEpoch { .. }) => {
                // Another member won the epoch; its commit is on its way to us.
                let _ = group.discard_pending(env.mls);
            }
            other => {
                tracing::warn!(answer = ?other, "our commit was refused");
                let _ = group.discard_pending(env.mls);
                self.plan.not_before = Some(now + COMMIT_BACKOFF);
                if self.quarantine.is_some() {
                    self.leave_quarantined(env);
                }
            }
        }
    }

    /// Our copy of the group cannot follow: report it and fetch the latest GroupInfo to
    /// rejoin from. Media keys stay as they are until the rejoin lands.
    pub(super) fn start_rejoin(&mut self, env: &mut Env<'_>, epoch: u64, reason: String) {
        let group = self.room.0.to_vec();
        if let Some(mut g) = self.group.take() {
            let _ = g.delete(env.mls);
            self.ask(
                Asked::Other,
                Request::ReportCommit {
                    group: group.clone(),
                    epoch,
                    reason: reason.chars().take(200).collect(),
                },
            );
        }
        self.plan.rejoin_tries += 1;
        self.plan.committing = Some(CommitKind::Rejoin);
        self.ask(Asked::GroupInfo, Request::GroupInfo { group });
    }

    /// The GroupInfo to rejoin from: used only if it is this room's group and every
    /// member in it checks out (it came through the server).
    pub(super) fn group_info_answered(&mut self, env: &mut Env<'_>, answer: Answer, now: Instant) {
        let Answer::Ok(Response::GroupInfo { group_info, .. }) = answer else {
            return self.rejoin_failed(
                env,
                format!("the GroupInfo was not given: {}", answer.describe()),
            );
        };
        let (mut fresh, commit) = match env.mls.rejoin(&group_info) {
            Ok(x) => x,
            Err(e) => return self.rejoin_failed(env, e.to_string()),
        };
        if fresh.group_id() != self.room.0 {
            let _ = fresh.delete(env.mls);
            return self.refused(
                env,
                Verdict::Refused {
                    shown: "the server".into(),
                    reason: "the GroupInfo offered to rejoin is another group's".into(),
                },
            );
        }
        if let Some(v) = self.pair_missing(&fresh.members()) {
            let _ = fresh.delete(env.mls);
            return self.refused(env, v);
        }
        match self.dir.check_all(&fresh.members(), env.pins) {
            Err(v) => {
                let _ = fresh.delete(env.mls);
                return self.refused(env, v);
            }
            Ok(ask) if !ask.is_empty() => {
                // Look them up, then fetch the GroupInfo again.
                let _ = fresh.delete(env.mls);
                self.lookup(ask);
                self.plan.committing = Some(CommitKind::Rejoin);
                self.ask(
                    Asked::GroupInfo,
                    Request::GroupInfo {
                        group: self.room.0.to_vec(),
                    },
                );
                return;
            }
            Ok(_) => {}
        }
        let _ = now;
        self.plan.rejoining = Some(fresh);
        self.plan.committing = Some(CommitKind::Rejoin);
        self.ask(
            Asked::Commit(CommitKind::Rejoin),
            commit.into_request(self.room.0.to_vec()),
        );
    }

    fn rejoin_answered(&mut self, env: &mut Env<'_>, answer: Answer, now: Instant) {
        let Some(mut fresh) = self.plan.rejoining.take() else {
            return;
        };
        match answer {
            Answer::Ok(Response::CommitAccepted { .. }) => {
                if let Err(e) = fresh.merge_pending(env.mls) {
                    let _ = fresh.delete(env.mls);
                    return self.rejoin_failed(env, e.to_string());
                }
                self.group = Some(fresh);
                self.plan.rejoin_tries = 0;
                self.status.rejoins += 1;
                if self.stage == Stage::AwaitingWelcome {
                    self.stage = Stage::Member;
                }
                self.rejoined(env, now);
            }
            Answer::Refused(e)
                if matches!(e.code, ErrorCode::StaleEpoch { .. })
                    && self.plan.rejoin_tries < REJOIN_TRIES =>
            {
                let _ = fresh.delete(env.mls);
                self.plan.rejoin_tries += 1;
                self.plan.committing = Some(CommitKind::Rejoin);
                self.ask(
                    Asked::GroupInfo,
                    Request::GroupInfo {
                        group: self.room.0.to_vec(),
                    },
                );
            }
            other => {
                let _ = fresh.delete(env.mls);
                self.rejoin_failed(env, other.describe());
            }
        }
    }

    /// Waiting to be let in while nobody present is in the group (the room was empty, or
    /// everyone who was in it left): start the group ourselves. If another arrival wins,
    /// the server refuses ours and the winner adds us.
    pub(super) fn maybe_create(&mut self, env: &mut Env<'_>, now: Instant) {
        if let Some(t) = self.plan.not_before {
            if now < t {
                return;
            }
            self.plan.not_before = None;
        }
        if self.plan.busy() || self.plan.welcome.is_some() || !self.handshakes.is_empty() {
            self.plan.leaf_seen = None;
            return;
        }
        let mine = self
            .roster
            .iter()
            .any(|e| e.device == self.me && e.leaf.is_some());
        if mine {
            // The server has us in the group, yet no Welcome came (it did not open, or our
            // own creation timed out although it was accepted): after a grace for a Welcome
            // on its way, rejoin by external commit rather than wait for ever.
            let since = *self.plan.leaf_seen.get_or_insert(now);
            if now >= since + ROSTER_WAIT {
                self.plan.leaf_seen = None;
                self.start_rejoin(env, 0, "in the group without a copy of it".into());
            }
            return;
        }
        self.plan.leaf_seen = None;
        if !self.opts.starts_group || self.roster.iter().any(|e| e.leaf.is_some()) {
            return;
        }
        let made = env.mls.create_group_with_id(&self.room.0).and_then(|g| {
            let info = g.group_info(env.mls)?;
            Ok((g, info))
        });
        match made {
            Ok((g, group_info)) => {
                tracing::info!("nobody in the room is in its group: starting it");
                self.plan.creating = Some(g);
                self.ask(
                    Asked::CreateGroup,
                    Request::CreateGroup {
                        group: self.room.0.to_vec(),
                        group_info,
                    },
                );
            }
            Err(e) => self.end(
                env,
                LeftReason::Failed(format!("could not start the room's group: {e}")),
            ),
        }
    }

    /// The server answered our group creation.
    pub(super) fn create_answered(&mut self, env: &mut Env<'_>, answer: Answer, now: Instant) {
        let Some(mut g) = self.plan.creating.take() else {
            return;
        };
        match answer {
            Answer::Ok(_) if self.stage == Stage::AwaitingWelcome => {
                self.group = Some(g);
                self.stage = Stage::Member;
                self.entered_group(env, now);
            }
            other => {
                // Someone else started it first (or we left meanwhile): wait to be added.
                tracing::debug!(answer = ?other, "our group was not the room's");
                let _ = g.delete(env.mls);
                self.plan.not_before = Some(now + COMMIT_BACKOFF);
            }
        }
    }

    fn rejoin_failed(&mut self, env: &mut Env<'_>, why: String) {
        self.plan.committing = None;
        self.end(
            env,
            LeftReason::Failed(format!("could not rejoin the room's group: {why}")),
        );
    }
}
