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

/// Domain separation for 1:1 safety numbers.
const SAFETY_LABEL: &[u8] = b"sotto safety number v1";

/// The 1:1 safety number of two identities: 60 digits in twelve groups of five, the same
/// on both sides (the two halves are ordered by handle), changing if either identity key
/// changes. Each half is 30 digits from SHA-256 over the label, the handle and the key.
pub fn safety_number(a_handle: &str, a_key: &[u8], b_handle: &str, b_key: &[u8]) -> String {
    let half = |h: &str, k: &[u8]| -> Vec<String> {
        let d = Sha256::new()
            .chain_update(SAFETY_LABEL)
            .chain_update((h.len() as u32).to_be_bytes())
            .chain_update(h.as_bytes())
            .chain_update(k)
            .finalize();
        d.chunks_exact(5)
            .take(6)
            .map(|c| {
                let v = c.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
                format!("{:05}", v % 100_000)
            })
            .collect()
    };
    let (first, second) = if a_handle <= b_handle {
        ((a_handle, a_key), (b_handle, b_key))
    } else {
        ((b_handle, b_key), (a_handle, a_key))
    };
    let mut groups = half(first.0, first.1);
    groups.extend(half(second.0, second.1));
    groups.join(" ")
}

#[cfg(test)]
mod safety_tests {
    use super::*;

    #[test]
    fn safety_number_is_symmetric_and_key_sensitive() {
        let n = safety_number("@alice", &[1; 32], "@bob", &[2; 32]);
        assert_eq!(n, safety_number("@bob", &[2; 32], "@alice", &[1; 32]));
        assert_eq!(n.split(' ').count(), 12);
        assert!(n.split(' ').all(|g| g.len() == 5));
        assert_ne!(n, safety_number("@alice", &[1; 32], "@bob", &[3; 32]));
    }
}
