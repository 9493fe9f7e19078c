//! The SFU's Prometheus page: every worker's snapshot summed. One table names each
//! counter once (name, help, how to read it), so adding a counter is one line here.

use crate::core::{Counters, Drops};
use crate::worker::{LATENCY_BUCKETS_US, LatencyHistogram, Snapshot, WorkerHandle};
use std::fmt::Write;

type Read = fn(&Counters) -> u64;

/// Counters, in page order: (metric name, help, value of one worker's counters).
const COUNTERS: &[(&str, &str, Read)] = &[
    ("sotto_sfu_datagrams_in_total", "Datagrams received.", |c| {
        c.datagrams_in
    }),
    ("sotto_sfu_bytes_in_total", "Bytes received.", |c| {
        c.bytes_in
    }),
    ("sotto_sfu_datagrams_out_total", "Datagrams sent.", |c| {
        c.datagrams_out
    }),
    ("sotto_sfu_bytes_out_total", "Bytes sent.", |c| c.bytes_out),
    (
        "sotto_sfu_rtp_in_total",
        "RTP packets received from publishers.",
        |c| c.rtp_in,
    ),
    (
        "sotto_sfu_rtp_forwarded_total",
        "RTP packets written to subscribers.",
        |c| c.rtp_forwarded,
    ),
    (
        "sotto_sfu_timer_runs_total",
        "Connection timers run (pacing, bandwidth estimation, RTCP, keep-alives).",
        |c| c.timer_runs,
    ),
    (
        "sotto_sfu_removals_applied_total",
        "Roster removals applied (and acknowledged to signaling).",
        |c| c.removals,
    ),
    (
        "sotto_sfu_keyframe_requests_total",
        "PLI/FIR sent to publishers (relayed, or for a slot switch).",
        |c| c.keyframe_requests,
    ),
    (
        "sotto_sfu_keyframe_requests_suppressed_total",
        "Keyframe requests held back by the per-stream interval.",
        |c| c.keyframe_requests_suppressed,
    ),
    (
        "sotto_sfu_speaker_changes_total",
        "Dominant-speaker changes announced.",
        |c| c.speaker_changes,
    ),
    (
        "sotto_sfu_audio_not_loudest_total",
        "Audio packets of big rooms held back: not among the loudest speakers.",
        |c| c.audio_not_loudest,
    ),
    (
        "sotto_sfu_video_other_layers_total",
        "Video packets of a layer other than the one a subscriber's slot is on or waits for.",
        |c| c.other_layers,
    ),
    (
        "sotto_sfu_video_not_selected_total",
        "Video packets not sent to a subscriber: sender outside its last-N.",
        |c| c.video_not_selected,
    ),
    (
        "sotto_sfu_layer_switches_total",
        "Simulcast layer switches (each at a keyframe).",
        |c| c.layer_switches,
    ),
    (
        "sotto_sfu_nacks_received_total",
        "NACKs from subscribers, answered from the retransmission cache.",
        |c| c.nacks_received,
    ),
    (
        "sotto_sfu_nacks_sent_total",
        "NACKs sent to publishers.",
        |c| c.nacks_sent,
    ),
    (
        "sotto_sfu_video_suspensions_total",
        "Video slots suspended because the subscriber's estimate had no room for them.",
        |c| c.suspensions,
    ),
    (
        "sotto_sfu_video_over_budget_total",
        "Video packets held back by those suspensions.",
        |c| c.video_over_budget,
    ),
];

type ReadDrop = fn(&Drops) -> u64;

/// Drop reasons, as the `reason` label of `sotto_sfu_drops_total`.
const DROPS: &[(&str, ReadDrop)] = &[
    ("unknown_source", |d| d.unknown_source),
    ("malformed", |d| d.malformed),
    ("wrong_sender", |d| d.wrong_sender),
    ("not_sframe", |d| d.not_sframe),
    ("no_slot", |d| d.no_slot),
    ("awaiting_keyframe", |d| d.awaiting_keyframe),
    ("stale", |d| d.stale),
];

/// The page for these workers.
pub fn render(workers: &[WorkerHandle]) -> String {
    let snaps: Vec<Snapshot> = workers
        .iter()
        .filter_map(|w| w.counters.lock().ok().map(|s| *s))
        .collect();
    let mut out = String::new();
    let sum = |f: &dyn Fn(&Snapshot) -> u64| snaps.iter().map(f).sum::<u64>();
    metric(
        &mut out,
        "sotto_sfu_rooms",
        "Rooms with participants.",
        "gauge",
    );
    let _ = writeln!(out, "sotto_sfu_rooms {}", sum(&|s| s.rooms as u64));
    metric(
        &mut out,
        "sotto_sfu_participants",
        "Participants connected or joining.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "sotto_sfu_participants {}",
        sum(&|s| s.participants as u64)
    );
    for (name, help, read) in COUNTERS {
        metric(&mut out, name, help, "counter");
        let _ = writeln!(out, "{name} {}", sum(&|s| read(&s.counters)));
    }
    let name = "sotto_sfu_drops_total";
    metric(&mut out, name, "Packets dropped, by reason.", "counter");
    for (reason, read) in DROPS {
        let _ = writeln!(
            out,
            "{name}{{reason=\"{reason}\"}} {}",
            sum(&|s| read(&s.counters.drops))
        );
    }
    estimates(&mut out, &snaps);
    let mut latency = LatencyHistogram::default();
    for s in &snaps {
        latency.add(&s.latency);
    }
    histogram(&mut out, &latency);
    out
}

fn metric(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// Subscribers' bandwidth estimates over all workers: mean, min and max.
fn estimates(out: &mut String, snaps: &[Snapshot]) {
    let with: Vec<&Snapshot> = snaps.iter().filter(|s| s.estimates.0 > 0).collect();
    let count: u64 = with.iter().map(|s| s.estimates.0).sum();
    let total: u64 = with.iter().map(|s| s.estimates.1).sum();
    let min = with.iter().map(|s| s.estimates.2).min().unwrap_or(0);
    let max = with.iter().map(|s| s.estimates.3).max().unwrap_or(0);
    let mean = total.checked_div(count).unwrap_or(0);
    let name = "sotto_sfu_estimate_bps";
    metric(
        out,
        name,
        "Subscribers' bandwidth estimates (transport-wide CC).",
        "gauge",
    );
    for (stat, v) in [("mean", mean), ("min", min), ("max", max)] {
        let _ = writeln!(out, "{name}{{stat=\"{stat}\"}} {v}");
    }
}

fn histogram(out: &mut String, h: &LatencyHistogram) {
    let name = "sotto_sfu_forwarding_latency_seconds";
    metric(
        out,
        name,
        "Receive to send inside the SFU, per datagram it sent.",
        "histogram",
    );
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += h.buckets[i];
        let le = *bound as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_appears_once_with_its_help() {
        let page = render(&[]);
        for (name, _, _) in COUNTERS {
            assert_eq!(
                page.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
            assert!(page.contains(&format!("\n{name} 0\n")), "{name}");
        }
        for (reason, _) in DROPS {
            assert!(
                page.contains(&format!("reason=\"{reason}\"}} 0")),
                "{reason}"
            );
        }
        assert!(page.contains("sotto_sfu_forwarding_latency_seconds_count 0"));
    }
}
