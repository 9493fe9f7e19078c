//! `sotto-bench sfu`: a room of N load participants through the real SFU, and what it
//! costs the SFU to forward their media.
//!
//! Signaling and the SFU run in this process on loopback; the participants form the room
//! through signaling (real MLS, real join tokens), connect real WebRTC (str0m) to the SFU
//! and send real SFrame frames. After a warm-up (ICE, DTLS, keyframes into slots) the
//! measurement window starts: the SFU's counters (its metrics page) and its forwarding
//! threads' CPU (`sfu-fwd-*` in /proc/self/task) are read at both ends of it, and every
//! participant's frame counts are fresh. Participants run on the same cores, which is why
//! the SFU's cost is its threads' CPU time, not wall time.
//!
//! With `--compare-relay`, the relay baseline ([`crate::relay`]) then forwards the same
//! traffic shape for as long, and the ratio of forwarded datagrams per core-second is the
//! issue's figure (goal: SFU ÷ relay ≥ 0.5). The SFU's count is what its core handed to
//! subscribers' connections; what the subscribers received in the window (after str0m's
//! pacers) is printed and compared too.

use crate::measure;
use crate::relay::{self, RelayFigures, Shape};
use anyhow::{Context, ensure};
use sotto_bench::load::peer::PeerStats;
use sotto_bench::load::{DEFAULT_SLOTS, Participant, room};
use sotto_client::signaling::Pin;
use sotto_sfu::control::SfuConfig;
use sotto_sfu::worker::LATENCY_BUCKETS_US;
use sotto_signaling::server::{ServerConfig, start};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// The registration secret between this process's signaling and SFU.
const SFU_SECRET: &str = "bench-sfu-secret";
/// The SFU's forwarding threads are named `sfu-fwd-{i}`.
const WORKER_THREADS: &str = "sfu-fwd-";
/// Warm-up rounds before giving up on participants that have not connected.
const WARMUP_ROUNDS: usize = 4;
/// The counters read from the metrics page at both ends of the window.
const COUNTERS: [&str; 17] = [
    "sotto_sfu_datagrams_in_total",
    "sotto_sfu_bytes_in_total",
    "sotto_sfu_datagrams_out_total",
    "sotto_sfu_bytes_out_total",
    "sotto_sfu_rtp_in_total",
    "sotto_sfu_rtp_forwarded_total",
    "sotto_sfu_keyframe_requests_total",
    "sotto_sfu_keyframe_requests_suppressed_total",
    "sotto_sfu_speaker_changes_total",
    "sotto_sfu_audio_not_loudest_total",
    "sotto_sfu_video_not_selected_total",
    "sotto_sfu_forwarding_latency_seconds_count",
    "sotto_sfu_forwarding_latency_seconds_sum",
    "sotto_sfu_participants",
    "sotto_sfu_nacks_received_total",
    "sotto_sfu_nacks_sent_total",
    "sotto_sfu_layer_switches_total",
];

/// What to run.
pub struct Options {
    /// Participants in the room.
    pub participants: usize,
    /// How many of them (the first) send video; the default is all.
    pub video_senders: Option<usize>,
    /// Length of the measurement window.
    pub seconds: f64,
    /// Warm-up before it (connections, keyframes).
    pub warmup: f64,
    /// SFU forwarding threads.
    pub workers: usize,
    /// Slots each participant asks for (audio, video); the default fits the room.
    pub slots: Option<(usize, usize)>,
    /// Run the relay baseline on the same traffic shape afterwards.
    pub compare_relay: bool,
    /// Where the JSON goes.
    pub out: PathBuf,
}

/// The SFU under test: `sotto_sfu::control` and its forwarding workers.
struct Sfu {
    sfu: sotto_sfu::control::RunningSfu,
    metrics: SocketAddr,
}

impl Sfu {
    async fn page(&self) -> anyhow::Result<String> {
        metrics_page(self.metrics).await
    }

    fn ports(&self) -> Vec<u16> {
        self.sfu.media_addrs.iter().map(|a| a.port()).collect()
    }

    async fn shutdown(self) {
        self.sfu.shutdown().await
    }
}

/// Slots for a room of `n`: every other member's audio while the SFU forwards all of it
/// (rooms up to `big_room`), else the default; video up to last-N.
pub fn default_slots(n: usize) -> (usize, usize) {
    let cfg = sotto_sfu::core::Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    let others = n.saturating_sub(1).max(1);
    let audio = if n <= cfg.big_room {
        others
    } else {
        DEFAULT_SLOTS.0
    };
    (audio, others.min(cfg.last_n).max(1))
}

/// The SFU's metrics page.
async fn metrics_page(addr: SocketAddr) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

/// A sample's value on a metrics page (the line whose name is exactly `name`).
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// The forwarding-latency histogram's cumulative bucket counts, in bucket order (+Inf last).
fn latency_buckets(page: &str) -> Vec<f64> {
    let prefix = "sotto_sfu_forwarding_latency_seconds_bucket{";
    page.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
        .collect()
}

/// Drops by reason.
fn drops(page: &str) -> BTreeMap<String, f64> {
    let prefix = "sotto_sfu_drops_total{reason=\"";
    page.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (reason, value) = rest.split_once("\"} ")?;
            Some((reason.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// One end of the measurement window.
struct Snapshot {
    at: Instant,
    page: String,
    sfu_cpu: f64,
    sfu_threads: usize,
    process_cpu: f64,
    threads: Vec<(String, f64)>,
    /// Kernel receive-buffer drops: SFU sockets, participants' sockets, namespace.
    drops: (u64, u64, u64),
}

/// The UDP ports whose kernel drops are counted: the SFU's, the participants'.
struct Ports {
    sfu: Vec<u16>,
    participants: Vec<u16>,
}

impl Snapshot {
    async fn take(sfu: &Sfu, ports: &Ports) -> anyhow::Result<Self> {
        let drops = (
            measure::udp_drops_sum(&ports.sfu),
            measure::udp_drops_sum(&ports.participants),
            measure::udp_rcvbuf_errors(),
        );
        let (sfu_cpu, sfu_threads) = measure::threads_cpu(WORKER_THREADS)?;
        let process_cpu = measure::process_cpu()?;
        let threads = measure::cpu_by_thread_name()?;
        let at = Instant::now();
        let page = sfu.page().await?;
        Ok(Snapshot {
            at,
            page,
            sfu_cpu,
            sfu_threads,
            process_cpu,
            threads,
            drops,
        })
    }
}

/// Frames lost on the (sender, receiver, kind) tracks that were delivered at all, by
/// frame id: a track whose highest id was `a` when the warm-up ended and `b` when the
/// window ended should have delivered the `b - a` frames in between; the window's count
/// is compared with that (a receiver that lags at either end of the window then counts
/// no loss it did not have). A track that started inside the window is compared with
/// what its sender sent in the window. A track the SFU stopped forwarding for a while
/// (its sender left the loudest or the last-N) counts what it held back as lost; the
/// slot-sequence figure ([`SeqLoss`]) does not. Neither counts a track that keeps up
/// without gaps but falls further and further behind its sender (a pacer that holds
/// packets back): [`Loss::delivered`], frames decrypted over frames their senders sent in
/// the window, does. `SOTTO_BENCH_TRACKS=1` prints each track.
#[derive(Default, Debug)]
struct Loss {
    /// Pairs (sender of the kind, other participant).
    tracks_possible: u64,
    /// Pairs with at least one frame delivered.
    tracks_received: u64,
    /// Frames the receivers should have had.
    frames_expected: u64,
    /// Frames their receivers decrypted.
    frames_received: u64,
    /// Frames the senders of the delivered tracks sent in the window.
    frames_sent: u64,
    /// Frames decrypted on the delivered tracks, however far behind.
    frames_decrypted: u64,
    /// The worst track's loss.
    worst: f64,
}

impl Loss {
    fn of(stats: &[PeerStats], warm: &[PeerStats], leaves: &[u32], video: bool) -> Self {
        let mut l = Loss::default();
        for (r, rx) in stats.iter().enumerate() {
            for (s, tx) in stats.iter().enumerate() {
                let sent = if video { tx.sent.1 } else { tx.sent.0 };
                if s == r || sent == 0 {
                    continue;
                }
                l.tracks_possible += 1;
                let key = (leaves[s], video);
                let Some(t) = rx.tracks.get(&key).filter(|t| t.frames > 0) else {
                    continue;
                };
                let before = warm.get(r).and_then(|w| w.tracks.get(&key)?.last_id);
                let expected = match (before, t.last_id) {
                    (Some(a), Some(b)) if b >= a => b - a,
                    _ => sent,
                };
                if std::env::var_os("SOTTO_BENCH_TRACKS").is_some() {
                    eprintln!(
                        "track {s}->{r} video={video}: sent {sent} expected {expected} got {}",
                        t.frames
                    );
                }
                l.tracks_received += 1;
                l.frames_sent += sent;
                l.frames_decrypted += t.frames;
                l.frames_expected += expected;
                l.frames_received += t.frames.min(expected);
                if expected > 0 {
                    l.worst = l
                        .worst
                        .max(1.0 - t.frames.min(expected) as f64 / expected as f64);
                }
            }
        }
        l
    }

    fn fraction(&self) -> Option<f64> {
        (self.frames_expected > 0)
            .then(|| 1.0 - self.frames_received as f64 / self.frames_expected as f64)
    }

    /// Frames decrypted on the delivered tracks over what their senders sent in the window.
    fn delivered(&self) -> Option<f64> {
        (self.frames_sent > 0).then(|| self.frames_decrypted as f64 / self.frames_sent as f64)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "tracks_possible": self.tracks_possible,
            "tracks_received": self.tracks_received,
            "frames_expected": self.frames_expected,
            "frames_received": self.frames_received,
            "how": "per delivered track: frames decrypted in the window vs frame ids that passed in it (highest id at window end minus at warm-up end)",
            "loss": self.fraction(),
            "worst_track_loss": self.worst,
            "frames_sent_on_delivered_tracks": self.frames_sent,
            "frames_decrypted_on_delivered_tracks": self.frames_decrypted,
            "delivered": self.delivered(),
        })
    }

    fn line(&self, model: usize) -> String {
        format!(
            "{} ({} of {} tracks delivered, {} by the relay's model of the SFU's rules; worst track {:.2} %; {} of the frames sent arrived in the window)",
            self.fraction()
                .map_or_else(|| "-".into(), |f| format!("{:.3} %", f * 100.0)),
            self.tracks_received,
            self.tracks_possible,
            model,
            self.worst * 100.0,
            self.delivered()
                .map_or_else(|| "-".into(), |f| format!("{:.1} %", f * 100.0))
        )
    }
}

/// Packet loss between publisher and subscriber, from the sequence numbers each slot
/// received: the SFU rewrites them to run on without a break across source switches, so
/// a gap is a packet lost on the way in or out (after NACK repair, for video), not a
/// selection. A slot is video when two of its packets share a timestamp (every load
/// participant's video frame is two or more packets; audio is one).
#[derive(Default, Debug, Clone, Copy)]
struct SeqLoss {
    /// Packets between each slot's lowest and highest sequence number in the window.
    expected: u64,
    /// Distinct ones received.
    received: u64,
    /// Received more than once (retransmissions of packets that were not lost).
    duplicates: u64,
}

impl SeqLoss {
    /// `[audio, video]`.
    fn of(stats: &[PeerStats]) -> [SeqLoss; 2] {
        let mut out = [SeqLoss::default(); 2];
        for s in stats {
            for packets in s.slot_packets.values() {
                let video = packets.windows(2).any(|w| w[0].1 == w[1].1);
                let mut seqs: Vec<u64> = packets.iter().map(|p| p.0).collect();
                seqs.sort_unstable();
                let (Some(lo), Some(hi)) = (seqs.first().copied(), seqs.last().copied()) else {
                    continue;
                };
                let all = seqs.len() as u64;
                seqs.dedup();
                if std::env::var_os("SOTTO_BENCH_TRACKS").is_some()
                    && hi - lo + 1 != seqs.len() as u64
                {
                    let gaps: Vec<String> = seqs
                        .windows(2)
                        .filter(|w| w[1] != w[0] + 1)
                        .map(|w| format!("{}+{}", w[0] + 1, w[1] - w[0] - 1))
                        .collect();
                    eprintln!(
                        "slot gaps video={video} span {lo}..{hi}: {}",
                        gaps.join(" ")
                    );
                }
                let l = &mut out[usize::from(video)];
                l.expected += hi - lo + 1;
                l.received += seqs.len() as u64;
                l.duplicates += all - seqs.len() as u64;
            }
        }
        out
    }

    fn fraction(&self) -> Option<f64> {
        (self.expected > 0).then(|| 1.0 - self.received as f64 / self.expected as f64)
    }

    fn line(&self) -> String {
        format!(
            "{} ({} of {} packets; {} duplicates)",
            self.fraction()
                .map_or_else(|| "-".into(), |f| format!("{:.3} %", f * 100.0)),
            self.received,
            self.expected,
            self.duplicates
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "expected": self.expected,
            "received": self.received,
            "duplicates": self.duplicates,
            "loss": self.fraction(),
            "how": "per subscriber slot: distinct sequence numbers received vs the span between the lowest and highest in the window (the SFU rewrites them to be continuous across source switches)",
        })
    }
}

/// Runs every participant for `d`; returns them with what they counted.
async fn run_for(
    participants: Vec<Participant>,
    d: Duration,
) -> anyhow::Result<Vec<(Participant, PeerStats)>> {
    let (stop, rx) = watch::channel(false);
    let tasks: Vec<_> = participants
        .into_iter()
        .map(|p| tokio::spawn(p.run(rx.clone())))
        .collect();
    tokio::time::sleep(d).await;
    let _ = stop.send(true);
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await?);
    }
    Ok(out)
}

/// `sotto-bench sfu`.
pub fn run(opts: Options) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(scenario(opts))
}

async fn scenario(opts: Options) -> anyhow::Result<()> {
    let n = opts.participants;
    ensure!(n >= 2, "a room needs at least two participants");
    let k = opts.video_senders.unwrap_or(n).min(n);
    // Nobody sends video: participants ask for no video slots, as an audio-only client
    // would (and the SFU then runs no bandwidth estimation for them).
    let slots = opts.slots.unwrap_or_else(|| {
        let (audio, video) = default_slots(n);
        (audio, if k == 0 { 0 } else { video })
    });
    let shape = Shape {
        participants: n,
        video_senders: k,
        audio_slots: slots.0,
        video_slots: slots.1,
    };
    println!(
        "sotto-bench sfu: {n} participants ({k} with video), slots {}a/{}v, {} SFU worker(s), {:.0} s warm-up + {:.0} s",
        slots.0, slots.1, opts.workers, opts.warmup, opts.seconds
    );

    let dir = tempfile::tempdir()?;
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse()?, dir.path().to_owned());
    cfg.core.sfu_secret = Some(SFU_SECRET.into());
    // One owner claims every KeyPackage and sends the room's requests: no rate limits.
    cfg.core.limits.account_rate = (1e6, 1e6);
    cfg.core.limits.session_rate = (1e6, 1e6);
    let server = start(cfg).await.context("starting signaling")?;
    let pin: Pin = server.fingerprint.parse()?;
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let sfu = sotto_sfu::control::start(SfuConfig {
        signaling: server.addr,
        pin: pin.clone(),
        secret: SFU_SECRET.into(),
        node: "bench-sfu".into(),
        listen: loopback,
        media_addr: loopback,
        capacity: u32::try_from(n.max(1000))?,
        workers: opts.workers,
        metrics: Some(loopback),
        tap: None,
    })
    .await
    .context("starting the SFU")?;
    let metrics = sfu.metrics_addr.context("the SFU serves metrics")?;
    let sfu = Sfu { sfu, metrics };

    let t = Instant::now();
    let handles: Vec<String> = (0..n).map(|i| format!("@load{i}")).collect();
    let (room_id, joined) = room::form(server.addr, &pin, &handles).await?;
    let formed = t.elapsed();
    let mut leaves = Vec::with_capacity(n);
    let mut participants = Vec::with_capacity(n);
    for (i, j) in joined.into_iter().enumerate() {
        leaves.push(j.leaf);
        participants.push(Participant::connect(j, room_id, slots, i < k).await?);
    }
    println!(
        "  room formed in {:.1} s, media offered in {:.1} s",
        formed.as_secs_f64(),
        (t.elapsed() - formed).as_secs_f64()
    );

    let mut connected = 0;
    let mut warm = Vec::new();
    for round in 0..WARMUP_ROUNDS {
        let ran = run_for(participants, Duration::from_secs_f64(opts.warmup)).await?;
        (participants, warm) = ran.into_iter().unzip();
        connected = participants
            .iter()
            .filter(|p| p.peer.is_connected())
            .count();
        if connected == n {
            break;
        }
        println!("  warm-up {}: {connected} of {n} connected", round + 1);
    }
    ensure!(
        connected == n,
        "only {connected} of {n} participants connected"
    );

    let ports = Ports {
        sfu: sfu.ports(),
        participants: participants
            .iter()
            .map(|p| p.peer.local_addr().port())
            .collect(),
    };
    let before = Snapshot::take(&sfu, &ports).await?;
    let (stop, rx) = watch::channel(false);
    let tasks: Vec<_> = participants
        .into_iter()
        .map(|p| tokio::spawn(p.run(rx.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(opts.seconds)).await;
    let after = Snapshot::take(&sfu, &ports).await?;
    let _ = stop.send(true);
    let mut stats = Vec::with_capacity(n);
    let mut keyframe_requests = 0;
    let mut kept = Vec::with_capacity(n);
    for t in tasks {
        let (p, s) = t.await?;
        keyframe_requests += p.peer.keyframe_requests;
        stats.push(s);
        kept.push(p);
    }
    let (rss, rss_peak) = measure::rss_mib();
    sfu.shutdown().await;
    drop(kept);

    let figures = SfuFigures::new(
        shape,
        &before,
        &after,
        (&stats, &warm),
        &leaves,
        keyframe_requests,
    );
    figures.print();
    println!(
        "  {:<22} {rss:.0} MiB (peak {rss_peak:.0} MiB)",
        "RSS (whole process)"
    );

    let relay = if opts.compare_relay {
        println!();
        let r = relay::measure(shape, opts.seconds).await?;
        r.print();
        Some(r)
    } else {
        None
    };
    let ratio = relay.as_ref().and_then(|r| {
        let sfu = figures.forwarded_per_core_s()?;
        Some(sfu / r.forwarded_per_core_s()?)
    });
    let delivered_ratio = relay.as_ref().and_then(|r| {
        let sfu = figures.delivered_per_core_s()?;
        Some(sfu / r.forwarded_per_core_s()?)
    });
    if let (Some(ratio), Some(delivered), Some(r)) = (ratio, delivered_ratio, &relay) {
        println!(
            "\nSFU ÷ relay, forwarded datagrams per core-second: {ratio:.3} (goal ≥ 0.5)  [SFU {:.0}/core-s over {} RTP packets; relay {:.0}/core-s over {} datagrams]",
            figures.forwarded_per_core_s().unwrap_or_default(),
            figures.rtp_forwarded,
            r.forwarded_per_core_s().unwrap_or_default(),
            r.forwarded
        );
        println!(
            "SFU ÷ relay, by RTP packets subscribers received: {delivered:.3}  [SFU {:.0}/core-s over {} packets]",
            figures.delivered_per_core_s().unwrap_or_default(),
            figures.rtp_delivered
        );
    }

    let json = serde_json::json!({
        "scenario": "sfu",
        "git_head": measure::git_head(),
        "machine": measure::machine(),
        "parameters": {
            "participants": n,
            "video_senders": k,
            "audio_slots": slots.0,
            "video_slots": slots.1,
            "seconds": opts.seconds,
            "warmup_seconds": opts.warmup,
            "workers": opts.workers,
            "compare_relay": opts.compare_relay,
        },
        "sfu": figures.json(),
        "rss_mib": rss,
        "rss_peak_mib": rss_peak,
        "relay": relay.as_ref().map(RelayFigures::json),
        "sfu_over_relay_per_core": ratio,
        "sfu_over_relay_per_core_delivered": delivered_ratio,
    });
    let mut name = format!("sfu-{n}");
    if k != n {
        name.push_str(&format!("-video{k}"));
    }
    name.push_str(".json");
    measure::write_json(&opts.out, &name, &json)
}

/// The SFU's figures over the measurement window.
struct SfuFigures {
    shape: Shape,
    seconds: f64,
    counters: BTreeMap<&'static str, f64>,
    drops: BTreeMap<String, f64>,
    /// RTP packets the core handed to subscribers' connections (`rtp_forwarded_total`);
    /// their pacers may still hold them.
    rtp_forwarded: u64,
    /// Distinct RTP packets the subscribers received in the window: what left the SFU.
    rtp_delivered: u64,
    datagrams_out: u64,
    sfu_cpu: f64,
    sfu_threads: usize,
    process_cpu: f64,
    /// CPU seconds by thread name over the window, largest first.
    threads: Vec<(String, f64)>,
    latency: (Option<f64>, Option<f64>, Option<f64>),
    audio: Loss,
    video: Loss,
    /// Packet loss by slot sequence gaps, `[audio, video]`.
    packets: [SeqLoss; 2],
    model_tracks: (usize, usize),
    frames_sent: (u64, u64),
    undecryptable: u64,
    mislabelled: u64,
    out_of_order: u64,
    keyframe_requests_received: u64,
    /// Kernel receive-buffer drops over the window: SFU sockets, participants', namespace.
    kernel_drops: (u64, u64, u64),
    /// Subscribers' bandwidth estimates at the window's end (bps): mean, min, max.
    estimate_bps: (f64, f64, f64),
}

impl SfuFigures {
    fn new(
        shape: Shape,
        before: &Snapshot,
        after: &Snapshot,
        (stats, warm): (&[PeerStats], &[PeerStats]),
        leaves: &[u32],
        keyframe_requests_received: u64,
    ) -> Self {
        let counters: BTreeMap<&'static str, f64> = COUNTERS
            .iter()
            .map(|c| (*c, metric(&after.page, c) - metric(&before.page, c)))
            .collect();
        let (d0, d1) = (drops(&before.page), drops(&after.page));
        let drops = d1
            .iter()
            .map(|(k, v)| (k.clone(), v - d0.get(k).copied().unwrap_or_default()))
            .collect();
        let (b0, b1) = (latency_buckets(&before.page), latency_buckets(&after.page));
        // Cumulative → per bucket, over the window.
        let mut window = Vec::with_capacity(b1.len());
        let mut prev = 0.0;
        for (i, c) in b1.iter().enumerate() {
            let c = c - b0.get(i).copied().unwrap_or_default();
            window.push((c - prev).max(0.0) as u64);
            prev = c;
        }
        let bounds: Vec<f64> = LATENCY_BUCKETS_US.iter().map(|b| *b as f64).collect();
        let count = counters["sotto_sfu_forwarding_latency_seconds_count"];
        let sum = counters["sotto_sfu_forwarding_latency_seconds_sum"];
        let latency = (
            measure::histogram_quantile(&bounds, &window, 0.5),
            measure::histogram_quantile(&bounds, &window, 0.99),
            (count > 0.0).then(|| sum / count * 1e6),
        );
        let by0: BTreeMap<_, _> = before.threads.iter().cloned().collect();
        let mut threads: Vec<(String, f64)> = after
            .threads
            .iter()
            .map(|(name, c)| (name.clone(), c - by0.get(name).copied().unwrap_or_default()))
            .filter(|(_, c)| *c > 0.0)
            .collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        let fanout = shape.fanout();
        let model_tracks = (
            fanout.iter().map(|f| f[0].len()).sum(),
            fanout.iter().map(|f| f[1].len()).sum(),
        );
        let packets = SeqLoss::of(stats);
        let estimate = |stat: &str| {
            metric(
                &after.page,
                &format!("sotto_sfu_estimate_bps{{stat=\"{stat}\"}}"),
            )
        };
        SfuFigures {
            estimate_bps: (estimate("mean"), estimate("min"), estimate("max")),
            shape,
            rtp_delivered: packets[0].received + packets[1].received,
            seconds: after.at.duration_since(before.at).as_secs_f64(),
            rtp_forwarded: counters["sotto_sfu_rtp_forwarded_total"] as u64,
            datagrams_out: counters["sotto_sfu_datagrams_out_total"] as u64,
            counters,
            drops,
            sfu_cpu: after.sfu_cpu - before.sfu_cpu,
            sfu_threads: after.sfu_threads,
            process_cpu: after.process_cpu - before.process_cpu,
            threads,
            latency,
            audio: Loss::of(stats, warm, leaves, false),
            video: Loss::of(stats, warm, leaves, true),
            packets,
            model_tracks,
            frames_sent: (
                stats.iter().map(|s| s.sent.0).sum(),
                stats.iter().map(|s| s.sent.1).sum(),
            ),
            undecryptable: stats.iter().map(|s| s.undecryptable).sum(),
            mislabelled: stats.iter().map(|s| s.mislabelled).sum(),
            out_of_order: stats
                .iter()
                .flat_map(|s| s.tracks.values())
                .map(|t| t.out_of_order)
                .sum(),
            keyframe_requests_received,
            kernel_drops: (
                after.drops.0.saturating_sub(before.drops.0),
                after.drops.1.saturating_sub(before.drops.1),
                after.drops.2.saturating_sub(before.drops.2),
            ),
        }
    }

    fn forwarded_per_core_s(&self) -> Option<f64> {
        (self.sfu_cpu > 0.0).then(|| self.rtp_forwarded as f64 / self.sfu_cpu)
    }

    fn delivered_per_core_s(&self) -> Option<f64> {
        (self.sfu_cpu > 0.0).then(|| self.rtp_delivered as f64 / self.sfu_cpu)
    }

    fn print(&self) {
        let c = |name: &str| self.counters.get(name).copied().unwrap_or_default();
        let per_s = |v: f64| v / self.seconds;
        let drops: Vec<String> = self
            .drops
            .iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect();
        let top: Vec<String> = self
            .threads
            .iter()
            .take(5)
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        let rows: Vec<(&str, String)> = vec![
            ("window", format!("{:.2} s", self.seconds)),
            (
                "frames sent",
                format!(
                    "audio {} video {} ({:.0} frames/s)",
                    self.frames_sent.0,
                    self.frames_sent.1,
                    per_s((self.frames_sent.0 + self.frames_sent.1) as f64)
                ),
            ),
            (
                "RTP in",
                format!(
                    "{:.0} ({:.0}/s)",
                    c("sotto_sfu_rtp_in_total"),
                    per_s(c("sotto_sfu_rtp_in_total"))
                ),
            ),
            (
                "RTP forwarded",
                format!(
                    "{} ({:.0}/s) into subscribers' connections",
                    self.rtp_forwarded,
                    per_s(self.rtp_forwarded as f64)
                ),
            ),
            (
                "RTP delivered",
                format!(
                    "{} ({:.0}/s) received by subscribers",
                    self.rtp_delivered,
                    per_s(self.rtp_delivered as f64)
                ),
            ),
            (
                "datagrams in / out",
                format!(
                    "{:.0}/s / {:.0}/s (avg {:.0} B in, {:.0} B out)",
                    per_s(c("sotto_sfu_datagrams_in_total")),
                    per_s(self.datagrams_out as f64),
                    c("sotto_sfu_bytes_in_total") / c("sotto_sfu_datagrams_in_total").max(1.0),
                    c("sotto_sfu_bytes_out_total") / (self.datagrams_out.max(1) as f64)
                ),
            ),
            (
                "SFU thread CPU",
                format!(
                    "{:.2} s on {} thread(s) ({:.0} % of one core)",
                    self.sfu_cpu,
                    self.sfu_threads,
                    100.0 * self.sfu_cpu / self.seconds
                ),
            ),
            (
                "per SFU core",
                self.forwarded_per_core_s().map_or_else(
                    || "-".into(),
                    |v| {
                        format!(
                            "{v:.0} RTP forwarded/core-s, {:.0} delivered/core-s ({:.0} datagrams out/core-s)",
                            self.delivered_per_core_s().unwrap_or_default(),
                            self.datagrams_out as f64 / self.sfu_cpu
                        )
                    },
                ),
            ),
            (
                "SFU latency",
                format!(
                    "p50 {}  p99 {}  mean {} (receive → send, metrics histogram)",
                    measure::us(self.latency.0),
                    measure::us(self.latency.1),
                    measure::us(self.latency.2)
                ),
            ),
            ("audio packet loss", self.packets[0].line()),
            ("video packet loss", self.packets[1].line()),
            ("audio frame loss", self.audio.line(self.model_tracks.0)),
            ("video frame loss", self.video.line(self.model_tracks.1)),
            (
                "frame checks",
                format!(
                    "undecryptable {}  mislabelled {}  out of order {}",
                    self.undecryptable, self.mislabelled, self.out_of_order
                ),
            ),
            (
                "selection",
                format!(
                    "audio not loudest {:.0}  video not selected {:.0}  keyframe requests {:.0} sent ({:.0} suppressed), {} received by publishers",
                    c("sotto_sfu_audio_not_loudest_total"),
                    c("sotto_sfu_video_not_selected_total"),
                    c("sotto_sfu_keyframe_requests_total"),
                    c("sotto_sfu_keyframe_requests_suppressed_total"),
                    self.keyframe_requests_received
                ),
            ),
            (
                "subscriber BWE",
                format!(
                    "mean {:.2}  min {:.2}  max {:.2} Mbit/s at window end; NACKs {:.0} received, {:.0} sent; layer switches {:.0}",
                    self.estimate_bps.0 / 1e6,
                    self.estimate_bps.1 / 1e6,
                    self.estimate_bps.2 / 1e6,
                    c("sotto_sfu_nacks_received_total"),
                    c("sotto_sfu_nacks_sent_total"),
                    c("sotto_sfu_layer_switches_total")
                ),
            ),
            (
                "SFU drops",
                if drops.is_empty() {
                    "none".into()
                } else {
                    drops.join("  ")
                },
            ),
            (
                "kernel drops",
                format!(
                    "SFU socket {}  participant sockets {}  (namespace RcvbufErrors {})",
                    self.kernel_drops.0, self.kernel_drops.1, self.kernel_drops.2
                ),
            ),
            (
                "process CPU",
                format!(
                    "{:.2} s ({:.0} % of one core); by thread: {}",
                    self.process_cpu,
                    100.0 * self.process_cpu / self.seconds,
                    top.join(", ")
                ),
            ),
        ];
        for (k, v) in rows {
            println!("  {k:<22} {v}");
        }
    }

    fn json(&self) -> serde_json::Value {
        let counters: serde_json::Map<String, serde_json::Value> = self
            .counters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
            .collect();
        serde_json::json!({
            "window_seconds": self.seconds,
            "frames_sent": { "audio": self.frames_sent.0, "video": self.frames_sent.1 },
            "rtp_forwarded": self.rtp_forwarded,
            "rtp_forwarded_per_s": self.rtp_forwarded as f64 / self.seconds,
            "rtp_delivered": self.rtp_delivered,
            "rtp_delivered_per_s": self.rtp_delivered as f64 / self.seconds,
            "rtp_delivered_per_sfu_core_s": self.delivered_per_core_s(),
            "datagrams_out": self.datagrams_out,
            "datagrams_out_per_s": self.datagrams_out as f64 / self.seconds,
            "sfu_thread_cpu_s": self.sfu_cpu,
            "sfu_threads": self.sfu_threads,
            "sfu_cpu_utilization": self.sfu_cpu / self.seconds,
            "rtp_forwarded_per_sfu_core_s": self.forwarded_per_core_s(),
            "datagrams_out_per_sfu_core_s": (self.sfu_cpu > 0.0).then(|| self.datagrams_out as f64 / self.sfu_cpu),
            "forwarding_latency_us": {
                "p50": self.latency.0,
                "p99": self.latency.1,
                "mean": self.latency.2,
                "how": "sotto_sfu_forwarding_latency_seconds over the window, interpolated within buckets",
            },
            "packet_loss_audio": self.packets[0].json(),
            "packet_loss_video": self.packets[1].json(),
            "frame_loss_audio": self.audio.json(),
            "frame_loss_video": self.video.json(),
            "model_tracks": { "audio": self.model_tracks.0, "video": self.model_tracks.1 },
            "undecryptable": self.undecryptable,
            "mislabelled": self.mislabelled,
            "out_of_order": self.out_of_order,
            "keyframe_requests_received_by_publishers": self.keyframe_requests_received,
            "counters_over_window": counters,
            "drops_over_window": self.drops,
            "kernel_rcvbuf_drops": {
                "sfu_sockets": self.kernel_drops.0,
                "participant_sockets": self.kernel_drops.1,
                "namespace_rcvbuf_errors": self.kernel_drops.2,
            },
            "subscriber_estimate_bps_at_end": {
                "mean": self.estimate_bps.0,
                "min": self.estimate_bps.1,
                "max": self.estimate_bps.2,
            },
            "process_cpu_s": self.process_cpu,
            "cpu_s_by_thread": self.threads,
            "shape": {
                "participants": self.shape.participants,
                "video_senders": self.shape.video_senders,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP x\nsotto_sfu_rtp_forwarded_total 42\nsotto_sfu_rtp_forwarded_total_x 1\n\
sotto_sfu_forwarding_latency_seconds_bucket{le=\"0.000025\"} 3\n\
sotto_sfu_forwarding_latency_seconds_bucket{le=\"+Inf\"} 5\n\
sotto_sfu_drops_total{reason=\"no_slot\"} 7\n";

    #[test]
    fn metrics_parse() {
        assert_eq!(metric(PAGE, "sotto_sfu_rtp_forwarded_total"), 42.0);
        assert_eq!(metric(PAGE, "missing"), 0.0);
        assert_eq!(latency_buckets(PAGE), vec![3.0, 5.0]);
        assert_eq!(drops(PAGE).get("no_slot"), Some(&7.0));
    }

    #[test]
    fn slots_fit_the_room() {
        assert_eq!(default_slots(10), (9, 9));
        assert_eq!(default_slots(4), (3, 3));
        assert_eq!(default_slots(50), (DEFAULT_SLOTS.0, 9));
    }
}
