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
}

/// `cargo test` builds the binaries of only the package under test, so this builds the
/// two the test runs (a no-op when they are fresh) into the target directory this test
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
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "sotto-client",
                "-p",
                "sotto-signaling",
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
            "building sotto and sotto-signaling failed"
        );
        Bins {
            sotto: profile_dir.join("sotto"),
            signaling: profile_dir.join("sotto-signaling"),
        }
    })
}
