//! Verification codes that people compare out of band to detect a key-substituting server
//! (DESIGN §2).
//!
//! The group code is derived from the MLS epoch authenticator (RFC 9420 §8.7), which every
//! member of an epoch computes identically and a server cannot steer: equal codes mean
//! everyone is in the same group with the same members' keys.

use sha2::{Digest, Sha256};

/// Domain separation for the group code, versioned so a future change cannot collide.
const GROUP_CODE_LABEL: &[u8] = b"sotto group verification code v1";

/// The group verification code for an epoch authenticator: 20 digits in four groups of
/// five, e.g. `"04219 77310 50263 18845"`.
pub fn group_code(epoch_authenticator: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(GROUP_CODE_LABEL)
        .chain_update(epoch_authenticator)
        .finalize();
    digest
        .chunks_exact(8)
        .take(4)
        .map(|c| {
            let v = u64::from_be_bytes(c.try_into().unwrap_or([0; 8]));
            format!("{:05}", v % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_stable_shaped_and_input_sensitive() {
        let a = group_code(b"epoch authenticator A");
        assert_eq!(a, group_code(b"epoch authenticator A"));
        assert_eq!(a.len(), 23);
        assert!(
            a.split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
        );
        assert_ne!(a, group_code(b"epoch authenticator B"));
    }
}
