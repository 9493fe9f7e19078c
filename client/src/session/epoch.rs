//! The epoch transition (DESIGN §4.5, DAVE's shape with timeouts): when a commit is
//! applied every member can read the new epoch at once, while senders keep the previous
//! one for [`super::RoomOptions::send_switch`] so members a little behind lose nothing;
//! then senders switch (with a keyframe, so video decodes on the new keys alone), and
//! receivers erase the previous epoch after the key schedule's grace period.

use std::{collections::BTreeSet, time::Instant};

use sotto_media::keys::{CallKeys, EpochKeys};

use sotto_proto::Handle;

use super::{Env, LeftReason, RoomEvent, RoomSession};
use crate::{mls::CallGroup, verify};

impl RoomSession {
    /// We are in the group (from a Welcome, or with the copy we had): keys of its epoch,
    /// used for sending at once (nobody is behind us), and the members it holds.
    pub(super) fn entered_group(&mut self, env: &mut Env<'_>, now: Instant) {
        let Some(group) = self.group.as_ref() else {
            return;
        };
        let own = group.own_index();
        let keys = self
            .epoch_keys(group, env)
            .and_then(|k| CallKeys::new(own, k).map_err(|e| e.to_string()));
        match keys {
            Ok(k) => self.keys = Some(k),
            Err(e) => return self.end(env, LeftReason::Failed(format!("media keys: {e}"))),
        }
        self.entered_at = Some(now);
        self.switch_at = None;
        self.emit(RoomEvent::InGroup { leaf: own });
        self.link_still_up();
        self.epoch_shown();
        self.arm_self_update(now);
        self.retry_held(now);
    }

    /// The group moved to a new epoch (a commit of ours or another's was applied).
    pub(super) fn on_new_epoch(&mut self, env: &mut Env<'_>, now: Instant) {
        if self.quarantined(env) {
            // Its keys would be shared with a member whose key did not check out: our
            // frames stay in the epoch before, and its frames are never decrypted.
            return;
        }
        let Some(group) = self.group.as_ref() else {
            return;
        };
        let fresh = match self.epoch_keys(group, env) {
            Ok(k) => k,
            Err(e) => return self.end(env, LeftReason::Failed(format!("media keys: {e}"))),
        };
        let advanced = match self.keys.as_mut() {
            Some(k) => k.receive_epoch(fresh, now).map_err(|e| e.to_string()),
            None => CallKeys::new(group.own_index(), fresh)
                .map(|k| self.keys = Some(k))
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = advanced {
            return self.end(env, LeftReason::Failed(format!("media keys: {e}")));
        }
        self.switch_at = Some(now + self.opts.send_switch);
        let alone = self.members.len() <= 1;
        let before: BTreeSet<Handle> = self.members.values().cloned().collect();
        self.epoch_shown();
        let after: BTreeSet<Handle> = self.members.values().cloned().collect();
        self.switch_is_rekey = before == after;
        self.status.rekeys += u64::from(self.switch_is_rekey);
        self.arm_self_update(now);
        if alone {
            // Nobody else had the previous epoch: nobody needs our frames in it.
            self.switch_at = Some(now);
            self.epoch_timeout(now);
        }
        self.retry_held(now);
    }

    /// The media keys of `group`'s epoch (with [`super::RoomOptions::test_wrong_keys`],
    /// from a secret nobody else has).
    fn epoch_keys(&self, group: &CallGroup, env: &Env<'_>) -> Result<EpochKeys, String> {
        let keys = if self.opts.test_wrong_keys {
            EpochKeys::derive(
                &RandomExporter,
                group.epoch(),
                group.member_indices(),
                &self.opts.keys,
            )
        } else {
            group.epoch_keys(env.mls, &self.opts.keys)
        };
        keys.map_err(|e| e.to_string())
    }

    /// We rejoined by external commit, perhaps at another leaf: our frames go out under
    /// the new epoch (and leaf) at once, and the SFU needs a token for the new leaf.
    pub(super) fn rejoined(&mut self, env: &mut Env<'_>, now: Instant) {
        let Some(group) = self.group.as_ref() else {
            return;
        };
        let own = group.own_index();
        let fresh = match self.epoch_keys(group, env) {
            Ok(k) => k,
            Err(e) => return self.end(env, LeftReason::Failed(format!("media keys: {e}"))),
        };
        let moved = match self.keys.as_mut() {
            Some(k) => k.rejoined(own, fresh, now).map_err(|e| e.to_string()),
            None => CallKeys::new(own, fresh)
                .map(|k| self.keys = Some(k))
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = moved {
            return self.end(env, LeftReason::Failed(format!("media keys: {e}")));
        }
        self.entered_at = Some(now);
        self.switch_at = None;
        if self.opts.direct.is_none() {
            // The SFU binds a connection to its leaf; a peer-to-peer link has none.
            self.retire_link();
            self.link_asked = false;
        }
        self.emit(RoomEvent::InGroup { leaf: own });
        self.link_still_up();
        self.epoch_shown();
        self.status.rekeys += 1;
        self.arm_self_update(now);
        self.keyframe_for_epoch(true);
        self.retry_held(now);
    }

    /// After `InGroup` (which the shell takes as "media not up yet"): a link that is up
    /// already says so again, with a keyframe for what we send from now on. A direct
    /// call's answering side connects before it is let in, and a direct link outlives a
    /// rejoin (it is bound to no leaf).
    fn link_still_up(&mut self) {
        if self.link.as_ref().is_some_and(|l| l.is_connected()) {
            self.emit(RoomEvent::Connected);
            self.emit(RoomEvent::KeyframeNeeded);
        }
    }

    /// Members and the verification code of the current epoch, for the UI.
    fn epoch_shown(&mut self) {
        let Some(group) = self.group.as_ref() else {
            return;
        };
        self.members = group
            .members()
            .into_iter()
            .filter_map(|m| {
                let h = std::str::from_utf8(&m.identity)
                    .ok()
                    .and_then(|s| Handle::parse(s).ok())?;
                Some((m.leaf, h))
            })
            .collect();
        let code = verify::group_code(&group.epoch_authenticator());
        let epoch = group.epoch();
        self.status.code = code.clone();
        tracing::info!(epoch, %code, members = self.members.len(), "new epoch");
        self.emit(RoomEvent::Members(self.members.clone()));
        self.emit(RoomEvent::Epoch { epoch, code });
    }

    /// The transition time is over: our frames move to the current epoch.
    pub(super) fn epoch_timeout(&mut self, now: Instant) {
        if self.switch_at.is_none_or(|t| t > now) {
            return;
        }
        self.switch_at = None;
        if let Some(k) = self.keys.as_mut() {
            match k.send_current() {
                Ok(()) => self.keyframe_for_epoch(self.switch_is_rekey),
                Err(e) => tracing::warn!(error = %e, "could not switch our sending keys"),
            }
        }
    }

    /// Our frames moved to a new epoch: video needs a keyframe under the new keys
    /// (counted when the epoch was a rekey of the same members).
    fn keyframe_for_epoch(&mut self, rekey: bool) {
        if rekey && self.opts.link.video {
            self.status.epoch_keyframes += 1;
        }
        self.emit(RoomEvent::KeyframeNeeded);
    }

    /// The next self-update, this long after the latest epoch, while anyone else is in
    /// the group to share the new keys with.
    fn arm_self_update(&mut self, now: Instant) {
        let others = self.members.len() > 1;
        self.self_update_due = self
            .opts
            .self_update_every
            .filter(|_| others)
            .map(|d| now + d);
    }
}

/// An exporter of random secrets, for [`super::RoomOptions::test_wrong_keys`].
struct RandomExporter;

impl sotto_media::keys::MlsExporter for RandomExporter {
    type Error = std::io::Error;
    fn export_secret(&self, _: &str, _: &[u8], len: usize) -> Result<Vec<u8>, Self::Error> {
        let mut v = vec![0u8; len];
        getrandom::fill(&mut v).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(v)
    }
}
