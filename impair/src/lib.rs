//! A loopback UDP impairment proxy, deterministic under a seed.
//!
//! This machine has no netem, so the SFU tests, the group-call tests and the bench impair
//! their paths in userspace with this crate. It has two layers:
//!
//! - [`Impairment`], a sans-IO core for one direction of a path: datagrams go in with
//!   [`Impairment::push`], come out with [`Impairment::poll`] when due, and
//!   [`Impairment::poll_timeout`] says when the next one is due. Time is always passed in,
//!   so tests run it on a virtual clock. It applies the [`Conditions`] of a [`Schedule`]
//!   step (delay, jitter, random and Gilbert–Elliott burst loss, reordering, duplication,
//!   a rate cap with a tail-drop queue, black-hole) and records every drop with its reason.
//! - [`Proxy`], a thin tokio shell: UDP in on a client-facing socket, one upstream socket per
//!   client address (like a NAT mapping), an `up` impairment for client→upstream and a
//!   `down` impairment for upstream→client, conditions changeable while it runs. It refuses
//!   anything off loopback unless told otherwise.
//!
//! Conditions are written in a comma form, e.g. `delay=40ms,jitter=10ms,loss=5%,burst=3,
//! rate=1mbit,queue=50` (see [`Conditions`]'s `FromStr`), and schedules as lines of
//! `<duration> <conditions>` or as prose like `300kbit for 10s, then free` (see
//! [`Schedule::parse`]).

#![forbid(unsafe_code)]

mod conditions;
mod error;
mod link;
mod proxy;
mod rng;
mod schedule;
mod units;

pub use conditions::{Conditions, DEFAULT_QUEUE, DEFAULT_REORDER_GAP, GilbertElliott, QueueLimit};
pub use error::{ConditionsError, ParseError, ProxyError, ScheduleError};
pub use link::{
    DROP_HEAD_LEN, Delivery, DropCounts, DropReason, Dropped, Impairment, QueueDepth, Stats,
};
pub use proxy::{Direction, Mapping, Proxy, ProxyConfig, ProxyReport, ProxyStats};
pub use schedule::{Schedule, Step};
