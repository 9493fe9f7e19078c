//! A device's MLS identity: its credential (the handle), its Ed25519 signature key, and
//! the crypto and storage provider its groups live in.

use openmls::prelude::{
    BasicCredential, Capabilities, CredentialWithKey, Extension, ExtensionType, Extensions,
    ExternalSender, KeyPackage, KeyPackageBundle, KeyPackageRef, MlsGroup, MlsGroupCreateConfig,
    MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY, StagedWelcome,
    tls_codec::{Deserialize as _, Serialize as _, VLBytes},
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::{OpenMlsProvider as _, storage::StorageProvider as _};

use super::{CIPHERSUITE, CallGroup, MemberCredential, MlsError, boxed, provider::Provider};

/// One device's MLS state: credential, signer, provider (crypto + group storage).
pub struct MlsDevice {
    provider: Provider,
    signer: SignatureKeyPair,
    /// The service as the external sender of the groups we start (from login).
    service: Option<ExternalSender>,
    credential: CredentialWithKey,
}

impl std::fmt::Debug for MlsDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsDevice").finish_non_exhaustive()
    }
}

impl MlsDevice {
    /// An ephemeral device for `identity` (the user's handle) with a fresh Ed25519 key and
    /// state in memory.
    pub fn new(identity: &str) -> Result<Self, MlsError> {
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
            .map_err(|e| MlsError::local("signature key generation")(boxed(e)))?;
        Self::build(identity, Provider::in_memory()?, signer)
    }

    /// A device whose MLS credential is signed by the account's identity key, with its
    /// state in `storage` (a profile's `mls.db`) or in memory. Reopening the same storage
    /// with the same key finds every group again.
    pub fn with_identity(
        identity: &str,
        key: &ed25519_dalek::SigningKey,
        storage: Option<&std::path::Path>,
    ) -> Result<Self, MlsError> {
        let provider = match storage {
            Some(path) => Provider::open(path)?,
            None => Provider::in_memory()?,
        };
        let signer = SignatureKeyPair::from_raw(
            CIPHERSUITE.signature_algorithm(),
            key.to_bytes().to_vec(),
            key.verifying_key().to_bytes().to_vec(),
        );
        Self::build(identity, provider, signer)
    }

    fn build(
        identity: &str,
        provider: Provider,
        signer: SignatureKeyPair,
    ) -> Result<Self, MlsError> {
        signer
            .store(provider.storage())
            .map_err(|e| MlsError::local("storing the signature key")(boxed(e)))?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Ok(Self {
            provider,
            signer,
            credential,
            service: None,
        })
    }

    pub(crate) fn provider(&self) -> &Provider {
        &self.provider
    }

    pub(crate) fn signer(&self) -> &SignatureKeyPair {
        &self.signer
    }

    /// The device's public signature key (the key its credential binds).
    pub fn signature_public_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// A fresh KeyPackage, serialized as an MLS message for the delivery service. Each one
    /// is good for one join; its private keys stay in this device's storage.
    pub fn key_package(&self) -> Result<Vec<u8>, MlsError> {
        self.build_key_package(false)
    }

    /// The device's last-resort KeyPackage (RFC 9420 `last_resort` extension): handed out
    /// only when no one-use package is left, and reusable, so its private keys are kept
    /// after a join.
    pub fn last_resort_key_package(&self) -> Result<Vec<u8>, MlsError> {
        self.build_key_package(true)
    }

    /// Deletes the private keys of our KeyPackages that the service dropped before anyone
    /// claimed them (the `forgotten` of an upload's answer), so a profile's storage holds
    /// only packages a Welcome may still name. Returns how many were here. A lying service
    /// can only make packages of ours useless, which it could do by never handing them out.
    pub fn forget_key_packages(&self, refs: &[Vec<u8>]) -> Result<usize, MlsError> {
        let storage = self.provider.storage();
        let mut found = 0;
        for r in refs {
            // A hash reference is a TLS variable-length vector.
            let Ok(r) = VLBytes::new(r.clone())
                .tls_serialize_detached()
                .map_err(drop)
                .and_then(|b| KeyPackageRef::tls_deserialize_exact(b).map_err(drop))
            else {
                continue;
            };
            let held: Option<KeyPackageBundle> = storage
                .key_package(&r)
                .map_err(|e| MlsError::local("reading a KeyPackage")(boxed(e)))?;
            if held.is_some() {
                storage
                    .delete_key_package(&r)
                    .map_err(|e| MlsError::local("deleting a KeyPackage")(boxed(e)))?;
                found += 1;
            }
        }
        Ok(found)
    }

    fn build_key_package(&self, last_resort: bool) -> Result<Vec<u8>, MlsError> {
        let mut builder = KeyPackage::builder();
        if last_resort {
            // A KeyPackage may carry only extensions its leaf says it supports.
            builder = builder.mark_as_last_resort().leaf_node_capabilities(
                Capabilities::builder()
                    .extensions(vec![ExtensionType::LastResort])
                    .build(),
            );
        }
        let bundle = builder
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .map_err(|e| MlsError::local("building a KeyPackage")(boxed(e)))?;
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .map_err(|e| MlsError::local("encoding a KeyPackage")(boxed(e)))
    }

    /// The credential a serialized KeyPackage presents (after checking its signature),
    /// so the caller can compare it with the directory and its pins before adding it.
    pub fn key_package_credential(&self, bytes: &[u8]) -> Result<MemberCredential, MlsError> {
        let kp = super::group::parse_key_package(&self.provider, bytes)?;
        Ok(MemberCredential::of_leaf(
            u32::MAX,
            kp.leaf_node().credential(),
            kp.leaf_node().signature_key().as_slice(),
        ))
    }

    /// Starts a new group with a random id and this device as its only member (leaf 0,
    /// epoch 0).
    pub fn create_group(&self) -> Result<CallGroup, MlsError> {
        let group = MlsGroup::new(
            &self.provider,
            &self.signer,
            &self.group_config()?,
            self.credential.clone(),
        )
        .map_err(|e| MlsError::local("creating a group")(boxed(e)))?;
        Ok(CallGroup::from_group(group))
    }

    /// Starts a new group with the given id (a call's id, so both sides can match the
    /// Welcome to the call).
    pub fn create_group_with_id(&self, id: &[u8]) -> Result<CallGroup, MlsError> {
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &self.group_config()?,
            openmls::prelude::GroupId::from_slice(id),
            self.credential.clone(),
        )
        .map_err(|e| MlsError::local("creating a group")(boxed(e)))?;
        Ok(CallGroup::from_group(group))
    }

    /// Handshakes (commits, proposals) go out as PublicMessages so the delivery service
    /// can validate them against the group's public state (DESIGN §4.4); media keys never
    /// travel in MLS application messages, so nothing secret is exposed by this.
    ///
    /// Once the service's key is known, it is the group's one external sender (RFC 9420
    /// §12.1.8.1): it may propose removing members who left; a member commits.
    fn group_config(&self) -> Result<MlsGroupCreateConfig, MlsError> {
        let mut builder = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY);
        if let Some(s) = &self.service {
            let ext = Extensions::single(Extension::ExternalSenders(vec![s.clone()]))
                .map_err(|e| MlsError::local("naming the service as external sender")(boxed(e)))?;
            builder = builder.with_group_context_extensions(ext);
        }
        Ok(builder.build())
    }

    /// Names the service (its signature key, from login) as the external sender of every
    /// group this device starts from now on.
    pub fn set_service_key(&mut self, key: &[u8]) {
        self.service = Some(ExternalSender::new(
            key.into(),
            BasicCredential::new(sotto_proto::SERVICE_SENDER_IDENTITY.to_vec()).into(),
        ));
    }

    /// Rejoins a group by external commit from its latest GroupInfo (what the delivery
    /// service keeps for a member that could not process a commit). openmls replaces our
    /// old leaf (same signature key) with a fresh one. The returned group holds the commit
    /// pending, like [`CallGroup::add`]: merge it once the delivery service accepts the
    /// commit, or delete the group. Check its members' credentials before sending: the
    /// GroupInfo came through the server. Delete our old copy of the group first.
    pub fn rejoin(&self, group_info: &[u8]) -> Result<(CallGroup, super::Commit), MlsError> {
        let msg = MlsMessageIn::tls_deserialize_exact(group_info)
            .map_err(|e| MlsError::Malformed(e.to_string()))?;
        let MlsMessageBodyIn::GroupInfo(info) = msg.extract() else {
            return Err(MlsError::Malformed("expected a GroupInfo".into()));
        };
        let epoch = info.epoch().as_u64();
        let join = |e: &dyn std::fmt::Display| MlsError::Join(e.to_string().into());
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_config(Self::join_config())
            .build_group(&self.provider, info, self.credential.clone())
            .map_err(|e| join(&e))?
            .load_psks(self.provider.storage())
            .map_err(|e| join(&e))?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(|e| join(&e))?
            .finalize(&self.provider)
            .map_err(|e| join(&e))?;
        let (commit, _, info) = bundle.into_contents();
        let encode = |m: MlsMessageOut| {
            m.tls_serialize_detached()
                .map_err(|e| MlsError::local("encoding an MLS message")(boxed(e)))
        };
        Ok((
            CallGroup::from_group(group),
            super::Commit {
                commit: encode(commit)?,
                welcome: None,
                group_info: info.map(|i| encode(MlsMessageOut::from(i))).transpose()?,
                epoch,
            },
        ))
    }

    fn join_config() -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .build()
    }

    /// Opens a serialized Welcome addressed to one of our KeyPackages without joining yet:
    /// the caller checks every member's credential ([`StagedJoin::members`]) against the
    /// directory and its pins, then joins with [`StagedJoin::join`] or drops it.
    pub fn stage_join(&self, welcome: &[u8]) -> Result<StagedJoin, MlsError> {
        let msg = MlsMessageIn::tls_deserialize_exact(welcome)
            .map_err(|e| MlsError::Malformed(e.to_string()))?;
        let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
            return Err(MlsError::Malformed("expected a Welcome".into()));
        };
        let staged =
            StagedWelcome::new_from_welcome(&self.provider, &Self::join_config(), welcome, None)
                .map_err(|e| MlsError::Join(boxed(e)))?;
        Ok(StagedJoin { staged })
    }
}

/// A Welcome opened but not yet joined: its members can be checked first.
pub struct StagedJoin {
    staged: StagedWelcome,
}

impl std::fmt::Debug for StagedJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedJoin").finish_non_exhaustive()
    }
}

impl StagedJoin {
    /// The id of the group the Welcome offers (the server's label for it proves nothing).
    pub fn group_id(&self) -> &[u8] {
        self.staged.group_context().group_id().as_slice()
    }

    /// Every member of the group the Welcome offers, with the credential it presents.
    pub fn members(&self) -> Vec<MemberCredential> {
        self.staged
            .members()
            .map(|m| MemberCredential::of_member(&m))
            .collect()
    }

    /// The leaf of the member who sent the Welcome.
    pub fn sender_index(&self) -> u32 {
        self.staged.welcome_sender_index().u32()
    }

    /// Joins the group (and stores it in `device`'s storage, the one that staged it).
    pub fn join(self, device: &MlsDevice) -> Result<CallGroup, MlsError> {
        let group = self
            .staged
            .into_group(&device.provider)
            .map_err(|e| MlsError::Join(boxed(e)))?;
        Ok(CallGroup::from_group(group))
    }
}
