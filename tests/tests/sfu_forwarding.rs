//! Six load participants in a room through the real SFU (real signaling, real MLS keys,
//! real WebRTC on loopback), each publishing audio and three-layer simulcast video: each
//! receives at least 99 % of every other's audio and video frames (at whichever layer the
//! SFU picked for it), decrypts each under the sender the key says, and sees continuous
//! sequence numbers and non-decreasing timestamps on every slot.

use sotto_tests::sfu::{metric, run_for, start_sfu};
use std::time::Duration;

const PARTICIPANTS: usize = 6;
const SECONDS: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_participants_receive_everyone_else_through_the_sfu() {
    let h = start_sfu(2).await;
    let (_room, participants) = h
        .room_with(PARTICIPANTS, (8, 8), |_| true, |_| true, |_| None)
        .await;
    let done = run_for(participants, Duration::from_secs(SECONDS)).await;

    let sent: Vec<(u32, (u64, u64))> = done.iter().map(|(p, s)| (p.joined.leaf, s.sent)).collect();
    for (p, stats) in &done {
        let me = p.joined.leaf;
        assert_eq!(stats.undecryptable, 0, "leaf {me}: undecryptable frames");
        assert_eq!(
            stats.mislabelled, 0,
            "leaf {me}: a frame claimed another sender"
        );
        for (other, (audio, video)) in sent.iter().filter(|(l, _)| *l != me) {
            for (video_track, total) in [(false, *audio), (true, *video)] {
                let kind = if video_track { "video" } else { "audio" };
                let t = stats
                    .tracks
                    .get(&(*other, video_track))
                    .unwrap_or_else(|| panic!("leaf {me} got no {kind} from leaf {other}"));
                // Media starts within a second (connections come up one by one, and a
                // video slot starts at a keyframe)...
                let first = t.first_id.unwrap_or(u64::MAX);
                let second = if video_track { 30 } else { 50 };
                assert!(
                    first <= second,
                    "leaf {me}: {kind} of {other} began at frame {first}"
                );
                // ...and from then on at least 99 % arrives. A loss among the last frames
                // before everyone went quiet cannot be repaired (no later packet tells the
                // receiver it is missing), so the last quarter second is not counted.
                let tail = if video_track { 8 } else { 12 };
                let expected = total.saturating_sub(first).saturating_sub(tail);

                let counted = first..total.saturating_sub(tail);
                let missing: Vec<u64> = counted.clone().filter(|i| !t.ids.contains(i)).collect();
                let got = counted.filter(|i| t.ids.contains(i)).count() as u64;
                assert!(
                    got as f64 >= 0.99 * expected as f64,
                    "leaf {me} got {} of {total} {kind} frames from leaf {other} (from frame \
                     {first}); missing {missing:?}; layers (layer, on a keyframe) {:?}",
                    got,
                    t.switches.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>()
                );
                assert_eq!(t.out_of_order, 0, "in order");
            }
        }
        assert!(
            !stats.tracks.keys().any(|(l, _)| *l == me),
            "leaf {me} got its own media back"
        );
        // In sequence order (a repaired packet arrives late): no number missing, and the
        // timestamp never goes back.
        for (mid, packets) in &stats.slot_packets {
            let mut packets = packets.clone();
            packets.sort_unstable();
            packets.dedup_by_key(|p| p.0);
            for w in packets.windows(2) {
                assert_eq!(w[1].0, w[0].0 + 1, "leaf {me} slot {mid}: sequence gap");
                assert!(
                    w[1].1.wrapping_sub(w[0].1) < u32::MAX / 2,
                    "leaf {me} slot {mid}: timestamp went back"
                );
            }
        }
        assert!(
            sent.iter().all(|(_, (a, v))| *a > 100 && *v > 50),
            "media was sent"
        );
    }
    let page = h.metrics().await;

    assert_eq!(
        metric(&page, "sotto_sfu_participants"),
        Some(PARTICIPANTS as f64)
    );
    assert!(metric(&page, "sotto_sfu_rtp_forwarded_total").unwrap_or(0.0) > 1000.0);
    assert!(metric(&page, "sotto_sfu_forwarding_latency_seconds_count").unwrap_or(0.0) > 1000.0);
    h.sfu.shutdown().await;
}
