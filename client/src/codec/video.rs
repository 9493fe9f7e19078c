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
        })
    }

    /// The next frame will be a keyframe (after a PLI/FIR or an epoch change).
    pub fn request_keyframe(&mut self) {
        self.enc.force_intra_frame();
    }

    /// Encodes one frame; `None` if the encoder skipped it.
    pub fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, CodecError> {
        let yuv = YUVBuffer::from_vec(frame.i420.clone(), frame.width, frame.height);
        let bs = self.enc.encode(&yuv).map_err(err)?;
        let keyframe = matches!(bs.frame_type(), FrameType::IDR | FrameType::I);
        let data = bs.to_vec();
        if data.is_empty() || matches!(bs.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        Ok(Some(EncodedVideo { data, keyframe }))
    }
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
    fn garbage_is_an_error_or_nothing_never_a_panic() {
        let mut dec = VideoDecoder::new().expect("decoder");
        for len in [0usize, 1, 4, 100, 5000] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 97 + 5) as u8).collect();
            let _ = dec.decode(&junk);
        }
    }
}
