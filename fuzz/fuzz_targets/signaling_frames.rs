//! The signaling frame decoder and message deserializers: arbitrary bytes never panic;
//! whatever decodes re-encodes to a frame that decodes to the same message (byte equality
//! is not promised: a varint may arrive in a longer form than we write).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sotto_proto::{
    ClientMsg, ServerMsg,
    frame::{decode_frame, encode_frame},
};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(msg)) = decode_frame::<ClientMsg>(&mut buf) {
        let again = encode_frame(&msg).expect("a decoded message re-encodes");
        let mut b = BytesMut::from(&again[..]);
        assert_eq!(
            decode_frame::<ClientMsg>(&mut b)
                .expect("decodes")
                .expect("complete"),
            msg
        );
    }
    if let Ok(msg) = sotto_proto::decode::<ServerMsg>(data) {
        let again = sotto_proto::encode(&msg).expect("re-encodes");
        assert_eq!(
            sotto_proto::decode::<ServerMsg>(&again).expect("decodes"),
            msg
        );
    }
});
