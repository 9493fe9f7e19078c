//! The tokio shell: UDP in, UDP out, one impairment per direction.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::conditions::Conditions;
use crate::error::ProxyError;
use crate::link::{Delivery, Dropped, Impairment, Stats};
use crate::rng::derive_seed;
use crate::schedule::Schedule;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// At most this many client mappings per proxy; datagrams from further clients are
/// discarded (and counted as I/O errors).
const MAX_MAPPINGS: usize = 4_096;

/// A direction through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → upstream.
    Up,
    /// Upstream → client.
    Down,
}

/// How to start a [`Proxy`].
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The client-facing address to bind (`127.0.0.1:0` picks a port).
    pub listen: SocketAddr,
    /// Where to forward clients' datagrams.
    pub upstream: SocketAddr,
    /// What the client → upstream direction does.
    pub up: Schedule,
    /// What the upstream → client direction does.
    pub down: Schedule,
    /// The seed; each direction draws from its own streams derived from it.
    pub seed: u64,
    /// Allow `listen` and `upstream` off loopback (127.0.0.0/8, ::1). Tests and the bench
    /// leave this off.
    pub allow_non_loopback: bool,
}

impl ProxyConfig {
    /// A free path to `upstream` from `127.0.0.1:0`, seed 0, loopback only.
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            upstream,
            up: Schedule::constant(Conditions::free()),
            down: Schedule::constant(Conditions::free()),
            seed: 0,
            allow_non_loopback: false,
        }
    }

    /// Sets the client → upstream conditions or schedule.
    pub fn with_up(mut self, up: impl Into<Schedule>) -> Self {
        self.up = up.into();
        self
    }

    /// Sets the upstream → client conditions or schedule.
    pub fn with_down(mut self, down: impl Into<Schedule>) -> Self {
        self.down = down.into();
        self
    }

    /// Sets both directions to the same conditions or schedule.
    pub fn with_both(self, both: impl Into<Schedule>) -> Self {
        let both = both.into();
        self.with_up(both.clone()).with_down(both)
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// One client's NAT-like mapping: the upstream sees `upstream_local` for `client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// The client's address as seen by the proxy.
    pub client: SocketAddr,
    /// The proxy's upstream-facing address for this client.
    pub upstream_local: SocketAddr,
}

/// Counters of a running proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client → upstream.
    pub up: Stats,
    /// Upstream → client.
    pub down: Stats,
    /// The client mappings; a mapping's position is the `tag` in [`Dropped`] records.
    pub mappings: Vec<Mapping>,
    /// Socket errors on receive or send, and datagrams from clients beyond the mapping limit.
    pub io_errors: u64,
}

/// Counters plus both drop logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyReport {
    /// The counters.
    pub stats: ProxyStats,
    /// Client → upstream drops, oldest first.
    pub up_drops: Vec<Dropped>,
    /// Upstream → client drops, oldest first.
    pub down_drops: Vec<Dropped>,
}

/// Both directions' cores.
#[derive(Debug)]
struct Links {
    up: Impairment,
    down: Impairment,
}

impl Links {
    fn get_mut(&mut self, direction: Direction) -> &mut Impairment {
        match direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        }
    }

    fn get(&self, direction: Direction) -> &Impairment {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    /// The earlier of the two directions' next due times.
    fn next_due(&self) -> Option<Instant> {
        match (self.up.poll_timeout(), self.down.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What the proxy's task and its handle share.
#[derive(Debug)]
struct Shared {
    links: Mutex<Links>,
    mappings: Mutex<Vec<Mapping>>,
    io_errors: AtomicU64,
}

impl Shared {
    fn links(&self) -> MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mappings(&self) -> MutexGuard<'_, Vec<Mapping>> {
        self.mappings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn io_error(&self, what: &str, error: &io::Error) {
        self.io_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%error, "impairment proxy: {what}");
    }
}

/// A running impairment proxy (see the [crate docs](crate)). Dropping it stops it.
///
/// All clients of one proxy share its two impairments, like clients behind one access
/// link (one rate cap, one loss process); start one proxy per client for independent
/// paths. The `tag` of a [`Delivery`] or [`Dropped`] record is the client's mapping number
/// (its position in [`ProxyStats::mappings`]), in order of first datagram.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Binds the client-facing socket and starts forwarding. Fails on an address off
    /// loopback unless `allow_non_loopback` is set, or when binding fails. Must be called
    /// within a tokio runtime with timers and I/O enabled.
    pub async fn start(config: ProxyConfig) -> Result<Self, ProxyError> {
        if !config.allow_non_loopback {
            check_loopback("listen", config.listen)?;
            check_loopback("upstream", config.upstream)?;
        }
        let client = UdpSocket::bind(config.listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = client.local_addr()?;
        let now = clock();
        let links = Links {
            up: Impairment::new(now, config.up, derive_seed(config.seed, 0x7570)),
            down: Impairment::new(now, config.down, derive_seed(config.seed, 0x646f_776e)),
        };
        let shared = Arc::new(Shared {
            links: Mutex::new(links),
            mappings: Mutex::new(Vec::new()),
            io_errors: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let task = Task {
            client,
            upstream: config.upstream,
            upstreams: Vec::new(),
            clients: Vec::new(),
            by_client: HashMap::new(),
            shared: Arc::clone(&shared),
            next_poll: 0,
        };
        let task = tokio::spawn(task.run(stopped));
        tracing::debug!(%addr, upstream = %config.upstream, "impairment proxy started");
        Ok(Self {
            addr,
            upstream: config.upstream,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The client-facing address: send here instead of to the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream address.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Changes one direction's conditions from now on (datagrams in flight keep their
    /// delivery times).
    pub fn set(&self, direction: Direction, conditions: Conditions) {
        self.shared
            .links()
            .get_mut(direction)
            .set_conditions(clock(), conditions);
    }

    /// Replaces one direction's schedule, which starts over now.
    pub fn set_schedule(&self, direction: Direction, schedule: Schedule) {
        self.shared
            .links()
            .get_mut(direction)
            .set_schedule(clock(), schedule);
    }

    /// The conditions one direction applies now.
    pub fn conditions(&self, direction: Direction) -> Conditions {
        self.shared
            .links()
            .get(direction)
            .conditions(clock())
            .clone()
    }

    /// The counters and mappings.
    pub fn stats(&self) -> ProxyStats {
        let (up, down) = {
            let links = self.shared.links();
            (*links.up.stats(), *links.down.stats())
        };
        ProxyStats {
            up,
            down,
            mappings: self.shared.mappings().clone(),
            io_errors: self.shared.io_errors.load(Ordering::Relaxed),
        }
    }

    /// One direction's drop log, oldest first.
    pub fn drops(&self, direction: Direction) -> Vec<Dropped> {
        self.shared.links().get(direction).drops().to_vec()
    }

    /// The counters and both drop logs.
    pub fn report(&self) -> ProxyReport {
        ProxyReport {
            stats: self.stats(),
            up_drops: self.drops(Direction::Up),
            down_drops: self.drops(Direction::Down),
        }
    }

    /// Stops forwarding (datagrams in flight are discarded) and returns the final report.
    pub async fn stop(mut self) -> Result<ProxyReport, ProxyError> {
        if let Some(stop) = self.stop.take() {
            // The task may already have ended; then there is nobody to tell.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.map_err(|e| ProxyError::Task(e.to_string()))?;
        }
        Ok(self.report())
    }
}

/// The time on tokio's clock (so that a paused test clock applies), as a std `Instant`.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn check_loopback(what: &'static str, addr: SocketAddr) -> Result<(), ProxyError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ProxyError::NotLoopback { what, addr })
    }
}

/// Something the task woke up for.
enum Event {
    Stop,
    Client(io::Result<(usize, SocketAddr)>),
    Upstream(usize, io::Result<usize>),
    Due,
}

/// The proxy's single task: owns the sockets, feeds the cores, sends what is due.
struct Task {
    client: UdpSocket,
    upstream: SocketAddr,
    /// One connected socket per mapping, by mapping id.
    upstreams: Vec<UdpSocket>,
    /// Each mapping's client address, by mapping id.
    clients: Vec<SocketAddr>,
    by_client: HashMap<SocketAddr, usize>,
    shared: Arc<Shared>,
    /// Where the next scan of the upstream sockets begins (fairness).
    next_poll: usize,
}

impl Task {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let mut client_buf = vec![0u8; MAX_DATAGRAM];
        let mut upstream_buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let event = self
                .next_event(&mut stopped, &mut client_buf, &mut upstream_buf)
                .await;
            match event {
                Event::Stop => break,
                Event::Client(Ok((len, from))) => {
                    self.on_client_datagram(from, &client_buf[..len]).await;
                }
                Event::Upstream(id, Ok(len)) => self.on_upstream_datagram(id, &upstream_buf[..len]),
                Event::Client(Err(e)) | Event::Upstream(_, Err(e)) => {
                    self.shared.io_error("receive failed", &e);
                    // A persistent error must not turn the loop into a busy one.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Event::Due => {}
            }
            self.send_due().await;
        }
        tracing::debug!("impairment proxy stopped");
    }

    /// Waits for a datagram from either side, the next due time, or the stop signal.
    async fn next_event(
        &mut self,
        stopped: &mut oneshot::Receiver<()>,
        client_buf: &mut [u8],
        upstream_buf: &mut [u8],
    ) -> Event {
        let due = self.shared.links().next_due();
        let sleep =
            tokio::time::sleep_until(due.map_or_else(far_future, tokio::time::Instant::from_std));
        let start = self.next_poll;
        self.next_poll = self.next_poll.wrapping_add(1);
        let upstreams = &self.upstreams;
        tokio::select! {
            // Stop, or the handle was dropped.
            _ = stopped => Event::Stop,
            received = self.client.recv_from(client_buf) => Event::Client(received),
            (id, received) = poll_fn(|cx| poll_upstreams(cx, upstreams, start, upstream_buf)) => {
                Event::Upstream(id, received)
            }
            () = sleep, if due.is_some() => Event::Due,
        }
    }

    /// A datagram from a client: find or open its mapping, push it into `up`.
    async fn on_client_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let id = match self.by_client.get(&from) {
            Some(&id) => id,
            None => match self.open_mapping(from).await {
                Ok(id) => id,
                Err(e) => {
                    self.shared.io_error("cannot open an upstream mapping", &e);
                    return;
                }
            },
        };
        self.shared
            .links()
            .up
            .push_tagged(clock(), data.to_vec(), id as u64);
    }

    /// A datagram from the upstream on mapping `id`: push it into `down`.
    fn on_upstream_datagram(&mut self, id: usize, data: &[u8]) {
        self.shared
            .links()
            .down
            .push_tagged(clock(), data.to_vec(), id as u64);
    }

    /// Opens the upstream socket for a new client.
    async fn open_mapping(&mut self, client: SocketAddr) -> io::Result<usize> {
        if self.upstreams.len() >= MAX_MAPPINGS {
            return Err(io::Error::other("too many client mappings"));
        }
        let socket = UdpSocket::bind(bind_address_for(self.upstream)).await?;
        socket.connect(self.upstream).await?;
        let upstream_local = socket.local_addr()?;
        let id = self.upstreams.len();
        self.upstreams.push(socket);
        self.clients.push(client);
        self.by_client.insert(client, id);
        self.shared.mappings().push(Mapping {
            client,
            upstream_local,
        });
        tracing::debug!(%client, %upstream_local, "impairment proxy: new mapping");
        Ok(id)
    }

    /// Sends everything due in both directions.
    async fn send_due(&mut self) {
        let now = clock();
        let (up, down) = {
            let mut links = self.shared.links();
            (due(&mut links.up, now), due(&mut links.down, now))
        };
        for d in up {
            if let Some(socket) = self.upstreams.get(d.tag as usize)
                && let Err(e) = socket.send(&d.data).await
            {
                self.shared.io_error("send upstream failed", &e);
            }
        }
        for d in down {
            if let Some(&client) = self.clients.get(d.tag as usize)
                && let Err(e) = self.client.send_to(&d.data, client).await
            {
                self.shared.io_error("send to client failed", &e);
            }
        }
    }
}

/// Everything due at `now`.
fn due(link: &mut Impairment, now: Instant) -> Vec<Delivery> {
    std::iter::from_fn(|| link.poll_delivery(now)).collect()
}

/// A wake-up time that never comes in practice (for a disabled timer branch).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

/// The local address for an upstream socket: loopback for a loopback upstream, else any.
fn bind_address_for(upstream: SocketAddr) -> SocketAddr {
    let ip = match (upstream.ip(), upstream.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// Polls the upstream sockets for a datagram, starting the scan at `start` so that no
/// mapping starves; registers for wake-up on all of them otherwise.
fn poll_upstreams(
    cx: &mut Context<'_>,
    sockets: &[UdpSocket],
    start: usize,
    buf: &mut [u8],
) -> Poll<(usize, io::Result<usize>)> {
    let n = sockets.len();
    for k in 0..n {
        let id = (start + k) % n;
        let mut read = ReadBuf::new(buf);
        if let Poll::Ready(result) = sockets[id].poll_recv(cx, &mut read) {
            return Poll::Ready((id, result.map(|()| read.filled().len())));
        }
    }
    Poll::Pending
}

#[cfg(test)]
mod tests;
