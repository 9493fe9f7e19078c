//! A one-to-one call's peer hands us its SDP offer through the signaling service: any
//! bytes as that offer are refused or taken, never a panic that ends the call's task
//! (str0m asserts what it negotiates; the client's link catches and refuses).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sotto_client::session::sfu_link::exercise_offer(data);
});
