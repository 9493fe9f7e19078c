//! Hosts of a test's own: network namespaces joined by veth pairs, with addresses of the
//! test's choosing that exist only inside them, removed (with every process started in
//! them) when dropped, panics included. Nothing is sent outside them.
//!
//! Needs root and iproute2 (`ip netns`), and nftables for rules (`scripts/setup.sh`
//! installs both; CI runs as root). Without them a test fails and says why: it never skips.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::bins::bins;

/// Runs a command that sets the hosts up; a failure ends the test saying what failed.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}): these tests need iproute2 and nftables \
             (`bash scripts/setup.sh` installs them) and root (CI runs as root)"
            )
        });
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}these tests need root (CI runs as root), iproute2 and \
         nftables (`bash scripts/setup.sh` installs them)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One end of a veth pair: its namespace, interface name and addresses (with prefix
/// length, IPv4 or IPv6).
pub struct End<'a> {
    /// The namespace.
    pub ns: &'a str,
    /// The interface's name inside it.
    pub dev: &'a str,
    /// Its addresses, e.g. `10.0.0.1/24`.
    pub addrs: &'a [&'a str],
}

/// The namespaces of one test.
pub struct Net {
    base: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Profiles, server data and reports.
    pub dir: tempfile::TempDir,
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Net {
    /// No hosts yet; names are unique per run (`sotto-<pid>-<random>-<label>`).
    pub fn new() -> Self {
        let tag: [u8; 3] = crate::random();
        Self {
            base: format!("sotto-{}-{}", std::process::id(), hex(&tag)),
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A new host (namespace) with its loopback up; returns its name.
    pub fn host(&mut self, label: &str) -> String {
        let ns = format!("{}-{label}", self.base);
        // Owned by the guard from here on, so a failure below still removes it.
        self.namespaces.push(ns.clone());
        run("ip", &["netns", "add", &ns]);
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair between two hosts, made directly inside them, addressed and up. Waits
    /// for both carriers: a client started before that finds no interface up and offers
    /// only loopback, as on a machine whose network is not up yet.
    pub fn link(&self, a: End<'_>, b: End<'_>) {
        run(
            "ip",
            &[
                "link", "add", a.dev, "netns", a.ns, "type", "veth", "peer", "name", b.dev,
                "netns", b.ns,
            ],
        );
        for end in [&a, &b] {
            for addr in end.addrs {
                let mut args = vec!["-n", end.ns, "addr", "add", addr, "dev", end.dev];
                if addr.contains(':') {
                    // Usable at once, not after duplicate address detection.
                    args.push("nodad");
                }
                run("ip", &args);
            }
            run("ip", &["-n", end.ns, "link", "set", end.dev, "up"]);
        }
        for end in [&a, &b] {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let out = Command::new("ip")
                    .args(["-n", end.ns, "link", "show", end.dev])
                    .output()
                    .expect("ip runs");
                if String::from_utf8_lossy(&out.stdout).contains("state UP") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} in {} did not come up within 10 s",
                    end.dev,
                    end.ns
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Routes everything not on a link of `ns` via `gateway`.
    pub fn default_route(&self, ns: &str, gateway: &str) {
        run("ip", &["-n", ns, "route", "add", "default", "via", gateway]);
    }

    /// Makes `ns` a router between its links (IPv4).
    pub fn forward(&self, ns: &str) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ],
        );
    }

    /// Runs one `nft` command on host `ns`.
    pub fn nft(&self, ns: &str, command: &str) {
        run("ip", &["netns", "exec", ns, "nft", command]);
    }

    /// The packet count of the one `counter` in nftables table `inet <table>` on `ns`.
    pub fn counted(&self, ns: &str, table: &str) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "list", "table", "inet", table])
            .output()
            .expect("nft runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in: {text}"))
    }

    /// `program` on host `ns`.
    pub fn command(&self, ns: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// `sotto --profile <dir>/<who> args…` on host `ns`; library logs go to the profile.
    pub fn sotto(&self, ns: &str, who: &str, args: &[&str]) -> Command {
        let mut c = self.command(ns, &bins().sotto);
        c.arg("--profile")
            .arg(self.dir.path().join(who))
            .args(args)
            .env_remove("RUST_LOG");
        c
    }

    /// Keeps `child` until the hosts go (then it is killed).
    pub fn keep(&mut self, child: Child) {
        self.children.push(child);
    }

    /// The last process kept, to wait for it.
    pub fn take_last(&mut self) -> Option<Child> {
        self.children.pop()
    }

    /// Starts `sotto-signaling` on host `ns` listening on `listen` (SFU nodes register
    /// with `sfu_secret`); returns its certificate fingerprint.
    pub fn start_signaling(&mut self, ns: &str, listen: &str, sfu_secret: &str) -> String {
        let data = self.dir.path().join("server");
        let mut server = self
            .command(ns, &bins().signaling)
            .arg("--listen")
            .arg(listen)
            .arg("--data")
            .arg(&data)
            .env("RUST_LOG", "warn")
            .env("SOTTO_SFU_SECRET", sfu_secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sotto-signaling starts");
        let stdout = server.stdout.take().expect("stdout");
        self.children.push(server);
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("fingerprint ").map(str::to_owned))
            .expect("the server prints its fingerprint")
    }

    /// Starts `sotto-sfu` on host `ns` with its media port on `listen`, registered with
    /// the signaling service at `signaling`; returns once it has registered.
    pub fn start_sfu(&mut self, ns: &str, signaling: &str, pin: &str, listen: &str, secret: &str) {
        let mut sfu = self
            .command(ns, &bins().sfu)
            .args(["--signaling", signaling, "--pin", pin, "--listen", listen])
            .args(["--node", "sfu-1", "--capacity", "100", "--workers", "1"])
            .env("SOTTO_SFU_SECRET", secret)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sotto-sfu starts");
        let stdout = sfu.stdout.take().expect("stdout");
        self.children.push(sfu);
        let mut lines = BufReader::new(stdout).lines();
        let registered = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.starts_with("media "));
        assert!(
            registered,
            "sotto-sfu registered and printed its media port"
        );
        // Keep reading, so a later line never meets a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A call placed with the real CLI between two hosts of a [`Net`].
pub struct CliCall<'a> {
    /// The signaling server, `HOST:PORT`.
    pub server: &'a str,
    /// Its certificate fingerprint.
    pub fingerprint: &'a str,
    /// @alice's host: she calls.
    pub alice: &'a str,
    /// @bob's host: he listens and answers.
    pub bob: &'a str,
    /// How long @alice stays in the call.
    pub seconds: u32,
    /// More arguments for @alice's `sotto call` (`--relay`).
    pub alice_args: &'a [&'a str],
    /// More arguments for @bob's `sotto listen` (`--relay`).
    pub bob_args: &'a [&'a str],
}

/// Creates both accounts, has @bob listen and @alice call him, both with synthetic audio
/// (440 Hz from @alice, 660 Hz from @bob) and video; `on_connected` runs once @alice's
/// status line says she is in the call. Both must exit 0; returns (alice, bob).
pub fn call_by_cli(
    net: &mut Net,
    c: &CliCall<'_>,
    on_connected: impl FnOnce(&Net),
) -> (crate::report::Side, crate::report::Side) {
    use crate::report::{read_report, text};
    use std::io::Read;
    for (ns, who, handle) in [(c.alice, "alice", "@alice"), (c.bob, "bob", "@bob")] {
        let o = net
            .sotto(
                ns,
                who,
                &[
                    "account",
                    "create",
                    handle,
                    "--server",
                    c.server,
                    "--pin",
                    c.fingerprint,
                ],
            )
            .output()
            .expect("sotto runs");
        assert!(o.status.success(), "{who}: {}", text(&o));
    }
    let synth = ["--audio-out", "none", "--video", "--video-in", "synth"];
    let bob_report = net.dir.path().join("bob.json");
    let mut bob = net
        .sotto(c.bob, "bob", &["listen", "--auto-answer", "--once"])
        .args(c.bob_args)
        .args(synth)
        .args(["--audio-in", "synth:660", "--report-json"])
        .arg(&bob_report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bob listens");
    // Wait until @bob is online, then keep reading his stderr so it never blocks.
    let mut bob_err = BufReader::new(bob.stderr.take().expect("stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = bob_err.read_line(&mut line).expect("bob's stderr");
        seen.push_str(&line);
        assert!(n > 0, "bob stopped before listening: {seen}");
        if line.contains("listening for calls") {
            break;
        }
    }
    let bob_rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = bob_err.read_to_string(&mut rest);
        rest
    });
    let bob_out = bob.stdout.take().expect("stdout");
    net.keep(bob);

    let alice_report = net.dir.path().join("alice.json");
    let duration = format!("{}s", c.seconds);
    let mut alice = net
        .sotto(c.alice, "alice", &["call", "@bob", "--duration", &duration])
        .args(c.alice_args)
        .args(synth)
        .args(["--audio-in", "synth:440", "--report-json"])
        .arg(&alice_report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("alice calls");
    // Alice's status line says when media is connected.
    let (connected_tx, connected) = std::sync::mpsc::channel();
    let mut alice_err = alice.stderr.take().expect("stderr");
    let alice_err = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut told = false;
        let mut chunk = [0u8; 4096];
        while let Ok(n) = alice_err.read(&mut chunk) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
            if !told && String::from_utf8_lossy(&all).contains("● in call") {
                told = true;
                let _ = connected_tx.send(());
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    if connected.recv_timeout(Duration::from_secs(30)).is_ok() {
        on_connected(net);
    }
    let alice = wait_or_kill(alice, c.seconds + 60, "alice");
    let alice_text = format!(
        "{}{}",
        String::from_utf8_lossy(&alice.stdout),
        alice_err.join().expect("alice's stderr")
    );
    let bob = wait_or_kill(net.take_last().expect("bob"), 30, "bob").status;
    let mut bob_stdout = String::new();
    let _ = BufReader::new(bob_out).read_to_string(&mut bob_stdout);
    let bob_text = format!(
        "{bob_stdout}{seen}{}",
        bob_rest.join().expect("bob's stderr")
    );
    assert_eq!(alice.status.code(), Some(0), "alice: {alice_text}");
    assert_eq!(bob.code(), Some(0), "bob: {bob_text}");
    (
        read_report(&alice_report, "alice", alice_text),
        read_report(&bob_report, "bob", bob_text),
    )
}

/// Waits for `child` at most `secs` seconds; one that hangs is killed and fails the test.
fn wait_or_kill(mut child: Child, secs: u32, who: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(u64::from(secs));
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{who} did not end within {secs} s");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
