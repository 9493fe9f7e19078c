//! 5 % random loss on one subscriber's path (the impairment proxy between it and the SFU):
//! at least 90 % of the video packets the proxy dropped once the subscriber could receive
//! reach it anyway, repaired by NACK and retransmission from the SFU's per-stream cache,
//! and every video frame from then on decrypts. Counted against the proxy's own drop log
//! (SRTP leaves the RTP header readable: SSRC and sequence number).

use sotto_impair::{Conditions, Direction, Proxy, ProxyConfig};
use sotto_tests::sfu::{run_for, start_sfu};
use std::collections::HashSet;
use std::time::Duration;

/// (SSRC, sequence number) of an RTP datagram's header; `None` for RTCP, STUN, DTLS.
fn rtp_id(head: &[u8]) -> Option<(u32, u16)> {
    let [b0, b1, s0, s1, _, _, _, _, x0, x1, x2, x3, ..] = *head else {
        return None;
    };
    let rtcp = (200..=207).contains(&b1);
    (b0 & 0xc0 == 0x80 && !rtcp).then(|| {
        (
            u32::from_be_bytes([x0, x1, x2, x3]),
            u16::from_be_bytes([s0, s1]),
        )
    })
}

/// How long the participants run.
const RUN: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_packets_are_repaired() {
    let h = start_sfu(1).await;
    let loss: Conditions = "loss=5%".parse().expect("conditions");
    let proxy = Proxy::start(
        ProxyConfig::new(h.sfu.media_addrs[0])
            .with_down(loss)
            .with_seed(9),
    )
    .await
    .expect("proxy");
    let via = proxy.addr();
    let (_room, mut participants) = h
        .room_with(
            2,
            (2, 2),
            |_| false,
            |i| i == 0,
            |i| (i == 1).then_some(via),
        )
        .await;
    // Three packets a frame: ~90 video packets a second.
    participants[0].peer.video_bytes = 3000;
    let run_start = std::time::Instant::now();
    let done = run_for(participants, RUN).await;
    let (_, sub) = &done[1];
    // Before its DTLS handshake finished (itself slowed by the loss), the subscriber could
    // not read media at all, so nothing from then is repairable.
    let up = sub.connected_at.expect("the subscriber connected");
    let video_ssrcs: HashSet<u32> = sub.video_packets.iter().map(|(s, _)| *s).collect();
    let dropped: Vec<(u32, u16)> = proxy
        .drops(Direction::Down)
        .iter()
        .filter(|d| d.at > up + Duration::from_millis(50))
        .filter_map(|d| rtp_id(&d.head))
        .filter(|(ssrc, _)| video_ssrcs.contains(ssrc))
        .collect();
    // About 34 drops are expected (5 % of ~90 packets a second for ~7.5 s); a slow run
    // sends fewer packets (19 drops were seen once on a loaded machine). Ten is enough for
    // the 90 % check below to mean something: a broken repair fails it either way.
    assert!(
        dropped.len() >= 10,
        "the proxy dropped {} video packets",
        dropped.len()
    );
    let repaired = dropped
        .iter()
        .filter(|id| sub.video_packets.contains(id))
        .count();
    assert!(
        repaired as f64 >= 0.9 * dropped.len() as f64,
        "{repaired} of {} dropped video packets were repaired",
        dropped.len()
    );
    // And the frames made it: every video frame from the first one it got, but the last
    // few still in flight.
    let t = sub
        .tracks
        .get(&(done[0].0.joined.leaf, true))
        .expect("video arrived");
    let span = t.last_id.unwrap_or(0) - t.first_id.unwrap_or(0) + 1;
    assert!(t.frames + 2 >= span, "{} of {span} video frames", t.frames);
    // From the subscriber's connection (DTLS under loss can take a few seconds) to the
    // end of the run, at the publisher's 30 frames a second.
    let since_up = (run_start + RUN)
        .saturating_duration_since(up)
        .as_secs_f64();
    assert!(
        span as f64 >= 0.8 * 30.0 * since_up && since_up >= 2.0,
        "video for most of the {since_up:.1} s after the subscriber connected ({span} frames)"
    );
    let page = h.metrics().await;
    let nacks = sotto_tests::sfu::metric(&page, "sotto_sfu_nacks_received_total").unwrap_or(0.0);
    assert!(nacks > 0.0, "the SFU counted the subscriber's NACKs");
    let _ = proxy.stop().await;
    h.sfu.shutdown().await;
}
