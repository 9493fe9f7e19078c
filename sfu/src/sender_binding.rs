//! Sender binding (DESIGN §4.4): every member can derive every member's SFrame keys, so
//! SFrame alone cannot stop Bob from sending frames under Alice's KID. The SFU knows which
//! participant (MLS leaf index, from its signed join token) each connection belongs to, and
//! drops any frame whose KID names someone else. Reading the KID needs no key.

use sotto_wire::{KidLayout, SframeHeader};

/// Why a frame was dropped at the hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// The payload does not start with a readable SFrame header, or its KID has no layout.
    #[error("payload is not an SFrame")]
    NotSframe,
    /// The KID names another sender.
    #[error("frame claims sender {claimed}, connection belongs to {actual}")]
    WrongSender {
        /// The sender index in the KID.
        claimed: u32,
        /// The participant's own leaf index.
        actual: u32,
    },
}

/// Checks that the SFrame at the start of `payload` was sent under `actual`'s KID.
pub fn check(payload: &[u8], layout: &KidLayout, actual: u32) -> Result<(), BindingError> {
    let (header, _) = SframeHeader::parse(payload).map_err(|_| BindingError::NotSframe)?;
    let parts = layout
        .parse(header.kid)
        .map_err(|_| BindingError::NotSframe)?;
    if parts.sender_index == actual {
        Ok(())
    } else {
        Err(BindingError::WrongSender {
            claimed: parts.sender_index,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_wire::ContextId;

    fn frame(kid: u64) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        let n = SframeHeader { kid, ctr: 9 }.encode(&mut b).expect("encode");
        b.truncate(n + 20);
        b
    }

    #[test]
    fn own_kid_passes_and_another_senders_is_dropped() {
        let layout = KidLayout::default();
        let alice = layout.kid(ContextId::Video, 3, 7).expect("kid");
        assert_eq!(check(&frame(alice), &layout, 3), Ok(()));
        assert_eq!(
            check(&frame(alice), &layout, 4),
            Err(BindingError::WrongSender {
                claimed: 3,
                actual: 4
            })
        );
        assert_eq!(check(&[], &layout, 3), Err(BindingError::NotSframe));
        assert_eq!(
            check(&frame(6 << 22), &layout, 0),
            Err(BindingError::NotSframe)
        );
    }
}
