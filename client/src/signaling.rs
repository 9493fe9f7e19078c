//! The signaling client lives in `sotto-signaling-client` (keyless, so the SFU can use it
//! too); re-exported here so the client's paths stay as they were.

pub use sotto_signaling_client::*;
