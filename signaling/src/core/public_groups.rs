//! What the delivery service knows of each MLS group, computed rather than believed: an
//! openmls [`PublicGroup`] (the public ratchet tree, group context and proposal queue; no
//! secrets) that every handshake message is validated against before it is fanned out.
//!
//! Handshakes travel as MLS PublicMessages, so the server checks a commit's signature and
//! sender, the proposals it covers and the new tree, and derives itself which leaves it
//! adds and removes. What it cannot check (the confirmation and membership tags, which
//! need the epoch secrets) a member reports with `ReportCommit`.
//!
//! Each group's public state lives in an openmls [`MemoryStorage`] that is serialized
//! into the server's [`crate::storage::Storage`] after every change, so it survives a
//! restart through the same seam as everything else.

use openmls::prelude::{
    BasicCredential, ExternalProposal, ExternalSender, GroupId, KeyPackageIn, LeafNodeIndex,
    MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, Proposal, ProposalStore,
    ProtocolMessage, ProtocolVersion, PublicGroup, Sender, SenderExtensionIndex,
    tls_codec::{Deserialize as _, Serialize as _},
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::{OpenMlsRustCrypto, RustCrypto};
use sotto_proto::{ErrorBody, ErrorCode, Handle, SERVICE_SENDER_IDENTITY};

use super::err;

/// The one ciphersuite sotto groups use (DESIGN §4.2).
const CIPHERSUITE: openmls::prelude::Ciphersuite =
    openmls::prelude::Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// A KeyPackage the server checked: its hash reference and whether it is a last-resort
/// package.
pub(crate) struct CheckedKeyPackage {
    /// RFC 9420 §5.2 hash reference: how a commit that adds it names it.
    pub key_ref: Vec<u8>,
    /// Whether it carries the `last_resort` extension.
    pub last_resort: bool,
}

/// Checks an uploaded KeyPackage: well formed, our suite, a valid signature, and a
/// credential naming `handle` with the account's `identity_key` as its signature key.
pub(crate) fn check_key_package(
    crypto: &RustCrypto,
    bytes: &[u8],
    handle: &Handle,
    identity_key: &[u8],
) -> Result<CheckedKeyPackage, ErrorBody> {
    let bad = |why: String| err(ErrorCode::InvalidKeyPackage, why);
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| bad(format!("not an MLS message: {e}")))?;
    let MlsMessageBodyIn::KeyPackage(kp) = msg.extract() else {
        return Err(bad("not a KeyPackage".into()));
    };
    let kp = validate_key_package(crypto, kp)?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(bad("KeyPackage of another ciphersuite".into()));
    }
    check_credential(
        kp.leaf_node().credential(),
        kp.leaf_node().signature_key().as_slice(),
        handle,
        identity_key,
    )
    .map_err(bad)?;
    let key_ref = kp
        .hash_ref(crypto)
        .map_err(|_| bad("cannot hash the KeyPackage".into()))?
        .as_slice()
        .to_vec();
    Ok(CheckedKeyPackage {
        key_ref,
        last_resort: kp.last_resort(),
    })
}

fn validate_key_package(
    crypto: &RustCrypto,
    kp: KeyPackageIn,
) -> Result<openmls::prelude::KeyPackage, ErrorBody> {
    kp.validate(crypto, ProtocolVersion::Mls10).map_err(|e| {
        err(
            ErrorCode::InvalidKeyPackage,
            format!("KeyPackage does not verify: {e}"),
        )
    })
}

/// A member's credential must be a basic credential naming `handle`, and its signature
/// key must be the account's identity key.
fn check_credential(
    credential: &openmls::prelude::Credential,
    signature_key: &[u8],
    handle: &Handle,
    identity_key: &[u8],
) -> Result<(), String> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| "the credential is not a basic credential".to_owned())?;
    if basic.identity() != handle.as_str().as_bytes() {
        return Err(format!("the credential does not name {handle}"));
    }
    if signature_key != identity_key {
        return Err(format!(
            "the credential's signature key is not {handle}'s identity key"
        ));
    }
    Ok(())
}

/// One group's public state, loaded for a request.
pub(crate) struct TrackedGroup {
    group: PublicGroup,
    store: MemoryStorage,
}

/// What a validated commit does, as computed from it.
#[derive(Debug, Default)]
pub(crate) struct CommitEffects {
    /// KeyPackage references of the members it adds, with the leaves they now occupy.
    pub added: Vec<(Vec<u8>, u32)>,
    /// Leaves it removes.
    pub removed: Vec<u32>,
    /// For an external commit by which the sender rejoined: its new leaf.
    pub rejoined_at: Option<u32>,
}

/// Who sends a commit, as the server knows them.
pub(crate) struct Committer<'a> {
    /// The sender's leaf in the current epoch.
    pub leaf: u32,
    /// Its account.
    pub handle: &'a Handle,
    /// Its account's identity key.
    pub identity_key: &'a [u8],
}

fn invalid(what: impl std::fmt::Display) -> ErrorBody {
    err(ErrorCode::InvalidCommit, what.to_string())
}

fn internal(what: impl std::fmt::Display) -> ErrorBody {
    tracing::error!(error = %what, "public group state");
    err(ErrorCode::Internal, "the group's public state is unusable")
}

/// Parses a handshake message that must be a PublicMessage of `group`.
fn public_message(bytes: &[u8], group: &GroupId) -> Result<ProtocolMessage, ErrorBody> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| invalid(format!("not an MLS message: {e}")))?;
    let MlsMessageBodyIn::PublicMessage(m) = msg.extract() else {
        return Err(invalid("handshake messages must be MLS PublicMessages"));
    };
    let m: ProtocolMessage = m.into();
    if m.group_id() != group {
        return Err(invalid("the message is for another group"));
    }
    Ok(m)
}

impl TrackedGroup {
    /// Starts following a new group from its creator's epoch-0 GroupInfo (with the ratchet
    /// tree extension). The group must be `group_id` at epoch 0 with exactly one member:
    /// `creator`, with `creator_key` as its signature key. With `service_key`, the group
    /// must name the service (that signature key) as its one external sender: a room's
    /// group, whose members the service proposes to remove when they leave.
    pub(crate) fn create(
        crypto: &RustCrypto,
        group_id: &[u8],
        group_info: &[u8],
        creator: &Handle,
        creator_key: &[u8],
        service_key: Option<&[u8]>,
    ) -> Result<Self, ErrorBody> {
        let (group, store) = from_group_info(crypto, group_info)?;
        if group.group_id().as_slice() != group_id {
            return Err(invalid("the GroupInfo is for another group"));
        }
        if group.group_context().epoch().as_u64() != 0 {
            return Err(invalid("a new group starts at epoch 0"));
        }
        let members: Vec<_> = group.members().collect();
        let [only] = members.as_slice() else {
            return Err(invalid("a new group has exactly one member, its creator"));
        };
        check_credential(&only.credential, &only.signature_key, creator, creator_key)
            .map_err(invalid)?;
        if let Some(key) = service_key {
            let senders = group
                .group_context()
                .extensions()
                .external_senders()
                .map(|e| e.as_slice())
                .unwrap_or_default();
            let service = ExternalSender::new(
                key.into(),
                BasicCredential::new(SERVICE_SENDER_IDENTITY.to_vec()).into(),
            );
            if senders != [service] {
                return Err(invalid(
                    "a room's group names the service as its one external sender",
                ));
            }
        }
        Ok(Self { group, store })
    }

    /// Restores a group from [`Self::to_bytes`].
    pub(crate) fn load(group_id: &[u8], bytes: &[u8]) -> Result<Self, ErrorBody> {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = postcard::from_bytes(bytes).map_err(internal)?;
        let store = MemoryStorage::default();
        store
            .values
            .write()
            .map_err(|_| internal("storage lock poisoned"))?
            .extend(entries);
        let group = PublicGroup::load(&store, &GroupId::from_slice(group_id))
            .map_err(internal)?
            .ok_or_else(|| internal("no public group in the stored state"))?;
        Ok(Self { group, store })
    }

    /// The public state, serialized for [`crate::storage::Storage`].
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, ErrorBody> {
        let values = self
            .store
            .values
            .read()
            .map_err(|_| internal("storage lock poisoned"))?;
        let mut entries: Vec<(&Vec<u8>, &Vec<u8>)> = values.iter().collect();
        entries.sort();
        postcard::to_stdvec(&entries).map_err(internal)
    }

    /// The current epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// Validates a commit made in the current epoch by `by`, applies it to the public
    /// state and says what it did. An invalid commit leaves the state as it was.
    ///
    /// Besides ordinary commits from `by`'s leaf, this accepts an external commit by
    /// which `by` rejoins (after it could not process a commit): its new leaf must carry
    /// its own credential and the commit must remove its old leaf, nothing else.
    pub(crate) fn apply_commit(
        &mut self,
        crypto: &RustCrypto,
        bytes: &[u8],
        by: &Committer<'_>,
    ) -> Result<CommitEffects, ErrorBody> {
        let msg = public_message(bytes, self.group.group_id())?;
        let processed = self
            .group
            .process_message(crypto, msg)
            .map_err(|e| invalid(format!("the commit does not validate: {e}")))?;
        let external = matches!(processed.sender(), Sender::NewMemberCommit);
        if !external {
            check_sender(processed.sender(), by.leaf)?;
        }
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(invalid("expected a Commit"));
        };
        if external {
            return self.apply_rejoin(*staged, by);
        }
        let sender_leaf = by.leaf;
        // A member may refresh its keys but not become someone else.
        if let Some(leaf) = staged.update_path_leaf_node() {
            let current = self
                .group
                .members()
                .find(|m| m.index.u32() == sender_leaf)
                .ok_or_else(|| invalid("the committer is not in the tree"))?;
            if leaf.credential() != &current.credential
                || leaf.signature_key().as_slice() != current.signature_key.as_slice()
            {
                return Err(invalid("a commit may not change its sender's credential"));
            }
        }
        if staged.update_proposals().next().is_some() {
            return Err(invalid(
                "Update proposals are not used; commit a path instead",
            ));
        }
        if staged
            .queued_proposals()
            .any(|p| matches!(p.proposal(), Proposal::GroupContextExtensions(_)))
        {
            // The context names the service as external sender; nobody may change that.
            return Err(invalid("a group's context extensions never change"));
        }
        let mut adds = Vec::new();
        for add in staged.add_proposals() {
            let kp = add.add_proposal().key_package();
            let key_ref = kp.hash_ref(crypto).map_err(invalid)?.as_slice().to_vec();
            // Signature keys are unique within a group (openmls enforces it), so the new
            // leaf is found by the package's.
            adds.push((key_ref, kp.leaf_node().signature_key().as_slice().to_vec()));
        }
        let mut removed: Vec<u32> = staged
            .remove_proposals()
            .map(|r| r.remove_proposal().removed().u32())
            .collect();
        removed.sort_unstable();
        self.group
            .merge_commit(&self.store, *staged)
            .map_err(internal)?;
        let mut added = Vec::with_capacity(adds.len());
        for (key_ref, signature_key) in adds {
            let leaf = self
                .group
                .members()
                .find(|m| m.signature_key == signature_key)
                .map(|m| m.index.u32())
                .ok_or_else(|| internal("an added member is not in the new tree"))?;
            added.push((key_ref, leaf));
        }
        Ok(CommitEffects {
            added,
            removed,
            rejoined_at: None,
        })
    }

    /// An external commit by which a member rejoins: its own credential in the new leaf,
    /// its old leaf removed, nothing else changed.
    fn apply_rejoin(
        &mut self,
        staged: openmls::prelude::StagedCommit,
        by: &Committer<'_>,
    ) -> Result<CommitEffects, ErrorBody> {
        let leaf = staged
            .update_path_leaf_node()
            .ok_or_else(|| invalid("an external commit carries the joiner's leaf"))?;
        check_credential(
            leaf.credential(),
            leaf.signature_key().as_slice(),
            by.handle,
            by.identity_key,
        )
        .map_err(|e| err(ErrorCode::NotAMember, e))?;
        let removed: Vec<u32> = staged
            .remove_proposals()
            .map(|r| r.remove_proposal().removed().u32())
            .collect();
        if removed != [by.leaf] || staged.add_proposals().next().is_some() {
            return Err(invalid(
                "an external commit may only replace its sender's own leaf",
            ));
        }
        let signature_key = leaf.signature_key().as_slice().to_vec();
        self.group
            .merge_commit(&self.store, staged)
            .map_err(internal)?;
        let new_leaf = self
            .group
            .members()
            .find(|m| m.signature_key == signature_key)
            .map(|m| m.index.u32())
            .ok_or_else(|| internal("the rejoined member is not in the new tree"))?;
        Ok(CommitEffects {
            added: Vec::new(),
            removed,
            rejoined_at: Some(new_leaf),
        })
    }

    /// Validates a standalone proposal from the member at `sender_leaf` and queues it, so
    /// a later commit may cover it by reference. Only Remove proposals are taken: an Add
    /// goes in a commit from the member that claimed the KeyPackage, a member refreshes its
    /// keys with a commit of its own, and the rest have no use in sotto; a queued proposal
    /// of a kind later commits would be refused for would wedge the group.
    pub(crate) fn apply_proposal(
        &mut self,
        crypto: &RustCrypto,
        bytes: &[u8],
        sender_leaf: u32,
    ) -> Result<(), ErrorBody> {
        let msg = public_message(bytes, self.group.group_id())?;
        let processed = self
            .group
            .process_message(crypto, msg)
            .map_err(|e| invalid(format!("the proposal does not validate: {e}")))?;
        check_sender(processed.sender(), sender_leaf)?;
        let ProcessedMessageContent::ProposalMessage(p) = processed.into_content() else {
            return Err(invalid("expected a Proposal"));
        };
        if !matches!(p.proposal(), Proposal::Remove(_)) {
            return Err(invalid("only Remove proposals may be sent on their own"));
        }
        self.group.add_proposal(&self.store, *p).map_err(internal)?;
        Ok(())
    }

    /// The service's own Remove proposal for `leaf` in the current epoch (RFC 9420
    /// §12.1.8.1, signed as the group's external sender 0): checked like any other message
    /// and queued, so a member's commit may cover it by reference. `None` if one is already
    /// queued for that leaf this epoch.
    pub(crate) fn propose_remove(
        &mut self,
        crypto: &RustCrypto,
        signer: &SignatureKeyPair,
        leaf: u32,
    ) -> Result<Option<Vec<u8>>, ErrorBody> {
        if self.pending_removals()?.contains(&leaf) {
            return Ok(None);
        }
        let msg = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
            LeafNodeIndex::new(leaf),
            self.group.group_id().clone(),
            self.group.group_context().epoch(),
            signer,
            SenderExtensionIndex::new(0),
        )
        .map_err(internal)?;
        let bytes = msg.tls_serialize_detached().map_err(internal)?;
        let parsed = public_message(&bytes, self.group.group_id())?;
        let processed = self
            .group
            .process_message(crypto, parsed)
            .map_err(|e| invalid(format!("the service's own proposal does not validate: {e}")))?;
        let ProcessedMessageContent::ProposalMessage(p) = processed.into_content() else {
            return Err(internal("the service's proposal is not a proposal"));
        };
        self.group.add_proposal(&self.store, *p).map_err(internal)?;
        Ok(Some(bytes))
    }

    /// Leaves with a Remove proposal queued in the current epoch.
    pub(crate) fn pending_removals(&self) -> Result<Vec<u32>, ErrorBody> {
        Ok(self
            .group
            .queued_proposals(&self.store)
            .map_err(internal)?
            .into_iter()
            .filter_map(|(_, q)| match q.proposal() {
                Proposal::Remove(r) => Some(r.removed().u32()),
                _ => None,
            })
            .collect())
    }

    /// Checks that a committer's GroupInfo describes exactly the state the server now
    /// holds (same group context, valid signature and tree), so a member that must rejoin
    /// by external commit can trust what it is given as much as the server's own state.
    pub(crate) fn check_group_info(
        &self,
        crypto: &RustCrypto,
        group_info: &[u8],
    ) -> Result<(), ErrorBody> {
        let (theirs, _) = from_group_info(crypto, group_info)?;
        let encode = |g: &PublicGroup| g.group_context().tls_serialize_detached();
        if encode(&theirs).map_err(invalid)? != encode(&self.group).map_err(internal)? {
            return Err(invalid("the GroupInfo does not describe the new epoch"));
        }
        Ok(())
    }
}

fn check_sender(sender: &Sender, expected: u32) -> Result<(), ErrorBody> {
    match sender {
        Sender::Member(leaf) if leaf.u32() == expected => Ok(()),
        Sender::Member(_) => Err(err(
            ErrorCode::NotAMember,
            "the message is signed for another member's leaf",
        )),
        _ => Err(err(
            ErrorCode::NotAMember,
            "only members send handshakes to a group",
        )),
    }
}

/// Builds a public group from a GroupInfo carrying the ratchet tree (its signature, tree
/// and context are verified by openmls).
fn from_group_info(
    crypto: &RustCrypto,
    bytes: &[u8],
) -> Result<(PublicGroup, MemoryStorage), ErrorBody> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| invalid(format!("not an MLS message: {e}")))?;
    let MlsMessageBodyIn::GroupInfo(info) = msg.extract() else {
        return Err(invalid("expected a GroupInfo"));
    };
    if info.ciphersuite() != CIPHERSUITE {
        return Err(invalid("GroupInfo of another ciphersuite"));
    }
    let tree = info
        .extensions()
        .ratchet_tree()
        .ok_or_else(|| invalid("the GroupInfo lacks the ratchet tree extension"))?
        .ratchet_tree()
        .clone();
    let store = MemoryStorage::default();
    let (group, _) = PublicGroup::from_external(crypto, &store, tree, info, ProposalStore::new())
        .map_err(|e| invalid(format!("the GroupInfo does not verify: {e}")))?;
    Ok((group, store))
}

/// Feeds untrusted bytes to every MLS parser of the delivery service: as an uploaded
/// KeyPackage, as a new group's GroupInfo, as stored group state, and as a commit and a
/// proposal against `group` when given. Nothing may panic. For the fuzz target and tests.
#[doc(hidden)]
pub fn exercise_parsers(data: &[u8], group: Option<(&[u8], &[u8])>) -> bool {
    let crypto = RustCrypto::default();
    let Ok(handle) = Handle::parse("@fuzz") else {
        return false;
    };
    let mut accepted = check_key_package(&crypto, data, &handle, &[0; 32]).is_ok();
    accepted |=
        TrackedGroup::create(&crypto, b"group", data, &handle, &[0; 32], Some(&[0; 32])).is_ok();
    let _ = TrackedGroup::load(b"group", data);
    if let Some((id, state)) = group
        && let Ok(mut g) = TrackedGroup::load(id, state)
    {
        let by = Committer {
            leaf: 0,
            handle: &handle,
            identity_key: &[0; 32],
        };
        accepted |= g.apply_commit(&crypto, data, &by).is_ok();
        accepted |= g.apply_proposal(&crypto, data, 0).is_ok();
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_client::mls::MlsDevice;

    fn key(handle: &str) -> ed25519_dalek::SigningKey {
        use sha2::Digest;
        ed25519_dalek::SigningKey::from_bytes(&sha2::Sha256::digest(handle).into())
    }

    /// Every truncation and single-bit flip of a real KeyPackage, GroupInfo and commit is
    /// refused (signatures cover them), and none panics, with one known exception: the
    /// commit's confirmation and membership tags (its last 2 × 33 bytes) are MACs under
    /// epoch secrets the server does not have, so flips there pass the server and are
    /// caught by members, who report them (`ReportCommit`) and rejoin.
    #[test]
    fn tampered_mls_messages_are_refused_never_panic() {
        let crypto = RustCrypto::default();
        let alice = Handle::parse("@alice").expect("handle");
        let alice_key = key("@alice");
        let a = MlsDevice::with_identity("@alice", &alice_key, None).expect("device");
        let b = MlsDevice::with_identity("@bob", &key("@bob"), None).expect("device");
        let kp = a.key_package().expect("kp");
        let identity = alice_key.verifying_key().to_bytes();
        assert!(check_key_package(&crypto, &kp, &alice, &identity).is_ok());
        let mut group = a.create_group_with_id(b"g").expect("group");
        let info = group.group_info(&a).expect("info");
        let tracked = TrackedGroup::create(&crypto, b"g", &info, &alice, &identity, None)
            .expect("a valid group");
        let state = tracked.to_bytes().expect("state");
        let commit = group
            .add(&a, &[b.key_package().expect("kp")])
            .expect("commit")
            .commit;
        let by = Committer {
            leaf: 0,
            handle: &alice,
            identity_key: &identity,
        };
        let mut ok = TrackedGroup::load(b"g", &state).expect("load");
        assert!(
            ok.apply_commit(&crypto, &commit, &by).is_ok(),
            "the control"
        );

        for (what, valid) in [
            ("KeyPackage", &kp),
            ("GroupInfo", &info),
            ("commit", &commit),
        ] {
            let mut variants: Vec<Vec<u8>> =
                (0..valid.len()).map(|n| valid[..n].to_vec()).collect();
            for i in 0..valid.len() * 8 {
                let mut v = valid.clone();
                v[i / 8] ^= 1 << (i % 8);
                variants.push(v);
            }
            let tags_from = valid.len().saturating_sub(2 * 33);
            for (n, v) in variants.iter().enumerate() {
                let flipped_byte = n.checked_sub(valid.len()).map(|i| i / 8);
                let accepted = match what {
                    "KeyPackage" => check_key_package(&crypto, v, &alice, &identity).is_ok(),
                    "GroupInfo" => {
                        TrackedGroup::create(&crypto, b"g", v, &alice, &identity, None).is_ok()
                    }
                    _ => TrackedGroup::load(b"g", &state)
                        .expect("load")
                        .apply_commit(&crypto, v, &by)
                        .is_ok(),
                };
                let in_tags = what == "commit" && flipped_byte.is_some_and(|b| b >= tags_from);
                assert!(
                    !accepted || in_tags,
                    "a tampered {what} was accepted (variant {n})"
                );
                exercise_parsers(v, Some((b"g", &state)));
            }
        }
    }
}
