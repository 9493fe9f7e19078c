//! The real `sotto-signaling` binary is killed with SIGKILL and restarted on the same data
//! directory: accounts, KeyPackages, rooms and queued messages are all still there, and
//! the certificate fingerprint clients pinned is unchanged.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
};

use ed25519_dalek::SigningKey;
use sotto_client::signaling::{Incoming, Pin, SignalingClient};
use sotto_proto::{AddedMember, DeviceAddr, Handle, MlsKind, Request, Response, Stored};

struct Server {
    child: Child,
    addr: SocketAddr,
    fingerprint: String,
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

async fn login(s: &Server, handle: &str, register: bool) -> SignalingClient {
    let pin: Pin = s.fingerprint.parse().expect("pin");
    let c = SignalingClient::connect(s.addr, &pin)
        .await
        .expect("connect");
    let key = SigningKey::from_bytes(&[handle.len() as u8; 32]);
    let r = if register {
        c.register(&h(handle), &key, 1).await
    } else {
        c.login(&h(handle), &key, 1).await
    };
    assert!(
        matches!(r, Ok(Response::LoggedIn { .. })),
        "{handle}: {r:?}"
    );
    c
}

#[tokio::test]
async fn state_survives_sigkill() {
    let dir = tempfile::tempdir().expect("dir");
    let mut first = spawn(dir.path());

    let alice = login(&first, "@alice", true).await;
    let bob = login(&first, "@bobby", true).await;
    bob.request(Request::UploadKeyPackages {
        packages: vec![b"kp-1".to_vec(), b"kp-2".to_vec()],
        last_resort: Some(b"kp-last".to_vec()),
    })
    .await
    .expect("upload");
    bob.close();
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
    alice
        .request(Request::CreateGroup {
            group: room.0.to_vec(),
        })
        .await
        .expect("group");
    alice
        .request(Request::Commit {
            group: room.0.to_vec(),
            epoch: 0,
            commit: b"commit".to_vec(),
            welcome: Some(b"welcome for bobby".to_vec()),
            added: vec![AddedMember {
                device: DeviceAddr {
                    handle: h("@bobby"),
                    device: 1,
                },
                leaf: 1,
            }],
            removed: vec![],
        })
        .await
        .expect("commit");

    // No graceful anything: SIGKILL.
    first.child.kill().expect("kill -9");
    first.child.wait().expect("reaped");

    let mut second = spawn(dir.path());
    assert_eq!(
        second.fingerprint, first.fingerprint,
        "the pinned certificate survives"
    );
    let alice = login(&second, "@alice", false).await;
    // KeyPackages survived, none consumed by the crash.
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
    assert_eq!(package, b"kp-1");
    // The room survived (Alice can join it); the group's epoch too.
    assert!(matches!(
        alice.request(Request::JoinRoom { room }).await,
        Ok(Response::RoomJoined { .. })
    ));
    let stale = alice
        .request(Request::Commit {
            group: room.0.to_vec(),
            epoch: 0,
            commit: b"late".to_vec(),
            welcome: None,
            added: vec![],
            removed: vec![],
        })
        .await;
    assert!(format!("{stale:?}").contains("StaleEpoch"), "{stale:?}");
    // Bob's queued messages arrive, in order.
    let mut bob = login(&second, "@bobby", false).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        match bob.next_within(std::time::Duration::from_secs(5)).await {
            Some(Incoming::Delivery { item, .. }) => got.push(item),
            Some(_) => {}
            None => panic!("queued messages missing after restart: {got:?}"),
        }
    }
    assert!(matches!(&got[0], Stored::RoomInvite { room: r, .. } if *r == room));
    assert!(
        matches!(&got[1], Stored::Mls { kind: MlsKind::Welcome, data, .. } if data == b"welcome for bobby")
    );

    second.child.kill().expect("kill");
    second.child.wait().expect("reaped");
}
