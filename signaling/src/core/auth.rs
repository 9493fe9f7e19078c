//! Registration, challenge–response login, lookup and presence.
//!
//! A login answers with a fresh 32-byte nonce; the client signs [`login_transcript`] with
//! the account's Ed25519 identity key. The nonce is consumed by the first proof, right or
//! wrong, so a captured signature is useless afterwards.

use std::time::Instant;

use ed25519_dalek::{Signature, VerifyingKey};
use sotto_proto::{
    DeviceAddr, DeviceId, ErrorCode, Event, Handle, Response, ServerMsg, login_transcript,
};

use super::{Core, Reply, SessionId, SessionState, err};

impl Core {
    pub(super) fn register(
        &mut self,
        sid: SessionId,
        state: &SessionState,
        handle: Handle,
        identity_key: Vec<u8>,
        device: DeviceId,
    ) -> Reply {
        if !matches!(
            state,
            SessionState::Greeted | SessionState::Challenged { .. }
        ) {
            return Err(err(ErrorCode::InvalidState, "already logged in"));
        }
        if VerifyingKey::try_from(identity_key.as_slice()).is_err() {
            return Err(err(
                ErrorCode::Malformed,
                "identity key is not an Ed25519 public key",
            ));
        }
        if self.storage.account(&handle)?.is_some() {
            return Err(err(ErrorCode::HandleTaken, format!("{handle} is taken")));
        }
        self.challenge(sid, DeviceAddr { handle, device }, Some(identity_key))
    }

    pub(super) fn login(
        &mut self,
        sid: SessionId,
        state: &SessionState,
        handle: Handle,
        device: DeviceId,
    ) -> Reply {
        if !matches!(
            state,
            SessionState::Greeted | SessionState::Challenged { .. }
        ) {
            return Err(err(ErrorCode::InvalidState, "already logged in"));
        }
        if self.storage.account(&handle)?.is_none() {
            return Err(err(ErrorCode::NotFound, format!("no account {handle}")));
        }
        self.challenge(sid, DeviceAddr { handle, device }, None)
    }

    fn challenge(
        &mut self,
        sid: SessionId,
        device: DeviceAddr,
        register: Option<Vec<u8>>,
    ) -> Reply {
        let nonce = self.random::<32>();
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.state = SessionState::Challenged {
                nonce,
                device,
                register,
            };
        }
        Ok(Response::Challenge {
            nonce: nonce.to_vec(),
        })
    }

    pub(super) fn prove(
        &mut self,
        sid: SessionId,
        state: SessionState,
        signature: &[u8],
        now: Instant,
    ) -> Reply {
        let SessionState::Challenged {
            nonce,
            device,
            register,
        } = state
        else {
            return Err(err(
                ErrorCode::InvalidState,
                "no challenge outstanding: send Login first",
            ));
        };
        // The nonce is spent whatever happens next.
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.state = SessionState::Greeted;
        }
        let key_bytes = match &register {
            Some(k) => k.clone(),
            None => match self.storage.account(&device.handle)? {
                Some(a) => a.identity_key,
                None => return Err(err(ErrorCode::NotFound, "account vanished")),
            },
        };
        let transcript = login_transcript(&nonce, &device.handle, device.device);
        let verified = VerifyingKey::try_from(key_bytes.as_slice())
            .ok()
            .zip(Signature::from_slice(signature).ok())
            .is_some_and(|(k, s)| k.verify_strict(&transcript, &s).is_ok());
        if !verified {
            self.metrics
                .login_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(err(ErrorCode::BadSignature, "signature does not verify"));
        }
        let mut created = false;
        if register.is_some() {
            if !self.storage.create_account(&device.handle, &key_bytes)? {
                return Err(err(
                    ErrorCode::HandleTaken,
                    format!("{} is taken", device.handle),
                ));
            }
            created = true;
        }
        let account = self
            .storage
            .account(&device.handle)?
            .ok_or_else(|| err(ErrorCode::Internal, "account missing after creation"))?;
        if !account.devices.contains(&device.device) {
            if account.devices.len() >= self.cfg.limits.max_devices {
                tracing::info!("device cap reached");
                return Err(err(
                    ErrorCode::LimitReached {
                        what: "devices".into(),
                    },
                    format!(
                        "an account has at most {} devices",
                        self.cfg.limits.max_devices
                    ),
                ));
            }
            self.storage.add_device(&device)?;
        }
        let pending = self.storage.pending_count(&device)?;
        let key_packages = self.storage.key_package_count(&device)?;
        self.set_online(&device, sid, now);
        self.metrics
            .logins
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::LoggedIn {
            handle: device.handle,
            device: device.device,
            created,
            pending: pending.try_into().unwrap_or(u32::MAX),
            key_packages: key_packages.try_into().unwrap_or(u32::MAX),
            service_key: self.sender.public().to_vec(),
        })
    }

    fn set_online(&mut self, device: &DeviceAddr, sid: SessionId, _now: Instant) {
        // One session per device: a second login replaces the first.
        if let Some(old) = self.session_of(device)
            && old != sid
        {
            self.goodbye(
                old,
                err(
                    ErrorCode::InvalidState,
                    "this device logged in on another connection",
                ),
            );
            self.disconnect(old, _now);
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.state = SessionState::User(device.clone());
        }
        let devices = self.online.entry(device.handle.clone()).or_default();
        let first = devices.is_empty();
        devices.insert(device.device, sid);
        if first {
            self.presence_changed(&device.handle, true);
        }
    }

    pub(super) fn set_offline(&mut self, device: &DeviceAddr, sid: SessionId) {
        let Some(devices) = self.online.get_mut(&device.handle) else {
            return;
        };
        if devices.get(&device.device) == Some(&sid) {
            devices.remove(&device.device);
        }
        if devices.is_empty() {
            self.online.remove(&device.handle);
            self.presence_changed(&device.handle, false);
        }
    }

    fn presence_changed(&mut self, h: &Handle, online: bool) {
        let watchers: Vec<SessionId> = self
            .watchers
            .get(h)
            .map(|w| w.iter().copied().collect())
            .unwrap_or_default();
        for w in watchers {
            self.event(
                w,
                Event::Presence {
                    handle: h.clone(),
                    online,
                },
            );
        }
    }

    pub(super) fn lookup(&mut self, h: &Handle) -> Reply {
        let account = self
            .storage
            .account(h)?
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no account {h}")))?;
        Ok(Response::Identity {
            handle: account.handle,
            identity_key: account.identity_key,
            devices: account.devices,
            online: self.online.contains_key(h),
        })
    }

    pub(super) fn watch(&mut self, sid: SessionId, handles: Vec<Handle>) -> Reply {
        if handles.len() > self.cfg.limits.max_watch {
            return Err(err(
                ErrorCode::LimitReached {
                    what: "watched handles".into(),
                },
                format!("watch at most {} handles", self.cfg.limits.max_watch),
            ));
        }
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Err(err(ErrorCode::Internal, "no session"));
        };
        let old = std::mem::replace(&mut session.watching, handles.clone());
        for h in old {
            if let Some(w) = self.watchers.get_mut(&h) {
                w.remove(&sid);
                if w.is_empty() {
                    self.watchers.remove(&h);
                }
            }
        }
        for h in handles {
            self.watchers.entry(h.clone()).or_default().insert(sid);
            let online = self.online.contains_key(&h);
            self.send(sid, ServerMsg::Event(Event::Presence { handle: h, online }));
        }
        Ok(Response::Ok)
    }
}
