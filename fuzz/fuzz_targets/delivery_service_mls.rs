//! The delivery service's MLS parsers (uploaded KeyPackages, a new group's GroupInfo,
//! stored group state): arbitrary bytes never panic, and nothing unsigned is accepted as
//! a KeyPackage or GroupInfo of the fixed fuzz identity (whose key no input can sign for).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(
        !sotto_signaling::core::exercise_parsers(data, None),
        "arbitrary bytes passed a signature check"
    );
});
