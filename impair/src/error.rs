//! The crate's typed errors.

use std::io;
use std::net::SocketAddr;

/// A [`Conditions`](crate::Conditions) value that cannot be applied as written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConditionsError {
    /// A probability outside `[0, 1]` (or not a number).
    #[error("{what} must be a probability in [0, 1], got {value}")]
    Probability {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// `rate: Some(0)`.
    #[error("a rate cap must be at least 1 bit/s")]
    ZeroRate,
    /// A queue limit of zero packets or bytes.
    #[error("a queue limit must be at least 1 packet or byte")]
    ZeroQueue,
    /// A mean burst length below one packet.
    #[error("a mean burst length must be at least 1 packet, got {0}")]
    BurstTooShort(f64),
    /// A mean loss the burst model cannot reach with that mean burst length (a mean
    /// burst of `b` packets allows at most `b / (b + 1)` loss).
    #[error(
        "a mean loss of {loss} is out of reach with mean bursts of {burst} packets (at most \
         burst/(burst+1))"
    )]
    BurstUnreachable {
        /// The mean loss asked for.
        loss: f64,
        /// The mean burst length asked for.
        burst: f64,
    },
    /// A mean loss for a burst model outside `(0, 1)`.
    #[error("a burst model needs a mean loss strictly between 0% and 100%, got {0}")]
    BurstLoss(f64),
}

/// Why a conditions string (the `--impair` form) does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but separators.
    #[error("empty conditions; write `free` for an unimpaired path")]
    Empty,
    /// A token that names no setting.
    #[error(
        "`{token}` is not a setting; expected one of delay=, jitter=, loss=, burst=, ge=, \
         reorder=, gap=, duplicate=, rate=, queue=, blackhole, free, or a bare rate like `300kbit`"
    )]
    UnknownSetting {
        /// The token as written.
        token: String,
    },
    /// A known setting with a value that does not parse.
    #[error("`{token}` needs {expected}")]
    BadValue {
        /// The token as written.
        token: String,
        /// What the value should look like.
        expected: String,
    },
    /// The same setting given twice.
    #[error("`{key}` is given twice")]
    Repeated {
        /// The setting's name.
        key: String,
    },
    /// `burst=` without `loss=`.
    #[error("`{token}` needs `loss=N%` too: the burst model takes its mean loss from it")]
    BurstWithoutLoss {
        /// The `burst=` token.
        token: String,
    },
    /// `queue=` without `rate=`.
    #[error("`{token}` needs `rate=` too: the queue sits in front of the rate cap")]
    QueueWithoutRate {
        /// The `queue=` token.
        token: String,
    },
    /// Two settings that exclude each other.
    #[error("`{first}` and `{second}` cannot be combined")]
    Conflict {
        /// The first token.
        first: String,
        /// The second token.
        second: String,
    },
    /// Parsed, but the values do not make sense together.
    #[error("{0}")]
    Invalid(#[from] ConditionsError),
}

/// Why a schedule does not parse or is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// No steps at all.
    #[error("empty schedule; write `free` for an unimpaired path")]
    Empty,
    /// A step that is not the last one has no duration.
    #[error("step {step} (`{text}`) has no duration; only the last step may omit it")]
    MissingDuration {
        /// The step's number, from 1.
        step: usize,
        /// The step as written.
        text: String,
    },
    /// A step's duration does not parse.
    #[error("step {step}: `{token}` needs a duration like `10s` or `500ms`")]
    BadDuration {
        /// The step's number, from 1.
        step: usize,
        /// The token as written.
        token: String,
    },
    /// A step's conditions do not parse or are not valid.
    #[error("step {step} (`{text}`): {source}")]
    Step {
        /// The step's number, from 1.
        step: usize,
        /// The step's conditions as written (or rendered, for a built schedule).
        text: String,
        /// What is wrong with them.
        source: ParseError,
    },
}

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An address off loopback without `allow_non_loopback`.
    #[error(
        "the {what} address {addr} is not on loopback (127.0.0.0/8 or ::1); set \
         `allow_non_loopback` to use it"
    )]
    NotLoopback {
        /// Which address (`listen` or `upstream`).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// Binding the client-facing socket failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Another socket operation failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The proxy's task panicked or was cancelled.
    #[error("the proxy task ended abnormally: {0}")]
    Task(String),
}
