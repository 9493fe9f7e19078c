//! What the far end says about the media we send, read out of the `webrtc` crate's
//! interceptor chain: the send-side bandwidth estimate (transport-wide CC feedback into
//! Google Congestion Control), keyframe requests (PLI, FIR) and the loss it reports.
//!
//! The crate ends inbound RTCP inside its chain, so the application only learns these by
//! placing an interceptor of its own there: [`feedback_tap`] sits application-most, reads
//! every inbound RTCP packet and the estimate attached to feedback, and publishes them in
//! a [`SendFeedback`] the call loop polls. It observes only; nothing is added or dropped.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Instant,
};

use rtc::{
    interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket},
    rtcp::{
        payload_feedbacks::{
            full_intra_request::FullIntraRequest, picture_loss_indication::PictureLossIndication,
        },
        receiver_report::ReceiverReport,
        reception_report::ReceptionReport,
        sender_report::SenderReport,
    },
    sansio::Protocol,
    shared::error::Error,
};

/// Feedback about what we send, shared between the interceptor chain and the call.
#[derive(Debug, Default)]
pub struct SendFeedback {
    target_bps: AtomicU64,
    estimates: AtomicU64,
    keyframe_requests: AtomicU64,
    /// Latest RTCP fraction lost (0–255) the peer reported for any of our streams.
    fraction_lost: AtomicU32,
    audio_ssrc: u32,
    video_ssrc: u32,
}

impl SendFeedback {
    /// Feedback for the streams we send with these SSRCs.
    pub fn new(audio_ssrc: u32, video_ssrc: u32) -> Self {
        Self {
            audio_ssrc,
            video_ssrc,
            ..Self::default()
        }
    }

    /// The congestion controller's latest target, bits per second (`None` before the
    /// first transport-wide feedback moved it).
    pub fn target_bitrate(&self) -> Option<u64> {
        match self.target_bps.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v),
        }
    }

    /// How many times the estimate changed.
    pub fn estimate_updates(&self) -> u64 {
        self.estimates.load(Ordering::Relaxed)
    }

    /// How many keyframe requests (PLI or FIR) arrived for our video so far.
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests.load(Ordering::Relaxed)
    }

    /// The fraction of our packets the peer last reported lost, 0.0–1.0.
    pub fn remote_loss(&self) -> f32 {
        self.fraction_lost.load(Ordering::Relaxed) as f32 / 256.0
    }

    fn record_reports(&self, reports: &[ReceptionReport]) {
        for r in reports {
            if r.ssrc == self.audio_ssrc || r.ssrc == self.video_ssrc {
                self.fraction_lost
                    .store(u32::from(r.fraction_lost), Ordering::Relaxed);
            }
        }
    }

    /// Reads one inbound RTCP packet.
    fn observe(&self, p: &dyn rtc::rtcp::Packet) {
        let any = p.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            if pli.media_ssrc == self.video_ssrc {
                self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            }
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            if fir.fir.iter().any(|e| e.ssrc == self.video_ssrc) {
                self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            }
        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            self.record_reports(&rr.reports);
        } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
            self.record_reports(&sr.reports);
        }
    }
}

impl SendFeedback {
    /// Reads one inbound packet as it passes: the estimate the congestion controller
    /// attached, and any RTCP about our streams.
    fn read(&self, msg: &TaggedPacket) {
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
            msg.message.get(&Attribute::TargetBitrateChanged {
                bits_per_second: 0.0,
            })
        {
            // Saturating float-to-int cast; at least 1 so 0 keeps meaning "no estimate".
            let bps = (*bits_per_second as u64).max(1);
            self.target_bps.store(bps, Ordering::Relaxed);
            self.estimates.fetch_add(1, Ordering::Relaxed);
        }
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                self.observe(p.as_ref());
            }
        }
    }
}

/// The application-most interceptor: publishes inbound feedback into `shared`, passing
/// every packet on.
pub fn feedback_tap(shared: Arc<SendFeedback>) -> impl Interceptor {
    ReadHook::new(move |msg: &TaggedPacket| {
        shared.read(msg);
        true
    })
}

/// Test hook: drops a fixed fraction (0.0–1.0) of inbound RTP, evenly spread, before
/// anything in the chain sees it, as a lossy path would (this kernel has no netem).
/// Placed wire-most, so the peer's congestion controller hears about the loss through our
/// transport-wide feedback.
#[doc(hidden)]
pub fn inbound_loss(fraction: f64) -> impl Interceptor {
    let fraction = fraction.clamp(0.0, 1.0);
    let mut debt = 0.0;
    ReadHook::new(move |msg: &TaggedPacket| {
        if !matches!(msg.message.packet, Packet::Rtp(_)) {
            return true;
        }
        debt += fraction;
        if debt >= 1.0 {
            debt -= 1.0;
            return false;
        }
        true
    })
}

/// An interceptor that shows each inbound packet to `hook` and passes it on if the hook
/// says so; outbound packets pass untouched.
struct ReadHook<F> {
    hook: F,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl<F: FnMut(&TaggedPacket) -> bool + Send + Sync> ReadHook<F> {
    fn new(hook: F) -> Self {
        Self {
            hook,
            read: VecDeque::new(),
            write: VecDeque::new(),
        }
    }
}

impl<F: FnMut(&TaggedPacket) -> bool + Send + Sync> Protocol<TaggedPacket, TaggedPacket, ()>
    for ReadHook<F>
{
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if (self.hook)(&msg) {
            self.read.push_back(msg);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl<F: FnMut(&TaggedPacket) -> bool + Send + Sync> Interceptor for ReadHook<F> {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_count_only_our_video() {
        let f = SendFeedback::new(11, 21);
        f.observe(&PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: 21,
        });
        f.observe(&PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: 99,
        });
        f.observe(&FullIntraRequest {
            sender_ssrc: 0,
            media_ssrc: 0,
            fir: vec![rtc::rtcp::payload_feedbacks::full_intra_request::FirEntry {
                ssrc: 21,
                sequence_number: 1,
            }],
        });
        assert_eq!(f.keyframe_requests(), 2);
    }

    #[test]
    fn loss_comes_from_reports_about_our_streams() {
        let f = SendFeedback::new(11, 21);
        let report = |ssrc, fraction_lost| ReceptionReport {
            ssrc,
            fraction_lost,
            ..Default::default()
        };
        f.observe(&ReceiverReport {
            ssrc: 5,
            reports: vec![report(99, 200)],
            ..Default::default()
        });
        assert_eq!(f.remote_loss(), 0.0);
        f.observe(&ReceiverReport {
            ssrc: 5,
            reports: vec![report(11, 64)],
            ..Default::default()
        });
        assert!((f.remote_loss() - 0.25).abs() < 1e-6);
    }
}
