//! The real `sotto-signaling` binary is killed with SIGKILL and restarted on the same data
//! directory: accounts, KeyPackages, rooms and queued messages are all still there, and
//! the certificate fingerprint clients pinned and the service's MLS key (the external
//! sender rooms' groups name) are unchanged.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

use ed25519_dalek::SigningKey;
use sotto_client::mls::MlsDevice;
use sotto_client::signaling::{Incoming, Pin, SignalingClient};
use sotto_proto::{Handle, MlsKind, Request, Response, Stored};

struct Server {
    child: Child,
    addr: SocketAddr,
    fingerprint: String,
}

impl Drop for Server {
    /// A failed assertion must not leave the server running (and the test's output open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto-signaling"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut addr = None;
    let mut fingerprint = None;
    while addr.is_none() || fingerprint.is_none() {
        let line = lines
            .next()
            .expect("server prints its address")
            .expect("utf-8");
        if let Some(a) = line.strip_prefix("listening ") {
            addr = Some(a.parse().expect("address"));
        } else if let Some(f) = line.strip_prefix("fingerprint ") {
            fingerprint = Some(f.to_owned());
        }
    }
    Server {
        child,
        addr: addr.expect("addr"),
        fingerprint: fingerprint.expect("fingerprint"),
    }
}

fn h(s: &str) -> Handle {
    Handle::parse(s).expect("handle")
}

fn key_of(handle: &str) -> SigningKey {
    use sha2::Digest;
    SigningKey::from_bytes(&sha2::Sha256::digest(handle).into())
}

/// Logs in; the service's MLS signature key comes with it.
async fn login(s: &Server, handle: &str, register: bool) -> (SignalingClient, Vec<u8>) {
    let pin: Pin = s.fingerprint.parse().expect("pin");
    let c = SignalingClient::connect(s.addr, &pin)
        .await
        .expect("connect");
    let key = key_of(handle);
    let r = if register {
        c.register(&h(handle), &key, 1).await
    } else {
        c.login(&h(handle), &key, 1).await
    };
    let Ok(Response::LoggedIn { service_key, .. }) = r else {
        panic!("{handle}: {r:?}")
    };
    (c, service_key)
}

#[tokio::test]
async fn state_survives_sigkill() {
    let dir = tempfile::tempdir().expect("dir");
    let mut first = spawn(dir.path());

    let (alice, service_key) = login(&first, "@alice", true).await;
    let mut alice_mls = MlsDevice::with_identity("@alice", &key_of("@alice"), None).expect("mls");
    alice_mls.set_service_key(&service_key);
    let (bob, _) = login(&first, "@bobby", true).await;
    let bob_mls = MlsDevice::with_identity("@bobby", &key_of("@bobby"), None).expect("mls");
    let bob_packages: Vec<Vec<u8>> = (0..2).map(|_| bob_mls.key_package().expect("kp")).collect();
    bob.request(Request::UploadKeyPackages {
        packages: bob_packages.clone(),
        last_resort: Some(bob_mls.last_resort_key_package().expect("kp")),
        replace: true,
    })
    .await
    .expect("upload");
    let Response::RoomCreated { room } = alice.request(Request::CreateRoom).await.expect("room")
    else {
        panic!()
    };
    alice
        .request(Request::InviteToRoom {
            room,
            handles: vec![h("@bobby")],
        })
        .await
        .expect("invite");
    // Both in the room, so Alice may claim Bob's KeyPackage.
    for c in [&alice, &bob] {
        c.request(Request::JoinRoom { room }).await.expect("join");
    }
    let mut group = alice_mls.create_group_with_id(&room.0).expect("group");
    alice
        .request(Request::CreateGroup {
            group: room.0.to_vec(),
            group_info: group.group_info(&alice_mls).expect("info"),
        })
        .await
        .expect("group");
    let Response::KeyPackage { package, .. } = alice
        .request(Request::ClaimKeyPackage {
            handle: h("@bobby"),
            device: None,
        })
        .await
        .expect("claim")
    else {
        panic!("claimed")
    };
    assert_eq!(package, bob_packages[0]);
    let add = group.add(&alice_mls, &[package]).expect("add");
    let welcome = add.welcome.clone().expect("welcome");
    alice
        .request(add.into_request(room.0.to_vec()))
        .await
        .expect("commit");
    group.merge_pending(&alice_mls).expect("merge");

    // No graceful anything: SIGKILL.
    first.child.kill().expect("kill -9");
    first.child.wait().expect("reaped");

    let mut second = spawn(dir.path());
    assert_eq!(
        second.fingerprint, first.fingerprint,
        "the pinned certificate survives"
    );
    let (alice, service_key_after) = login(&second, "@alice", false).await;
    assert_eq!(
        service_key_after, service_key,
        "the service's MLS key survives"
    );
    // The room survived (both can join it again); KeyPackages survived, none consumed by
    // the crash.
    let (mut bob, _) = login(&second, "@bobby", false).await;
    for c in [&alice, &bob] {
        assert!(matches!(
            c.request(Request::JoinRoom { room }).await,
            Ok(Response::RoomJoined { .. })
        ));
    }
    let Response::KeyPackage {
        package,
        last_resort: false,
        ..
    } = alice
        .request(Request::ClaimKeyPackage {
            handle: h("@bobby"),
            device: None,
        })
        .await
        .expect("claim")
    else {
        panic!("a one-use package")
    };
    assert_eq!(package, bob_packages[1]);
    // So did the group's public state: a stale commit is fenced, and a valid one for the
    // current epoch validates against it.
    let stale = alice
        .request(Request::Commit {
            group: room.0.to_vec(),
            epoch: 0,
            commit: b"late".to_vec(),
            welcome: None,
            group_info: None,
            added: vec![],
            removed: vec![],
        })
        .await;
    assert!(format!("{stale:?}").contains("StaleEpoch"), "{stale:?}");
    let update = group.update(&alice_mls).expect("update");
    assert!(matches!(
        alice.request(update.into_request(room.0.to_vec())).await,
        Ok(Response::CommitAccepted { epoch: 2, .. })
    ));
    // Bob's queued messages arrive, in order.
    let mut got = Vec::new();
    while got.len() < 3 {
        match bob.next_within(std::time::Duration::from_secs(5)).await {
            Some(Incoming::Delivery { item, .. }) => got.push(item),
            Some(_) => {}
            None => panic!("queued messages missing after restart: {got:?}"),
        }
    }
    assert!(matches!(&got[0], Stored::RoomInvite { room: r, .. } if *r == room));
    assert!(
        matches!(&got[1], Stored::Mls { kind: MlsKind::Welcome, data, .. } if *data == welcome)
    );
    assert!(matches!(
        &got[2],
        Stored::Mls {
            kind: MlsKind::Commit,
            epoch: 1,
            ..
        }
    ));

    second.child.kill().expect("kill");
    second.child.wait().expect("reaped");
}
