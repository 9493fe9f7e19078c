//! Video for rooms: one capture feeding one encoder per simulcast layer, and one decoder
//! thread per remote sender.
//!
//! Sending: a thread captures (a camera, else the synthetic pattern) and encodes every
//! layer the SFU has not paused. Each layer is the capture scaled down (a camera frame)
//! or a pattern of that size with the same frame id (the synthetic source), so a
//! receiver's frame ids stay one sequence whichever layer the SFU forwards to it.
//!
//! Receiving: a sender's frames are decoded on its own thread (H.264 decoding is the
//! heaviest thing a receiver does, and senders are independent). Until a sender's next
//! keyframe, nothing of it is decoded after a loss or at the start; the caller asks for
//! keyframes, rate-limited.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use sotto_media::{
    payload::Stamp,
    synth::{PatternSource, VideoFrame},
};
use tokio::sync::mpsc;

use crate::{
    codec::{
        CodecError,
        video::{VideoDecoder, VideoEncoder, is_keyframe},
    },
    devices::{DeviceError, camera::Camera},
};

/// One simulcast layer: its size and target bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Target bits per second.
    pub bitrate: u32,
}

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSend {
    /// One layer, or three (low, medium, high) for simulcast.
    pub layers: Vec<Layer>,
    /// Frames per second.
    pub fps: u32,
    /// A camera, or `None` for the synthetic pattern.
    pub camera: Option<String>,
}

impl VideoSend {
    /// Three layers at the sizes the issue names: 320×180, 640×360, 1280×720.
    pub fn simulcast(camera: Option<String>) -> Self {
        Self {
            layers: vec![
                Layer {
                    width: 320,
                    height: 180,
                    bitrate: 150_000,
                },
                Layer {
                    width: 640,
                    height: 360,
                    bitrate: 500_000,
                },
                Layer {
                    width: 1280,
                    height: 720,
                    bitrate: 1_500_000,
                },
            ],
            fps: 30,
            camera,
        }
    }
}

/// An encoded frame of one layer.
#[derive(Debug)]
pub struct LayerFrame {
    /// The layer (0 = lowest).
    pub layer: u8,
    /// Annex B bitstream.
    pub data: Vec<u8>,
    /// Whether it is a keyframe.
    pub keyframe: bool,
    /// The captured frame's id.
    pub id: u64,
    /// When it was captured.
    pub captured: Instant,
}

#[derive(Default)]
struct SendControl {
    stop: AtomicBool,
    keyframe: AtomicBool,
    /// Bit `i` set: layer `i` is paused (nobody watches it).
    paused: AtomicU8,
    /// A new target for a single-layer sender's encoder (0: none pending).
    bitrate: AtomicU32,
}

/// The capture and encoder thread.
pub struct VideoSender {
    control: Arc<SendControl>,
    frames: mpsc::Receiver<LayerFrame>,
}

impl VideoSender {
    /// Opens the camera (if one is named) and starts capturing and encoding.
    pub fn start(cfg: &VideoSend) -> Result<Self, VideoError> {
        let top = *cfg.layers.last().ok_or(VideoError::NoLayers)?;
        let camera = match cfg.camera.as_deref() {
            Some(name) => Some(Camera::open(name, top.width, top.height, cfg.fps)?),
            None => None,
        };
        let mut encoders = Vec::new();
        for l in &cfg.layers {
            encoders.push(VideoEncoder::new(cfg.fps as f32, l.bitrate)?);
        }
        let control = Arc::new(SendControl::default());
        let (tx, frames) = mpsc::channel(16);
        let (c, layers, fps) = (control.clone(), cfg.layers.clone(), cfg.fps.max(1));
        std::thread::Builder::new()
            .name("sotto-room-video-encode".into())
            .spawn(move || encode_loop(&c, camera, &layers, encoders, fps, &tx))
            .map_err(|e| VideoError::Thread(e.to_string()))?;
        Ok(Self { control, frames })
    }

    /// The next encoded frame (`None` once the thread stopped).
    pub async fn next(&mut self) -> Option<LayerFrame> {
        self.frames.recv().await
    }

    /// Every layer's next frame is a keyframe.
    pub fn request_keyframe(&self) {
        self.control.keyframe.store(true, Ordering::Relaxed);
    }

    /// A new target bitrate for a single layer (a direct call following its bandwidth
    /// estimate); ignored with simulcast, whose layers keep their rates.
    pub fn set_bitrate(&self, bps: u32) {
        self.control.bitrate.store(bps.max(1), Ordering::Relaxed);
    }

    /// Stops encoding `layers` (the SFU forwards them to nobody); the others resume. The
    /// lowest layer is never paused: the SFU gives a subscriber a slot for a publisher
    /// only once its packets arrive, so a publisher silent in every layer would not be
    /// seen by someone who joins later.
    pub fn pause(&self, layers: &[u8]) {
        let bits = layers
            .iter()
            .filter(|l| **l > 0 && **l < 8)
            .fold(0u8, |b, l| b | (1 << l));
        self.control.paused.store(bits, Ordering::Relaxed);
    }
}

impl Drop for VideoSender {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Relaxed);
    }
}

fn encode_loop(
    control: &SendControl,
    camera: Option<Camera>,
    layers: &[Layer],
    mut encoders: Vec<VideoEncoder>,
    fps: u32,
    tx: &mpsc::Sender<LayerFrame>,
) {
    let mut patterns: Vec<PatternSource> = layers
        .iter()
        .map(|l| PatternSource::new(l.width, l.height))
        .collect();
    let period = Duration::from_secs_f64(1.0 / f64::from(fps));
    let mut next = Instant::now();
    let mut was_paused = 0u8;
    while !control.stop.load(Ordering::Relaxed) {
        let captured = Instant::now();
        let frames: Vec<VideoFrame> = match camera.as_ref() {
            Some(cam) => match cam.next_frame(Duration::from_millis(200)) {
                Some(f) => layers
                    .iter()
                    .map(|l| scaled(&f, l.width, l.height))
                    .collect(),
                None => continue,
            },
            None => patterns
                .iter_mut()
                .map(|p| p.next_frame(captured))
                .collect(),
        };
        let keyframe = control.keyframe.swap(false, Ordering::Relaxed);
        let paused = control.paused.load(Ordering::Relaxed);
        let bitrate = control.bitrate.swap(0, Ordering::Relaxed);
        if let ([enc], true) = (encoders.as_mut_slice(), bitrate > 0)
            && let Err(e) = enc.set_bitrate(bitrate)
        {
            tracing::warn!(error = %e, "the video encoder refused a bitrate");
        }
        for (i, (enc, frame)) in encoders.iter_mut().zip(&frames).enumerate() {
            if paused & (1 << i) != 0 {
                continue;
            }
            // A layer that resumes starts with a keyframe (its receivers need one).
            if keyframe || was_paused & (1 << i) != 0 {
                enc.request_keyframe();
            }
            match enc.encode(frame) {
                Ok(Some(e)) => {
                    let out = LayerFrame {
                        layer: i as u8,
                        data: e.data,
                        keyframe: e.keyframe,
                        id: frame.id,
                        captured: frame.captured,
                    };
                    if tx.blocking_send(out).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, layer = i, "video encode failed"),
            }
        }
        was_paused = paused;
        if camera.is_none() {
            next += period;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
}

/// `f` scaled to `width`×`height` (box filter over whole source pixels; the same size is
/// a copy). The frame keeps its id and capture time.
fn scaled(f: &VideoFrame, width: usize, height: usize) -> VideoFrame {
    let (width, height) = (width.min(f.width) & !1, height.min(f.height) & !1);
    if (width, height) == (f.width, f.height) {
        return f.clone();
    }
    let mut i420 = Vec::with_capacity(width * height * 3 / 2);
    let (sw, sh) = (f.width, f.height);
    let y = &f.i420[..sw * sh];
    let u = &f.i420[sw * sh..sw * sh + sw * sh / 4];
    let v = &f.i420[sw * sh + sw * sh / 4..];
    scale_plane(y, sw, sh, width, height, &mut i420);
    scale_plane(u, sw / 2, sh / 2, width / 2, height / 2, &mut i420);
    scale_plane(v, sw / 2, sh / 2, width / 2, height / 2, &mut i420);
    VideoFrame {
        id: f.id,
        captured: f.captured,
        width,
        height,
        i420,
    }
}

fn scale_plane(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize, out: &mut Vec<u8>) {
    for dy in 0..dh {
        let (y0, y1) = (dy * sh / dh, ((dy + 1) * sh / dh).max(dy * sh / dh + 1));
        for dx in 0..dw {
            let (x0, x1) = (dx * sw / dw, ((dx + 1) * sw / dw).max(dx * sw / dw + 1));
            let mut sum = 0u32;
            for yy in y0..y1.min(sh) {
                for xx in x0..x1.min(sw) {
                    sum += u32::from(src.get(yy * sw + xx).copied().unwrap_or(0));
                }
            }
            let n = ((y1.min(sh) - y0) * (x1.min(sw) - x0)).max(1) as u32;
            out.push((sum / n) as u8);
        }
    }
}

/// A decoded frame of one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedVideo {
    /// The sender's leaf.
    pub sender: u32,
    /// The synthetic pattern's frame id, if the picture carries one.
    pub pattern_id: Option<u64>,
    /// The capture stamp the sender put in, if any.
    pub stamp: Option<Stamp>,
    /// When it was decoded.
    pub decoded_at: Instant,
    /// Its size.
    pub width: usize,
}

/// Per remote sender: a decoder thread, and whether it waits for a keyframe.
struct Chain {
    tx: std::sync::mpsc::SyncSender<(Vec<u8>, Option<Stamp>)>,
    need_keyframe: bool,
}

/// Figures of one sender's video.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoStats {
    /// Frames handed to the decoder.
    pub queued: u64,
    /// Frames skipped while waiting for a keyframe.
    pub skipped: u64,
    /// Frames dropped because the decoder was behind.
    pub overrun: u64,
}

/// The decoders of every remote sender.
pub struct VideoReceiver {
    chains: BTreeMap<u32, Chain>,
    stats: BTreeMap<u32, VideoStats>,
    out_tx: mpsc::UnboundedSender<DecodedVideo>,
    /// Decoded frames, for the caller.
    pub decoded: mpsc::UnboundedReceiver<DecodedVideo>,
    failed: Arc<Mutex<Vec<u32>>>,
}

impl Default for VideoReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl VideoReceiver {
    /// No senders yet.
    pub fn new() -> Self {
        let (out_tx, decoded) = mpsc::unbounded_channel();
        Self {
            chains: BTreeMap::new(),
            stats: BTreeMap::new(),
            out_tx,
            decoded,
            failed: Arc::default(),
        }
    }

    /// A decrypted frame of `sender` (its H.264 and stamp). Returns whether a keyframe
    /// should be asked for (the sender's chain is waiting for one).
    pub fn push(&mut self, sender: u32, h264: &[u8], stamp: Option<Stamp>) -> bool {
        // A decoder that refused a frame waits for a keyframe again.
        if let Ok(mut f) = self.failed.lock() {
            for s in f.drain(..) {
                if let Some(c) = self.chains.get_mut(&s) {
                    c.need_keyframe = true;
                }
            }
        }
        if !self.ensure_chain(sender) {
            return false;
        }
        let Some(chain) = self.chains.get_mut(&sender) else {
            return false;
        };
        let stats = self.stats.entry(sender).or_default();
        if chain.need_keyframe && !is_keyframe(h264) {
            stats.skipped += 1;
            return true;
        }
        chain.need_keyframe = false;
        if chain.tx.try_send((h264.to_vec(), stamp)).is_err() {
            // The decoder is behind: drop, as loss would, and start again at a keyframe.
            stats.overrun += 1;
            chain.need_keyframe = true;
            return true;
        }
        stats.queued += 1;
        false
    }

    /// A frame of `sender` was lost on the way: what follows it cannot be decoded, so its
    /// chain waits for the next keyframe (and one should be asked for).
    pub fn lost(&mut self, sender: u32) {
        if let Some(c) = self.chains.get_mut(&sender) {
            c.need_keyframe = true;
        }
    }

    /// The sender left: its decoder thread ends.
    pub fn remove(&mut self, sender: u32) -> Option<VideoStats> {
        self.chains.remove(&sender);
        self.stats.remove(&sender)
    }

    /// Figures per sender.
    pub fn stats(&self) -> &BTreeMap<u32, VideoStats> {
        &self.stats
    }

    /// Starts `sender`'s decoder thread if it has none; false if it cannot start.
    fn ensure_chain(&mut self, sender: u32) -> bool {
        if !self.chains.contains_key(&sender) {
            let mut decoder = match VideoDecoder::new() {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "no video decoder");
                    return false;
                }
            };
            let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Option<Stamp>)>(32);
            let (out, failed) = (self.out_tx.clone(), self.failed.clone());
            let spawned = std::thread::Builder::new()
                .name("sotto-room-video-decode".into())
                .spawn(move || {
                    while let Ok((h264, stamp)) = rx.recv() {
                        match decoder.decode(&h264) {
                            Ok(Some(pic)) => {
                                let d = DecodedVideo {
                                    sender,
                                    pattern_id: pic.pattern_id,
                                    stamp,
                                    decoded_at: Instant::now(),
                                    width: pic.width,
                                };
                                if out.send(d).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {}
                            Err(_) => {
                                if let Ok(mut f) = failed.lock() {
                                    f.push(sender);
                                }
                            }
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no video decoder thread");
                return false;
            }
            self.chains.insert(
                sender,
                Chain {
                    tx,
                    need_keyframe: true,
                },
            );
        }
        true
    }
}

/// Why video could not start.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// No layer to send.
    #[error("no video layer to send: this is a bug, please report it")]
    NoLayers,
    /// The camera.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The codec.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A thread could not start.
    #[error("cannot start a video thread ({0}): check the system's limits on threads")]
    Thread(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_halves_a_frame_and_keeps_its_planes_in_proportion() {
        let f = PatternSource::new(640, 360).next_frame(Instant::now());
        let s = scaled(&f, 320, 180);
        assert_eq!((s.width, s.height, s.id), (320, 180, f.id));
        assert_eq!(s.i420.len(), 320 * 180 * 3 / 2);
        // A box filter of a uniform area is that area's value.
        assert_eq!(s.i420[320 * 180], f.i420[640 * 360]);
    }

    #[test]
    fn a_frame_before_the_first_keyframe_is_skipped_and_asks_for_one() {
        let mut r = VideoReceiver::new();
        let delta = [0u8, 0, 0, 1, 0x41, 0x9a];
        assert!(r.push(3, &delta, None), "asks for a keyframe");
        assert_eq!(r.stats()[&3].skipped, 1);
        assert_eq!(r.stats()[&3].queued, 0);
    }
}
