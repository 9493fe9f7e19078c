//! Load participants: light clients that join rooms through the real signaling service,
//! speak real WebRTC (str0m) to the SFU and send real SFrame frames under real MLS keys,
//! with pre-made payloads instead of codecs, so a run measures the SFU. Used by the SFU's
//! tests and by the bench's SFU scenarios.

pub mod peer;
pub mod room;

use anyhow::{Context, bail};
use peer::{MediaPeer, PeerStats};
use room::Joined;
use sotto_client::signaling::Incoming;
use sotto_proto::{Event, Request, RoomId, RtcSignal};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

/// A participant with its media connected to the room's SFU.
pub struct Participant {
    /// Its membership (signaling connection, MLS state).
    pub joined: Joined,
    /// Its media.
    pub peer: MediaPeer,
    /// Datagrams it received, readable while it runs.
    pub datagrams: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Active-speaker announcements it got from signaling, with when.
    pub speakers: std::sync::Arc<std::sync::Mutex<Vec<(Instant, sotto_proto::DeviceAddr)>>>,
    socket: UdpSocket,
}

/// Slots a participant asks for by default: every other member of a small room.
pub const DEFAULT_SLOTS: (usize, usize) = (8, 9);

impl Participant {
    /// Offers media to the room's SFU (through signaling, with the join token) and takes
    /// its answer; the connection comes up once [`Self::run`] runs.
    pub async fn connect(
        joined: Joined,
        room: RoomId,
        slots: (usize, usize),
        send_video: bool,
    ) -> anyhow::Result<Self> {
        Self::connect_with(joined, room, slots, send_video, false, None).await
    }

    /// [`Self::connect`], publishing three simulcast layers when `simulcast`, and reaching
    /// the SFU through `via` (an impairment proxy in front of its media port) if given.
    pub async fn connect_with(
        mut joined: Joined,
        room: RoomId,
        slots: (usize, usize),
        send_video: bool,
        simulcast: bool,
        via: Option<(SocketAddr, SocketAddr)>,
    ) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        // A keyframe burst from several senders at once must not overflow the default
        // (≈ 200 KB) buffer while this task waits for a core.
        // (socket2, not quinn-udp's state: that would switch on GRO, and this plain
        // `recv_from` loop takes one datagram at a time.)
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(1 << 20);
        let local = socket.local_addr()?;
        let keys = std::mem::replace(
            &mut joined.keys,
            sotto_media::keys::CallKeys::new(
                joined.leaf,
                joined
                    .group
                    .epoch_keys(&joined.mls, &sotto_media::keys::KeyConfig::default())?,
            )?,
        );
        let (mut peer, offer, pending) = MediaPeer::offer_with(
            local,
            joined.leaf,
            keys,
            slots,
            simulcast,
            Instant::now().into_std(),
        );
        peer.send_video = send_video;
        joined
            .client
            .request(Request::RelayToSfu {
                room,
                signal: RtcSignal::JoinSfu {
                    token: joined.token.clone(),
                    offer,
                },
            })
            .await?;
        let answer = loop {
            let next = tokio::time::timeout(Duration::from_secs(20), joined.client.next())
                .await
                .context("waiting for the SFU's answer")?;
            match next {
                Some(Incoming::Event(Event::FromSfu {
                    signal: RtcSignal::Answer(a),
                    ..
                })) => break a,
                Some(Incoming::Delivery { seq, .. }) => joined.client.ack(seq).await?,
                Some(_) => {}
                None => bail!("signaling closed before the SFU answered"),
            }
        };
        // Through a proxy: reach the SFU's candidate at the proxy's address instead, as a
        // NAT or a relay in the path would make it.
        let answer = match via {
            Some((sfu, proxy)) => answer.replace(
                &format!("{} {}", sfu.ip(), sfu.port()),
                &format!("{} {}", proxy.ip(), proxy.port()),
            ),
            None => answer,
        };
        peer.accept_answer(pending, &answer)
            .map_err(|e| anyhow::anyhow!("the SFU's answer: {e}"))?;
        Ok(Participant {
            joined,
            peer,
            datagrams: Default::default(),
            speakers: Default::default(),
            socket,
        })
    }

    /// Asks the SFU for at most `layer` of anyone's simulcast video.
    pub async fn max_layer(&self, room: RoomId, layer: u8) -> anyhow::Result<()> {
        self.joined
            .client
            .request(Request::RelayToSfu {
                room,
                signal: RtcSignal::MaxLayer { layer },
            })
            .await?;
        Ok(())
    }

    /// From now on, sends under `victim`'s leaf and keys (a test of sender binding).
    pub fn impersonate(&mut self, victim: u32) -> anyhow::Result<()> {
        let epoch = self
            .joined
            .group
            .epoch_keys(&self.joined.mls, &sotto_media::keys::KeyConfig::default())?;
        self.peer
            .impersonate(sotto_media::keys::CallKeys::new(victim, epoch)?, victim);
        Ok(())
    }

    /// Runs the media until `stop` turns true; returns what it counted.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> (Self, PeerStats) {
        let mut buf = vec![0u8; 2048];
        let mut signaling = true;
        loop {
            self.flush().await;
            let wake = Instant::from_std(self.peer.poll_timeout());
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.datagrams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.peer.handle_datagram(Instant::now().into_std(), from, &buf[..n]);
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.peer.handle_timeout(Instant::now().into_std());
                }
                _ = stop.changed() => break,
                incoming = self.joined.client.next(), if signaling => match incoming {
                    Some(Incoming::Delivery { seq, .. }) => {
                        let _ = self.joined.client.ack(seq).await;
                    }
                    Some(Incoming::Event(Event::FromSfu {
                        signal: RtcSignal::PauseLayers { paused },
                        ..
                    })) => self.peer.set_paused(&paused),
                    Some(Incoming::Event(Event::ActiveSpeaker { device, .. })) => {
                        if let Ok(mut s) = self.speakers.lock() {
                            s.push((Instant::now(), device));
                        }
                    }
                    Some(_) => {}
                    None => signaling = false,
                },
            }
        }
        let stats = std::mem::take(&mut self.peer.stats);
        (self, stats)
    }

    async fn flush(&mut self) {
        let out: Vec<_> = self.peer.take_transmits().collect();
        for (_, to, bytes) in out {
            let _ = self.socket.send_to(&bytes, to).await;
        }
    }
}
