//! The SFU core's packet handling: arbitrary datagrams from a joined participant's
//! address, from strangers, and as STUN never panic, are all counted, and never get
//! forwarded or accepted as media without a DTLS-SRTP session.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    static HARNESS: RefCell<sotto_sfu::core::fuzz::Harness> =
        RefCell::new(sotto_sfu::core::fuzz::Harness::new());
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| h.borrow_mut().run(data));
});
