//! Session-core tests on a virtual clock.
