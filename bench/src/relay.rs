//! The relay baseline: the bare GSO UDP forwarder the SFU is measured against, and the
//! traffic generator both share.
//!
//! The relay is what the SFU's worker would be without str0m: one thread, one socket,
//! batched `recvmmsg` (GRO when the kernel coalesces) through quinn-udp, each datagram
//! fanned out to its subscribers' addresses, and the batch's output grouped per
//! destination into GSO runs exactly as `sotto_sfu::worker` does (sort by destination
//! and arrival, a run is equal-size segments with a shorter last one), with the worker's
//! 4 MB socket buffers. Like the worker it sleeps while its socket has nothing (the worker
//! blocks in `recvmmsg`; the relay waits in epoll on a tokio current-thread runtime on its
//! own thread), so both threads' CPU time is their forwarding's. It sends each batch's
//! fan-out at the end of the batch (the worker sends every 8 inputs within one). It reads
//! one byte of each datagram (audio or video); it never copies a payload but into the GSO
//! run.
//!
//! The generator is N endpoints on 127.0.0.1, each a task on the caller's tokio runtime
//! like a load participant, sending the load participants' packet trace: an audio frame
//! every 20 ms and (for the first K) a video frame every 33 ms, a keyframe three times
//! the size every 60th, each packetized as `load::peer` does and sized as its SRTP
//! datagrams are. Who receives whom follows the SFU's forwarding rules for the same room
//! ([`Shape::fanout`]), so the relay forwards the same packets to the same destinations
//! in the same order and gets the same GSO chances. The first 8 bytes of each datagram
//! are its send time; receivers measure end-to-end latency on the same clock.

use crate::measure;
use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSockRef, UdpSocketState};
use sotto_bench::load::peer::{AUDIO_EVERY, VIDEO_EVERY};
use sotto_sfu::gso::GsoBatcher;
use sotto_sfu::worker::{LATENCY_BUCKETS_US, LatencyHistogram};
use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::sync::{Notify, watch};

/// Plaintext bytes of a load participant's audio frame (`MediaPeer::audio_bytes`).
const AUDIO_PLAINTEXT: usize = 80;
/// Plaintext bytes of its video frame (`MediaPeer::video_bytes`); keyframes are 3×.
const VIDEO_PLAINTEXT: usize = 1200;
/// Every 60th video frame is a keyframe (`load::peer`).
const KEYFRAME_EVERY: u64 = 60;
/// Largest RTP payload a load participant makes (`load::peer`).
const MAX_PAYLOAD: usize = 1100;
/// What SFrame adds to a frame: its header (config byte, KID, counter) and the 16-byte tag.
const SFRAME_OVERHEAD: usize = 20;
/// What RTP and SRTP add to a payload: the 12-byte header, the one-byte-form extension
/// block (audio level, transport-wide sequence, abs-send-time, MID, frame marking), the
/// 16-byte AEAD tag.
const RTP_OVERHEAD_AUDIO: usize = 12 + 16 + 16;
/// See [`RTP_OVERHEAD_AUDIO`]; video carries frame marking too.
const RTP_OVERHEAD_VIDEO: usize = 12 + 20 + 16;
/// Room for the largest datagram, or a GRO-coalesced run of them (as the worker has).
const RECV_BUF: usize = 64 * 1024;
/// Socket buffers the relay asks for, each way (as `sotto_sfu::worker` does).
const SOCKET_BUFFER: usize = 4 << 20;
/// After the senders stop, how long receivers wait for datagrams still in flight.
const DRAIN: Duration = Duration::from_millis(300);

/// Who sends what and who subscribes to whom: the shape of one room's traffic.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Participants (endpoints).
    pub participants: usize,
    /// The first this many send video too.
    pub video_senders: usize,
    /// Audio slots each participant subscribes with.
    pub audio_slots: usize,
    /// Video slots each participant subscribes with.
    pub video_slots: usize,
}

impl Shape {
    /// Each sender's subscribers, `[audio, video]`, by the SFU core's rules with its
    /// default [`sotto_sfu::core::Config`]: a room larger than `big_room` forwards the
    /// audio of its `loudest` speakers only; video goes to a subscriber from its `last_n`
    /// top-ranked others (at most its video slots); a subscriber's slots hold the first
    /// sources that reach them. The ranking is taken to be join order (all load
    /// participants speak at one level), which makes the video senders the top-ranked.
    pub fn fanout(&self) -> Vec<[Vec<usize>; 2]> {
        let cfg = sotto_sfu::core::Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        let n = self.participants;
        let mut out = vec![[Vec::new(), Vec::new()]; n];
        for sub in 0..n {
            let audio = (0..n)
                .filter(|s| *s != sub && (n <= cfg.big_room || *s < cfg.loudest))
                .take(self.audio_slots);
            for s in audio {
                out[s][0].push(sub);
            }
            let video = (0..n)
                .filter(|s| *s != sub)
                .take(self.video_slots.min(cfg.last_n))
                .filter(|s| *s < self.video_senders);
            for s in video {
                out[s][1].push(sub);
            }
        }
        out
    }
}

/// The datagram sizes of one frame: SFrame-encrypted, packetized as load participants
/// do, with RTP/SRTP overhead.
fn frame_sizes(video: bool, keyframe: bool) -> Vec<usize> {
    let plaintext = match (video, keyframe) {
        (false, _) => AUDIO_PLAINTEXT,
        (true, false) => VIDEO_PLAINTEXT,
        (true, true) => 3 * VIDEO_PLAINTEXT,
    };
    let overhead = if video {
        RTP_OVERHEAD_VIDEO
    } else {
        RTP_OVERHEAD_AUDIO
    };
    sotto_wire::rtp_sframe::packetize(&vec![0; plaintext + SFRAME_OVERHEAD], MAX_PAYLOAD)
        .iter()
        .map(|p| p.len() + overhead)
        .collect()
}

/// What the relay thread counted.
#[derive(Clone, Copy, Debug, Default)]
struct RelayCounters {
    datagrams_in: u64,
    forwarded: u64,
    bytes_out: u64,
    /// `sendmsg` calls (one per GSO run).
    send_calls: u64,
    send_errors: u64,
    unknown_source: u64,
    /// Receive → send inside the relay, per datagram sent (the SFU's histogram).
    latency: LatencyHistogram,
    /// CPU seconds of the relay thread while it ran.
    cpu: f64,
}

/// One datagram to send: where, and which received datagram (slot, offset, length).
#[derive(Clone, Copy)]
struct Pending {
    destination: SocketAddr,
    slot: usize,
    start: usize,
    len: usize,
}

struct Relay {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// Sender index by source address.
    senders: HashMap<SocketAddr, usize>,
    /// Subscribers' addresses per sender, `[audio, video]`.
    routes: Vec<[Vec<SocketAddr>; 2]>,
    pending: Vec<Pending>,
    gso: GsoBatcher,
    counters: RelayCounters,
}

impl Relay {
    /// Forwards until `stop` is notified. The socket is non-blocking (quinn-udp makes it
    /// so), so the loop sleeps in epoll until it is readable, then takes one `recvmmsg`
    /// batch and flushes its fan-out, as the worker takes one batch per loop.
    async fn run(&mut self, stop: &Notify) -> io::Result<()> {
        let cpu_start = measure::own_thread_cpu().unwrap_or_default();
        let mut bufs: Box<[[u8; RECV_BUF]; BATCH_SIZE]> = vec![[0u8; RECV_BUF]; BATCH_SIZE]
            .into_boxed_slice()
            .try_into()
            .map_err(|_| io::Error::other("receive buffers"))?;
        let mut meta = [RecvMeta::default(); BATCH_SIZE];
        loop {
            tokio::select! {
                biased;
                _ = stop.notified() => break,
                r = self.socket.readable() => r?,
            }
            let got = {
                let mut slices = bufs.each_mut().map(|b| IoSliceMut::new(b));
                let (socket, state) = (&self.socket, &self.state);
                socket.try_io(Interest::READABLE, || {
                    state.recv(UdpSockRef::from(socket), &mut slices, &mut meta)
                })
            };
            let now = Instant::now();
            match got {
                Ok(n) => {
                    self.take_batch(&bufs[..n], &meta[..n]);
                    self.flush(now, &bufs[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        self.counters.cpu = measure::own_thread_cpu().unwrap_or_default() - cpu_start;
        Ok(())
    }

    /// Routes one received batch; each slot may hold a GRO run of `stride`-byte datagrams.
    fn take_batch(&mut self, bufs: &[[u8; RECV_BUF]], meta: &[RecvMeta]) {
        for (slot, (buf, m)) in bufs.iter().zip(meta).enumerate() {
            let len = m.len.min(buf.len());
            let stride = m.stride.max(1);
            let Some(sender) = self.senders.get(&m.addr).copied() else {
                self.counters.unknown_source += len.div_ceil(stride) as u64;
                continue;
            };
            let mut start = 0;
            while start < len {
                let end = (start + stride).min(len);
                self.counters.datagrams_in += 1;
                let kind = usize::from(buf.get(start + 8).is_some_and(|k| *k != 0));
                for destination in &self.routes[sender][kind] {
                    self.pending.push(Pending {
                        destination: *destination,
                        slot,
                        start,
                        len: end - start,
                    });
                }
                start = end;
            }
        }
    }

    /// Sends the batch's fan-out grouped per destination into GSO runs (as the SFU's
    /// worker does).
    fn flush(&mut self, received: Instant, bufs: &[[u8; RECV_BUF]]) {
        if self.pending.is_empty() {
            return;
        }
        let pending = &self.pending;
        let sent = self
            .gso
            .send(&self.state, &self.socket, pending.len(), |i| {
                let p = &pending[i];
                (p.destination, &bufs[p.slot][p.start..p.start + p.len])
            });
        self.counters.send_calls += sent.calls;
        self.counters.forwarded += sent.datagrams;
        self.counters.bytes_out += sent.bytes;
        self.counters.send_errors += sent.errors;
        let sent = Instant::now();
        for _ in 0..self.pending.len() {
            self.latency_observe(sent.saturating_duration_since(received));
        }
        self.pending.clear();
    }

    fn latency_observe(&mut self, d: Duration) {
        self.counters.latency.observe(d);
    }
}

/// A running relay thread.
struct RelayHandle {
    addr: SocketAddr,
    stop: Arc<Notify>,
    thread: std::thread::JoinHandle<io::Result<RelayCounters>>,
}

/// Starts the relay on its own thread (`relay-fwd`), forwarding from `endpoints[i]` to
/// the endpoints `fanout[i]` names.
fn spawn_relay(endpoints: &[SocketAddr], fanout: &[[Vec<usize>; 2]]) -> io::Result<RelayHandle> {
    let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = socket.local_addr()?;
    let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
    for set in [
        UdpSocketState::set_recv_buffer_size,
        UdpSocketState::set_send_buffer_size,
    ] {
        if let Err(e) = set(&state, UdpSockRef::from(&socket), SOCKET_BUFFER) {
            tracing::debug!(error = %e, "relay socket buffer size not set");
        }
    }
    let senders = endpoints.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    let routes = fanout
        .iter()
        .map(|kinds| {
            kinds
                .clone()
                .map(|subs| subs.iter().map(|s| endpoints[*s]).collect())
        })
        .collect();
    let stop = Arc::new(Notify::new());
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("relay-fwd".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?;
            let _guard = rt.enter();
            let mut relay = Relay {
                socket: tokio::net::UdpSocket::from_std(socket)?,
                state,
                senders,
                routes,
                pending: Vec::new(),
                gso: GsoBatcher::default(),
                counters: RelayCounters::default(),
            };
            rt.block_on(relay.run(&flag))?;
            Ok(relay.counters)
        })?;
    Ok(RelayHandle { addr, stop, thread })
}

/// What one endpoint counted.
#[derive(Default)]
struct EndpointStats {
    /// Frames sent, `[audio, video]`.
    frames_sent: [u64; 2],
    /// Datagrams sent, `[audio, video]`.
    packets_sent: [u64; 2],
    /// Datagrams received, `[audio, video]`.
    received: [u64; 2],
    /// Send → receive of every datagram received, in µs.
    latency_us: Vec<u32>,
}

/// One endpoint: sends its frames until `stop_send`, receives until `stop_recv`.
#[allow(clippy::too_many_arguments)]
async fn endpoint(
    socket: tokio::net::UdpSocket,
    relay: SocketAddr,
    video: bool,
    phase: (Duration, Duration),
    base: Instant,
    mut stop_send: watch::Receiver<bool>,
    mut stop_recv: watch::Receiver<bool>,
) -> EndpointStats {
    let mut stats = EndpointStats::default();
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; MAX_PAYLOAD + 100];
    let start = tokio::time::Instant::now();
    let mut next = [start + phase.0, start + phase.1];
    let mut frame_id = 0u64;
    let mut sending = true;
    let audio_sizes = frame_sizes(false, false);
    let video_sizes = [frame_sizes(true, false), frame_sizes(true, true)];
    loop {
        let wake = if video { next[0].min(next[1]) } else { next[0] };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, _)) = r
                    && n >= 9
                {
                    let now = base.elapsed().as_nanos() as u64;
                    let mut stamp = [0u8; 8];
                    stamp.copy_from_slice(&buf[..8]);
                    let sent = u64::from_le_bytes(stamp);
                    stats.received[usize::from(buf[8] != 0)] += 1;
                    let us = now.saturating_sub(sent) / 1000;
                    stats.latency_us.push(us.min(u64::from(u32::MAX)) as u32);
                }
            }
            _ = tokio::time::sleep_until(wake), if sending => {
                let now = tokio::time::Instant::now();
                for kind in [0, 1] {
                    if kind == 1 && !video {
                        continue;
                    }
                    while now >= next[kind] {
                        let sizes = if kind == 0 {
                            &audio_sizes
                        } else {
                            let key = frame_id.is_multiple_of(KEYFRAME_EVERY);
                            frame_id += 1;
                            &video_sizes[usize::from(key)]
                        };
                        for &size in sizes {
                            let stamp = base.elapsed().as_nanos() as u64;
                            out[..8].copy_from_slice(&stamp.to_le_bytes());
                            out[8] = kind as u8;
                            let _ = socket.send_to(&out[..size], relay).await;
                            stats.packets_sent[kind] += 1;
                        }
                        stats.frames_sent[kind] += 1;
                        next[kind] += if kind == 0 { AUDIO_EVERY } else { VIDEO_EVERY };
                    }
                }
            }
            _ = stop_send.changed(), if sending => sending = false,
            _ = stop_recv.changed() => break,
        }
    }
    stats
}

/// The relay's figures for one run.
#[derive(Clone, Debug)]
pub struct RelayFigures {
    /// The traffic shape.
    pub shape: Shape,
    /// Seconds the endpoints sent for.
    pub seconds: f64,
    /// Datagrams the endpoints sent, `[audio, video]`.
    pub packets_sent: [u64; 2],
    /// Datagrams the relay should have delivered (sent × subscribers), `[audio, video]`.
    pub expected: [u64; 2],
    /// Datagrams the endpoints received, `[audio, video]`.
    pub received: [u64; 2],
    /// Datagrams into the relay.
    pub datagrams_in: u64,
    /// Datagrams the relay forwarded.
    pub forwarded: u64,
    /// Bytes it forwarded.
    pub bytes_out: u64,
    /// Its `sendmsg` calls.
    pub send_calls: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// CPU seconds of the relay thread.
    pub cpu: f64,
    /// Receive → send inside the relay (µs): p50, p99, mean.
    pub internal_latency: (Option<f64>, Option<f64>, Option<f64>),
    /// Send → receive at the endpoints (µs): p50, p99, max.
    pub end_to_end: (Option<f64>, Option<f64>, Option<f64>),
    /// Datagrams the kernel dropped (receive buffer full): at the relay's socket, at
    /// the endpoints' sockets, and in the whole network namespace (`RcvbufErrors`).
    pub kernel_drops: (u64, u64, u64),
}

impl RelayFigures {
    /// Forwarded datagrams per second of wall time.
    pub fn forwarded_per_s(&self) -> f64 {
        self.forwarded as f64 / self.seconds
    }

    /// Forwarded datagrams per second of relay-thread CPU.
    pub fn forwarded_per_core_s(&self) -> Option<f64> {
        (self.cpu > 0.0).then(|| self.forwarded as f64 / self.cpu)
    }

    fn loss(&self, kind: usize) -> Option<f64> {
        (self.expected[kind] > 0)
            .then(|| 1.0 - self.received[kind] as f64 / self.expected[kind] as f64)
    }

    /// As a table.
    pub fn print(&self) {
        let s = &self.shape;
        println!(
            "relay baseline: {} endpoints ({} video), slots {}a/{}v, {:.1} s",
            s.participants, s.video_senders, s.audio_slots, s.video_slots, self.seconds
        );
        let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{:.3} %", v * 100.0));
        let rows: Vec<(&str, String)> = vec![
            (
                "forwarded",
                format!(
                    "{} datagrams ({:.0}/s; {} in)",
                    self.forwarded,
                    self.forwarded_per_s(),
                    self.datagrams_in
                ),
            ),
            (
                "avg datagram",
                format!(
                    "{:.0} B",
                    self.bytes_out as f64 / self.forwarded.max(1) as f64
                ),
            ),
            (
                "sendmsg calls",
                format!(
                    "{} ({:.2} datagrams per call; {} errors)",
                    self.send_calls,
                    self.forwarded as f64 / self.send_calls.max(1) as f64,
                    self.send_errors
                ),
            ),
            (
                "relay thread CPU",
                format!(
                    "{:.2} s ({:.0} % of one core)",
                    self.cpu,
                    100.0 * self.cpu / self.seconds
                ),
            ),
            (
                "per relay core",
                self.forwarded_per_core_s()
                    .map_or_else(|| "-".into(), |v| format!("{v:.0} datagrams/core-s")),
            ),
            (
                "relay latency",
                format!(
                    "p50 {}  p99 {}  mean {} (receive → send, bucketed)",
                    measure::us(self.internal_latency.0),
                    measure::us(self.internal_latency.1),
                    measure::us(self.internal_latency.2)
                ),
            ),
            (
                "end to end",
                format!(
                    "p50 {}  p99 {}  max {} (endpoint send → receive)",
                    measure::us(self.end_to_end.0),
                    measure::us(self.end_to_end.1),
                    measure::us(self.end_to_end.2)
                ),
            ),
            (
                "loss",
                format!("audio {}  video {}", pct(self.loss(0)), pct(self.loss(1))),
            ),
        ];
        for (k, v) in rows {
            println!("  {k:<18} {v}");
        }
    }

    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "participants": self.shape.participants,
            "video_senders": self.shape.video_senders,
            "audio_slots": self.shape.audio_slots,
            "video_slots": self.shape.video_slots,
            "seconds": self.seconds,
            "packets_sent": { "audio": self.packets_sent[0], "video": self.packets_sent[1] },
            "expected_deliveries": { "audio": self.expected[0], "video": self.expected[1] },
            "received": { "audio": self.received[0], "video": self.received[1] },
            "loss": { "audio": self.loss(0), "video": self.loss(1) },
            "datagrams_in": self.datagrams_in,
            "forwarded": self.forwarded,
            "forwarded_per_s": self.forwarded_per_s(),
            "bytes_out": self.bytes_out,
            "avg_datagram_bytes": self.bytes_out as f64 / self.forwarded.max(1) as f64,
            "send_calls": self.send_calls,
            "datagrams_per_send_call": self.forwarded as f64 / self.send_calls.max(1) as f64,
            "send_errors": self.send_errors,
            "relay_thread_cpu_s": self.cpu,
            "relay_cpu_utilization": self.cpu / self.seconds,
            "forwarded_per_relay_core_s": self.forwarded_per_core_s(),
            "relay_latency_us": {
                "p50": self.internal_latency.0,
                "p99": self.internal_latency.1,
                "mean": self.internal_latency.2,
                "how": "receive (recvmmsg return) to sendmsg return, per datagram, in the SFU's histogram buckets, interpolated",
            },
            "end_to_end_latency_us": {
                "p50": self.end_to_end.0,
                "p99": self.end_to_end.1,
                "max": self.end_to_end.2,
                "how": "endpoint send stamp (first 8 bytes) to endpoint receive, same clock",
            },
            "kernel_rcvbuf_drops": {
                "relay_socket": self.kernel_drops.0,
                "endpoint_sockets": self.kernel_drops.1,
                "namespace_rcvbuf_errors": self.kernel_drops.2,
            },
        })
    }
}

/// Runs the relay with `shape`'s endpoints sending for `seconds`; call on a tokio runtime.
pub async fn measure(shape: Shape, seconds: f64) -> anyhow::Result<RelayFigures> {
    let n = shape.participants;
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let s = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        s.set_nonblocking(true)?;
        sockets.push(s);
    }
    let addrs: Vec<SocketAddr> = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<_, _>>()?;
    let fanout = shape.fanout();
    let relay = spawn_relay(&addrs, &fanout)?;
    let ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
    let drops_before = (
        measure::udp_drops_sum(&[relay.addr.port()]),
        measure::udp_drops_sum(&ports),
        measure::udp_rcvbuf_errors(),
    );
    let base = Instant::now();
    let (stop_send, send_rx) = watch::channel(false);
    let (stop_recv, recv_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(n);
    for (i, s) in sockets.into_iter().enumerate() {
        // Spread the endpoints' frame clocks as participants' connection times spread.
        let phase = (
            AUDIO_EVERY.mul_f64(i as f64 / n as f64),
            VIDEO_EVERY.mul_f64(i as f64 / n as f64),
        );
        tasks.push(tokio::spawn(endpoint(
            tokio::net::UdpSocket::from_std(s)?,
            relay.addr,
            i < shape.video_senders,
            phase,
            base,
            send_rx.clone(),
            recv_rx.clone(),
        )));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let _ = stop_send.send(true);
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(DRAIN).await;
    let kernel_drops = (
        measure::udp_drops_sum(&[relay.addr.port()]) - drops_before.0,
        measure::udp_drops_sum(&ports) - drops_before.1,
        measure::udp_rcvbuf_errors().saturating_sub(drops_before.2),
    );
    let _ = stop_recv.send(true);
    let mut stats = Vec::with_capacity(n);
    for t in tasks {
        stats.push(t.await?);
    }
    relay.stop.notify_one();
    let counters = relay
        .thread
        .join()
        .map_err(|_| anyhow::anyhow!("the relay thread panicked"))??;
    let mut expected = [0u64; 2];
    let mut packets_sent = [0u64; 2];
    let mut received = [0u64; 2];
    let mut latency = Vec::new();
    for (i, s) in stats.iter_mut().enumerate() {
        for k in 0..2 {
            packets_sent[k] += s.packets_sent[k];
            expected[k] += s.packets_sent[k] * fanout[i][k].len() as u64;
            received[k] += s.received[k];
        }
        latency.append(&mut s.latency_us);
    }
    latency.sort_unstable();
    let bounds: Vec<f64> = LATENCY_BUCKETS_US.iter().map(|b| *b as f64).collect();
    let h = &counters.latency;
    Ok(RelayFigures {
        shape,
        seconds,
        packets_sent,
        expected,
        received,
        datagrams_in: counters.datagrams_in,
        forwarded: counters.forwarded,
        bytes_out: counters.bytes_out,
        send_calls: counters.send_calls,
        send_errors: counters.send_errors,
        cpu: counters.cpu,
        internal_latency: (
            measure::histogram_quantile(&bounds, &h.buckets, 0.5),
            measure::histogram_quantile(&bounds, &h.buckets, 0.99),
            (h.count > 0).then(|| h.sum_us as f64 / h.count as f64),
        ),
        end_to_end: (
            measure::quantile_sorted(&latency, 0.5),
            measure::quantile_sorted(&latency, 0.99),
            latency.last().map(|v| f64::from(*v)),
        ),
        kernel_drops,
    })
}

/// `sotto-bench relay-baseline`: runs the relay alone and writes `relay-baseline.json`.
pub fn run(shape: Shape, seconds: f64, out: &std::path::Path) -> anyhow::Result<()> {
    let figures = tokio::runtime::Runtime::new()?.block_on(measure(shape, seconds))?;
    figures.print();
    let json = serde_json::json!({
        "scenario": "relay-baseline",
        "git_head": measure::git_head(),
        "machine": measure::machine(),
        "relay": figures.json(),
        "rss_mib": measure::rss_mib().0,
    });
    measure::write_json(out, "relay-baseline.json", &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_follows_the_sfu_rules() {
        let small = Shape {
            participants: 4,
            video_senders: 4,
            audio_slots: 3,
            video_slots: 3,
        };
        let f = small.fanout();
        assert_eq!(f[0][0], vec![1, 2, 3]);
        assert_eq!(f[3][1], vec![0, 1, 2]);
        // A big room: audio of the loudest 3 only, video from the top last-N.
        let big = Shape {
            participants: 30,
            video_senders: 30,
            audio_slots: 8,
            video_slots: 9,
        };
        let f = big.fanout();
        assert_eq!(f[3][0].len(), 0);
        assert_eq!(f[0][0].len(), 29);
        assert_eq!(
            f[9][1].len(),
            9,
            "the 10th is in the top 9 of the first 9 only"
        );
        assert_eq!(f[10][1].len(), 0);
        assert_eq!(f[0][1].len(), 29);
    }

    #[test]
    fn frames_packetize_like_load_participants() {
        assert_eq!(frame_sizes(false, false).len(), 1);
        assert_eq!(frame_sizes(true, false).len(), 2);
        assert_eq!(frame_sizes(true, true).len(), 4);
    }

    #[test]
    fn the_relay_forwards_to_every_subscriber() {
        let shape = Shape {
            participants: 3,
            video_senders: 1,
            audio_slots: 2,
            video_slots: 2,
        };
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let f = rt.block_on(measure(shape, 0.3)).expect("a relay run");
        assert!(f.forwarded > 0);
        assert_eq!(f.received, f.expected, "no loss on loopback at this rate");
        assert_eq!(f.send_errors, 0);
    }
}
