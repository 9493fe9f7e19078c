//! The client side of the signaling protocol: a QUIC connection to the service with the
//! server's certificate pinned by fingerprint, typed request/response, and a stream of
//! events and stored deliveries.
//!
//! ```text
//! let client = SignalingClient::connect(addr, &pin).await?;
//! client.login(&handle, &identity_key, device).await?;
//! client.request(Request::Invite { .. }).await?;
//! while let Some(incoming) = client.next().await { .. }
//! ```

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ed25519_dalek::{Signer, SigningKey};
use futures_util::StreamExt;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use sha2::{Digest, Sha256};
use sotto_proto::{
    ClientMsg, DeviceId, ErrorBody, Event, Handle, PROTOCOL_VERSION, Request, Response, ServerMsg,
    Stored, login_transcript,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

/// How long a request waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The server certificate a client accepts: SHA-256 of the DER, from the server's first
/// start output (`fingerprint <hex>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin(pub [u8; 32]);

impl std::str::FromStr for Pin {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.trim().trim_start_matches("sha256:").replace(':', "");
        let bytes = hex::decode(&hex).map_err(|_| ClientError::BadPin(s.to_owned()))?;
        Ok(Pin(bytes
            .try_into()
            .map_err(|_| ClientError::BadPin(s.to_owned()))?))
    }
}

/// Why a signaling operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The fingerprint is not 64 hex digits.
    #[error("not a SHA-256 certificate fingerprint: {0:?}")]
    BadPin(String),
    /// Connecting failed (unreachable, wrong certificate, handshake refused).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The server answered with an error.
    #[error("server refused: {0}")]
    Server(#[from] ErrorBody),
    /// The server said goodbye or the connection dropped.
    #[error("connection closed: {0}")]
    Closed(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server sent something that does not fit the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// Something the server pushed.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// An event.
    Event(Event),
    /// A stored message; call [`SignalingClient::ack`] once it is processed.
    Delivery {
        /// Its sequence number.
        seq: u64,
        /// The message.
        item: Stored,
    },
    /// The server closed the session, saying why.
    Goodbye(ErrorBody),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Response, ErrorBody>>>>>;

/// A connection to the signaling service.
pub struct SignalingClient {
    conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    out: mpsc::Sender<ClientMsg>,
    pending: Pending,
    incoming: mpsc::Receiver<Incoming>,
    next_id: AtomicU64,
}

impl SignalingClient {
    /// Connects to `addr`, accepting only the certificate whose fingerprint is `pin`, and
    /// exchanges the version handshake.
    pub async fn connect(addr: SocketAddr, pin: &Pin) -> Result<Self, ClientError> {
        let (endpoint, conn) = connect_quic(addr, pin).await?;
        Self::handshake(endpoint, conn, addr).await
    }

    /// Like [`Self::connect`], over an existing client endpoint (one UDP socket can carry
    /// many connections; the bench opens thousands this way).
    pub async fn connect_on(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        pin: &Pin,
    ) -> Result<Self, ClientError> {
        let fail = |reason: String| ClientError::Connect { addr, reason };
        let conn = endpoint
            .connect_with(client_config(pin)?, addr, "sotto-signaling")
            .map_err(|e| fail(e.to_string()))?
            .await
            .map_err(|e| fail(e.to_string()))?;
        Self::handshake(endpoint.clone(), conn, addr).await
    }

    async fn handshake(
        endpoint: quinn::Endpoint,
        conn: quinn::Connection,
        addr: SocketAddr,
    ) -> Result<Self, ClientError> {
        let fail = |reason: String| ClientError::Connect { addr, reason };

        let (mut send, recv) = conn.open_bi().await.map_err(|e| fail(e.to_string()))?;

        let (out, mut out_rx) = mpsc::channel::<ClientMsg>(256);
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                let Ok(frame) = sotto_proto::frame::encode_frame(&msg) else {
                    continue;
                };
                if send.write_all(&frame).await.is_err() {
                    break;
                }
            }
            let _ = send.finish();
        });

        let pending: Pending = Arc::default();
        let (in_tx, incoming) = mpsc::channel(1024);
        let (hello_tx, hello_rx) = oneshot::channel();
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            let mut hello_tx = Some(hello_tx);
            let mut frames = FramedRead::new(recv, sotto_proto::codec());
            while let Some(Ok(body)) = frames.next().await {
                let Ok(msg) = sotto_proto::decode::<ServerMsg>(&body) else {
                    tracing::warn!("undecodable message from the server");
                    break;
                };
                match msg {
                    ServerMsg::Hello { version, .. } => {
                        if let Some(tx) = hello_tx.take() {
                            let _ = tx.send(Ok(version));
                        }
                    }
                    ServerMsg::Response { id, result } => {
                        let waiter = reader_pending.lock().ok().and_then(|mut p| p.remove(&id));
                        if let Some(w) = waiter {
                            let _ = w.send(result);
                        }
                    }
                    ServerMsg::Event(e) => {
                        let _ = in_tx.send(Incoming::Event(e)).await;
                    }
                    ServerMsg::Delivery { seq, item } => {
                        let _ = in_tx.send(Incoming::Delivery { seq, item }).await;
                    }
                    ServerMsg::Goodbye(e) => {
                        if let Some(tx) = hello_tx.take() {
                            let _ = tx.send(Err(e.clone()));
                        }
                        let _ = in_tx.send(Incoming::Goodbye(e)).await;
                        break;
                    }
                }
            }
            // Whoever still waits learns the connection is gone.
            if let Ok(mut p) = reader_pending.lock() {
                p.clear();
            }
        });

        out.send(ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            agent: format!("sotto-client/{}", env!("CARGO_PKG_VERSION")),
        })
        .await
        .map_err(|_| fail("connection closed during handshake".into()))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, hello_rx).await {
            Ok(Ok(Ok(PROTOCOL_VERSION))) => {}
            Ok(Ok(Ok(v))) => return Err(fail(format!("server speaks protocol version {v}"))),
            Ok(Ok(Err(e))) => return Err(ClientError::Server(e)),
            Ok(Err(_)) => return Err(fail("connection closed during handshake".into())),
            Err(_) => return Err(ClientError::Timeout(REQUEST_TIMEOUT)),
        }
        Ok(Self {
            conn,
            _endpoint: endpoint,
            out,
            pending,
            incoming,
            next_id: AtomicU64::new(1),
        })
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&self, body: Request) -> Result<Response, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| ClientError::Closed("client state poisoned".into()))?
            .insert(id, tx);
        self.out
            .send(ClientMsg::Request { id, body })
            .await
            .map_err(|_| ClientError::Closed("connection closed".into()))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(Ok(r))) => Ok(r),
            Ok(Ok(Err(e))) => Err(ClientError::Server(e)),
            Ok(Err(_)) => Err(ClientError::Closed(self.close_reason())),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                Err(ClientError::Timeout(REQUEST_TIMEOUT))
            }
        }
    }

    /// Creates the account `handle` for `identity` and logs this device in.
    pub async fn register(
        &self,
        handle: &Handle,
        identity: &SigningKey,
        device: DeviceId,
    ) -> Result<Response, ClientError> {
        let challenge = self
            .request(Request::Register {
                handle: handle.clone(),
                identity_key: identity.verifying_key().to_bytes().to_vec(),
                device,
            })
            .await?;
        self.prove(challenge, handle, identity, device).await
    }

    /// Logs this device in to `handle` by signing the server's challenge.
    pub async fn login(
        &self,
        handle: &Handle,
        identity: &SigningKey,
        device: DeviceId,
    ) -> Result<Response, ClientError> {
        let challenge = self
            .request(Request::Login {
                handle: handle.clone(),
                device,
            })
            .await?;
        self.prove(challenge, handle, identity, device).await
    }

    async fn prove(
        &self,
        challenge: Response,
        handle: &Handle,
        identity: &SigningKey,
        device: DeviceId,
    ) -> Result<Response, ClientError> {
        let Response::Challenge { nonce } = challenge else {
            return Err(ClientError::Protocol(format!(
                "expected a challenge, got {challenge:?}"
            )));
        };
        let signature = identity.sign(&login_transcript(&nonce, handle, device));
        self.request(Request::Prove {
            signature: signature.to_bytes().to_vec(),
        })
        .await
    }

    /// The next event or delivery; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// The next arrival if one is already here, without waiting.
    pub fn try_next(&mut self) -> Option<Incoming> {
        self.incoming.try_recv().ok()
    }

    /// Like [`Self::next`] with a time limit.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Incoming> {
        tokio::time::timeout(limit, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// Acknowledges stored deliveries up to and including `seq`.
    pub async fn ack(&self, seq: u64) -> Result<(), ClientError> {
        self.out
            .send(ClientMsg::Ack { seq })
            .await
            .map_err(|_| ClientError::Closed("connection closed".into()))
    }

    /// Sends raw bytes as one frame body: for tests of the server's input handling.
    #[doc(hidden)]
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }

    fn close_reason(&self) -> String {
        self.conn
            .close_reason()
            .map_or_else(|| "connection closed".to_owned(), |r| r.to_string())
    }
}

/// The QUIC client configuration for a pinned server: TLS 1.3, ALPN `sotto/1`, keep-alives.
pub fn client_config(pin: &Pin) -> Result<quinn::ClientConfig, ClientError> {
    let bad = |e: String| ClientError::Protocol(format!("TLS configuration: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert {
            pin: pin.clone(),
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![sotto_proto::ALPN.to_vec()];
    let quic =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| bad(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Opens a QUIC connection to a pinned server (no protocol handshake yet).
pub async fn connect_quic(
    addr: SocketAddr,
    pin: &Pin,
) -> Result<(quinn::Endpoint, quinn::Connection), ClientError> {
    let fail = |reason: String| ClientError::Connect { addr, reason };
    let bind = if addr.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| fail(e.to_string()))?;
    endpoint.set_default_client_config(client_config(pin)?);
    let conn = endpoint
        .connect(addr, "sotto-signaling")
        .map_err(|e| fail(e.to_string()))?
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok((endpoint, conn))
}

/// Accepts exactly the pinned certificate; still checks the handshake signature with it.

#[derive(Debug)]
struct PinnedCert {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin.0 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
