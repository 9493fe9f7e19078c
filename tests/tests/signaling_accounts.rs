//! Accounts over real QUIC: register, log in, wrong signature, replayed nonce, handle
//! taken, invalid handle, several devices, lookup and presence.

use ed25519_dalek::Signer;
use sotto_client::signaling::{ClientError, Incoming};
use sotto_proto::{ErrorCode, Event, Request, Response, login_transcript};
use sotto_tests::{h, key_for, server};

fn code(r: Result<Response, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server(e)) => e.code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn register_then_login_and_lookup() {
    let s = server(|_| {}).await;
    let c = s.connect().await;
    let alice = h("@alice");
    let key = key_for("@alice");
    let r = c.register(&alice, &key, 1).await.expect("register");
    assert!(matches!(r, Response::LoggedIn { created: true, .. }));
    drop(c);

    let c = s.connect().await;
    assert!(matches!(
        c.login(&alice, &key, 2).await,
        Ok(Response::LoggedIn { created: false, .. })
    ));
    match c
        .request(Request::Lookup {
            handle: h("@ALICE"),
        })
        .await
        .expect("lookup")
    {
        Response::Identity {
            handle,
            identity_key,
            devices,
            online,
        } => {
            assert_eq!(handle, alice);
            assert_eq!(identity_key, key.verifying_key().to_bytes().to_vec());
            assert_eq!(devices, vec![1, 2]);
            assert!(online);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_signature_replayed_nonce_and_taken_handle_fail() {
    let s = server(|_| {}).await;
    let alice = h("@alice");
    s.user("@alice", 1).await;

    // Wrong key.
    let c = s.connect().await;
    assert_eq!(
        code(c.login(&alice, &key_for("@mallory"), 1).await),
        ErrorCode::BadSignature
    );

    // A signature captured from one login is useless for the next: its nonce is spent.
    let c = s.connect().await;
    let Ok(Response::Challenge { nonce }) = c
        .request(Request::Login {
            handle: alice.clone(),
            device: 1,
        })
        .await
    else {
        panic!("challenge")
    };
    let sig = key_for("@alice")
        .sign(&login_transcript(&nonce, &alice, 1))
        .to_bytes()
        .to_vec();
    assert!(matches!(
        c.request(Request::Prove {
            signature: sig.clone()
        })
        .await,
        Ok(Response::LoggedIn { .. })
    ));
    let replay = s.connect().await;
    let _ = replay
        .request(Request::Login {
            handle: alice.clone(),
            device: 1,
        })
        .await
        .expect("challenge");
    assert_eq!(
        code(replay.request(Request::Prove { signature: sig }).await),
        ErrorCode::BadSignature
    );

    // Taken, case-insensitively.
    let c = s.connect().await;
    assert_eq!(
        code(c.register(&h("@Alice"), &key_for("@other"), 1).await),
        ErrorCode::HandleTaken
    );
    // Requests before login are refused.
    assert_eq!(
        code(c.request(Request::Lookup { handle: alice }).await),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        s.running.metrics.errors_of(&ErrorCode::BadSignature),
        2,
        "failures are counted in metrics"
    );
}

#[tokio::test]
async fn invalid_handle_is_refused_at_both_ends() {
    // The client library will not even build one...
    assert!(sotto_proto::Handle::parse("@no").is_err());
    assert!(sotto_proto::Handle::parse("@bad-char").is_err());
    // ...and a raw frame carrying one is malformed: the server says why and closes.
    let s = server(|_| {}).await;
    let (_ep, conn) = sotto_client::signaling::connect_quic(s.running.addr, &s.pin)
        .await
        .expect("quic");
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    let hello = sotto_proto::frame::encode_frame(&sotto_proto::ClientMsg::Hello {
        version: sotto_proto::PROTOCOL_VERSION,
        agent: "raw".into(),
    })
    .expect("encode");
    send.write_all(&hello).await.expect("write");
    let mut good = sotto_proto::frame::encode_frame(&sotto_proto::ClientMsg::Request {
        id: 1,
        body: Request::Register {
            handle: h("@abcd"),
            identity_key: vec![0; 32],
            device: 1,
        },
    })
    .expect("encode");
    let at = good.iter().position(|b| *b == b'@').expect("handle bytes");
    good[at + 1] = b'-';
    send.write_all(&good).await.expect("write");
    let goodbye = read_until_goodbye(recv).await;
    assert_eq!(goodbye, ErrorCode::Malformed);
}

async fn read_until_goodbye(recv: quinn::RecvStream) -> ErrorCode {
    use futures_util::StreamExt;
    let mut frames = tokio_util::codec::FramedRead::new(recv, sotto_proto::codec());
    while let Some(Ok(body)) = frames.next().await {
        if let Ok(sotto_proto::ServerMsg::Goodbye(e)) = sotto_proto::decode(&body) {
            return e.code;
        }
    }
    panic!("stream ended without a goodbye")
}

#[tokio::test]
async fn presence_follows_devices() {
    let s = server(|_| {}).await;
    let mut alice = s.user("@alice", 1).await;
    s.user("@bob", 1).await.client.close();
    alice
        .client
        .request(Request::WatchPresence {
            handles: vec![h("@bob")],
        })
        .await
        .expect("watch");
    let first = alice.next().await;
    assert_eq!(
        first,
        Incoming::Event(Event::Presence {
            handle: h("@bob"),
            online: false
        })
    );
    let bob = s.user("@bob", 1).await;
    alice
        .expect("bob online", |i| {
            *i == Incoming::Event(Event::Presence {
                handle: h("@bob"),
                online: true,
            })
        })
        .await;
    bob.client.close();
    alice
        .expect("bob offline", |i| {
            *i == Incoming::Event(Event::Presence {
                handle: h("@bob"),
                online: false,
            })
        })
        .await;
}
