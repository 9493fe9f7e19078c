//! Any member can derive every member's SFrame keys, so a member could send frames under
//! another's KID. The SFU binds each connection to the leaf in its join token: frames
//! under another sender index are dropped and counted, and everyone else's media is
//! untouched.

use sotto_tests::sfu::{metric, run_for, start_sfu};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_under_another_senders_index_are_dropped() {
    let h = start_sfu(1).await;
    let (_room, mut participants) = h.room(4, (4, 4)).await;
    let victim = participants[0].joined.leaf;
    let forger = participants[3].joined.leaf;
    participants[3]
        .impersonate(victim)
        .expect("derive the victim's keys");
    let done = run_for(participants, Duration::from_secs(3)).await;
    let sent: Vec<(u32, (u64, u64))> = done.iter().map(|(p, s)| (p.joined.leaf, s.sent)).collect();
    let (_, forged) = sent
        .iter()
        .find(|(l, _)| *l == forger)
        .copied()
        .expect("forger");
    let (_, real) = sent
        .iter()
        .find(|(l, _)| *l == victim)
        .copied()
        .expect("victim");
    for (p, stats) in &done {
        let me = p.joined.leaf;
        assert_eq!(stats.undecryptable, 0, "leaf {me}");
        assert_eq!(stats.mislabelled, 0, "leaf {me}");
        // No more arrives under the victim's leaf than the victim itself sent.
        if me != victim {
            let audio = stats.tracks.get(&(victim, false)).map_or(0, |t| t.frames);
            let video = stats.tracks.get(&(victim, true)).map_or(0, |t| t.frames);
            assert!(
                audio <= real.0 && video <= real.1,
                "leaf {me}: forged frames got through"
            );
            assert!(
                audio + 3 >= real.0 && video + 3 >= real.1,
                "leaf {me}: the victim's own frames are lost"
            );
            assert_eq!(
                stats
                    .tracks
                    .get(&(victim, false))
                    .map_or(0, |t| t.out_of_order),
                0
            );
        }
        // Everyone honest is heard in full.
        for (other, (audio, video)) in sent.iter().filter(|(l, _)| *l != me && *l != forger) {
            for (v, total) in [(false, *audio), (true, *video)] {
                let got = stats.tracks.get(&(*other, v)).map_or(0, |t| t.frames);
                assert!(
                    got + 3 >= total,
                    "leaf {me} got {got} of {total} from {other}"
                );
            }
        }
    }
    let page = h.metrics().await;
    let dropped = metric(&page, "sotto_sfu_drops_total{reason=\"wrong_sender\"}").unwrap_or(0.0);
    // Each forged frame's first packet is dropped, once per publisher packet.
    assert!(
        dropped >= (forged.0 + forged.1) as f64 * 0.95,
        "dropped {dropped} of {} forged frames",
        forged.0 + forged.1
    );
    h.sfu.shutdown().await;
}
