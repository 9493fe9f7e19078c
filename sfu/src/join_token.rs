//! Join tokens: the signaling service signs (room, participant, MLS leaf, expiry) with its
//! Ed25519 token key; the SFU verifies the signature with the public key it received when
//! it registered, checks expiry, and from then on binds the connection to that leaf
//! ([`crate::sender_binding`]). Verifying needs no media key.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sotto_proto::{JOIN_TOKEN_LABEL, JoinToken, SignedJoinToken};

/// Why a token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The signature does not verify under the token key (forged or altered).
    #[error("join token signature does not verify")]
    BadSignature,
    /// The signed bytes are not a token.
    #[error("join token is malformed")]
    Malformed,
    /// Past its expiry.
    #[error("join token expired at {expired_unix}")]
    Expired {
        /// When it expired (Unix seconds).
        expired_unix: u64,
    },
}

/// Verifies `signed` under `token_key` at Unix time `now_unix`.
pub fn verify(
    signed: &SignedJoinToken,
    token_key: &VerifyingKey,
    now_unix: u64,
) -> Result<JoinToken, TokenError> {
    let signature =
        Signature::from_slice(&signed.signature).map_err(|_| TokenError::BadSignature)?;
    let mut message = JOIN_TOKEN_LABEL.to_vec();
    message.extend_from_slice(&signed.token);
    token_key
        .verify(&message, &signature)
        .map_err(|_| TokenError::BadSignature)?;
    let token: JoinToken = sotto_proto::decode(&signed.token).map_err(|_| TokenError::Malformed)?;
    if now_unix >= token.expires_unix {
        return Err(TokenError::Expired {
            expired_unix: token.expires_unix,
        });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use sotto_proto::{DeviceAddr, Handle, RoomId};

    fn sign(key: &SigningKey, t: &JoinToken) -> SignedJoinToken {
        let token = sotto_proto::encode(t).expect("encode");
        let mut m = JOIN_TOKEN_LABEL.to_vec();
        m.extend_from_slice(&token);
        SignedJoinToken {
            token,
            signature: key.sign(&m).to_bytes().to_vec(),
        }
    }

    #[test]
    fn valid_forged_altered_and_expired_tokens() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let t = JoinToken {
            room: RoomId([1; 16]),
            device: DeviceAddr {
                handle: Handle::parse("@bob").expect("handle"),
                device: 2,
            },
            leaf: 5,
            expires_unix: 1000,
        };
        let signed = sign(&key, &t);
        assert_eq!(verify(&signed, &key.verifying_key(), 999), Ok(t.clone()));
        assert_eq!(
            verify(&signed, &key.verifying_key(), 1000),
            Err(TokenError::Expired { expired_unix: 1000 })
        );
        let other = SigningKey::from_bytes(&[4; 32]);
        assert_eq!(
            verify(&sign(&other, &t), &key.verifying_key(), 0),
            Err(TokenError::BadSignature)
        );
        let mut altered = signed.clone();
        if let Some(last) = altered.token.last_mut() {
            *last ^= 1;
        }
        assert_eq!(
            verify(&altered, &key.verifying_key(), 0),
            Err(TokenError::BadSignature)
        );
    }
}
