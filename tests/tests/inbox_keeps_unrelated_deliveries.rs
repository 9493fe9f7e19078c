//! Nothing is acknowledged just because it arrived: a Welcome for another group and a
//! room invitation delivered to @bob while he is in a call (and the invitation to that
//! group's room, waiting when the call began) are still there when the call ends (in his
//! client's inbox, and stored on the server), and the server's queue for his device
//! drains once he has handled them.

use std::time::Duration;

use sotto_client::call::{CallOptions, Endpoint};
use sotto_proto::{MlsKind, Request, Response, Stored};
use sotto_tests::{h, key_for, loopback, server, server_holds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_and_a_room_invite_during_a_call_wait_for_their_owner() {
    let s = server(|_| {}).await;
    let addr = s.running.addr;
    let mut alice = Endpoint::connect(addr, &s.pin, h("@alice"), key_for("@alice"), 1)
        .await
        .expect("alice");
    let mut bob = Endpoint::connect(addr, &s.pin, h("@bob"), key_for("@bob"), 1)
        .await
        .expect("bob");
    let carol = s.member("@carol", 1, 1).await;
    // Bob's device is in Carol's room, so she may claim his KeyPackage.
    let room = carol.user.room_with(&[]).await;
    carol
        .user
        .client
        .request(Request::InviteToRoom {
            room,
            handles: vec![h("@bob")],
        })
        .await
        .expect("invite");
    let joined = bob.signaling().request(Request::JoinRoom { room }).await;
    assert!(
        matches!(joined, Ok(Response::RoomJoined { .. })),
        "{joined:?}"
    );

    let callee = tokio::spawn(async move {
        let r = bob
            .answer(
                &CallOptions {
                    duration: None,
                    ..loopback()
                },
                Duration::from_secs(10),
            )
            .await;
        (bob, r)
    });
    // While the call runs, Carol adds Bob to her room's group and invites him to another.
    let meddle = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut group = carol.create_group(&room.0).await.expect("group");
        carol.add(&mut group, &["@bob"]).await.expect("add bob");
        let Ok(Response::RoomCreated { room: other }) =
            carol.user.client.request(Request::CreateRoom).await
        else {
            panic!("room")
        };
        carol
            .user
            .client
            .request(Request::InviteToRoom {
                room: other,
                handles: vec![h("@bob")],
            })
            .await
            .expect("invite");
        other
    };
    let alice_opts = CallOptions {
        duration: Some(Duration::from_secs(3)),
        ..loopback()
    };
    let callee_handle = h("@bob");
    let (a, other) = tokio::join!(alice.call(&callee_handle, &alice_opts), meddle);
    let a = a.expect("alice's call");
    let (mut bob, b) = callee.await.expect("join");
    let b = b.expect("bob's call");
    assert!(
        a.audio_played > 0 && b.audio_played > 0,
        "the call itself worked"
    );

    // Both are held by Bob's client and still stored on the server.
    let held: Vec<&Stored> = bob.inbox().iter().map(|(_, s)| s).collect();
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(held.iter().any(
        |s| matches!(s, Stored::Mls { group, kind: MlsKind::Welcome, .. } if *group == room.0)
    ));
    for r in [room, other] {
        assert!(
            held.iter()
                .any(|s| matches!(s, Stored::RoomInvite { room: i, .. } if *i == r))
        );
    }
    assert_eq!(
        server_holds(&s, "@bob", 1).1,
        3,
        "the call's own deliveries were acknowledged, the other three kept"
    );

    // Bob's room code handles them: then the server's queue for him drains.
    let handled = bob
        .take_deliveries(|s| {
            matches!(s, Stored::RoomInvite { .. })
                || matches!(s, Stored::Mls { group, .. } if *group == room.0)
        })
        .await
        .expect("handled");
    assert_eq!(handled.len(), 3);
    assert!(bob.inbox().is_empty());
    // Taken is not handled: until the owner says so, the server keeps them.
    assert_eq!(server_holds(&s, "@bob", 1).1, 3);
    for (seq, _) in handled {
        bob.handled(seq).await.expect("ack");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server_holds(&s, "@bob", 1).1 != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue drains once the deliveries are handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
