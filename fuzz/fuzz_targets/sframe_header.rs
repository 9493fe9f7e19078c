//! The keyless SFrame header parser: never panics; what it accepts re-encodes minimally
//! and parses back to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_wire::{SframeHeader, sframe_header::MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok((header, len)) = SframeHeader::parse(data) {
        assert!(len >= 1 && len <= data.len() && len <= MAX_HEADER_LEN);
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut out).expect("17 bytes always suffice");
        assert!(n <= len, "re-encoding is minimal");
        assert_eq!(SframeHeader::parse(&out[..n]), Ok((header, n)));
    }
});
