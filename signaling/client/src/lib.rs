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
    ClientMsg, DeviceId, ErrorBody, ErrorCode, Event, Handle, PROTOCOL_VERSION, Request, Response,
    ServerMsg, Stored, login_transcript,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

/// How long a request waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How the client authenticates the signaling server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTrust {
    /// Exactly the certificate whose DER has this SHA-256 (the development certificate:
    /// the server prints `fingerprint <hex>` on its first start). Parse one from that hex.
    Pinned([u8; 32]),
    /// A certificate for `name` that chains to one of this machine's root certificates
    /// (the system store; `SSL_CERT_FILE` / `SSL_CERT_DIR` replace it, as for OpenSSL).
    SystemRoots {
        /// The name the certificate must carry: the server's DNS name (or an IP address,
        /// if the certificate names one).
        name: String,
    },
}

/// What most callers hold: a pinned fingerprint (`"<hex>".parse::<Pin>()`), or the system's
/// roots for a named server ([`ServerTrust::system_roots`]).
pub type Pin = ServerTrust;

impl ServerTrust {
    /// Trust the system's root certificates for a server called `name` (its DNS name).
    pub fn system_roots(name: &str) -> Result<Self, ClientError> {
        ServerName::try_from(name.to_owned())
            .map_err(|_| ClientError::BadServerName(name.to_owned()))?;
        Ok(Self::SystemRoots {
            name: name.to_owned(),
        })
    }

    /// The name the TLS handshake asks for.
    fn server_name(&self) -> &str {
        match self {
            Self::Pinned(_) => "sotto-signaling",
            Self::SystemRoots { name } => name,
        }
    }
}

impl std::str::FromStr for ServerTrust {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.trim().trim_start_matches("sha256:").replace(':', "");
        let bytes = hex::decode(&hex).map_err(|_| ClientError::BadPin(s.to_owned()))?;
        Ok(Self::Pinned(
            bytes
                .try_into()
                .map_err(|_| ClientError::BadPin(s.to_owned()))?,
        ))
    }
}

/// How long connecting (QUIC and TLS handshakes) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a signaling operation failed. The texts are written for people: what happened and
/// what to do, in one sentence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The fingerprint is not 64 hex digits.
    #[error(
        "\"{0}\" is not a certificate fingerprint: give the 64 hex digits the server printed after `fingerprint`"
    )]
    BadPin(String),
    /// The server name cannot be checked against a certificate.
    #[error(
        "\"{0}\" is not a server name a certificate can be checked against: give the server's DNS name, or pin its certificate's fingerprint"
    )]
    BadServerName(String),
    /// Connecting failed (unreachable, handshake refused).
    #[error(
        "cannot reach the signaling server at {addr} ({reason}): check the address and that the server is running"
    )]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The server's certificate is not the pinned one.
    #[error(
        "the certificate of the server at {addr} is not the one you pinned: someone may be intercepting, or the server got a new certificate, so check its fingerprint with the server's operator"
    )]
    WrongCertificate {
        /// Where.
        addr: SocketAddr,
    },
    /// The server's certificate does not chain to a trusted root, or is not for its name.
    #[error(
        "the certificate of {name} cannot be trusted because {reason}: someone may be intercepting, or the server is misconfigured, so tell its operator (a development server is reached by pinning its fingerprint)"
    )]
    UntrustedCertificate {
        /// The server's name.
        name: String,
        /// What is wrong with the certificate, in words.
        reason: String,
    },
    /// No root certificates to check a server's chain against.
    #[error(
        "this machine has no trusted root certificates ({0}): install them (Debian: ca-certificates), or pin the server's fingerprint"
    )]
    NoRootCertificates(String),
    /// The server answered with an error.
    #[error("{}", refusal(.0))]
    Server(#[from] ErrorBody),
    /// The server said goodbye or the connection dropped.
    #[error(
        "the connection to the signaling server was lost ({0}): check the network and try again"
    )]
    Closed(String),
    /// No answer in time.
    #[error(
        "the signaling server did not answer within {} s: check the network and try again",
        .0.as_secs()
    )]
    Timeout(Duration),
    /// The server sent something that does not fit the protocol.
    #[error(
        "the signaling server sent something this client does not understand ({0}): update sotto or the server, whichever is older"
    )]
    Protocol(String),
}

/// A server's refusal in words: its message, and what to do about it.
fn refusal(e: &ErrorBody) -> String {
    let m = &e.message;
    match &e.code {
        ErrorCode::UnsupportedVersion { supported } => format!(
            "the server speaks protocol version {supported} and this client speaks {PROTOCOL_VERSION}: update sotto or the server, whichever is older"
        ),
        ErrorCode::HandleTaken => format!("{m}: pick another handle"),
        ErrorCode::BadSignature => format!(
            "the server did not accept this profile's identity key ({m}): the account belongs to another profile, so use that one or create another handle"
        ),
        ErrorCode::InvalidHandle => format!("{m}: a handle is @ and 3 to 32 of a-z, 0-9 and _"),
        ErrorCode::NotFound => format!("{m}: check the spelling"),
        ErrorCode::Busy => format!("{m}: try again later"),
        ErrorCode::Offline => format!("{m}: try again when they are online"),
        ErrorCode::Forbidden => format!("the server does not allow that ({m})"),
        ErrorCode::AlreadyAnswered => m.clone(),
        ErrorCode::RateLimited { retry_after_ms } => format!(
            "the server is limiting how fast this device may ask ({m}): wait {} s and try again",
            retry_after_ms.div_ceil(1000).max(1)
        ),
        ErrorCode::LimitReached { what } if what == "sfu" => format!(
            "{m}: the server has no SFU running, which group calls and relayed calls need; ask its operator to start sotto-sfu (a one-to-one call without --relay goes peer to peer)"
        ),
        ErrorCode::LimitReached { .. } => {
            format!("the server's limit is reached ({m}): try again later, or ask its operator")
        }
        ErrorCode::Unauthenticated | ErrorCode::StaleEpoch { .. } => {
            format!("the server refused the request ({m}): try again")
        }
        ErrorCode::Internal => {
            format!("the server failed and changed nothing ({m}): try again later")
        }
        ErrorCode::QueueFull => m.clone(),
        ErrorCode::InvalidKeyPackage
        | ErrorCode::InvalidCommit
        | ErrorCode::NotAMember
        | ErrorCode::GroupIdNotYours
        | ErrorCode::ClaimMismatch
        | ErrorCode::UnknownKeyPackage => format!(
            "the server refused this device's encryption state ({m}): update sotto, and if it happens again report it with the log"
        ),
        // Malformed, TooLarge, InvalidState, and codes newer than this client.
        _ => format!(
            "the server refused the request ({m}): try again, and if it happens again report it with the log"
        ),
    }
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
    incoming: mpsc::Receiver<Incoming>,
    requester: Requester,
}

/// A cloneable handle that sends requests on a [`SignalingClient`]'s connection, so a task
/// can wait for an answer while another reads events (a room's shell spawns each request
/// its session core asks for and feeds the answer back).
#[derive(Clone)]
pub struct Requester {
    out: mpsc::Sender<ClientMsg>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    conn: quinn::Connection,
}

impl Requester {
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
            Ok(Err(_)) => Err(ClientError::Closed(close_reason(&self.conn))),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                Err(ClientError::Timeout(REQUEST_TIMEOUT))
            }
        }
    }
}

/// Why `conn` closed, in words.
fn close_reason(conn: &quinn::Connection) -> String {
    conn.close_reason()
        .map_or_else(|| "connection closed".to_owned(), |r| r.to_string())
}

impl SignalingClient {
    /// Connects to `addr`, accepting only the server `pin` trusts (a pinned fingerprint, or
    /// a chain to the system's roots for the server's name), and exchanges the version
    /// handshake.
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
        let (config, rejected) = checked_client_config(pin)?;
        let conn = handshake_quic(
            endpoint.connect_with(config, addr, pin.server_name()),
            addr,
            pin,
            &rejected,
        )
        .await?;
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
            requester: Requester {
                out: out.clone(),
                pending,
                next_id: Arc::new(AtomicU64::new(1)),
                conn: conn.clone(),
            },
            conn,
            _endpoint: endpoint,
            out,
            incoming,
        })
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&self, body: Request) -> Result<Response, ClientError> {
        self.requester.request(body).await
    }

    /// A handle for sending requests from other tasks.
    pub fn requester(&self) -> Requester {
        self.requester.clone()
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
            return Err(ClientError::Protocol(
                "the server answered a login without a challenge".into(),
            ));
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

    /// Acknowledges the stored delivery `seq` (one message: acknowledgements are not
    /// cumulative).
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
}

/// The QUIC client configuration for a server `pin` trusts: TLS 1.3, ALPN `sotto/1`,
/// keep-alives.
pub fn client_config(pin: &Pin) -> Result<quinn::ClientConfig, ClientError> {
    Ok(checked_client_config(pin)?.0)
}

/// What the certificate verifier refused, if it refused: read after a failed handshake to
/// say *why* in words (quinn only reports a TLS alert number).
type Rejected = Arc<Mutex<Option<rustls::CertificateError>>>;

fn checked_client_config(pin: &Pin) -> Result<(quinn::ClientConfig, Rejected), ClientError> {
    let bad = |e: String| ClientError::Protocol(format!("TLS configuration: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let check = match pin {
        ServerTrust::Pinned(fingerprint) => Check::Pinned(*fingerprint),
        ServerTrust::SystemRoots { .. } => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (_, _) = roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(ClientError::NoRootCertificates(why));
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| bad(e.to_string()))?;
            Check::Roots(verifier)
        }
    };
    let rejected = Rejected::default();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            check,
            provider,
            rejected: rejected.clone(),
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![sotto_proto::ALPN.to_vec()];
    let quic =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| bad(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    cfg.transport_config(Arc::new(transport));
    Ok((cfg, rejected))
}

/// Opens a QUIC connection to a server `pin` trusts (no protocol handshake yet).
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
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| fail(e.to_string()))?;
    let (config, rejected) = checked_client_config(pin)?;
    let conn = handshake_quic(
        endpoint.connect_with(config, addr, pin.server_name()),
        addr,
        pin,
        &rejected,
    )
    .await?;
    Ok((endpoint, conn))
}

/// Waits for the QUIC handshake (at most [`CONNECT_TIMEOUT`]) and says in words why it
/// failed: a certificate the verifier refused, or the network.
async fn handshake_quic(
    connecting: Result<quinn::Connecting, quinn::ConnectError>,
    addr: SocketAddr,
    pin: &Pin,
    rejected: &Rejected,
) -> Result<quinn::Connection, ClientError> {
    let fail = |reason: String| ClientError::Connect { addr, reason };
    let connecting = connecting.map_err(|e| fail(e.to_string()))?;
    let error = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => return Ok(conn),
        Ok(Err(e)) => e,
        Err(_) => {
            return Err(fail(format!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };
    let refused = rejected.lock().ok().and_then(|r| r.clone());
    Err(match (refused, pin) {
        (Some(_), ServerTrust::Pinned(_)) => ClientError::WrongCertificate { addr },
        (Some(why), ServerTrust::SystemRoots { name }) => ClientError::UntrustedCertificate {
            name: name.clone(),
            reason: certificate_problem(&why),
        },
        (None, _) => fail(match error {
            quinn::ConnectionError::TimedOut => "no answer".to_owned(),
            e => e.to_string(),
        }),
    })
}

/// A refused certificate, in words.
fn certificate_problem(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => "it is not signed by an authority this machine trusts".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => "it is for another name".into(),
        C::Expired | C::ExpiredContext { .. } => "it has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "it is not valid yet (check this machine's clock)".into()
        }
        C::Revoked => "it was revoked".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => "it is not meant for servers".into(),
        C::BadSignature => "its signature does not verify".into(),
        _ => "it is malformed or uses something this client does not support".into(),
    }
}

/// The pinned fingerprint or the system's roots.
#[derive(Debug)]
enum Check {
    Pinned([u8; 32]),
    Roots(Arc<rustls::client::WebPkiServerVerifier>),
}

/// Checks the server's certificate as [`ServerTrust`] says, remembers why it refused one,
/// and checks the handshake signature with the certificate either way.
#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
    rejected: Rejected,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = match &self.check {
            Check::Pinned(pin) => {
                let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                if got == *pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ApplicationVerificationFailure,
                    ))
                }
            }
            Check::Roots(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
        };
        if let Err(rustls::Error::InvalidCertificate(why)) = &result
            && let Ok(mut r) = self.rejected.lock()
        {
            *r = Some(why.clone());
        }
        result
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
