//! Runs every header vector of RFC 9605 (shared/vectors/rfc9605-sframe.json) through the
//! keyless header codec. A missing vectors file fails the test: it never skips.

use sotto_wire::SframeHeader;

#[derive(serde::Deserialize)]
struct Vectors {
    header: Vec<HeaderVector>,
}

#[derive(serde::Deserialize)]
struct HeaderVector {
    kid: u64,
    ctr: u64,
    encoded: String,
}

fn vectors() -> Vectors {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors/rfc9605-sframe.json"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("RFC 9605 vectors must be at {path}: {e}"));
    serde_json::from_str(&text).expect("vectors file parses")
}

#[test]
fn all_289_header_vectors_encode_and_parse() {
    let v = vectors();
    assert_eq!(
        v.header.len(),
        289,
        "the RFC's header section has 289 vectors"
    );
    for t in &v.header {
        let want = hex::decode(&t.encoded).expect("hex");
        let header = SframeHeader {
            kid: t.kid,
            ctr: t.ctr,
        };
        let mut out = [0u8; sotto_wire::sframe_header::MAX_HEADER_LEN];
        let n = header.encode(&mut out).expect("17 bytes suffice");
        assert_eq!(&out[..n], &want[..], "encode kid={} ctr={}", t.kid, t.ctr);
        assert_eq!(header.encoded_len(), want.len());
        // Parse with trailing payload bytes present, as in a real frame.
        let mut framed = want.clone();
        framed.extend_from_slice(b"payload");
        assert_eq!(SframeHeader::parse(&framed), Ok((header, want.len())));
        // Every strict prefix is an error, never a panic or a wrong value.
        for cut in 0..want.len() {
            assert!(SframeHeader::parse(&want[..cut]).is_err());
        }
    }
}
