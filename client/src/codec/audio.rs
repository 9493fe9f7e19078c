//! Opus at 48 kHz mono, VoIP mode, in-band FEC and DTX on (DESIGN §4.3).

use opus::{Application, Bitrate, Channels, Decoder, Encoder};

use super::{CodecError, opus_err};
use sotto_media::synth::SAMPLE_RATE;

/// Opus packets of at most this many bytes (far above what VoIP bitrates produce).
const MAX_PACKET: usize = 1275;
/// Default bitrate; follows the send-side estimate through [`AudioEncoder::set_bitrate`].
pub const DEFAULT_BITRATE: i32 = 32_000;

/// Frames quieter than this (dBov below full scale) are not speech, whatever the
/// encoder's VAD thinks (RFC 6464 levels run from 0, loudest, to 127, silence).
const SPEECH_MAX_DBOV: f64 = 55.0;

/// One encoded frame.
#[derive(Debug)]
pub struct EncodedAudio<'a> {
    /// The Opus packet.
    pub data: &'a [u8],
    /// The encoder's speech decision for the frame, for the RFC 6464 voice-activity bit:
    /// Opus's own VAD (a frame it coded as DTX comfort noise is not speech) gated by the
    /// frame's energy (a frame quieter than -55 dBov is not speech either).
    pub voice: bool,
}

/// Encodes 10 or 20 ms frames of 48 kHz mono PCM.
pub struct AudioEncoder {
    enc: Encoder,
    out: Vec<u8>,
}

impl AudioEncoder {
    /// VoIP mode, FEC on (tuned for 10 % loss), DTX on, [`DEFAULT_BITRATE`].
    pub fn new() -> Result<Self, CodecError> {
        let mut enc =
            Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip).map_err(opus_err)?;
        enc.set_inband_fec(true).map_err(opus_err)?;
        enc.set_packet_loss_perc(10).map_err(opus_err)?;
        enc.set_dtx(true).map_err(opus_err)?;
        enc.set_bitrate(Bitrate::Bits(DEFAULT_BITRATE))
            .map_err(opus_err)?;
        Ok(Self {
            enc,
            out: vec![0; MAX_PACKET],
        })
    }

    /// The encoder's algorithmic delay (its look-ahead): part of mouth-to-ear latency that
    /// no capture stamp sees, since a stamp is taken when the frame is ready.
    pub fn lookahead(&mut self) -> Result<std::time::Duration, CodecError> {
        let samples = self.enc.get_lookahead().map_err(opus_err)?;
        let samples = u64::try_from(samples).unwrap_or(0);
        Ok(std::time::Duration::from_micros(
            samples * 1_000_000 / u64::from(SAMPLE_RATE),
        ))
    }

    /// Sets the target bitrate (6 to 128 kb/s), e.g. from the bandwidth estimate.
    pub fn set_bitrate(&mut self, bps: i32) -> Result<(), CodecError> {
        self.enc
            .set_bitrate(Bitrate::Bits(bps.clamp(6_000, 128_000)))
            .map_err(opus_err)
    }

    /// Encodes one frame. `None` when DTX says this frame need not be sent (silence).
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<EncodedAudio<'_>>, CodecError> {
        let n = self.enc.encode(pcm, &mut self.out).map_err(opus_err)?;
        let in_dtx = self.enc.get_in_dtx().unwrap_or(false);
        // Opus DTX signals "nothing to send" with packets of one or two bytes.
        if n <= 2 && in_dtx {
            return Ok(None);
        }
        let dbov = sotto_wire::rtp_ext::AudioLevel::of_samples(pcm, false).level;
        let voice = !in_dtx && f64::from(dbov) < SPEECH_MAX_DBOV;
        Ok(Some(EncodedAudio {
            data: &self.out[..n],
            voice,
        }))
    }
}

/// Decodes Opus, recovering lost frames from FEC or concealing them.
pub struct AudioDecoder {
    dec: Decoder,
    frame_samples: usize,
    /// Frames recovered from the next packet's FEC data.
    pub fec_recovered: u64,
    /// Frames synthesized by packet-loss concealment.
    pub concealed: u64,
}

impl AudioDecoder {
    /// A decoder producing frames of `frame_samples` (480 for 10 ms, 960 for 20 ms).
    pub fn new(frame_samples: usize) -> Result<Self, CodecError> {
        Ok(Self {
            dec: Decoder::new(SAMPLE_RATE, Channels::Mono).map_err(opus_err)?,
            frame_samples,
            fec_recovered: 0,
            concealed: 0,
        })
    }

    /// The frame length of `packet` in samples (from its TOC byte), if it is a plausible
    /// Opus packet of 2.5 to 60 ms. The peer chooses its framing; the receiver follows.
    pub fn samples_in(&self, packet: &[u8]) -> Option<usize> {
        match self.dec.get_nb_samples(packet) {
            Ok(n) if (120..=2880).contains(&n) => Some(n),
            _ => None,
        }
    }

    /// Sets the length of concealed frames (the peer's frame length).
    pub fn set_frame_samples(&mut self, n: usize) {
        self.frame_samples = n;
    }

    /// Decodes a packet into `out` (replaced).
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        out.resize(self.frame_samples * 6, 0);
        let n = self.dec.decode(packet, out, false).map_err(opus_err)?;
        out.truncate(n);
        Ok(())
    }

    /// Produces audio for a lost frame: from the next packet's in-band FEC when it is
    /// here, else by concealment.
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut Vec<i16>) -> Result<(), CodecError> {
        out.resize(self.frame_samples, 0);
        let n = match next {
            Some(p) if !p.is_empty() => {
                self.fec_recovered += 1;
                self.dec.decode(p, out, true).map_err(opus_err)?
            }
            _ => {
                self.concealed += 1;
                self.dec.decode(&[], out, false).map_err(opus_err)?
            }
        };
        out.truncate(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_media::synth::{AudioSignal, AudioSource, estimate_frequency};
    use std::time::Instant;

    #[test]
    fn tone_survives_encode_decode_and_loss_is_recovered() {
        let mut src = AudioSource::new(AudioSignal::Tone { hz: 440.0 }, 20);
        let mut enc = AudioEncoder::new().expect("encoder");
        let mut dec = AudioDecoder::new(960).expect("decoder");
        let t0 = Instant::now();
        let packets: Vec<Vec<u8>> = (0..50)
            .map(|_| {
                let f = src.next_frame(t0);
                let e = enc
                    .encode(&f.samples)
                    .expect("encode")
                    .expect("a tone is not silence");
                assert!(e.voice, "a loud tone counts as speech");
                e.data.to_vec()
            })
            .collect();
        let mut pcm = Vec::new();
        let mut all = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if i == 30 {
                dec.conceal(packets.get(31).map(Vec::as_slice), &mut pcm)
                    .expect("fec");
            } else {
                dec.decode(p, &mut pcm).expect("decode");
            }
            assert_eq!(pcm.len(), 960);
            if i >= 10 {
                all.extend_from_slice(&pcm);
            }
        }
        let hz = estimate_frequency(&all).expect("tone");
        assert!((hz - 440.0).abs() < 5.0, "decoded tone at {hz} Hz");
        assert_eq!(dec.fec_recovered, 1);
        dec.conceal(None, &mut pcm).expect("plc");
        assert_eq!((pcm.len(), dec.concealed), (960, 1));
    }

    #[test]
    fn silence_is_not_sent_with_dtx() {
        let mut enc = AudioEncoder::new().expect("encoder");
        let silent = vec![0i16; 960];
        let sent = (0..100)
            .filter(|_| enc.encode(&silent).expect("encode").is_some())
            .count();
        assert!(
            sent < 30,
            "DTX suppresses most silent frames, sent {sent}/100"
        );
    }

    #[test]
    fn quiet_frames_that_are_still_sent_say_no_voice() {
        // Whatever DTX still sends of silence (the frames before it engages, comfort noise
        // after) carries the voice-activity bit cleared, so an SFU's speaker detection can
        // tell who is talking.
        let mut enc = AudioEncoder::new().expect("encoder");
        let silent = vec![0i16; 960];
        let mut sent = 0;
        for _ in 0..100 {
            if let Some(e) = enc.encode(&silent).expect("encode") {
                sent += 1;
                assert!(!e.voice, "a silent frame is not speech");
            }
        }
        assert!(sent > 0, "some silent frames are still sent");
        let mut src = AudioSource::new(AudioSignal::Speech, 20);
        let t0 = Instant::now();
        let voiced = (0..100)
            .filter_map(|_| {
                enc.encode(&src.next_frame(t0).samples)
                    .expect("encode")
                    .map(|e| e.voice)
            })
            .filter(|v| *v)
            .count();
        assert!(
            voiced > 20,
            "synthetic speech is mostly voice, {voiced}/100"
        );
    }

    #[test]
    fn garbage_packets_are_errors_not_panics() {
        let mut dec = AudioDecoder::new(960).expect("decoder");
        let mut pcm = Vec::new();
        for len in [1usize, 3, 50, 400] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = dec.decode(&junk, &mut pcm);
        }
    }
}
