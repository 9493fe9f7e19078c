//! The epoch transition (DESIGN §4.5, DAVE's shape with timeouts): when a commit is
//! applied every member can read the new epoch at once, while senders keep the previous
//! one for [`super::RoomOptions::send_switch`] so members a little behind lose nothing;
//! then senders switch (with a keyframe, so video decodes on the new keys alone), and
//! receivers erase the previous epoch after the key schedule's grace period.

use std::time::Instant;

use sotto_media::keys::CallKeys;

use super::{Env, LeftReason, RoomEvent, RoomSession};
use crate::verify;

impl RoomSession {
    /// We are in the group (from a Welcome, or with the copy we had): keys of its epoch,
    /// used for sending at once (nobody is behind us), and the members it holds.
    pub(super) fn entered_group(&mut self, env: &mut Env<'_>, now: Instant) {
        let Some(group) = self.group.as_ref() else {
            return;
        };
        let own = group.own_index();
        let keys = group
            .epoch_keys(env.mls, &self.opts.keys)
            .map_err(|e| e.to_string())
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
        self.retry_held(now);
    }

    /// The group moved to a new epoch (a commit of ours or another's was applied).
    pub(super) fn on_new_epoch(&mut self, env: &mut Env<'_>, now: Instant) {
        let Some(group) = self.group.as_ref() else {
            return;
        };
        let fresh = match group.epoch_keys(env.mls, &self.opts.keys) {
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
        self.epoch_shown();
        self.retry_held(now);
    }

    /// We rejoined by external commit, perhaps at another leaf: our frames go out under
    /// the new epoch (and leaf) at once, and the SFU needs a token for the new leaf.
    pub(super) fn rejoined(&mut self, env: &mut Env<'_>, now: Instant) {
        let Some(group) = self.group.as_ref() else {
            return;
        };
        let own = group.own_index();
        let fresh = match group.epoch_keys(env.mls, &self.opts.keys) {
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
            self.link = None;
            self.link_asked = false;
        }
        self.emit(RoomEvent::InGroup { leaf: own });
        self.link_still_up();
        self.epoch_shown();
        self.emit(RoomEvent::KeyframeNeeded);
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
                    .and_then(|s| sotto_proto::Handle::parse(s).ok())?;
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
                Ok(()) => self.emit(RoomEvent::KeyframeNeeded),
                Err(e) => tracing::warn!(error = %e, "could not switch our sending keys"),
            }
        }
    }
}
