//! End-to-end tests of sotto live in `tests/tests/`, one file per behaviour
//! (`e2ee_group_keys.rs`, `sfu_holds_no_keys.rs`, ...). They start real servers on loopback
//! and place real calls; this library holds nothing yet but their shared harness.
