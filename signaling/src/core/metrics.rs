//! Counters for the Prometheus text endpoint: sessions, logins, calls by outcome, messages,
//! errors by kind. Shared between the core (which counts) and the shell (which serves).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sotto_proto::{EndReason, ErrorCode};

const END_REASONS: [(&str, EndReason); 7] = [
    ("hung_up", EndReason::HungUp),
    ("declined", EndReason::Declined),
    ("cancelled", EndReason::Cancelled),
    ("timeout", EndReason::Timeout),
    ("answered_elsewhere", EndReason::AnsweredElsewhere),
    ("peer_disconnected", EndReason::PeerDisconnected),
    ("key_mismatch", EndReason::KeyMismatch),
];

const ERROR_KINDS: [&str; 24] = [
    "unsupported_version",
    "malformed",
    "too_large",
    "unauthenticated",
    "bad_signature",
    "handle_taken",
    "invalid_handle",
    "not_found",
    "busy",
    "offline",
    "forbidden",
    "already_answered",
    "invalid_state",
    "stale_epoch",
    "rate_limited",
    "limit_reached",
    "internal",
    "invalid_key_package",
    "invalid_commit",
    "not_a_member",
    "group_id_not_yours",
    "claim_mismatch",
    "unknown_key_package",
    "queue_full",
];

fn error_index(code: &ErrorCode) -> usize {
    match code {
        ErrorCode::UnsupportedVersion { .. } => 0,
        ErrorCode::Malformed => 1,
        ErrorCode::TooLarge => 2,
        ErrorCode::Unauthenticated => 3,
        ErrorCode::BadSignature => 4,
        ErrorCode::HandleTaken => 5,
        ErrorCode::InvalidHandle => 6,
        ErrorCode::NotFound => 7,
        ErrorCode::Busy => 8,
        ErrorCode::Offline => 9,
        ErrorCode::Forbidden => 10,
        ErrorCode::AlreadyAnswered => 11,
        ErrorCode::InvalidState => 12,
        ErrorCode::StaleEpoch { .. } => 13,
        ErrorCode::RateLimited { .. } => 14,
        ErrorCode::LimitReached { .. } => 15,
        ErrorCode::Internal => 16,
        ErrorCode::InvalidKeyPackage => 17,
        ErrorCode::InvalidCommit => 18,
        ErrorCode::NotAMember => 19,
        ErrorCode::GroupIdNotYours => 20,
        ErrorCode::ClaimMismatch => 21,
        ErrorCode::UnknownKeyPackage => 22,
        ErrorCode::QueueFull => 23,
    }
}

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions open now.
    pub sessions_open: AtomicU64,
    /// Sessions ever opened.
    pub sessions_total: AtomicU64,
    /// Successful logins (registrations included).
    pub logins: AtomicU64,
    /// Failed login proofs.
    pub login_failures: AtomicU64,
    /// Calls that rang.
    pub calls_started: AtomicU64,
    calls_ended: [AtomicU64; 7],
    /// Frames received.
    pub messages_in: AtomicU64,
    /// Frames sent.
    pub messages_out: AtomicU64,
    /// Stored messages refused because a recipient's queue was full.
    pub queue_drops: AtomicU64,
    /// Claims answered with a last-resort KeyPackage (the device had no one-use one).
    pub last_resort_claims: AtomicU64,
    /// Accepted commits that a member reported it could not process.
    pub commit_reports: AtomicU64,
    errors: [AtomicU64; 24],
}

impl Metrics {
    /// Counts a call ending.
    pub fn call_ended(&self, reason: EndReason) {
        if let Some(i) = END_REASONS.iter().position(|(_, r)| *r == reason) {
            self.calls_ended[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts an error answer.
    pub fn error(&self, code: &ErrorCode) {
        self.errors[error_index(code)].fetch_add(1, Relaxed);
    }

    /// Errors of one kind so far.
    pub fn errors_of(&self, code: &ErrorCode) -> u64 {
        self.errors[error_index(code)].load(Relaxed)
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in samples {
                s.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        let one = |v: &AtomicU64| vec![(String::new(), v.load(Relaxed))];
        metric(
            "sotto_sessions_open",
            "gauge",
            "Sessions open now.",
            &one(&self.sessions_open),
        );
        metric(
            "sotto_sessions_total",
            "counter",
            "Sessions opened.",
            &one(&self.sessions_total),
        );
        metric(
            "sotto_logins_total",
            "counter",
            "Successful logins.",
            &one(&self.logins),
        );
        metric(
            "sotto_login_failures_total",
            "counter",
            "Failed login proofs.",
            &one(&self.login_failures),
        );
        metric(
            "sotto_calls_started_total",
            "counter",
            "Calls that rang.",
            &one(&self.calls_started),
        );
        let ended: Vec<_> = END_REASONS
            .iter()
            .zip(&self.calls_ended)
            .map(|((n, _), v)| (format!("{{reason=\"{n}\"}}"), v.load(Relaxed)))
            .collect();
        metric(
            "sotto_calls_ended_total",
            "counter",
            "Calls ended, by reason.",
            &ended,
        );
        metric(
            "sotto_messages_in_total",
            "counter",
            "Frames received.",
            &one(&self.messages_in),
        );
        metric(
            "sotto_messages_out_total",
            "counter",
            "Frames sent.",
            &one(&self.messages_out),
        );
        metric(
            "sotto_queue_drops_total",
            "counter",
            "Stored messages refused by a full device queue.",
            &one(&self.queue_drops),
        );
        metric(
            "sotto_last_resort_claims_total",
            "counter",
            "Claims answered with a last-resort KeyPackage.",
            &one(&self.last_resort_claims),
        );
        metric(
            "sotto_commit_reports_total",
            "counter",
            "Accepted commits a member could not process.",
            &one(&self.commit_reports),
        );
        let errors: Vec<_> = ERROR_KINDS
            .iter()
            .zip(&self.errors)
            .map(|(n, v)| (format!("{{kind=\"{n}\"}}"), v.load(Relaxed)))
            .collect();
        metric(
            "sotto_errors_total",
            "counter",
            "Error answers, by kind.",
            &errors,
        );
        s
    }
}
