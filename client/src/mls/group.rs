//! A call's MLS group and its bridge to the SFrame key schedule.

use openmls::prelude::{
    KeyPackage, LeafNodeIndex, MlsGroup, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut,
    ProcessedMessageContent, Proposal, ProtocolVersion, QueuedProposal, Sender, StagedCommit,
    tls_codec::{Deserialize as _, Serialize as _},
};
use openmls_traits::OpenMlsProvider as _;
use sotto_media::keys::{EpochKeys, KeyConfig, KeyScheduleError, MlsExporter};

use super::{MemberCredential, MlsDevice, MlsError, boxed, provider::Provider};

impl Commit {
    /// The serialized messages of a commit openmls made in `epoch`.
    fn encode(
        epoch: u64,
        commit: &MlsMessageOut,
        welcome: Option<MlsMessageOut>,
        info: Option<openmls::messages::group_info::GroupInfo>,
    ) -> Result<Self, MlsError> {
        Ok(Self {
            commit: encode(commit)?,
            welcome: welcome.map(|w| encode(&w)).transpose()?,
            group_info: info.map(|i| encode(&MlsMessageOut::from(i))).transpose()?,
            epoch,
        })
    }
}

/// A commit we created, to hand to the delivery service.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The Commit for the current members.
    pub commit: Vec<u8>,
    /// The Welcome for members it adds, if any.
    pub welcome: Option<Vec<u8>>,
    /// The new epoch's GroupInfo (with the ratchet tree), signed by us: the delivery
    /// service keeps it for members that must rejoin.
    pub group_info: Option<Vec<u8>>,
    /// The epoch the commit was made in; the server accepts one commit per epoch.
    pub epoch: u64,
}

impl Commit {
    /// The delivery-service request that sends this commit to `group`, with no claims:
    /// the server computes whom it adds and removes.
    pub fn into_request(self, group: Vec<u8>) -> sotto_proto::Request {
        sotto_proto::Request::Commit {
            group,
            epoch: self.epoch,
            commit: self.commit,
            welcome: self.welcome,
            group_info: self.group_info,
            added: vec![],
            removed: vec![],
        }
    }
}

/// A handshake message from another member, validated but not yet applied: the caller
/// checks the credentials it brings in ([`Self::new_credentials`]) before
/// [`CallGroup::apply`].
#[derive(Debug)]
pub enum StagedMessage {
    /// A commit.
    Commit(Box<StagedCommit>),
    /// A standalone proposal, to store for a later commit.
    Proposal(Box<QueuedProposal>),
}

impl StagedMessage {
    /// The leaf it removes, if it is a Remove proposal from the group's external sender
    /// (the service, as the group's context names it): the one standalone proposal a room
    /// member stores and commits.
    pub fn service_removal(&self) -> Option<u32> {
        match self {
            Self::Proposal(p) => match (p.sender(), p.proposal()) {
                (Sender::External(_), Proposal::Remove(r)) => Some(r.removed().u32()),
                _ => None,
            },
            Self::Commit(_) => None,
        }
    }

    /// Credentials this message would bring into the group: every added member's, and
    /// the committer's own if its update path presents a new leaf. Leaves of added
    /// members are not known until the commit is applied (`u32::MAX`).
    pub fn new_credentials(&self) -> Vec<MemberCredential> {
        match self {
            Self::Commit(staged) => {
                let mut v: Vec<MemberCredential> = staged
                    .add_proposals()
                    .map(|a| {
                        let leaf = a.add_proposal().key_package().leaf_node();
                        MemberCredential::of_leaf(
                            u32::MAX,
                            leaf.credential(),
                            leaf.signature_key().as_slice(),
                        )
                    })
                    .collect();
                v.extend(staged.update_path_leaf_node().map(|leaf| {
                    MemberCredential::of_leaf(
                        u32::MAX,
                        leaf.credential(),
                        leaf.signature_key().as_slice(),
                    )
                }));
                v
            }
            Self::Proposal(p) => match p.proposal() {
                Proposal::Add(a) => {
                    let leaf = a.key_package().leaf_node();
                    vec![MemberCredential::of_leaf(
                        u32::MAX,
                        leaf.credential(),
                        leaf.signature_key().as_slice(),
                    )]
                }
                _ => Vec::new(),
            },
        }
    }
}

/// What processing a handshake message did to the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// A commit was applied: the group is now in `epoch`.
    EpochAdvanced {
        /// The new epoch.
        epoch: u64,
    },
    /// A commit removed us: no later epoch's keys will reach us.
    Removed,
    /// A proposal was stored for a later commit.
    ProposalStored,
}

/// One call's MLS group.
pub struct CallGroup {
    group: MlsGroup,
}

impl std::fmt::Debug for CallGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallGroup")
            .field("epoch", &self.epoch())
            .field("own_index", &self.own_index())
            .finish_non_exhaustive()
    }
}

impl CallGroup {
    pub(crate) fn from_group(group: MlsGroup) -> Self {
        Self { group }
    }

    /// Loads a group this device is in from its storage (after a restart).
    pub fn load(device: &MlsDevice, group_id: &[u8]) -> Result<Option<Self>, MlsError> {
        MlsGroup::load(
            device.provider().storage(),
            &openmls::prelude::GroupId::from_slice(group_id),
        )
        .map(|g| g.map(Self::from_group))
        .map_err(|e| MlsError::local("loading a group")(boxed(e)))
    }

    /// The group id, as the delivery service knows it.
    pub fn group_id(&self) -> &[u8] {
        self.group.group_id().as_slice()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.epoch().as_u64()
    }

    /// Our leaf index: our sender index in SFrame KIDs.
    pub fn own_index(&self) -> u32 {
        self.group.own_leaf_index().u32()
    }

    /// Whether we are still a member.
    pub fn is_active(&self) -> bool {
        self.group.is_active()
    }

    /// Leaf indices of the current members, ascending.
    pub fn member_indices(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.group.members().map(|m| m.index.u32()).collect();
        v.sort_unstable();
        v
    }

    /// Every member's credential, by leaf, ascending.
    pub fn members(&self) -> Vec<MemberCredential> {
        let mut v: Vec<MemberCredential> = self
            .group
            .members()
            .map(|m| MemberCredential::of_member(&m))
            .collect();
        v.sort_by_key(|m| m.leaf);
        v
    }

    /// The current epoch's GroupInfo with the ratchet tree, signed by us: what the
    /// delivery service starts following a new group from.
    pub fn group_info(&self, device: &MlsDevice) -> Result<Vec<u8>, MlsError> {
        let info = self
            .group
            .export_group_info(device.provider().crypto(), device.signer(), true)
            .map_err(|e| MlsError::local("exporting the GroupInfo")(boxed(e)))?;
        encode(&info)
    }

    /// Deletes the group and its secrets from this device's storage (the call ended, or
    /// the copy is broken and we rejoin). The group is unusable afterwards.
    pub fn delete(&mut self, device: &MlsDevice) -> Result<(), MlsError> {
        self.group
            .delete(device.provider().storage())
            .map_err(|e| MlsError::local("deleting a group")(boxed(e)))
    }

    /// The epoch authenticator (RFC 9420 §8.7): equal for all members of an epoch, the
    /// input to the group verification code.
    pub fn epoch_authenticator(&self) -> Vec<u8> {
        self.group.epoch_authenticator().as_slice().to_vec()
    }

    /// Creates a commit adding the members whose serialized KeyPackages are given. The
    /// commit stays pending until [`Self::merge_pending`] or [`Self::discard_pending`].
    pub fn add(
        &mut self,
        device: &MlsDevice,
        key_packages: &[Vec<u8>],
    ) -> Result<Commit, MlsError> {
        let kps = key_packages
            .iter()
            .map(|bytes| parse_key_package(device.provider(), bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let epoch = self.epoch();
        let (commit, welcome, info) = self
            .group
            .add_members(device.provider(), device.signer(), &kps)
            .map_err(|e| MlsError::local("committing an add")(boxed(e)))?;
        Commit::encode(epoch, &commit, Some(welcome), info)
    }

    /// Creates a commit removing the members at `indices`; pending like [`Self::add`].
    pub fn remove(&mut self, device: &MlsDevice, indices: &[u32]) -> Result<Commit, MlsError> {
        let leaves: Vec<LeafNodeIndex> = indices.iter().map(|&i| LeafNodeIndex::new(i)).collect();
        let epoch = self.epoch();
        let (commit, welcome, info) = self
            .group
            .remove_members(device.provider(), device.signer(), &leaves)
            .map_err(|e| MlsError::local("committing a remove")(boxed(e)))?;
        Commit::encode(epoch, &commit, welcome, info)
    }

    /// Leaves that a stored proposal of this epoch removes.
    pub fn pending_removals(&self) -> Vec<u32> {
        self.group
            .pending_proposals()
            .filter_map(|p| match p.proposal() {
                Proposal::Remove(r) => Some(r.removed().u32()),
                _ => None,
            })
            .collect()
    }

    /// Creates a commit that refreshes our own leaf (new HPKE and encryption keys) and so
    /// moves the group to a new epoch: post-compromise security for a long call. Pending
    /// like [`Self::add`].
    pub fn update(&mut self, device: &MlsDevice) -> Result<Commit, MlsError> {
        let epoch = self.epoch();
        let bundle = self
            .group
            .self_update(
                device.provider(),
                device.signer(),
                openmls::prelude::LeafNodeParameters::default(),
            )
            .map_err(|e| MlsError::local("committing an update")(boxed(e)))?;
        let (commit, welcome, info) = bundle.into_messages();
        Ok(Commit {
            commit: encode(&commit)?,
            welcome: welcome.map(|w| encode(&w)).transpose()?,
            group_info: info.map(|i| encode(&i)).transpose()?,
            epoch,
        })
    }

    /// A standalone proposal to remove the member at `leaf`, for the delivery service to
    /// fan out; any member may later commit it with [`Self::commit_proposals`]. The
    /// proposal is kept in our own store too.
    pub fn propose_remove(&mut self, device: &MlsDevice, leaf: u32) -> Result<Vec<u8>, MlsError> {
        let (msg, _) = self
            .group
            .propose_remove_member(device.provider(), device.signer(), LeafNodeIndex::new(leaf))
            .map_err(|e| MlsError::local("proposing a remove")(boxed(e)))?;
        encode(&msg)
    }

    /// Commits every proposal received and stored this epoch (by reference; the service's
    /// Removes); pending like [`Self::add`].
    pub fn commit_proposals(&mut self, device: &MlsDevice) -> Result<Commit, MlsError> {
        let epoch = self.epoch();
        let (commit, welcome, info) = self
            .group
            .commit_to_pending_proposals(device.provider(), device.signer())
            .map_err(|e| MlsError::local("committing proposals")(boxed(e)))?;
        Commit::encode(epoch, &commit, welcome, info)
    }

    /// The delivery service accepted our pending commit: move to the next epoch.
    pub fn merge_pending(&mut self, device: &MlsDevice) -> Result<u64, MlsError> {
        self.group
            .merge_pending_commit(device.provider())
            .map_err(|e| MlsError::local("merging our commit")(boxed(e)))?;
        Ok(self.epoch())
    }

    /// The delivery service rejected our pending commit (another won the epoch): forget it.
    pub fn discard_pending(&mut self, device: &MlsDevice) -> Result<(), MlsError> {
        self.group
            .clear_pending_commit(device.provider().storage())
            .map_err(|e| MlsError::local("discarding our commit")(boxed(e)))
    }

    /// Validates a handshake message (Commit or Proposal) from another member into a
    /// staged state, changing nothing: the caller checks the credentials it brings in,
    /// then [`Self::apply`]s it or drops it.
    pub fn stage(&mut self, device: &MlsDevice, message: &[u8]) -> Result<StagedMessage, MlsError> {
        if !self.group.is_active() {
            return Err(MlsError::Inactive);
        }
        let msg = MlsMessageIn::tls_deserialize_exact(message)
            .map_err(|e| MlsError::Malformed(e.to_string()))?;
        let protocol: openmls::prelude::ProtocolMessage = match msg.extract() {
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            _ => return Err(MlsError::Malformed("expected a handshake message".into())),
        };
        let processed = self
            .group
            .process_message(device.provider(), protocol)
            .map_err(|e| MlsError::Rejected(boxed(e)))?;
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                Ok(StagedMessage::Commit(staged))
            }
            ProcessedMessageContent::ProposalMessage(p) => Ok(StagedMessage::Proposal(p)),
            _ => Err(MlsError::Malformed("unexpected MLS message content".into())),
        }
    }

    /// Applies a staged message whose credentials were checked.
    pub fn apply(
        &mut self,
        device: &MlsDevice,
        staged: StagedMessage,
    ) -> Result<GroupEvent, MlsError> {
        match staged {
            StagedMessage::Commit(staged) => {
                let removed = staged.self_removed();
                self.group
                    .merge_staged_commit(device.provider(), *staged)
                    .map_err(|e| MlsError::local("merging a commit")(boxed(e)))?;
                Ok(if removed {
                    GroupEvent::Removed
                } else {
                    GroupEvent::EpochAdvanced {
                        epoch: self.epoch(),
                    }
                })
            }
            StagedMessage::Proposal(p) => {
                self.group
                    .store_pending_proposal(device.provider().storage(), *p)
                    .map_err(|e| MlsError::local("storing a proposal")(boxed(e)))?;
                Ok(GroupEvent::ProposalStored)
            }
        }
    }

    /// The SFrame keys of the current epoch (RFC 9605 §5.2), for this group's members.
    pub fn epoch_keys(
        &self,
        device: &MlsDevice,
        config: &KeyConfig,
    ) -> Result<EpochKeys, KeyScheduleError> {
        let exporter = GroupExporter {
            group: &self.group,
            provider: device.provider(),
        };
        EpochKeys::derive(&exporter, self.epoch(), self.member_indices(), config)
    }
}

/// The current epoch's MLS exporter, as the key schedule sees it.
struct GroupExporter<'a> {
    group: &'a MlsGroup,
    provider: &'a Provider,
}

impl MlsExporter for GroupExporter<'_> {
    type Error = openmls::prelude::ExportSecretError;

    fn export_secret(
        &self,
        label: &str,
        context: &[u8],
        len: usize,
    ) -> Result<Vec<u8>, Self::Error> {
        self.group
            .export_secret(self.provider.crypto(), label, context, len)
    }
}

pub(crate) fn parse_key_package(provider: &Provider, bytes: &[u8]) -> Result<KeyPackage, MlsError> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| MlsError::Malformed(e.to_string()))?;
    let MlsMessageBodyIn::KeyPackage(kp) = msg.extract() else {
        return Err(MlsError::Malformed("expected a KeyPackage".into()));
    };
    kp.validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| MlsError::InvalidKeyPackage(boxed(e)))
}

fn encode(msg: &MlsMessageOut) -> Result<Vec<u8>, MlsError> {
    msg.tls_serialize_detached()
        .map_err(|e| MlsError::local("encoding an MLS message")(boxed(e)))
}
