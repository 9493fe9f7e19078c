//! The thin tokio + quinn shell around [`Core`]: accepts connections, frames the one
//! bidirectional stream of each, feeds the core, writes what it says, runs its timers,
//! serves Prometheus metrics, and shuts down gracefully.
//!
//! The core runs on one task that owns it; connections talk to it over channels. A
//! session whose outgoing queue fills (a client that stops reading) is closed rather than
//! allowed to hold memory.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ed25519_dalek::SigningKey;
use futures_util::StreamExt;
use quinn::crypto::rustls::QuicServerConfig;
use sotto_proto::{ClientMsg, ErrorBody, ErrorCode, ServerMsg};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_util::codec::FramedRead;

use crate::{
    core::{Core, CoreConfig, Output, ServiceKeys, SessionId, metrics::Metrics},
    storage::{Storage, sqlite::SqliteStorage},
    tls::{self, CertSource},
};

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Data directory: database, development certificate, token key.
    pub data_dir: PathBuf,
    /// TLS certificate.
    pub cert: CertSource,
    /// Where to serve Prometheus metrics over HTTP, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// The core's settings.
    pub core: CoreConfig,
}

impl ServerConfig {
    /// Defaults for `listen` and `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            cert: CertSource::Dev,
            metrics_listen: None,
            idle_timeout: Duration::from_secs(30),
            core: CoreConfig::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory or a file in it.
    #[error("data directory {path}: {source}")]
    Data {
        /// Which path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The database.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// TLS setup.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Binding a socket.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// A started server.
pub struct Running {
    /// The QUIC address actually bound.
    pub addr: SocketAddr,
    /// The metrics address actually bound.
    pub metrics_addr: Option<SocketAddr>,
    /// SHA-256 of the certificate: what clients pin.
    pub fingerprint: String,
    /// The counters.
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, tells every session goodbye, and waits for the server to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

enum CoreInput {
    Connect(Writer, oneshot::Sender<Option<SessionId>>),
    Msg(SessionId, ClientMsg),
    Malformed(SessionId, ErrorBody),
    Disconnect(SessionId),
}

enum WriterCmd {
    /// A framed message, counted in its session's queued bytes until written.
    Frame(Vec<u8>),
    Close,
}

/// Messages queued for one session before it counts as not reading.
const SESSION_QUEUE: usize = 1024;
/// Bytes queued for one session before it counts as not reading: frames reach 1 MiB (a
/// big room's Welcome), so a count alone would let one slow reader hold a gigabyte.
const SESSION_QUEUE_BYTES: usize = 8 << 20;

/// The core's side of one session's writer.
struct Writer {
    tx: mpsc::Sender<WriterCmd>,
    /// Bytes framed for it and not yet written.
    queued: Arc<AtomicUsize>,
}

impl Writer {
    /// Queues `msg`; false when the session is not keeping up (by count or by bytes).
    fn send(&self, msg: &ServerMsg) -> bool {
        let Ok(frame) = sotto_proto::frame::encode_frame(msg) else {
            tracing::error!("outgoing message too large to frame");
            return true;
        };
        let len = frame.len();
        if self.queued.load(Ordering::Relaxed) + len > SESSION_QUEUE_BYTES {
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.try_send(WriterCmd::Frame(frame)).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Starts the server: opens the database, loads or creates the certificate and token key,
/// binds, and runs until [`Running::shutdown`].
pub async fn start(cfg: ServerConfig) -> Result<Running, StartError> {
    start_with(cfg, |s| s).await
}

/// Like [`start`], with the storage passed through `wrap` first: the seam tests use to
/// play a server that lies (substitutes KeyPackages or Welcomes), so clients can be shown
/// to catch it.
pub async fn start_with(
    cfg: ServerConfig,
    wrap: impl FnOnce(Box<dyn Storage>) -> Box<dyn Storage>,
) -> Result<Running, StartError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StartError::Data {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let storage = wrap(Box::new(SqliteStorage::open(
        &cfg.data_dir.join("sotto.db"),
    )?));
    let keys = ServiceKeys {
        token: load_key(&cfg.data_dir, "token-key")?,
        external_sender: load_key(&cfg.data_dir, "external-sender-key")?,
    };
    let identity = tls::load(&cfg.cert, &cfg.data_dir)?;
    let fingerprint = identity.fingerprint.clone();
    let rustls_cfg = tls::server_config(identity)?;
    let quic = QuicServerConfig::try_from(rustls_cfg)
        .map_err(|e| tls::TlsError::Invalid(e.to_string()))?;
    let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .keep_alive_interval(Some(cfg.idle_timeout / 3))
        .max_idle_timeout(Some(
            cfg.idle_timeout
                .try_into()
                .map_err(|_| tls::TlsError::Invalid("idle timeout too large".into()))?,
        ));
    server_cfg.transport_config(Arc::new(transport));
    let endpoint =
        quinn::Endpoint::server(server_cfg, cfg.listen).map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = endpoint.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;

    let metrics = Arc::new(Metrics::default());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let metrics_addr = match cfg.metrics_listen {
        Some(a) => Some(serve_metrics(a, metrics.clone(), shutdown_rx.clone()).await?),
        None => None,
    };
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let core = Core::new(
        cfg.core.clone(),
        storage,
        keys,
        Box::new(|b: &mut [u8]| {
            if getrandom::fill(b).is_err() {
                // The OS RNG failing is unrecoverable for a server that mints nonces.
                std::process::abort();
            }
        }),
        metrics.clone(),
        Instant::now(),
        now_unix,
    );
    let (core_tx, core_rx) = mpsc::channel(4096);
    let core_task = tokio::spawn(run_core(core, core_rx));
    let task = tokio::spawn(accept_loop(endpoint, core_tx, shutdown_rx, core_task));
    tracing::info!(%addr, fingerprint = %fingerprint, "signaling listening");
    Ok(Running {
        addr,
        metrics_addr,
        fingerprint,
        metrics,
        shutdown,
        task,
    })
}

/// A 32-byte Ed25519 seed from `dir/name`, made on first start.
fn load_key(dir: &Path, name: &str) -> Result<SigningKey, StartError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let seed: [u8; 32] = bytes.try_into().map_err(|_| {
                tls::TlsError::Invalid(format!("{} is not a 32-byte key", path.display()))
            })?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| StartError::Data {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            tls::write_private(&path, &seed)?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(source) => Err(StartError::Data { path, source }),
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    core_tx: mpsc::Sender<CoreInput>,
    mut shutdown: watch::Receiver<bool>,
    core_task: JoinHandle<()>,
) {
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let core_tx = core_tx.clone();
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(conn) => connection(conn, core_tx).await,
                        Err(e) => tracing::debug!(error = %e, "handshake failed"),
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!("shutting down: closing connections");
    endpoint.close(0u32.into(), b"server shutting down");
    drop(core_tx);
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    core_task.abort();
}

async fn connection(conn: quinn::Connection, core_tx: mpsc::Sender<CoreInput>) {
    let Ok(Ok((mut send, recv))) =
        tokio::time::timeout(Duration::from_secs(10), conn.accept_bi()).await
    else {
        conn.close(1u32.into(), b"no stream opened");
        return;
    };
    let (writer_tx, mut writer_rx) = mpsc::channel::<WriterCmd>(SESSION_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let writer_side = Writer {
        tx: writer_tx,
        queued: queued.clone(),
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    if core_tx
        .send(CoreInput::Connect(writer_side, reply_tx))
        .await
        .is_err()
    {
        return;
    }
    let Ok(Some(sid)) = reply_rx.await else {
        let bye = ServerMsg::Goodbye(ErrorBody::new(
            ErrorCode::LimitReached {
                what: "sessions".into(),
            },
            "the server is full",
        ));
        if let Ok(frame) = sotto_proto::frame::encode_frame(&bye) {
            let _ = send.write_all(&frame).await;
        }
        let _ = send.finish();
        conn.close(2u32.into(), b"server full");
        return;
    };
    let writer_conn = conn.clone();
    let writer = tokio::spawn(async move {
        while let Some(cmd) = writer_rx.recv().await {
            match cmd {
                WriterCmd::Frame(frame) => {
                    let written = send.write_all(&frame).await;
                    queued.fetch_sub(frame.len(), Ordering::Relaxed);
                    if written.is_err() {
                        break;
                    }
                }
                WriterCmd::Close => {
                    let _ = send.finish();
                    // Let the goodbye reach the peer before the connection goes.
                    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                    writer_conn.close(0u32.into(), b"closed by server");
                    break;
                }
            }
        }
    });
    let mut frames = FramedRead::new(recv, sotto_proto::codec());
    while let Some(frame) = frames.next().await {
        let input = match frame {
            Ok(body) => match sotto_proto::decode::<ClientMsg>(&body) {
                Ok(msg) => CoreInput::Msg(sid, msg),
                Err(e) => {
                    CoreInput::Malformed(sid, ErrorBody::new(ErrorCode::Malformed, e.to_string()))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => CoreInput::Malformed(
                sid,
                ErrorBody::new(
                    ErrorCode::TooLarge,
                    format!("frames are at most {} bytes", sotto_proto::MAX_FRAME_LEN),
                ),
            ),
            Err(_) => break,
        };
        let stop = matches!(input, CoreInput::Malformed(..));
        if core_tx.send(input).await.is_err() || stop {
            break;
        }
    }
    let _ = core_tx.send(CoreInput::Disconnect(sid)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    conn.close(0u32.into(), b"bye");
}

async fn run_core(mut core: Core, mut rx: mpsc::Receiver<CoreInput>) {
    let mut writers: HashMap<SessionId, Writer> = HashMap::new();
    loop {
        let deadline = core.poll_timeout();
        let input = tokio::select! {
            input = rx.recv() => match input { Some(i) => Some(i), None => break },
            () = sleep_until(deadline) => None,
        };
        let now = Instant::now();
        match input {
            Some(CoreInput::Connect(writer, reply)) => {
                let sid = core.connect(now);
                if let Some(sid) = sid {
                    writers.insert(sid, writer);
                }
                let _ = reply.send(sid);
            }
            Some(CoreInput::Msg(sid, msg)) => core.handle(sid, msg, now),
            Some(CoreInput::Malformed(sid, e)) => core.malformed(sid, e),
            Some(CoreInput::Disconnect(sid)) => {
                core.disconnect(sid, now);
                writers.remove(&sid);
            }
            None => core.handle_timeout(now),
        }
        while let Some(out) = core.poll_output() {
            match out {
                Output::Send(sid, msg) => {
                    let Some(w) = writers.get(&sid) else { continue };
                    if !w.send(&msg) {
                        tracing::warn!(session = sid, "session not reading; closing it");
                        let _ = w.tx.try_send(WriterCmd::Close);
                        writers.remove(&sid);
                        core.disconnect(sid, now);
                    }
                }
                Output::Close(sid) => {
                    if let Some(w) = writers.remove(&sid) {
                        let _ = w.tx.try_send(WriterCmd::Close);
                    }
                    core.disconnect(sid, now);
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Serves `GET /metrics` in the Prometheus text format.
async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = shutdown.changed() => break,
            };
            let Ok((mut stream, _)) = conn else { continue };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let mut n = 0;
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while n < buf.len() {
                        match stream.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let ok = buf[..n].starts_with(b"GET /metrics ");
                let (status, body) = if ok {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "only /metrics here\n".to_owned())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use sotto_proto::{DeviceAddr, Handle, MlsKind, Stored};

    use super::*;

    fn big(len: usize) -> ServerMsg {
        ServerMsg::Delivery {
            seq: 1,
            item: Stored::Mls {
                group: vec![1; 16],
                kind: MlsKind::Welcome,
                epoch: 0,
                from: DeviceAddr {
                    handle: Handle::parse("@alice").expect("handle"),
                    device: 1,
                },
                data: vec![7; len],
            },
        }
    }

    #[test]
    fn a_session_that_does_not_read_is_cut_off_by_bytes_long_before_the_count() {
        let (tx, mut rx) = mpsc::channel(SESSION_QUEUE);
        let w = Writer {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
        };
        // Half-megabyte messages, nobody writing them out: the sixteenth would pass
        // 8 MiB, far below 1024 messages.
        let mut accepted = 0;
        while w.send(&big(512 << 10)) {
            accepted += 1;
            assert!(accepted < 100, "never cut off");
        }
        assert_eq!(accepted, 15);
        assert!(!w.send(&big(900 << 10)), "a bigger one neither");
        // Once the writer has written them out, the session has room again.
        while let Ok(WriterCmd::Frame(f)) = rx.try_recv() {
            w.queued.fetch_sub(f.len(), Ordering::Relaxed);
        }
        assert!(w.send(&big(512 << 10)));
    }
}
