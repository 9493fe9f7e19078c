//! Whether a member's MLS credential is its account's (DESIGN §4.2): the credential must
//! name a handle whose directory key is the credential's signature key, and on a profile
//! that key must be the one pinned for the contact (trust on first use). Sans-IO: a
//! handle whose directory key is not known yet is answered [`Verdict::Ask`], the session
//! looks it up, [`Directory::learn`]s the answer and asks again.

use std::collections::HashMap;

use sotto_proto::Handle;

use crate::{
    mls::MemberCredential,
    profile::{Profile, ProfileError, key_fingerprint},
};

/// Where pinned contact keys are checked (and new ones pinned).
pub trait Pins {
    /// Accepts `key` for `handle` if it is the pinned one (pinning it if the contact is
    /// new); refuses a changed key.
    fn check(&mut self, handle: &Handle, key: &[u8]) -> Result<(), ProfileError>;
}

impl Pins for Profile {
    fn check(&mut self, handle: &Handle, key: &[u8]) -> Result<(), ProfileError> {
        self.check_contact(handle.as_str(), key).map(|_| ())
    }
}

/// Pins nothing: ephemeral endpoints (tests, the bench) check the directory only.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPins;

impl Pins for NoPins {
    fn check(&mut self, _: &Handle, _: &[u8]) -> Result<(), ProfileError> {
        Ok(())
    }
}

/// What a credential check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The credential is this handle's.
    Member(Handle),
    /// The directory's key for this handle is needed first.
    Ask(Handle),
    /// The credential is not its account's: nothing may be encrypted to it or believed
    /// from it.
    Refused {
        /// Who it claims to be (not validated: for messages only).
        shown: String,
        /// What did not match.
        reason: String,
    },
}

/// Directory keys learned during a session, and our own identity.
#[derive(Debug)]
pub struct Directory {
    me: Handle,
    my_key: Vec<u8>,
    keys: HashMap<Handle, Vec<u8>>,
    /// Handles the directory says have no account.
    missing: std::collections::HashSet<Handle>,
    /// The only handles (besides ours) a member may have, if the group is limited (a
    /// relayed one-to-one call: the two parties).
    only: Option<Vec<Handle>>,
}

impl Directory {
    /// A directory for `me`, whose identity key is `my_key`.
    pub fn new(me: Handle, my_key: Vec<u8>) -> Self {
        Self {
            me,
            my_key,
            keys: HashMap::new(),
            missing: std::collections::HashSet::new(),
            only: None,
        }
    }

    /// Accepts members with these handles only (and ours): anyone else is refused,
    /// whatever their keys.
    pub fn only(mut self, handles: Vec<Handle>) -> Self {
        self.only = Some(handles);
        self
    }

    /// The directory answered a lookup of `handle` with `key`.
    pub fn learn(&mut self, handle: Handle, key: Vec<u8>) {
        self.keys.insert(handle, key);
    }

    /// The directory has no account for `handle`.
    pub fn learn_missing(&mut self, handle: Handle) {
        self.missing.insert(handle);
    }

    /// Whether the directory's key for `h` is known (or that it has none).
    pub fn knows(&self, h: &Handle) -> bool {
        self.keys.contains_key(h) || self.missing.contains(h)
    }

    /// Checks `m` against the directory and `pins`.
    pub fn check(&self, m: &MemberCredential, pins: &mut dyn Pins) -> Verdict {
        let shown = String::from_utf8_lossy(&m.identity).into_owned();
        let refused = |reason: String| Verdict::Refused {
            shown: shown.clone(),
            reason,
        };
        let Some(handle) = std::str::from_utf8(&m.identity)
            .ok()
            .and_then(|s| Handle::parse(s).ok())
        else {
            return refused("the credential does not name a valid handle".into());
        };
        if handle == self.me {
            if m.signature_key != self.my_key {
                return refused("a member claims to be us with another key".into());
            }
            return Verdict::Member(handle);
        }
        if self
            .only
            .as_ref()
            .is_some_and(|only| !only.contains(&handle))
        {
            return refused(format!("{handle} is not a party to this call"));
        }
        if self.missing.contains(&handle) {
            return refused(format!("the directory has no account {handle}"));
        }
        let Some(directory) = self.keys.get(&handle) else {
            return Verdict::Ask(handle);
        };
        if &m.signature_key != directory {
            return refused(format!(
                "its credential carries key {}, the directory says {}",
                key_fingerprint(&m.signature_key),
                key_fingerprint(directory)
            ));
        }
        match pins.check(&handle, &m.signature_key) {
            Ok(()) => Verdict::Member(handle),
            Err(e) => refused(e.to_string()),
        }
    }

    /// Checks every credential in `members`: the first refusal, else the handles still to
    /// look up (empty when all are members).
    pub fn check_all(
        &self,
        members: &[MemberCredential],
        pins: &mut dyn Pins,
    ) -> Result<Vec<Handle>, Verdict> {
        let mut ask = Vec::new();
        for m in members {
            match self.check(m, pins) {
                Verdict::Member(_) => {}
                Verdict::Ask(h) => {
                    if !ask.contains(&h) {
                        ask.push(h);
                    }
                }
                refused => return Err(refused),
            }
        }
        Ok(ask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(handle: &str, key: &[u8]) -> MemberCredential {
        MemberCredential {
            leaf: 1,
            identity: handle.as_bytes().to_vec(),
            signature_key: key.to_vec(),
        }
    }

    fn h(s: &str) -> Handle {
        Handle::parse(s).expect("handle")
    }

    struct Pinned(HashMap<Handle, Vec<u8>>);

    impl Pins for Pinned {
        fn check(&mut self, handle: &Handle, key: &[u8]) -> Result<(), ProfileError> {
            match self.0.get(handle) {
                Some(k) if k != key => Err(ProfileError::KeyChanged {
                    handle: handle.to_string(),
                    pinned: key_fingerprint(k),
                    presented: key_fingerprint(key),
                }),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn a_member_is_asked_for_then_accepted_only_with_the_directory_key() {
        let mut dir = Directory::new(h("@mine"), vec![1; 32]);
        let bob = cred("@bob", &[2; 32]);
        assert_eq!(dir.check(&bob, &mut NoPins), Verdict::Ask(h("@bob")));
        dir.learn(h("@bob"), vec![2; 32]);
        assert_eq!(dir.check(&bob, &mut NoPins), Verdict::Member(h("@bob")));
        let swapped = cred("@bob", &[9; 32]);
        assert!(matches!(
            dir.check(&swapped, &mut NoPins),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn a_handle_the_directory_has_no_account_for_is_refused_not_asked_again() {
        let mut dir = Directory::new(h("@mine"), vec![1; 32]);
        let ghost = cred("@ghost", &[4; 32]);
        assert_eq!(dir.check(&ghost, &mut NoPins), Verdict::Ask(h("@ghost")));
        dir.learn_missing(h("@ghost"));
        assert!(dir.knows(&h("@ghost")));
        assert!(matches!(
            dir.check(&ghost, &mut NoPins),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn our_handle_with_another_key_and_bad_handles_are_refused() {
        let dir = Directory::new(h("@mine"), vec![1; 32]);
        assert_eq!(
            dir.check(&cred("@mine", &[1; 32]), &mut NoPins),
            Verdict::Member(h("@mine"))
        );
        assert!(matches!(
            dir.check(&cred("@mine", &[3; 32]), &mut NoPins),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            dir.check(&cred("not a handle", &[3; 32]), &mut NoPins),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn a_limited_group_refuses_anyone_else_even_with_good_keys() {
        let mut dir = Directory::new(h("@mine"), vec![1; 32]).only(vec![h("@bob")]);
        dir.learn(h("@bob"), vec![2; 32]);
        dir.learn(h("@carol"), vec![4; 32]);
        assert_eq!(
            dir.check(&cred("@bob", &[2; 32]), &mut NoPins),
            Verdict::Member(h("@bob"))
        );
        assert!(matches!(
            dir.check(&cred("@carol", &[4; 32]), &mut NoPins),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn a_pin_that_differs_from_the_directory_refuses_even_a_directory_match() {
        let mut dir = Directory::new(h("@mine"), vec![1; 32]);
        dir.learn(h("@bob"), vec![2; 32]);
        let mut pins = Pinned([(h("@bob"), vec![7; 32])].into());
        assert!(matches!(
            dir.check(&cred("@bob", &[2; 32]), &mut pins),
            Verdict::Refused { .. }
        ));
        let all = dir.check_all(
            &[cred("@mine", &[1; 32]), cred("@carol", &[4; 32])],
            &mut pins,
        );
        assert_eq!(all, Ok(vec![h("@carol")]));
    }
}
