//! A forwarding worker: one thread, one UDP socket, one [`Core`]. It moves batches of
//! datagrams into the core (`recvmmsg`, GRO when the kernel coalesces) and the core's
//! output onto the wire grouped per destination (GSO: one `sendmsg` carries a run of
//! equal-size datagrams to one address). Commands from the control side (join, remove)
//! arrive on a channel, checked once per batch; nothing crosses a channel per packet.
//!
//! The only allocations in the steady state are str0m's: one buffer per SRTP datagram it
//! produces and one payload per packet it receives (NOTES.md has the counts). Our buffers
//! (receive slots, the GSO run, the grouping order) are made once and reused.

use crate::core::{Config, Core, Counters, Event, JoinError, Tap, Transmit};
use crate::gso::GsoBatcher;
use quinn_udp::{BATCH_SIZE, RecvMeta, UdpSockRef, UdpSocketState};
use sotto_proto::{DeviceAddr, RoomId};
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc as async_mpsc, oneshot};

/// The longest a worker sleeps before it looks at its commands again.
const COMMAND_POLL: Duration = Duration::from_millis(5);
/// How often the metrics snapshot is refreshed.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Receive batches taken in a row before timers and commands get a turn.
const RECV_ROUNDS: usize = 4;
/// Timer runs in a row before the socket is looked at again.
const TIMER_ROUNDS: usize = 4;
/// Inputs handled between two sends within one receive batch.
const FLUSH_EVERY: usize = 8;
/// Socket buffers asked for, each way.
const SOCKET_BUFFER: usize = 4 << 20;
/// Room for the largest datagram, or a GRO-coalesced run of them.
const RECV_BUF: usize = 64 * 1024;

/// What the control side asks a worker to do.
pub enum Command {
    /// Add a participant; the answer SDP (or why not) goes back on `reply`.
    Join {
        /// The room.
        room: RoomId,
        /// Who (checked against its join token by the caller).
        device: DeviceAddr,
        /// Its MLS leaf, from the token.
        leaf: u32,
        /// Its SDP offer.
        offer: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<String, JoinError>>,
    },
    /// Remove a participant; the core answers with [`Event::RemovalApplied`].
    Remove {
        /// The room.
        room: RoomId,
        /// Who.
        device: DeviceAddr,
    },
    /// A subscriber's highest wanted simulcast layer.
    MaxLayer {
        /// The room.
        room: RoomId,
        /// Who.
        device: DeviceAddr,
        /// The layer.
        layer: u8,
    },
    /// Close every connection and go on (signaling was lost: its rooms and removals are
    /// gone with it, so participants join again).
    CloseAll,
    /// Stop forwarding: every connection is closed.
    Stop,
}

/// A running worker, as the control side holds it.
pub struct WorkerHandle {
    /// Where commands go.
    pub commands: mpsc::Sender<Command>,
    /// The address participants reach it at (its ICE candidate).
    pub media_addr: SocketAddr,
    /// The address its socket is bound to.
    pub local_addr: SocketAddr,
    /// Its counters, refreshed every 100 ms.
    pub counters: Arc<Mutex<Snapshot>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Upper bounds (µs) of the forwarding-latency histogram's buckets; the last is +Inf.
pub const LATENCY_BUCKETS_US: [u64; 10] = [25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000];

/// Receive → send latency inside the SFU, as a Prometheus histogram.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencyHistogram {
    /// Counts per bucket of [`LATENCY_BUCKETS_US`], plus one for +Inf (not cumulative).
    pub buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of all observations, in microseconds.
    pub sum_us: u64,
    /// Observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one datagram's time inside the SFU.
    pub fn observe(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i] += 1;
        self.sum_us += us;
        self.count += 1;
    }

    /// Adds another histogram's counts.
    pub fn add(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
        self.count += other.count;
    }
}

/// What a worker reports for metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    /// The core's counters.
    pub counters: Counters,
    /// Receive → send latency of forwarded datagrams.
    pub latency: LatencyHistogram,
    /// Rooms on this worker.
    pub rooms: usize,
    /// Participants on this worker.
    pub participants: usize,
    /// Subscribers' bandwidth estimates: (how many, sum, min, max), bits per second.
    pub estimates: (u64, u64, u64, u64),
}

impl WorkerHandle {
    /// Asks the worker to stop and waits for its thread.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `listen` and starts a worker thread whose core advertises `media_addr` (the
/// address participants reach, which differs from `listen` behind NAT or on a wildcard
/// bind). Core events go to `events`; `tap` (tests) sees every forwarded packet.
pub fn spawn(
    name: &str,
    listen: SocketAddr,
    media_addr: SocketAddr,
    events: async_mpsc::UnboundedSender<Event>,
    tap: Option<Tap>,
) -> io::Result<WorkerHandle> {
    let socket = UdpSocket::bind(listen)?;
    let local_addr = socket.local_addr()?;
    // Port 0 in the advertised address means "the port we were given".
    let media_addr = if media_addr.port() == 0 {
        SocketAddr::new(media_addr.ip(), local_addr.port())
    } else {
        media_addr
    };
    // (quinn-udp makes the socket non-blocking; the worker waits for readiness.)
    let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
    // Room for the bursts of a busy room (keyframes fanned out to many at once): the
    // kernel caps this at net.core.[rw]mem_max.
    for set in [
        UdpSocketState::set_recv_buffer_size,
        UdpSocketState::set_send_buffer_size,
    ] {
        if let Err(e) = set(&state, UdpSockRef::from(&socket), SOCKET_BUFFER) {
            tracing::debug!(error = %e, "socket buffer size not set");
        }
    }
    let (commands, rx) = mpsc::channel();
    let counters = Arc::new(Mutex::new(Snapshot::default()));
    let shared = counters.clone();
    let mut cfg = Config::new(media_addr);
    cfg.tap = tap;
    let core = Core::new(cfg);
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // Its own single-threaded reactor: epoll for the socket and a timer for the
            // core's next timeout, both at sub-millisecond precision (a socket read
            // timeout rounds up to the kernel's tick, which starved str0m's pacer).
            let reactor = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "forwarding worker could not start");
                    return;
                }
            };
            let result = reactor.block_on(async move {
                let socket = tokio::net::UdpSocket::from_std(socket)?;
                let mut w = Worker {
                    socket,
                    state,
                    core,
                    commands: rx,
                    events,
                    counters: shared,
                    pending: Vec::new(),
                    gso: GsoBatcher::default(),
                    latency: LatencyHistogram::default(),
                    published: None,
                };
                w.run().await
            });
            if let Err(e) = result {
                tracing::error!(error = %e, "forwarding worker stopped");
            }
        })?;
    Ok(WorkerHandle {
        commands,
        media_addr,
        local_addr,
        counters,
        thread: Mutex::new(Some(thread)),
    })
}

struct Worker {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    core: Core,
    commands: mpsc::Receiver<Command>,
    events: async_mpsc::UnboundedSender<Event>,
    counters: Arc<Mutex<Snapshot>>,
    pending: Vec<Transmit>,
    gso: GsoBatcher,
    latency: LatencyHistogram,
    /// When the counters snapshot was last refreshed.
    published: Option<Instant>,
}

impl Worker {
    async fn run(&mut self) -> io::Result<()> {
        let mut bufs: Box<[[u8; RECV_BUF]; BATCH_SIZE]> = vec![[0u8; RECV_BUF]; BATCH_SIZE]
            .into_boxed_slice()
            .try_into()
            .map_err(|_| io::Error::other("receive buffers"))?;
        let mut meta = [RecvMeta::default(); BATCH_SIZE];
        loop {
            if !self.commands_done() {
                self.core_stop();
                return Ok(());
            }
            self.run_timers();
            let now = Instant::now();
            let wake = self
                .core
                .poll_timeout()
                .map_or(now + COMMAND_POLL, |t| t.min(now + COMMAND_POLL));
            tokio::select! {
                ready = self.socket.readable() => {
                    ready?;
                    self.receive(&mut bufs, &mut meta);
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            self.run_timers();
            self.flush();
            self.publish();
        }
    }

    /// Runs the core's due timers (a timer can leave the next one due at once: the pacer
    /// sending a run), a few rounds at most.
    fn run_timers(&mut self) {
        for _ in 0..TIMER_ROUNDS {
            let now = Instant::now();
            if self.core.poll_timeout().is_none_or(|t| t > now) {
                break;
            }
            self.core.handle_timeout(now);
            self.flush();
        }
    }

    /// Takes what the socket has, one `recvmmsg` batch at a time, until it would block.
    fn receive(
        &mut self,
        bufs: &mut [[u8; RECV_BUF]; BATCH_SIZE],
        meta: &mut [RecvMeta; BATCH_SIZE],
    ) {
        for _ in 0..RECV_ROUNDS {
            let got = {
                let mut slices = bufs.each_mut().map(|b| IoSliceMut::new(b));
                let (socket, state) = (&self.socket, &self.state);
                socket.try_io(tokio::io::Interest::READABLE, || {
                    state.recv(UdpSockRef::from(socket), &mut slices, meta)
                })
            };
            match got {
                Ok(n) => self.take_batch(Instant::now(), &bufs[..n], &meta[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "receive failed");
                    return;
                }
            }
        }
    }

    /// Hands one received batch to the core; each slot may hold a GRO run of datagrams
    /// of `stride` bytes.
    fn take_batch(&mut self, now: Instant, bufs: &[[u8; RECV_BUF]], meta: &[RecvMeta]) {
        let local = self.core.media_addr();
        let mut since_flush = 0;
        for (buf, m) in bufs.iter().zip(meta) {
            let data = &buf[..m.len.min(buf.len())];
            let stride = m.stride.max(1);
            for datagram in data.chunks(stride) {
                self.core.handle_receive(now, m.addr, local, datagram);
                since_flush += 1;
                // A full batch would make its first datagram wait for all the others:
                // send every few inputs (still grouped per destination within them).
                if since_flush == FLUSH_EVERY {
                    self.flush();
                    since_flush = 0;
                }
            }
        }
    }

    /// Runs queued commands; false once told to stop (or the control side is gone).
    fn commands_done(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Join {
                    room,
                    device,
                    leaf,
                    offer,
                    reply,
                }) => {
                    let answer = self.core.join(Instant::now(), room, device, leaf, &offer);
                    let _ = reply.send(answer);
                }
                Ok(Command::Remove { room, device }) => {
                    self.core.remove(&room, &device);
                }
                Ok(Command::MaxLayer {
                    room,
                    device,
                    layer,
                }) => self.core.set_max_layer(&room, &device, layer),
                Ok(Command::CloseAll) => self.core.close_all(),
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn core_stop(&mut self) {
        self.core.close_all();
        self.flush();
        self.publish();
    }

    /// Sends everything the core queued, grouped per destination into GSO runs.
    fn flush(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            self.pending.push(t);
        }
        if self.pending.is_empty() {
            return;
        }
        let pending = &self.pending;
        self.gso
            .send(&self.state, &self.socket, pending.len(), |i| {
                (pending[i].destination, pending[i].contents.as_slice())
            });
        let sent = Instant::now();
        for t in &self.pending {
            if let Some(at) = t.received {
                self.latency.observe(sent.saturating_duration_since(at));
            }
        }
        self.pending.clear();
    }

    /// Passes core events on and refreshes the counters snapshot.
    fn publish(&mut self) {
        while let Some(e) = self.core.poll_event() {
            let _ = self.events.send(e);
        }
        // The snapshot is for metrics: a few times a second is plenty, not every wake-up.
        let now = Instant::now();
        if self
            .published
            .is_some_and(|t| now.duration_since(t) < PUBLISH_EVERY)
        {
            return;
        }
        self.published = Some(now);
        if let Ok(mut s) = self.counters.lock() {
            s.counters = *self.core.counters();
            s.latency = self.latency;
            s.rooms = self.core.room_count();
            s.participants = self.core.participant_count();
            let (n, sum, min, max) = self.core.estimates();
            s.estimates = (n, sum, if n == 0 { 0 } else { min }, max);
        }
    }
}
