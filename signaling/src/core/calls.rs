//! One-to-one calls: ring every online device of the callee, first accept wins, and every
//! way a call can end (hang-up, decline, cancel, timeout, disconnect) reaches both sides
//! with its reason. WebRTC negotiation is relayed between the two parties of a call only.

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use sotto_proto::{
    CallId, DeviceAddr, EndReason, ErrorCode, Event, Handle, Response, RoomId, RtcSignal,
};

use super::{Core, Reply, SessionId, Timer, err};
use crate::storage::Room;

struct Call {
    caller: (DeviceAddr, SessionId),
    /// Callee devices still ringing (before an answer).
    ringing: BTreeMap<DeviceAddr, SessionId>,
    /// The callee device that answered.
    answered: Option<(DeviceAddr, SessionId)>,
    /// Whether a party asked for the relay: the call's room then has an SFU.
    relayed: bool,
}

/// Live calls, and which call each device is in.
#[derive(Default)]
pub(super) struct Calls {
    calls: HashMap<CallId, Call>,
    busy: HashMap<DeviceAddr, CallId>,
    /// Answered calls' rooms (a room's id is its call's id), and the call: they live in
    /// memory only, as long as the call. The two parties' devices run the call in it;
    /// it has an SFU only once the call is relayed.
    call_rooms: HashMap<RoomId, CallId>,
}

impl Core {
    pub(super) fn invite(
        &mut self,
        sid: SessionId,
        me: &DeviceAddr,
        call: CallId,
        to: Handle,
        now: Instant,
    ) -> Reply {
        self.account_rate(&me.handle, super::AccountRate::Invites, now)?;
        if self.calls.calls.contains_key(&call) || self.room_record(&RoomId(call.0))?.is_some() {
            // An answered call's room takes the call's id: it must not be a room's.
            return Err(err(ErrorCode::InvalidState, "call id already in use"));
        }
        if to == me.handle {
            return Err(err(ErrorCode::Forbidden, "cannot call yourself"));
        }
        if self.calls.busy.contains_key(me) {
            return Err(err(
                ErrorCode::InvalidState,
                "this device is already in a call",
            ));
        }
        if self.storage.account(&to)?.is_none() {
            return Err(err(ErrorCode::NotFound, format!("no account {to}")));
        }
        let devices = self.sessions_of(&to);
        if devices.is_empty() {
            return Err(err(
                ErrorCode::Offline,
                format!("{to} has no device online"),
            ));
        }
        if devices.iter().any(|(d, _)| self.calls.busy.contains_key(d)) {
            return Err(err(ErrorCode::Busy, format!("{to} is in another call")));
        }
        for (d, s) in &devices {
            self.calls.busy.insert(d.clone(), call);
            self.event(
                *s,
                Event::IncomingCall {
                    call,
                    from: me.clone(),
                },
            );
        }
        self.calls.busy.insert(me.clone(), call);
        self.calls.calls.insert(
            call,
            Call {
                caller: (me.clone(), sid),
                ringing: devices.iter().cloned().collect(),
                answered: None,
                relayed: false,
            },
        );
        self.timers
            .insert((now + self.cfg.ring_timeout, Timer::Ring(call)));
        self.metrics
            .calls_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::Ringing {
            call,
            devices: devices.len().try_into().unwrap_or(u32::MAX),
        })
    }

    pub(super) fn accept(&mut self, sid: SessionId, me: &DeviceAddr, call: CallId) -> Reply {
        let c = self
            .calls
            .calls
            .get_mut(&call)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such call"))?;
        if c.answered.is_some() {
            return Err(err(
                ErrorCode::AlreadyAnswered,
                "another device answered first",
            ));
        }
        if c.ringing.remove(me).is_none() {
            return Err(err(
                ErrorCode::Forbidden,
                "this device is not ringing for that call",
            ));
        }
        c.answered = Some((me.clone(), sid));
        self.calls.call_rooms.insert(RoomId(call.0), call);
        let others: Vec<(DeviceAddr, SessionId)> =
            std::mem::take(&mut c.ringing).into_iter().collect();
        let caller = c.caller.1;
        for (d, s) in others {
            self.calls.busy.remove(&d);
            self.event(
                s,
                Event::CallEnded {
                    call,
                    reason: EndReason::AnsweredElsewhere,
                },
            );
        }
        self.event(
            caller,
            Event::CallAccepted {
                call,
                by: me.clone(),
            },
        );
        Ok(Response::Ok)
    }

    pub(super) fn decline(&mut self, me: &DeviceAddr, call: CallId, now: Instant) -> Reply {
        let c = self
            .calls
            .calls
            .get(&call)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such call"))?;
        if !c.ringing.contains_key(me) {
            return Err(err(
                ErrorCode::Forbidden,
                "this device is not ringing for that call",
            ));
        }
        self.end_call(call, EndReason::Declined, now);
        Ok(Response::Ok)
    }

    pub(super) fn cancel(&mut self, me: &DeviceAddr, call: CallId, now: Instant) -> Reply {
        let c = self
            .calls
            .calls
            .get(&call)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such call"))?;
        if &c.caller.0 != me {
            return Err(err(ErrorCode::Forbidden, "only the caller cancels"));
        }
        if c.answered.is_some() {
            return Err(err(
                ErrorCode::InvalidState,
                "the call was answered: hang up instead",
            ));
        }
        self.end_call(call, EndReason::Cancelled, now);
        Ok(Response::Ok)
    }

    pub(super) fn hangup(&mut self, me: &DeviceAddr, call: CallId, now: Instant) -> Reply {
        let c = self
            .calls
            .calls
            .get(&call)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such call"))?;
        let is_caller = &c.caller.0 == me;
        let is_callee = c.answered.as_ref().is_some_and(|(d, _)| d == me);
        let is_ringing = c.ringing.contains_key(me);
        let reason = match (c.answered.is_some(), is_caller, is_callee, is_ringing) {
            (true, true, _, _) | (true, _, true, _) => EndReason::HungUp,
            (false, true, _, _) => EndReason::Cancelled,
            (false, _, _, true) => EndReason::Declined,
            _ => return Err(err(ErrorCode::Forbidden, "not a party to that call")),
        };
        self.end_call(call, reason, now);
        Ok(Response::Ok)
    }

    pub(super) fn relay(&mut self, me: &DeviceAddr, call: CallId, signal: RtcSignal) -> Reply {
        check_signal_size(&signal)?;
        if matches!(signal, RtcSignal::UseRoom { .. }) {
            return Err(err(
                ErrorCode::Forbidden,
                "only the service moves a call to a room (ask with RelayCall)",
            ));
        }
        let c = self
            .calls
            .calls
            .get(&call)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such call"))?;
        let targets: Vec<SessionId> = if &c.caller.0 == me {
            match &c.answered {
                Some((_, s)) => vec![*s],
                None => c.ringing.values().copied().collect(),
            }
        } else if c.answered.as_ref().is_some_and(|(d, _)| d == me) {
            vec![c.caller.1]
        } else {
            return Err(err(
                ErrorCode::Forbidden,
                "only the two parties of an answered call relay",
            ));
        };
        for s in targets {
            self.event(
                s,
                Event::Relayed {
                    call,
                    from: me.clone(),
                    signal: signal.clone(),
                },
            );
        }
        Ok(Response::Ok)
    }

    /// Moves an answered call onto an SFU: a room of two, the parties' only (see
    /// [`sotto_proto::Request::RelayCall`]).
    pub(super) fn relay_call(&mut self, me: &DeviceAddr, call: CallId) -> Reply {
        let c = self
            .calls
            .calls
            .get(&call)
            .ok_or_else(|| err(ErrorCode::NotFound, "no such call"))?;
        let (caller, answered) = (&c.caller, c.answered.as_ref());
        let other = match answered {
            Some(a) if &caller.0 == me => a.1,
            Some(a) if &a.0 == me => caller.1,
            _ => {
                return Err(err(
                    ErrorCode::Forbidden,
                    "only the two parties of an answered call move it to a relay",
                ));
            }
        };
        let room = RoomId(call.0);
        if !c.relayed {
            if !self.has_sfu() {
                return Err(err(
                    ErrorCode::LimitReached { what: "sfu".into() },
                    "no SFU is available to relay the call",
                ));
            }
            if let Some(c) = self.calls.calls.get_mut(&call) {
                c.relayed = true;
            }
            self.place_sfu(&room);
        }
        self.event(
            other,
            Event::Relayed {
                call,
                from: me.clone(),
                signal: RtcSignal::UseRoom { room },
            },
        );
        Ok(Response::RoomCreated { room })
    }

    /// The two devices of a relayed call's room: only they may join it (another device
    /// of either account is not in the call).
    pub(super) fn relay_devices(&self, room: &RoomId) -> Option<[&DeviceAddr; 2]> {
        let c = self.room_call(room)?;
        Some([&c.caller.0, &c.answered.as_ref()?.0])
    }

    /// The call whose room `room` is.
    fn room_call(&self, room: &RoomId) -> Option<&Call> {
        self.calls.calls.get(self.calls.call_rooms.get(room)?)
    }

    /// Whether `room` is a call's that goes peer to peer (no SFU for it).
    pub(super) fn is_direct_call_room(&self, room: &RoomId) -> bool {
        self.room_call(room).is_some_and(|c| !c.relayed)
    }

    /// Who may join the room of a relayed call: the caller (its owner) and the callee.
    pub(super) fn relay_room(&self, room: &RoomId) -> Option<Room> {
        let c = self.room_call(room)?;
        let callee = c.answered.as_ref()?;
        Some(Room {
            owner: c.caller.0.handle.clone(),
            invited: vec![callee.0.handle.clone()],
        })
    }

    pub(super) fn ring_timeout(&mut self, call: CallId, now: Instant) {
        if self
            .calls
            .calls
            .get(&call)
            .is_some_and(|c| c.answered.is_none())
        {
            self.end_call(call, EndReason::Timeout, now);
        }
    }

    pub(super) fn calls_on_disconnect(&mut self, me: &DeviceAddr, sid: SessionId, now: Instant) {
        let Some(&call) = self.calls.busy.get(me) else {
            return;
        };
        let Some(c) = self.calls.calls.get_mut(&call) else {
            return;
        };
        if c.caller.1 == sid || c.answered.as_ref().is_some_and(|(_, s)| *s == sid) {
            self.end_call(call, EndReason::PeerDisconnected, now);
        } else if c.ringing.get(me) == Some(&sid) {
            // One ringing device went away; the call goes on while others ring.
            c.ringing.remove(me);
            self.calls.busy.remove(me);
            if c.ringing.is_empty() && c.answered.is_none() {
                self.end_call(call, EndReason::PeerDisconnected, now);
            }
        }
    }

    /// A party refuses the call because a member's credential did not check out.
    pub(super) fn key_mismatch(&mut self, me: &DeviceAddr, call: CallId, now: Instant) -> Reply {
        if !self.is_call_party(me, &call)
            && !self
                .calls
                .calls
                .get(&call)
                .is_some_and(|c| c.ringing.contains_key(me))
        {
            return Err(err(ErrorCode::Forbidden, "not a party to that call"));
        }
        tracing::warn!("a call was refused for a key mismatch");
        self.end_call(call, EndReason::KeyMismatch, now);
        Ok(Response::Ok)
    }

    /// Whether `me` is the caller or the answering callee of a live call.
    pub(super) fn is_call_party(&self, me: &DeviceAddr, call: &CallId) -> bool {
        self.calls
            .calls
            .get(call)
            .is_some_and(|c| &c.caller.0 == me || c.answered.as_ref().is_some_and(|(d, _)| d == me))
    }

    /// Ends a call: every party, the one who ended it included, hears `reason`, so each
    /// side's call ends the same way whatever ended it. The call's MLS group (whose id is
    /// the call id) is deleted with whatever is still queued for it.
    fn end_call(&mut self, call: CallId, reason: EndReason, now: Instant) {
        let Some(c) = self.calls.calls.remove(&call) else {
            return;
        };
        self.delete_group(&call.0);
        let mut parties: Vec<(DeviceAddr, SessionId)> = vec![c.caller];
        parties.extend(c.ringing);
        parties.extend(c.answered);
        for (d, s) in parties {
            self.calls.busy.remove(&d);
            if self.sessions.contains_key(&s) {
                self.event(s, Event::CallEnded { call, reason });
            }
        }
        self.metrics.call_ended(reason);
        let room = RoomId(call.0);
        if self.calls.call_rooms.remove(&room).is_some() {
            // The call's room ends with it: nobody joins it any more, and whoever is
            // still in it (after hearing the call ended) is taken out, so its SFU
            // forwards nothing more for a call that is over.
            self.close_room(room, now);
        }
    }
}

/// The largest SDP a party may relay: an offer with many candidates is a few KiB. Frames
/// may be 1 MiB for MLS messages; negotiation has no use for that much.
pub(super) const MAX_SDP: usize = 64 * 1024;
/// The largest trickled candidate line.
const MAX_CANDIDATE: usize = 1024;

/// Refuses negotiation payloads beyond what negotiation needs, so nobody can push
/// megabyte "offers" through the service to a device.
pub(super) fn check_signal_size(signal: &RtcSignal) -> Result<(), sotto_proto::ErrorBody> {
    let too_big = match signal {
        RtcSignal::Offer(s) | RtcSignal::Answer(s) => s.len() > MAX_SDP,
        RtcSignal::JoinSfu { offer, .. } => offer.len() > MAX_SDP,
        RtcSignal::Candidate { candidate, mid } => {
            candidate.len() + mid.as_ref().map_or(0, String::len) > MAX_CANDIDATE
        }
        RtcSignal::PauseLayers { paused } => paused.len() > 8,
        RtcSignal::EndOfCandidates | RtcSignal::MaxLayer { .. } | RtcSignal::UseRoom { .. } => {
            false
        }
    };
    if too_big {
        return Err(err(
            ErrorCode::TooLarge,
            "a negotiation message is larger than negotiation needs",
        ));
    }
    Ok(())
}
