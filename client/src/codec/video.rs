//! H.264 with openh264 (built from source with nasm; ~3 ms per 720p frame here), Constrained
//! Baseline for real-time camera video. Chosen over libvpx VP8 because it builds from the
//! crate alone, is fast on this machine, and every WebRTC endpoint decodes it.

use openh264::{
    OpenH264API,
    decoder::Decoder,
    encoder::{BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, UsageType},
    formats::{YUVBuffer, YUVSource},
};
use sotto_media::synth::{VideoFrame, read_pattern_id};

use super::CodecError;

fn err(e: openh264::Error) -> CodecError {
    CodecError::Codec {
        codec: "openh264",
        message: e.to_string(),
    }
}

/// An encoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedVideo {
    /// Annex B bitstream of the frame.
    pub data: Vec<u8>,
    /// Whether it is a keyframe (IDR or I).
    pub keyframe: bool,
}

/// Encodes I420 frames for real-time calls.
pub struct VideoEncoder {
    enc: Encoder,
    /// openh264 initializes on the first frame; a rate set before then waits here.
    started: bool,
    pending_bitrate: Option<u32>,
}

impl VideoEncoder {
    /// An encoder at `fps` and `bitrate` bits per second, a keyframe every 2 s.
    pub fn new(fps: f32, bitrate: u32) -> Result<Self, CodecError> {
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .bitrate(BitRate::from_bps(bitrate))
            .max_frame_rate(FrameRate::from_hz(fps))
            .skip_frames(true)
            .intra_frame_period(IntraFramePeriod::from_num_frames((fps * 2.0) as u32));
        Ok(Self {
            enc: Encoder::with_api_config(OpenH264API::from_source(), config).map_err(err)?,
            started: false,
            pending_bitrate: None,
        })
    }

    /// Changes the target bitrate (following the bandwidth estimate) without restarting
    /// the encoder or forcing a keyframe. At most the bitrate it was created with.
    // The one unsafe block in the client: openh264's crate has no safe setter for this.
    #[allow(unsafe_code)]
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), CodecError> {
        if !self.started {
            self.pending_bitrate = Some(bps);
            return Ok(());
        }
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
            iBitrate: i32::try_from(bps).unwrap_or(i32::MAX),
        };
        // SAFETY: the encoder is initialized (a frame was encoded), and
        // ENCODER_OPTION_BITRATE reads exactly one SBitrateInfo through the pointer, which
        // lives for the call. The crate offers no safe setter for this option.
        let rc = unsafe {
            self.enc.raw_api().set_option(
                openh264_sys2::ENCODER_OPTION_BITRATE,
                std::ptr::addr_of_mut!(info).cast(),
            )
        };
        if rc != 0 {
            return Err(CodecError::Codec {
                codec: "openh264",
                message: format!("setting the bitrate to {bps} failed ({rc})"),
            });
        }
        Ok(())
    }

    /// The next frame will be a keyframe (after a PLI/FIR or an epoch change).
    pub fn request_keyframe(&mut self) {
        self.enc.force_intra_frame();
    }

    /// Encodes one frame; `None` if the encoder skipped it.
    pub fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, CodecError> {
        let yuv = YUVBuffer::from_vec(frame.i420.clone(), frame.width, frame.height);
        let bs = self.enc.encode(&yuv).map_err(err)?;
        let first = !self.started;
        self.started = true;
        let keyframe = matches!(bs.frame_type(), FrameType::IDR | FrameType::I);
        let data = bs.to_vec();
        let skipped =
            data.is_empty() || matches!(bs.frame_type(), FrameType::Skip | FrameType::Invalid);
        if first && let Some(bps) = self.pending_bitrate.take() {
            self.set_bitrate(bps)?;
        }
        if skipped {
            return Ok(None);
        }
        Ok(Some(EncodedVideo { data, keyframe }))
    }
}

/// Whether an Annex B bitstream starts a new decodable sequence (carries an IDR slice or
/// an SPS). Read from the decrypted frame, so a receiver's decision to resume decoding does
/// not rest on the unauthenticated frame-marking header.
pub fn is_keyframe(annexb: &[u8]) -> bool {
    annexb
        .windows(4)
        .any(|w| w[..3] == [0, 0, 1] && matches!(w[3] & 0x1f, 5 | 7))
}

/// A decoded picture, as much as a sink needs of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedPicture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// The synthetic pattern's frame id, if the picture carries one.
    pub pattern_id: Option<u64>,
}

/// Decodes H.264 frames.
pub struct VideoDecoder {
    dec: Decoder,
}

impl VideoDecoder {
    /// A decoder.
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            dec: Decoder::new().map_err(err)?,
        })
    }

    /// Decodes one frame's bitstream; `None` while the decoder waits for more (e.g. a
    /// keyframe after loss).
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<DecodedPicture>, CodecError> {
        let Some(pic) = self.dec.decode(data).map_err(err)? else {
            return Ok(None);
        };
        let (width, height) = pic.dimensions();
        let (stride, _, _) = pic.strides();
        Ok(Some(DecodedPicture {
            width,
            height,
            pattern_id: read_pattern_id(pic.y(), stride, width, height),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_media::synth::PatternSource;
    use std::time::Instant;

    #[test]
    fn pattern_ids_survive_h264() {
        let mut src = PatternSource::new(384, 240);
        let mut enc = VideoEncoder::new(15.0, 500_000).expect("encoder");
        let mut dec = VideoDecoder::new().expect("decoder");
        let t0 = Instant::now();
        let mut ids = Vec::new();
        let mut keyframes = 0;
        for i in 0..20 {
            if i == 10 {
                enc.request_keyframe();
            }
            let f = src.next_frame(t0);
            let Some(e) = enc.encode(&f).expect("encode") else {
                continue;
            };
            keyframes += usize::from(e.keyframe);
            if let Some(p) = dec.decode(&e.data).expect("decode") {
                assert_eq!((p.width, p.height), (384, 240));
                ids.push(p.pattern_id.expect("id readable"));
            }
        }
        assert_eq!(ids, (0..20).collect::<Vec<u64>>());
        assert!(keyframes >= 2, "first frame and the requested one");
    }

    #[test]
    fn keyframes_are_recognized_from_the_bitstream() {
        let mut src = PatternSource::new(384, 240);
        let mut enc = VideoEncoder::new(15.0, 500_000).expect("encoder");
        let t0 = Instant::now();
        let mut seen = Vec::new();
        for i in 0..12 {
            if i == 6 {
                enc.request_keyframe();
            }
            if let Some(e) = enc.encode(&src.next_frame(t0)).expect("encode") {
                assert_eq!(is_keyframe(&e.data), e.keyframe, "frame {i}");
                seen.push(e.keyframe);
            }
        }
        assert!(seen[0] && seen.iter().filter(|k| **k).count() >= 2);
        assert!(!is_keyframe(&[]) && !is_keyframe(&[0, 0, 1, 0x41, 9, 9]));
    }

    #[test]
    fn a_lower_bitrate_makes_smaller_frames_without_a_keyframe() {
        let mut src = PatternSource::new(640, 360);
        let mut enc = VideoEncoder::new(30.0, 2_000_000).expect("encoder");
        enc.set_bitrate(2_000_000)
            .expect("before the first frame: held");
        let t0 = Instant::now();
        let mut bytes = |enc: &mut VideoEncoder, n: usize| {
            let (mut total, mut keys) = (0usize, 0usize);
            for _ in 0..n {
                // Noise, so the picture needs more bits than either rate allows.
                let mut f = src.next_frame(t0);
                let mut x = f.id as u32 | 1;
                for p in &mut f.i420 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *p = (x >> 24) as u8;
                }
                if let Some(e) = enc.encode(&f).expect("encode") {
                    total += e.data.len();
                    keys += usize::from(e.keyframe);
                }
            }
            (total, keys)
        };
        // 50 frames in all: inside the 60-frame (2 s) keyframe period.
        let _ = bytes(&mut enc, 5);
        let (high, _) = bytes(&mut enc, 20);
        enc.set_bitrate(150_000).expect("set bitrate");
        let _ = bytes(&mut enc, 5);
        let (low, keys) = bytes(&mut enc, 20);
        assert_eq!(keys, 0, "a rate change must not force a keyframe");
        assert!(
            low * 3 < high,
            "150 kb/s frames ({low} B) vs 2 Mb/s ({high} B)"
        );
    }

    #[test]
    fn garbage_is_an_error_or_nothing_never_a_panic() {
        let mut dec = VideoDecoder::new().expect("decoder");
        for len in [0usize, 1, 4, 100, 5000] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 97 + 5) as u8).collect();
            let _ = dec.decode(&junk);
        }
    }
}
