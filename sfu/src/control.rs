//! The SFU's control side: its connection to the signaling service (registration, join
//! offers with their tokens, roster removals and their acknowledgements), the forwarding
//! workers it places rooms on, and the metrics endpoint.
//!
//! Everything here is control plane: a join or a removal crosses one channel to a worker;
//! media never passes through this task.

use crate::core::{Event as CoreEvent, JoinError};
use crate::join_token::{self, TokenError};
use crate::worker::{self, Command, WorkerHandle};
use ed25519_dalek::VerifyingKey;
use sotto_proto::{DeviceAddr, Event, Request, Response, RoomId, RtcSignal, SignedJoinToken};
use sotto_signaling_client::{ClientError, Incoming, Pin, SignalingClient};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

/// How the SFU runs.
#[derive(Clone)]
pub struct SfuConfig {
    /// The signaling service.
    pub signaling: SocketAddr,
    /// How to trust its certificate.
    pub pin: Pin,
    /// The shared secret SFU nodes register with.
    pub secret: String,
    /// This node's name (for the operator's logs).
    pub node: String,
    /// Where the media sockets bind; worker `i` takes port `listen.port() + i` (port 0:
    /// each worker takes any free port).
    pub listen: SocketAddr,
    /// The address participants reach the media port at (it differs from `listen` behind
    /// NAT or on a wildcard bind); port 0 means the bound port.
    pub media_addr: SocketAddr,
    /// Participants this node takes (registration tells signaling).
    pub capacity: u32,
    /// Forwarding threads (rooms are spread across them).
    pub workers: usize,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// Sees every forwarded packet (tests only; see [`crate::core::Tap`]).
    pub tap: Option<crate::core::Tap>,
}

/// Why the SFU could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// A socket could not be bound.
    #[error("could not bind {addr}: is something else using it? choose another address")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The signaling service could not be reached or refused the registration.
    #[error("registering with the signaling service failed")]
    Register(#[from] ClientError),
    /// The signaling service refused the shared secret.
    #[error(
        "the signaling service refused this SFU's secret: give the same value as its sfu_secret (--secret or SOTTO_SFU_SECRET)"
    )]
    SecretRefused,
    /// The signaling service answered registration with something else.
    #[error("the signaling service answered the registration unexpectedly")]
    UnexpectedAnswer,
    /// Its token key is not an Ed25519 key.
    #[error("the signaling service's token key is not a valid Ed25519 key")]
    BadTokenKey,
}

/// A running SFU.
pub struct RunningSfu {
    /// Each worker's media address, as advertised.
    pub media_addrs: Vec<SocketAddr>,
    /// Where metrics are served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSfu {
    /// Drains: stops taking joins, closes every connection, and waits for the workers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the workers, registers with signaling, and runs until [`RunningSfu::shutdown`].
pub async fn start(cfg: SfuConfig) -> Result<RunningSfu, SfuError> {
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut workers = Vec::new();
    for i in 0..cfg.workers.max(1) {
        let port = if cfg.listen.port() == 0 {
            0
        } else {
            cfg.listen.port().saturating_add(i as u16)
        };
        let listen = SocketAddr::new(cfg.listen.ip(), port);
        let media = SocketAddr::new(cfg.media_addr.ip(), if port == 0 { 0 } else { port });
        let name = format!("sfu-fwd-{i}");
        let w = worker::spawn(&name, listen, media, events_tx.clone(), cfg.tap.clone()).map_err(
            |source| SfuError::Bind {
                addr: listen,
                source,
            },
        )?;
        workers.push(w);
    }
    let media_addrs: Vec<SocketAddr> = workers.iter().map(|w| w.media_addr).collect();
    let (client, token_key) = register(&cfg, &media_addrs).await?;
    let (stop, stop_rx) = watch::channel(false);
    let workers = Arc::new(workers);
    let metrics_addr = match cfg.metrics {
        Some(addr) => Some(serve_metrics(addr, workers.clone(), stop_rx.clone()).await?),
        None => None,
    };
    tracing::info!(node = %cfg.node, media = ?media_addrs, "SFU registered");
    let control = Control {
        cfg,
        client,
        token_key,
        workers,
        events,
    };
    let task = tokio::spawn(control.run(stop_rx));
    Ok(RunningSfu {
        media_addrs,
        metrics_addr,
        stop,
        task,
    })
}

async fn register(
    cfg: &SfuConfig,
    media_addrs: &[SocketAddr],
) -> Result<(SignalingClient, VerifyingKey), SfuError> {
    let client = SignalingClient::connect(cfg.signaling, &cfg.pin).await?;
    let media_addr = media_addrs
        .first()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let answer = client
        .request(Request::RegisterSfu {
            node: cfg.node.clone(),
            secret: cfg.secret.clone(),
            media_addr,
            capacity: cfg.capacity,
        })
        .await
        .map_err(|e| match e {
            ClientError::Server(body) if body.code == sotto_proto::ErrorCode::Forbidden => {
                SfuError::SecretRefused
            }
            other => SfuError::Register(other),
        })?;
    let Response::SfuRegistered { token_key } = answer else {
        return Err(SfuError::UnexpectedAnswer);
    };
    let key: [u8; 32] = token_key
        .as_slice()
        .try_into()
        .map_err(|_| SfuError::BadTokenKey)?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| SfuError::BadTokenKey)?;
    Ok((client, key))
}

struct Control {
    cfg: SfuConfig,
    client: SignalingClient,
    token_key: VerifyingKey,
    workers: Arc<Vec<WorkerHandle>>,
    events: mpsc::UnboundedReceiver<CoreEvent>,
}

/// Why a join offer was refused (logged; the participant sees no answer).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("no join token with the offer")]
    NoToken,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the join token names another room, device or leaf than signaling did")]
    TokenMismatch,
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("the forwarding worker is gone")]
    WorkerGone,
}

impl Control {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                incoming = self.client.next() => match incoming {
                    Some(Incoming::Event(e)) => self.signal_event(e).await,
                    Some(Incoming::Delivery { seq, .. }) => {
                        let _ = self.client.ack(seq).await;
                    }
                    Some(Incoming::Goodbye(why)) => {
                        tracing::warn!(reason = %why.message, "signaling closed the session");
                        if !self.reconnect(&mut stop).await {
                            break;
                        }
                    }
                    None => {
                        tracing::warn!("lost the signaling connection");
                        if !self.reconnect(&mut stop).await {
                            break;
                        }
                    }
                },
                Some(e) = self.events.recv() => self.core_event(e).await,
                _ = stop.changed() => break,
            }
        }
        self.drain();
    }

    /// Reconnects with backoff until registered again, or told to stop (false).
    async fn reconnect(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let mut wait = Duration::from_millis(200);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return false,
            }
            let addrs: Vec<SocketAddr> = self.workers.iter().map(|w| w.media_addr).collect();
            match register(&self.cfg, &addrs).await {
                Ok((client, key)) => {
                    tracing::info!("registered with signaling again");
                    // Signaling moved this node's rooms, and forgot the removals it was
                    // resending, when the connection dropped: nobody here is current.
                    for w in self.workers.iter() {
                        let _ = w.commands.send(Command::CloseAll);
                    }
                    self.client = client;
                    self.token_key = key;
                    return true;
                }
                Err(e) => tracing::warn!(error = %e, "registering again failed"),
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    /// SIGTERM: every connection is closed and the workers stop.
    fn drain(&mut self) {
        tracing::info!("draining");
        for w in self.workers.iter() {
            w.stop();
        }
    }

    fn worker_for(&self, room: &RoomId) -> &WorkerHandle {
        // Rooms are spread by id; a room never spans workers.
        let n = self.workers.len().max(1);
        let h = room
            .0
            .iter()
            .fold(0usize, |h, b| h.wrapping_mul(31) ^ *b as usize);
        &self.workers[h % n]
    }

    async fn signal_event(&mut self, e: Event) {
        match e {
            Event::ToSfu {
                room,
                from,
                leaf,
                signal,
            } => {
                let (token, offer) = match signal {
                    RtcSignal::JoinSfu { token, offer } => (Some(token), offer),
                    RtcSignal::MaxLayer { layer } => {
                        let _ = self.worker_for(&room).commands.send(Command::MaxLayer {
                            room,
                            device: from,
                            layer,
                        });
                        return;
                    }
                    RtcSignal::PauseLayers { .. } | RtcSignal::UseRoom { .. } => return,
                    // Candidates: as an ICE-lite server we learn addresses from checks.
                    RtcSignal::Candidate { .. } | RtcSignal::EndOfCandidates => return,
                    RtcSignal::Offer(offer) => (None, offer),
                    RtcSignal::Answer(_) => return,
                };
                match self.join(room, &from, leaf, token, offer).await {
                    Ok(answer) => {
                        let r = self
                            .client
                            .request(Request::SfuRelay {
                                room,
                                to: from,
                                signal: RtcSignal::Answer(answer),
                            })
                            .await;
                        if let Err(e) = r {
                            tracing::info!(error = %e, "relaying an answer failed");
                        }
                    }
                    Err(e) => tracing::info!(room = %room, error = %e, "join refused"),
                }
            }
            Event::SfuParticipantGone { room, device } => {
                let _ = self
                    .worker_for(&room)
                    .commands
                    .send(Command::Remove { room, device });
            }
            _ => {}
        }
    }

    async fn join(
        &self,
        room: RoomId,
        from: &DeviceAddr,
        leaf: u32,
        token: Option<SignedJoinToken>,
        offer: String,
    ) -> Result<String, Refused> {
        let token = token.ok_or(Refused::NoToken)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let token = join_token::verify(&token, &self.token_key, now)?;
        if token.room != room || &token.device != from || token.leaf != leaf {
            return Err(Refused::TokenMismatch);
        }
        let (reply, answer) = oneshot::channel();
        self.worker_for(&room)
            .commands
            .send(Command::Join {
                room,
                device: from.clone(),
                leaf,
                offer,
                reply,
            })
            .map_err(|_| Refused::WorkerGone)?;
        Ok(answer.await.map_err(|_| Refused::WorkerGone)??)
    }

    async fn core_event(&mut self, e: CoreEvent) {
        match e {
            CoreEvent::RemovalApplied { room, device } => {
                let r = self
                    .client
                    .request(Request::SfuRemovalApplied { room, device })
                    .await;
                if let Err(e) = r {
                    tracing::info!(error = %e, "acknowledging a removal failed (signaling resends)");
                }
            }
            CoreEvent::PauseLayers {
                room,
                device,
                paused,
            } => {
                let r = self
                    .client
                    .request(Request::SfuRelay {
                        room,
                        to: device,
                        signal: RtcSignal::PauseLayers { paused },
                    })
                    .await;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "telling a publisher to pause layers failed");
                }
            }
            CoreEvent::DominantSpeaker { room, device } => {
                let r = self
                    .client
                    .request(Request::SfuSpeaker { room, device })
                    .await;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "announcing a speaker failed");
                }
            }
            CoreEvent::Connected { room, device } => {
                tracing::debug!(room = %room, device = %device.handle, "media connected");
            }
            CoreEvent::ParticipantLost { room, device } => {
                tracing::info!(room = %room, device = %device.handle, "media connection lost");
            }
        }
    }
}

/// Serves `GET /metrics` (Prometheus text) until `stop`.
async fn serve_metrics(
    addr: SocketAddr,
    workers: Arc<Vec<WorkerHandle>>,
    mut stop: watch::Receiver<bool>,
) -> Result<SocketAddr, SfuError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SfuError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| SfuError::Bind { addr, source })?;
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = stop.changed() => break,
            };
            let Ok((mut stream, _)) = conn else { continue };
            let workers = workers.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf));
                let Ok(Ok(n)) = read.await else { return };
                let (status, body) = if buf[..n].starts_with(b"GET /metrics ") {
                    ("200 OK", crate::metrics::render(&workers))
                } else {
                    ("404 Not Found", String::from("not found\n"))
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}
