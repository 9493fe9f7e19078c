//! The fixed membership flow of load participants, through the real signaling service:
//! everyone registers and publishes KeyPackages; the first creates the room and its MLS
//! group and invites the rest; everyone joins the room (KeyPackages may be claimed only
//! for devices in it); the first adds them all in one commit; everyone joins the group
//! from the Welcome and fetches its join token. Each then has real MLS-derived
//! SFrame keys and the leaf the delivery service computed. (The group-call issue's client
//! replaces this with real membership handling: rotations, late joins, removals.)

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use sotto_client::mls::{CallGroup, MlsDevice};
use sotto_client::signaling::{Incoming, Pin, SignalingClient};
use sotto_media::keys::{CallKeys, KeyConfig};
use sotto_proto::{
    DeviceAddr, Handle, MlsKind, Request, Response, RoomId, SignedJoinToken, Stored,
};
use std::net::SocketAddr;
use std::time::Duration;

/// A participant that is in the room and its MLS group, ready to connect media.
pub struct Joined {
    /// Its signaling connection.
    pub client: SignalingClient,
    /// Who it is.
    pub device: DeviceAddr,
    /// Its MLS state.
    pub mls: MlsDevice,
    /// The room's group.
    pub group: CallGroup,
    /// SFrame keys of the group's current epoch.
    pub keys: CallKeys,
    /// Its leaf (its SFrame sender index).
    pub leaf: u32,
    /// Its token for the room's SFU.
    pub token: SignedJoinToken,
}

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(20);

/// A deterministic identity key per handle (load participants are throwaway accounts).
pub fn identity_for(handle: &str) -> SigningKey {
    let mut seed = [0u8; 32];
    for (i, b) in handle.bytes().enumerate() {
        seed[i % 32] ^= b.rotate_left(i as u32 % 8);
    }
    seed[31] ^= handle.len() as u8;
    SigningKey::from_bytes(&seed)
}

async fn account(
    addr: SocketAddr,
    pin: &Pin,
    handle: &str,
) -> anyhow::Result<(SignalingClient, MlsDevice)> {
    let client = SignalingClient::connect(addr, pin).await?;
    let key = identity_for(handle);
    let h = Handle::parse(handle).context("a load participant's handle")?;
    let logged_in = match client.register(&h, &key, 1).await {
        Ok(r) => r,
        Err(_) => client.login(&h, &key, 1).await?,
    };
    let Response::LoggedIn { service_key, .. } = logged_in else {
        bail!("logging in was answered unexpectedly");
    };
    let mut mls = MlsDevice::with_identity(handle, &key, None)?;
    // The room's group names the service as its external sender.
    mls.set_service_key(&service_key);
    let packages = vec![mls.key_package()?];
    client
        .request(Request::UploadKeyPackages {
            packages,
            last_resort: Some(mls.last_resort_key_package()?),
            replace: true,
        })
        .await?;
    Ok((client, mls))
}

/// Forms a room of `handles` (the first owns it); see the module docs.
pub async fn form(
    addr: SocketAddr,
    pin: &Pin,
    handles: &[String],
) -> anyhow::Result<(RoomId, Vec<Joined>)> {
    let mut accounts = Vec::new();
    for h in handles {
        accounts.push(
            account(addr, pin, h)
                .await
                .with_context(|| format!("account {h}"))?,
        );
    }
    let Some((owner, owner_mls)) = accounts.first() else {
        bail!("a room needs at least one participant");
    };
    let Response::RoomCreated { room } = owner.request(Request::CreateRoom).await? else {
        bail!("creating the room was answered unexpectedly");
    };
    let others: Vec<Handle> = handles[1..]
        .iter()
        .map(|h| Handle::parse(h))
        .collect::<Result<_, _>>()?;
    if !others.is_empty() {
        owner
            .request(Request::InviteToRoom {
                room,
                handles: others.clone(),
            })
            .await?;
    }
    for (client, _) in &accounts {
        client.request(Request::JoinRoom { room }).await?;
    }
    let mut group = owner_mls.create_group_with_id(&room.0)?;
    owner
        .request(Request::CreateGroup {
            group: room.0.to_vec(),
            group_info: group.group_info(owner_mls)?,
        })
        .await?;
    if !others.is_empty() {
        let mut packages = Vec::new();
        for h in &others {
            let Response::KeyPackage { package, .. } = owner
                .request(Request::ClaimKeyPackage {
                    handle: h.clone(),
                    device: None,
                })
                .await?
            else {
                bail!("claiming {h}'s KeyPackage was answered unexpectedly");
            };
            packages.push(package);
        }
        let commit = group.add(owner_mls, &packages)?;
        owner.request(commit.into_request(room.0.to_vec())).await?;
        group.merge_pending(owner_mls)?;
    }
    let mut groups = vec![Some(group)];
    for (client, mls) in accounts.iter_mut().skip(1) {
        let welcome = welcome(client, &room).await?;
        groups.push(Some(mls.stage_join(&welcome)?.join(mls)?));
    }
    let mut joined = Vec::new();
    for (((client, mls), group), handle) in accounts.into_iter().zip(groups).zip(handles) {
        let group = group.context("a group per member")?;
        joined.push(enter(client, mls, group, room, handle).await?);
    }
    Ok((room, joined))
}

/// Waits for the room's Welcome, acknowledging what else arrives (invitations).
async fn welcome(client: &mut SignalingClient, room: &RoomId) -> anyhow::Result<Vec<u8>> {
    loop {
        let next = tokio::time::timeout(STEP, client.next())
            .await
            .context("waiting for the Welcome")?;
        match next {
            Some(Incoming::Delivery {
                seq,
                item:
                    Stored::Mls {
                        group,
                        kind: MlsKind::Welcome,
                        data,
                        ..
                    },
            }) if group == room.0 => {
                client.ack(seq).await?;
                return Ok(data);
            }
            Some(Incoming::Delivery { seq, .. }) => client.ack(seq).await?,
            Some(_) => {}
            None => bail!("the signaling connection closed while waiting for the Welcome"),
        }
    }
}

/// Fetches the token for the room (joined before); derives the epoch's SFrame keys.
async fn enter(
    client: SignalingClient,
    mls: MlsDevice,
    group: CallGroup,
    room: RoomId,
    handle: &str,
) -> anyhow::Result<Joined> {
    let Response::SfuToken { token, .. } = client.request(Request::SfuToken { room }).await? else {
        bail!("the join token was answered unexpectedly");
    };
    let leaf = group.own_index();
    let keys = CallKeys::new(leaf, group.epoch_keys(&mls, &KeyConfig::default())?)?;
    let device = DeviceAddr {
        handle: Handle::parse(handle)?,
        device: 1,
    };
    Ok(Joined {
        client,
        device,
        mls,
        group,
        keys,
        leaf,
        token,
    })
}
