//! What a `sotto` run said: its output and its `--report-json`.

use std::{path::Path, process::Output};

use serde_json::Value;

/// A finished process's stdout and stderr, as one text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What one side's `--report-json` says, and what it printed.
pub struct Side {
    /// Who (for messages).
    pub name: &'static str,
    /// The report.
    pub report: Value,
    /// Its output.
    pub output: String,
}

impl Side {
    /// A whole-number figure of the report; a missing one fails the test.
    pub fn n(&self, key: &str) -> u64 {
        self.report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no {key} in {}", self.name, self.report))
    }

    /// A list of strings of the report (addresses).
    pub fn strings(&self, key: &str) -> Vec<String> {
        self.report[key]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no list {key} in {}", self.name, self.report))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }
}

/// Reads the report `name` wrote to `path`; `output` is shown if there is none.
pub fn read_report(path: &Path, name: &'static str, output: String) -> Side {
    let raw = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{name} wrote no report ({e}); its output: {output}"));
    Side {
        name,
        report: serde_json::from_str(&raw).expect("the report is JSON"),
        output,
    }
}

/// The checks every call between the hosts must pass, whatever the link: it ended by
/// hang-up, nothing failed to decrypt, both sides agree on the safety number and
/// verification code, each heard the other's tone, and ≥ 95 % of the other's video frames
/// were decoded in order with the right picture. Frames in flight at hang-up cannot
/// arrive: the last 5 video frames are allowed for.
pub fn check_video_and_keys(me: &Side, peer: &Side, expect_hz: f64) {
    let side = me.name;
    eprintln!("{side}: {}", me.report);
    assert_eq!(me.report["ended"], "hung up", "{side}: {}", me.output);
    assert_eq!(
        me.n("decrypt_failures"),
        0,
        "{side}: nothing fails to decrypt"
    );
    assert!(
        me.report["safety_number"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{side} has a safety number"
    );
    assert_eq!(me.report["safety_number"], peer.report["safety_number"]);
    assert_eq!(
        me.report["verification_code"],
        peer.report["verification_code"]
    );
    let hz = me.report["received_hz"].as_f64().expect("a tone was heard");
    assert!(
        (hz - expect_hz).abs() < 10.0,
        "{side} heard {hz} Hz, expected {expect_hz}"
    );
    let sent = peer.n("video_sent");
    assert!(sent > 0, "{} sent video", peer.name);
    assert!(
        me.n("video_decoded") + 5 >= sent * 95 / 100,
        "{side} decoded {} of {sent} video frames",
        me.n("video_decoded")
    );
    assert_eq!(
        me.n("video_mismatches"),
        0,
        "{side}: every picture is right"
    );
    assert_eq!(me.report["video_in_order"], true, "{side}: video in order");
    assert_eq!(me.report["audio_in_order"], true, "{side}: audio in order");
}
