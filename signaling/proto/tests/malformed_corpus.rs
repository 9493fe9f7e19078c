//! Hostile bytes at the frame decoder and the message deserializer: truncated, oversized,
//! wrong-version, garbage. Every case is an error (or a complete valid message), never a
//! panic; a bad frame never yields a message.

use bytes::BytesMut;
use sotto_proto::{
    ClientMsg, FrameError, Handle, MAX_FRAME_LEN, Request, decode,
    frame::{decode_frame, encode_frame},
};

fn valid() -> Vec<u8> {
    encode_frame(&ClientMsg::Request {
        id: 42,
        body: Request::Lookup {
            handle: Handle::parse("@alice").expect("handle"),
        },
    })
    .expect("encode")
}

#[test]
fn truncated_frames_wait_for_more_and_truncated_bodies_fail() {
    let frame = valid();
    for cut in 0..frame.len() {
        let mut buf = BytesMut::from(&frame[..cut]);
        assert!(
            matches!(decode_frame::<ClientMsg>(&mut buf), Ok(None)),
            "cut {cut}: incomplete frame waits"
        );
    }
    // A complete frame whose body was cut short: the length prefix says less than the body needs.
    for cut in 1..frame.len() - 4 {
        let body = &frame[4..4 + cut];
        assert!(decode::<ClientMsg>(body).is_err(), "body cut at {cut}");
    }
}

#[test]
fn oversized_frames_are_refused_before_buffering() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes());
    buf.extend_from_slice(&[0u8; 16]);
    assert!(matches!(
        decode_frame::<ClientMsg>(&mut buf),
        Err(FrameError::TooLarge(_))
    ));
    let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    assert!(matches!(
        decode_frame::<ClientMsg>(&mut buf),
        Err(FrameError::TooLarge(_))
    ));
    assert!(decode::<ClientMsg>(&vec![0u8; MAX_FRAME_LEN + 1]).is_err());
}

#[test]
fn garbage_and_trailing_bytes_fail() {
    let mut seed = 0x1234_5678_u32;
    for len in 0..512 {
        let body: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        // Either an error or a message that survives re-encoding.
        if let Ok(msg) = decode::<ClientMsg>(&body) {
            let again = sotto_proto::encode(&msg).expect("encode");
            assert_eq!(decode::<ClientMsg>(&again).expect("decode"), msg);
        }
    }
    let mut body = valid()[4..].to_vec();
    body.push(0);
    assert!(decode::<ClientMsg>(&body).is_err(), "trailing byte");
}

#[test]
fn unknown_variants_fail() {
    // Variant index far beyond the enum: a future or bogus message type.
    assert!(decode::<ClientMsg>(&[0x7f]).is_err());
    assert!(decode::<ClientMsg>(&[0x01, 0x00, 0x7f]).is_err());
}

#[test]
fn wrong_version_hello_decodes_so_the_server_can_refuse_it_politely() {
    let frame = encode_frame(&ClientMsg::Hello {
        version: 999,
        agent: "future".into(),
    })
    .expect("encode");
    let mut buf = BytesMut::from(&frame[..]);
    assert!(matches!(
        decode_frame::<ClientMsg>(&mut buf),
        Ok(Some(ClientMsg::Hello { version: 999, .. }))
    ));
}
