//! Stored deliveries kept until the part of the client that owns them has handled them.
//!
//! The signaling service stores everything addressed to a device (MLS Commits, Welcomes
//! and Proposals, room invitations) and delivers it again at every login until the device
//! acknowledges it. Acknowledgements are per message, so nothing may be acknowledged just
//! because it arrived: a Welcome for another group or a room invite that arrives during a
//! call waits here for its owner, and only the owner's handling acknowledges it.
//!
//! Why per-message acknowledgements rather than a cursor per group: deliveries for
//! different owners interleave in one queue, and an owner may take its items much later
//! (a room joined after the call); per-message acks let any subset go without holding the
//! others hostage, and the server needs no notion of owners.

use std::collections::BTreeMap;

use sotto_proto::{MlsKind, RoomId, Stored};

/// Deliveries received but not yet handled, by sequence number (oldest first).
#[derive(Debug, Default)]
pub struct Inbox {
    held: BTreeMap<u64, Stored>,
}

/// Whose a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    /// An MLS message of this group.
    Group(&'a [u8], MlsKind),
    /// An invitation to this room.
    RoomInvite(&'a RoomId),
}

/// Who owns a stored item.
pub fn owner(item: &Stored) -> Owner<'_> {
    match item {
        Stored::Mls { group, kind, .. } => Owner::Group(group, *kind),
        Stored::RoomInvite { room, .. } => Owner::RoomInvite(room),
    }
}

impl Inbox {
    /// Keeps a delivery for its owner. A redelivery of the same sequence number (after a
    /// reconnect) replaces nothing.
    pub fn hold(&mut self, seq: u64, item: Stored) {
        self.held.entry(seq).or_insert(item);
    }

    /// Takes the oldest held delivery that `want` accepts; the caller handles it and then
    /// acknowledges `seq`.
    pub fn take(&mut self, mut want: impl FnMut(&Stored) -> bool) -> Option<(u64, Stored)> {
        let seq = self
            .held
            .iter()
            .find(|(_, item)| want(item))
            .map(|(seq, _)| *seq)?;
        self.held.remove(&seq).map(|item| (seq, item))
    }

    /// Takes every held delivery that `want` accepts, oldest first.
    pub fn take_all(&mut self, mut want: impl FnMut(&Stored) -> bool) -> Vec<(u64, Stored)> {
        let seqs: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, item)| want(item))
            .map(|(seq, _)| *seq)
            .collect();
        seqs.into_iter()
            .filter_map(|seq| self.held.remove(&seq).map(|item| (seq, item)))
            .collect()
    }

    /// What is held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Stored)> {
        self.held.iter().map(|(seq, item)| (*seq, item))
    }

    /// How many deliveries are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_proto::{DeviceAddr, Handle};

    fn mls(group: u8, kind: MlsKind) -> Stored {
        Stored::Mls {
            group: vec![group],
            kind,
            epoch: 0,
            from: DeviceAddr {
                handle: Handle::parse("@carol").expect("handle"),
                device: 1,
            },
            data: vec![],
        }
    }

    #[test]
    fn each_owner_takes_only_its_own_and_the_rest_waits() {
        let mut inbox = Inbox::default();
        let invite = Stored::RoomInvite {
            room: RoomId([7; 16]),
            from: Handle::parse("@carol").expect("handle"),
        };
        inbox.hold(3, mls(1, MlsKind::Commit));
        inbox.hold(4, mls(2, MlsKind::Welcome));
        inbox.hold(5, invite.clone());
        inbox.hold(6, mls(1, MlsKind::Commit));
        inbox.hold(3, mls(9, MlsKind::Proposal)); // a redelivery changes nothing

        let ours = inbox.take_all(|s| owner(s) == Owner::Group(&[1], MlsKind::Commit));
        assert_eq!(ours.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 6]);
        assert_eq!(inbox.len(), 2, "the Welcome and the invite are still held");
        assert_eq!(
            inbox.take(|s| matches!(owner(s), Owner::RoomInvite(_))),
            Some((5, invite))
        );
        assert_eq!(inbox.iter().map(|(s, _)| s).collect::<Vec<_>>(), vec![4]);
        assert_eq!(inbox.take(|_| false), None);
    }
}
