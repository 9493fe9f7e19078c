//! The bench harness's library half: load participants for the SFU's tests and scenarios.

pub mod load;
