//! Rooms over real QUIC: create, invite (stored for offline devices), join, roster events,
//! SFU registration and placement, signed join tokens carrying the MLS leaf, relay between
//! participant and SFU, and removal by the owner.

use ed25519_dalek::VerifyingKey;
use sotto_client::signaling::{ClientError, Incoming};
use sotto_proto::{ErrorCode, Event, Request, Response, RtcSignal, Stored};
use sotto_tests::{h, server};

#[tokio::test]
async fn room_lifecycle_with_sfu_tokens_and_relay() {
    let s = server(|c| c.core.sfu_secret = Some("s3cret".into())).await;

    // An SFU with the wrong secret is refused; with the right one it gets the token key.
    let bad_sfu = s.connect().await;
    let r = bad_sfu
        .request(Request::RegisterSfu {
            node: "x".into(),
            secret: "guess".into(),
            media_addr: "a".into(),
            capacity: 1,
        })
        .await;
    assert!(matches!(r, Err(ClientError::Server(e)) if e.code == ErrorCode::Forbidden));
    let mut sfu = s.connect().await;
    let Response::SfuRegistered { token_key } = sfu
        .request(Request::RegisterSfu {
            node: "sfu-1".into(),
            secret: "s3cret".into(),
            media_addr: "127.0.0.1:5000".into(),
            capacity: 100,
        })
        .await
        .expect("register sfu")
    else {
        panic!("registered")
    };
    let token_key = VerifyingKey::try_from(token_key.as_slice()).expect("ed25519 key");

    let mut alice = s.member("@alice", 1, 1).await;
    // Bob publishes KeyPackages, then goes offline.
    s.member("@bob", 1, 2).await.user.client.close();
    let Response::RoomCreated { room } = alice
        .user
        .client
        .request(Request::CreateRoom)
        .await
        .expect("create")
    else {
        panic!()
    };
    // Only the owner invites; Bob is offline, so his invitation is stored.
    alice
        .user
        .client
        .request(Request::InviteToRoom {
            room,
            handles: vec![h("@bob")],
        })
        .await
        .expect("invite");
    let mut bob = s.user("@bob", 1).await;
    bob.expect("invite", |i| matches!(i, Incoming::Delivery { item: Stored::RoomInvite { room: r, .. }, .. } if *r == room))
        .await;
    let carol = s.user("@carol", 1).await;
    let r = carol.client.request(Request::JoinRoom { room }).await;
    assert!(
        matches!(r, Err(ClientError::Server(e)) if e.code == ErrorCode::Forbidden),
        "uninvited"
    );

    // The room's MLS group (id = room id): the server computes leaves from the commits
    // it validates. Only the owner may create it.
    let squat = carol
        .client
        .request(Request::CreateGroup {
            group: room.0.to_vec(),
            group_info: vec![],
        })
        .await;
    assert!(
        matches!(squat, Err(ClientError::Server(e)) if e.code == ErrorCode::GroupIdNotYours),
        "not the owner"
    );
    let mut group = alice.create_group(&room.0).await.expect("group");

    alice
        .user
        .client
        .request(Request::JoinRoom { room })
        .await
        .expect("alice joins");
    let Response::RoomJoined { roster, .. } = bob
        .client
        .request(Request::JoinRoom { room })
        .await
        .expect("bob joins")
    else {
        panic!()
    };
    assert_eq!(roster.len(), 2);
    alice
        .user
        .expect(
            "roster",
            |i| matches!(i, Incoming::Event(Event::Roster { roster, .. }) if roster.len() == 2),
        )
        .await;
    // Bob is in the room, so Alice may claim his KeyPackage and add him.
    alice.add(&mut group, &["@bob"]).await.expect("commit");

    // Bob's token names his leaf and verifies under the key the SFU got.
    let Response::SfuToken { token, media_addr } = bob
        .client
        .request(Request::SfuToken { room })
        .await
        .expect("token")
    else {
        panic!()
    };
    assert_eq!(media_addr, "127.0.0.1:5000");
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let t = sotto_sfu::join_token::verify(&token, &token_key, now_unix)
        .expect("the SFU verifies the token");
    assert!(t.expires_unix > now_unix);
    assert_eq!(
        (t.room, t.leaf, t.device.handle.clone()),
        (room, 1, h("@bob"))
    );

    // Negotiation flows participant -> SFU -> participant.
    bob.client
        .request(Request::RelayToSfu {
            room,
            signal: RtcSignal::Offer("sfu offer".into()),
        })
        .await
        .expect("relay");
    let Some(Incoming::Event(Event::ToSfu { from, leaf: 1, .. })) =
        sfu.next_within(std::time::Duration::from_secs(5)).await
    else {
        panic!("sfu got the offer")
    };
    sfu.request(Request::SfuRelay {
        room,
        to: from.clone(),
        signal: RtcSignal::Answer("sfu answer".into()),
    })
    .await
    .expect("sfu relays");
    bob.expect("answer", |i| {
        matches!(
            i,
            Incoming::Event(Event::FromSfu {
                signal: RtcSignal::Answer(_),
                ..
            })
        )
    })
    .await;

    // The owner removes Bob: he is told, the SFU stops forwarding, the roster shrinks.
    alice
        .user
        .client
        .request(Request::RemoveFromRoom {
            room,
            handle: h("@bob"),
        })
        .await
        .expect("remove");
    bob.expect("removed", |i| {
        *i == Incoming::Event(Event::RemovedFromRoom { room })
    })
    .await;
    let gone = loop {
        match sfu.next_within(std::time::Duration::from_secs(5)).await {
            Some(Incoming::Event(Event::SfuParticipantGone { device, .. })) => break device,
            Some(_) => continue,
            None => panic!("sfu told"),
        }
    };
    assert_eq!(gone, from);
    alice
        .user
        .expect(
            "roster",
            |i| matches!(i, Incoming::Event(Event::Roster { roster, .. }) if roster.len() == 1),
        )
        .await;
    let r = bob.client.request(Request::JoinRoom { room }).await;
    assert!(
        matches!(r, Err(ClientError::Server(e)) if e.code == ErrorCode::Forbidden),
        "invitation withdrawn"
    );
}
