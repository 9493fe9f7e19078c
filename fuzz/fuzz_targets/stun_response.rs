//! A STUN server's answer (or any datagram that claims to be one) reaches a direct call's
//! media socket before its offer: any bytes are an address or nothing, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sotto_client::stun::exercise_response(data);
});
