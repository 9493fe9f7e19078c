//! A room through a real SFU: the signaling service and the SFU on loopback in this
//! process, and load participants (real MLS, real SFrame, real WebRTC) joined to it.

use crate::{TestServer, server_with_storage};
use sotto_bench::load::peer::PeerStats;
use sotto_bench::load::{Participant, room};
use sotto_proto::RoomId;
use sotto_sfu::control::{RunningSfu, SfuConfig, start};
use std::time::Duration;
use tokio::sync::watch;

/// The SFU registration secret the test servers use.
pub const SFU_SECRET: &str = "test-sfu-secret";

/// A signaling service and an SFU registered with it.
pub struct SfuHarness {
    /// The signaling service.
    pub server: TestServer,
    /// The SFU.
    pub sfu: RunningSfu,
}

/// Starts signaling and an SFU with `workers` forwarding threads, both on loopback.
pub async fn start_sfu(workers: usize) -> SfuHarness {
    start_sfu_with(workers, None).await
}

/// [`start_sfu`] with a tap that sees every forwarded packet.
pub async fn start_sfu_with(workers: usize, tap: Option<sotto_sfu::core::Tap>) -> SfuHarness {
    start_sfu_wrapping(workers, tap, |s| s).await
}

/// [`start_sfu_with`], the signaling service's storage wrapped by `wrap` (a hostile
/// server).
pub async fn start_sfu_wrapping(
    workers: usize,
    tap: Option<sotto_sfu::core::Tap>,
    wrap: impl FnOnce(
        Box<dyn sotto_signaling::storage::Storage>,
    ) -> Box<dyn sotto_signaling::storage::Storage>,
) -> SfuHarness {
    let server = server_with_storage(|c| c.core.sfu_secret = Some(SFU_SECRET.into()), wrap).await;
    let loopback = "127.0.0.1:0".parse().expect("addr");
    let sfu = start(SfuConfig {
        signaling: server.running.addr,
        pin: server.pin.clone(),
        secret: SFU_SECRET.into(),
        node: "test-sfu".into(),
        listen: loopback,
        media_addr: loopback,
        capacity: 1000,
        workers,
        metrics: Some(loopback),
        tap,
    })
    .await
    .expect("the SFU starts and registers");
    SfuHarness { server, sfu }
}

impl SfuHarness {
    /// Forms a room of `n` load participants and connects their media.
    pub async fn room(&self, n: usize, slots: (usize, usize)) -> (RoomId, Vec<Participant>) {
        let handles: Vec<String> = (0..n).map(|i| format!("@load{i}")).collect();
        let (room, joined) = room::form(self.server.running.addr, &self.server.pin, &handles)
            .await
            .expect("the room forms");
        let mut out = Vec::new();
        for j in joined {
            out.push(
                Participant::connect(j, room, slots, true)
                    .await
                    .expect("the SFU answers"),
            );
        }
        (room, out)
    }

    /// Like [`Self::room`], but participant `i` publishes simulcast when `simulcast(i)`,
    /// sends video only when `video(i)`, and reaches the SFU through `via(i)` (a proxy
    /// address in front of the SFU's media port) when given.
    pub async fn room_with(
        &self,
        n: usize,
        slots: (usize, usize),
        simulcast: impl Fn(usize) -> bool,
        video: impl Fn(usize) -> bool,
        via: impl Fn(usize) -> Option<std::net::SocketAddr>,
    ) -> (RoomId, Vec<Participant>) {
        let handles: Vec<String> = (0..n).map(|i| format!("@load{i}")).collect();
        let (room, joined) = room::form(self.server.running.addr, &self.server.pin, &handles)
            .await
            .expect("the room forms");
        let sfu = self.sfu.media_addrs[0];
        let mut out = Vec::new();
        for (i, j) in joined.into_iter().enumerate() {
            let through = via(i).map(|proxy| (sfu, proxy));
            out.push(
                Participant::connect_with(j, room, slots, video(i), simulcast(i), through)
                    .await
                    .expect("the SFU answers"),
            );
        }
        (room, out)
    }

    /// The SFU's metrics page.
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.sfu.metrics_addr.expect("metrics served");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut body = String::new();
        s.read_to_string(&mut body).await.expect("read");
        body
    }
}

/// How long a run keeps receiving after everyone stopped sending.
pub const DRAIN: Duration = Duration::from_millis(700);

/// Runs every participant's media for `d`, lets what is in flight arrive ([`DRAIN`]),
/// then returns each with what it counted.
pub async fn run_for(participants: Vec<Participant>, d: Duration) -> Vec<(Participant, PeerStats)> {
    let (stop, rx) = watch::channel(false);
    let quiet: Vec<_> = participants.iter().map(|p| p.peer.quiet.clone()).collect();
    let tasks: Vec<_> = participants
        .into_iter()
        .map(|p| tokio::spawn(p.run(rx.clone())))
        .collect();
    tokio::time::sleep(d).await;
    for q in &quiet {
        q.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    tokio::time::sleep(DRAIN).await;
    let _ = stop.send(true);
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("participant task"));
    }
    out
}

/// A metric's value from a metrics page (the first line that starts with `name`).
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
