//! End-to-end tests of sotto live in `tests/tests/`, one file per behaviour. They start
//! real servers on loopback and talk to them over real QUIC; this library is their shared
//! harness.

pub mod bins;
pub mod hostile;
pub mod netns;
pub mod report;
pub mod room;
pub mod sfu;

use std::time::Duration;

use ed25519_dalek::SigningKey;
use sotto_client::{
    call::{CallOptions, CallReport, Endpoint},
    signaling::{Incoming, Pin, SignalingClient},
    transport::TransportConfig,
};
use sotto_proto::EndReason;
use sotto_proto::{DeviceId, Handle, Response};
use sotto_signaling::{
    server::{Running, ServerConfig, start_with},
    storage::Storage,
};

/// Call options for tests: media on 127.0.0.1 only, and capture stamps on so latency and
/// picture ids can be checked. Every test call starts from these (or pins
/// [`TransportConfig::loopback`] itself): a test must never gather candidates on, and so
/// send to, this machine's other addresses (`tests/tests/loopback_only.rs` checks).
pub fn loopback() -> CallOptions {
    CallOptions {
        transport: TransportConfig::loopback(),
        stamps: true,
        ..CallOptions::default()
    }
}

/// A signaling server on an ephemeral loopback port, with its own data directory.
pub struct TestServer {
    /// The running server.
    pub running: Running,
    /// The certificate pin.
    pub pin: Pin,
    /// Its data directory (removed on drop).
    pub dir: tempfile::TempDir,
}

/// Starts a server; `tweak` adjusts the configuration first.
pub async fn server(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    server_with_storage(tweak, |s| s).await
}

/// Starts a server whose storage is wrapped by `wrap` (a hostile server, for tests that
/// clients catch it).
pub async fn server_with_storage(
    tweak: impl FnOnce(&mut ServerConfig),
    wrap: impl FnOnce(Box<dyn Storage>) -> Box<dyn Storage>,
) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path().to_owned());
    cfg.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    tweak(&mut cfg);
    let running = start_with(cfg, wrap).await.expect("server starts");
    let pin = running.fingerprint.parse().expect("pin");
    TestServer { running, pin, dir }
}

/// One-use KeyPackages and queued deliveries the server holds for a device, read from
/// its database (WAL mode lets a reader look while the server runs).
pub fn server_holds(s: &TestServer, handle: &str, device: DeviceId) -> (usize, usize) {
    let db = rusqlite::Connection::open_with_flags(
        s.dir.path().join("sotto.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the server's database");
    let count = |sql: &str| -> usize {
        db.query_row(sql, rusqlite::params![handle, device], |r| {
            r.get::<_, i64>(0)
        })
        .expect("count") as usize
    };
    (
        count(
            "SELECT COUNT(*) FROM key_packages WHERE handle = ?1 AND device = ?2 AND last_resort = 0",
        ),
        count("SELECT COUNT(*) FROM queue WHERE handle = ?1 AND device = ?2"),
    )
}

/// A logged-in device.
pub struct User {
    /// Its connection.
    pub client: SignalingClient,
    /// Its handle.
    pub handle: Handle,
    /// Its identity key.
    pub key: SigningKey,
    /// Its device id.
    pub device: DeviceId,
    /// The service's MLS key, as login gave it (rooms' groups name it as external sender).
    pub service_key: Vec<u8>,
}

/// A deterministic identity key for a handle (tests only).
pub fn key_for(handle: &str) -> SigningKey {
    let mut seed = [0u8; 32];
    for (i, b) in handle.bytes().enumerate() {
        seed[i % 32] ^= b.wrapping_mul(31).wrapping_add(i as u8);
    }
    SigningKey::from_bytes(&seed)
}

/// Parses a handle.
pub fn h(s: &str) -> Handle {
    Handle::parse(s).expect("valid handle")
}

impl TestServer {
    /// A new connection, handshake done.
    pub async fn connect(&self) -> SignalingClient {
        SignalingClient::connect(self.running.addr, &self.pin)
            .await
            .expect("connects")
    }

    /// Registers `handle` (if new) and logs `device` in.
    pub async fn user(&self, handle: &str, device: DeviceId) -> User {
        let client = self.connect().await;
        let key = key_for(handle);
        let hd = h(handle);
        let r = match client.register(&hd, &key, device).await {
            Ok(r) => r,
            // The account exists: log this device in on the same connection.
            Err(_) => client.login(&hd, &key, device).await.expect("login"),
        };
        let Response::LoggedIn { service_key, .. } = r else {
            panic!("{r:?}")
        };
        User {
            client,
            handle: hd,
            key,
            device,
            service_key,
        }
    }
}

impl TestServer {
    /// [`Self::user`] for device 1, taking an owned handle (handy in `join_all`).
    pub async fn user_owned(&self, handle: String) -> User {
        self.user(&handle, 1).await
    }
}

impl User {
    /// Creates a room this user owns and brings `others` into it with us: a KeyPackage may
    /// be claimed only for a device in a call or room with the claimer.
    pub async fn room_with(&self, others: &[&User]) -> sotto_proto::RoomId {
        let r = self.client.request(sotto_proto::Request::CreateRoom).await;
        let Ok(Response::RoomCreated { room }) = r else {
            panic!("creating a room: {r:?}")
        };
        self.join(room).await;
        for o in others {
            self.bring(room, o).await;
        }
        room
    }

    /// Invites `other` to our `room` and has it join.
    pub async fn bring(&self, room: sotto_proto::RoomId, other: &User) {
        let invite = sotto_proto::Request::InviteToRoom {
            room,
            handles: vec![other.handle.clone()],
        };
        let r = self.client.request(invite).await;
        assert!(matches!(r, Ok(Response::Ok)), "inviting: {r:?}");
        other.join(room).await;
    }

    /// Joins a room we are invited to (or own).
    pub async fn join(&self, room: sotto_proto::RoomId) {
        let r = self
            .client
            .request(sotto_proto::Request::JoinRoom { room })
            .await;
        assert!(
            matches!(r, Ok(Response::RoomJoined { .. })),
            "{}: joining: {r:?}",
            self.handle
        );
    }

    /// The next event or delivery within 5 s (panics on silence: a test is waiting for it).
    pub async fn next(&mut self) -> Incoming {
        self.client
            .next_within(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{}#{}: nothing arrived within 5 s",
                    self.handle, self.device
                )
            })
    }

    /// Skips arrivals until one matches, within 5 s.
    pub async fn expect(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Incoming) -> bool,
    ) -> Incoming {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.client.next_within(left).await {
                Some(i) if pred(&i) => return i,
                Some(_) => continue,
                None => panic!("{}#{}: no {what} within 5 s", self.handle, self.device),
            }
        }
    }

    /// Asserts nothing arrives for `d`.
    pub async fn quiet_for(&mut self, d: Duration) {
        if let Some(i) = self.client.next_within(d).await {
            panic!(
                "{}#{}: expected silence, got {i:?}",
                self.handle, self.device
            );
        }
    }
}

/// Random bytes.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("OS randomness");
    b
}

/// Checks one side of a finished call against what the peer sent: hung up cleanly,
/// nothing failed to decrypt, ≥ 95 % of the peer's audio (and video) decoded in order, the
/// expected tone heard, matching safety numbers and verification codes.
pub fn check_call(side: &str, me: &CallReport, peer: &CallReport, expect_hz: f64) {
    eprintln!(
        "{side}: sent {} played {} concealed {} (fec {}) decrypt failures {:?} latency p50 {:?} p99 {:?} tone {:?} Hz setup {:?}",
        me.audio_sent,
        me.audio_played,
        me.audio_concealed,
        me.audio_fec,
        me.decrypt_failures,
        me.latency.latency_quantile(0.5),
        me.latency.latency_quantile(0.99),
        me.received_hz,
        me.setup_time,
    );
    assert_eq!(me.ended, Some(EndReason::HungUp), "{side} ended by hang-up");
    assert!(
        me.decrypt_failures.is_empty(),
        "{side}: nothing fails to decrypt"
    );
    // Frames still in flight when the call ends cannot be played: allow the last 10.
    let want = (peer.audio_sent as f64 * 0.95) as u64;
    assert!(
        me.audio_played + 10 >= want,
        "{side} played {} of the peer's {}",
        me.audio_played,
        peer.audio_sent
    );
    assert!(me.latency.in_order(), "{side}: frames played in order");
    let hz = me.received_hz.expect("a tone was heard");
    assert!(
        (hz - expect_hz).abs() < 10.0,
        "{side} heard {hz} Hz, expected {expect_hz}"
    );
    assert_eq!(me.safety_number, peer.safety_number, "safety numbers match");
    if peer.video_sent > 0 {
        eprintln!(
            "{side}: video sent {} (keyframes {}) decoded {} mismatches {} latency p50 {:?} p99 {:?}",
            peer.video_sent,
            peer.video_keyframes,
            me.video_decoded,
            me.video_mismatches,
            me.video.latency_quantile(0.5),
            me.video.latency_quantile(0.99)
        );
        let want = (peer.video_sent as f64 * 0.95) as u64;
        assert!(
            me.video_decoded + 5 >= want,
            "{side} decoded {} of {} video frames",
            me.video_decoded,
            peer.video_sent
        );
        assert!(
            me.video.in_order(),
            "{side}: video frame ids arrive in order"
        );
        assert_eq!(
            me.video_mismatches, 0,
            "{side}: every decoded picture carries its stamped id"
        );
    }
    assert_eq!(
        me.verification_code, peer.verification_code,
        "verification codes match"
    );
}

/// Two ephemeral endpoints, @alice and @bob, logged in to `s`.
pub async fn pair(s: &TestServer) -> (Endpoint, Endpoint) {
    let addr = s.running.addr;
    let alice = Endpoint::connect(addr, &s.pin, h("@alice"), key_for("@alice"), 1)
        .await
        .expect("alice");
    let bob = Endpoint::connect(addr, &s.pin, h("@bob"), key_for("@bob"), 1)
        .await
        .expect("bob");
    (alice, bob)
}

/// A logged-in device with real MLS state (its credential signed by the account's
/// identity key), for tests of the delivery service: it publishes KeyPackages, creates
/// groups and commits as a client would.
pub struct Member {
    /// The connection and account.
    pub user: User,
    /// The device's MLS state (in memory).
    pub mls: sotto_client::mls::MlsDevice,
}

impl TestServer {
    /// Registers `handle` (if new), logs `device` in, and publishes `packages` one-use
    /// KeyPackages and a last-resort one.
    pub async fn member(&self, handle: &str, device: DeviceId, packages: usize) -> Member {
        let user = self.user(handle, device).await;
        let mut mls = sotto_client::mls::MlsDevice::with_identity(handle, &user.key, None)
            .expect("MLS device");
        mls.set_service_key(&user.service_key);
        let m = Member { user, mls };
        m.publish(packages).await;
        m
    }
}

impl Member {
    /// Replaces this device's KeyPackages with `n` fresh one-use ones and a last-resort one.
    pub async fn publish(&self, n: usize) {
        let packages = (0..n)
            .map(|_| self.mls.key_package().expect("KeyPackage"))
            .collect();
        self.user
            .client
            .request(sotto_proto::Request::UploadKeyPackages {
                packages,
                last_resort: Some(self.mls.last_resort_key_package().expect("KeyPackage")),
                replace: true,
            })
            .await
            .expect("KeyPackages stored");
    }

    /// Creates the group `id` (a call's or a room's id) and registers it with the
    /// delivery service.
    pub async fn create_group(
        &self,
        id: &[u8],
    ) -> Result<sotto_client::mls::CallGroup, sotto_client::signaling::ClientError> {
        let group = self.mls.create_group_with_id(id).expect("group");
        self.user
            .client
            .request(sotto_proto::Request::CreateGroup {
                group: id.to_vec(),
                group_info: group.group_info(&self.mls).expect("GroupInfo"),
            })
            .await?;
        Ok(group)
    }

    /// Claims one KeyPackage of each handle.
    pub async fn claim(&self, handles: &[&str]) -> Vec<Vec<u8>> {
        let mut packages = Vec::new();
        for hd in handles {
            match self
                .user
                .client
                .request(sotto_proto::Request::ClaimKeyPackage {
                    handle: h(hd),
                    device: None,
                })
                .await
                .expect("claim")
            {
                Response::KeyPackage { package, .. } => packages.push(package),
                other => panic!("claim answered {other:?}"),
            }
        }
        packages
    }

    /// Sends a commit we made to the delivery service; merges it if accepted, discards it
    /// otherwise.
    pub async fn send_commit(
        &self,
        group: &mut sotto_client::mls::CallGroup,
        commit: sotto_client::mls::Commit,
    ) -> Result<Response, sotto_client::signaling::ClientError> {
        let r = self
            .user
            .client
            .request(commit.into_request(group.group_id().to_vec()))
            .await;
        match &r {
            Ok(_) => {
                group.merge_pending(&self.mls).expect("merge");
            }
            Err(_) => group.discard_pending(&self.mls).expect("discard"),
        }
        r
    }

    /// Claims a KeyPackage of each handle and commits their addition.
    pub async fn add(
        &self,
        group: &mut sotto_client::mls::CallGroup,
        handles: &[&str],
    ) -> Result<Response, sotto_client::signaling::ClientError> {
        let packages = self.claim(handles).await;
        let commit = group.add(&self.mls, &packages).expect("add commit");
        self.send_commit(group, commit).await
    }

    /// Joins a group from a Welcome (no credential checks: for delivery-service tests).
    pub fn join(&self, welcome: &[u8]) -> sotto_client::mls::CallGroup {
        self.mls
            .stage_join(welcome)
            .expect("Welcome")
            .join(&self.mls)
            .expect("join")
    }
}

/// The server's Prometheus metrics, as text.
pub async fn metrics_text(s: &TestServer) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s
        .running
        .metrics_addr
        .expect("the test server serves metrics");
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics port");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.expect("response");
    body
}
