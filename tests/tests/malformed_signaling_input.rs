//! Hostile bytes on a real connection end that session with an error, and never disturb
//! another session.

use std::time::Duration;

use futures_util::StreamExt;
use sotto_proto::{ClientMsg, ErrorCode, Request, Response, ServerMsg};
use sotto_tests::{h, server};

async fn raw(s: &sotto_tests::TestServer, bytes: &[u8]) -> Option<ErrorCode> {
    let (_ep, conn) = sotto_client::signaling::connect_quic(s.running.addr, &s.pin)
        .await
        .expect("quic");
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    let hello = sotto_proto::frame::encode_frame(&ClientMsg::Hello {
        version: sotto_proto::PROTOCOL_VERSION,
        agent: "raw".into(),
    })
    .expect("enc");
    send.write_all(&hello).await.expect("write");
    send.write_all(bytes).await.expect("write");
    let mut frames = tokio_util::codec::FramedRead::new(recv, sotto_proto::codec());
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            f = frames.next() => match f {
                Some(Ok(body)) => {
                    if let Ok(ServerMsg::Goodbye(e)) = sotto_proto::decode(&body) {
                        return Some(e.code);
                    }
                }
                _ => return None,
            },
            () = &mut deadline => return None,
        }
    }
}

#[tokio::test]
async fn garbage_oversized_and_truncated_frames_close_only_their_session() {
    let s = server(|_| {}).await;
    let bystander = s.user("@bystander", 1).await;

    // Garbage body.
    let mut garbage = vec![0, 0, 0, 8];
    garbage.extend_from_slice(&[0xff; 8]);
    assert_eq!(raw(&s, &garbage).await, Some(ErrorCode::Malformed));
    // Oversized length prefix: refused before the body is read.
    let mut big = ((sotto_proto::MAX_FRAME_LEN as u32) + 1)
        .to_be_bytes()
        .to_vec();
    big.extend_from_slice(&[0; 64]);
    assert_eq!(raw(&s, &big).await, Some(ErrorCode::TooLarge));
    // A second Hello.
    let again = sotto_proto::frame::encode_frame(&ClientMsg::Hello {
        version: sotto_proto::PROTOCOL_VERSION,
        agent: "x".into(),
    })
    .expect("enc");
    assert_eq!(raw(&s, &again).await, Some(ErrorCode::InvalidState));
    // A truncated frame then silence: nothing decodes, the session just waits (and the
    // login timeout will end it); no goodbye, no effect on anyone.
    let trunc = [0, 0, 0, 50, 1, 2, 3];
    let _ = tokio::time::timeout(Duration::from_millis(300), raw(&s, &trunc)).await;

    // The bystander's session is untouched.
    let r = bystander
        .client
        .request(Request::Lookup {
            handle: h("@bystander"),
        })
        .await
        .expect("still served");
    assert!(matches!(r, Response::Identity { .. }));
}

#[tokio::test]
async fn wrong_protocol_version_gets_a_typed_refusal() {
    let s = server(|_| {}).await;
    let (_ep, conn) = sotto_client::signaling::connect_quic(s.running.addr, &s.pin)
        .await
        .expect("quic");
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    let hello = sotto_proto::frame::encode_frame(&ClientMsg::Hello {
        version: sotto_proto::PROTOCOL_VERSION + 1,
        agent: "future".into(),
    })
    .expect("enc");
    send.write_all(&hello).await.expect("write");
    let mut frames = tokio_util::codec::FramedRead::new(recv, sotto_proto::codec());
    let body = frames.next().await.expect("a frame").expect("ok");
    assert!(matches!(
        sotto_proto::decode::<ServerMsg>(&body),
        Ok(ServerMsg::Goodbye(e)) if e.code == ErrorCode::UnsupportedVersion { supported: sotto_proto::PROTOCOL_VERSION }
    ));
}

#[tokio::test]
async fn a_wrong_certificate_pin_is_refused() {
    let s = server(|_| {}).await;
    let wrong: sotto_client::signaling::Pin = "00".repeat(32).parse().expect("pin");
    let r = sotto_client::signaling::SignalingClient::connect(s.running.addr, &wrong).await;
    assert!(matches!(
        r,
        Err(sotto_client::signaling::ClientError::WrongCertificate { .. })
    ));
}
