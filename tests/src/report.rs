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
