//! The real binaries, for tests that run them as a user would.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The real binaries, built for this test run's profile into its target directory.
pub struct Bins {
    /// `sotto`.
    pub sotto: PathBuf,
    /// `sotto-signaling`.
    pub signaling: PathBuf,
    /// `sotto-sfu`.
    pub sfu: PathBuf,
}

/// `cargo test` builds the binaries of only the package under test, so this builds the
/// three the tests run (a no-op when they are fresh) into the target directory this test
/// binary lives in, with its profile.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        // <target>/<profile dir>/deps/two_hosts-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in <target>/<profile>/deps");
        let target = profile_dir.parent().expect("a target directory");
        let profile = match profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a profile directory name")
        {
            "debug" => "dev",
            other => other,
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace root");
        let mut build = Command::new(cargo);
        // `cargo test` gives this process the variables of the package under test
        // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME…). Build scripts that watch them (ring's
        // does) would see them change between this build and the shell's `cargo test`,
        // and rebuild ring and everything above it at every switch: a warm run would
        // recompile most of the tree twice. The build gets the shell's view instead.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k == "OUT_DIR" || (k.starts_with("CARGO_") && is_per_package(&k)) {
                build.env_remove(&*k);
            }
        }
        let status = build
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "sotto-client",
                "-p",
                "sotto-signaling",
                "-p",
                "sotto-sfu",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(target)
            .current_dir(workspace)
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building sotto, sotto-signaling and sotto-sfu failed"
        );
        Bins {
            sotto: profile_dir.join("sotto"),
            signaling: profile_dir.join("sotto-signaling"),
            sfu: profile_dir.join("sotto-sfu"),
        }
    })
}

/// Whether a `CARGO_*` variable is one cargo sets for the package it runs (not one of the
/// user's settings, like CARGO_HOME or CARGO_TARGET_DIR, which the build must keep).
fn is_per_package(k: &str) -> bool {
    [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ]
    .iter()
    .any(|p| k.starts_with(p))
}
