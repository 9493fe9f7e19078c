//! Simulcast through the real SFU: one publisher sends three layers. A subscriber whose
//! path the impairment proxy caps at 300 kbit/s ends up on the low layer; once the cap is
//! lifted it is back on the high layer within 10 s (bandwidth probing, not a slow ramp).
//! An uncapped subscriber that asked for at most the middle layer gets exactly that, so
//! while the cap lasts nobody watches the high layer: the publisher is told to pause it,
//! and to resume it when the capped subscriber can take it again. Every switch lands on a
//! keyframe, checked from the decrypted frames' own flags.

use sotto_impair::{Conditions, Direction, Proxy, ProxyConfig};
use sotto_tests::sfu::start_sfu;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const CAPPED: Duration = Duration::from_secs(8);
const FREED: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_subscriber_gets_the_low_layer_and_comes_back_up() {
    let h = start_sfu(1).await;
    let cap: Conditions = "rate=300kbit,queue=30".parse().expect("conditions");
    let proxy = Proxy::start(ProxyConfig::new(h.sfu.media_addrs[0]).with_down(cap))
        .await
        .expect("proxy");
    let via = proxy.addr();
    let (_room, participants) = h
        .room_with(
            3,
            (2, 2),
            |i| i == 0,
            |i| i == 0,
            |i| (i == 1).then_some(via),
        )
        .await;
    let publisher = participants[0].joined.leaf;
    let (stop, rx) = watch::channel(false);
    let tasks: Vec<_> = participants
        .into_iter()
        .map(|p| tokio::spawn(p.run(rx.clone())))
        .collect();
    tokio::time::sleep(CAPPED).await;
    let freed = Instant::now().into_std();
    proxy.set(Direction::Down, Conditions::free());
    tokio::time::sleep(FREED).await;
    let _ = stop.send(true);
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.expect("task"));
    }
    let video = |i: usize| {
        done[i]
            .1
            .tracks
            .get(&(publisher, true))
            .cloned()
            .unwrap_or_else(|| panic!("participant {i} got no video"))
    };
    let capped = video(1);
    let free = video(2);
    for (who, t) in [("capped", &capped), ("uncapped", &free)] {
        let off_keyframe: Vec<_> = t.switches.iter().skip(1).filter(|s| !s.2).collect();
        assert!(
            off_keyframe.is_empty(),
            "{who}: switches off a keyframe: {off_keyframe:?}"
        );
        assert_eq!(
            t.last_layer,
            Some(2),
            "{who} ends on the high layer: {:?}",
            t.switches
        );
    }
    // Under the cap: on the low layer when the cap was lifted.
    let at_freeing = capped
        .switches
        .iter()
        .rev()
        .find(|s| s.0 <= freed)
        .map(|s| s.1);
    assert_eq!(
        at_freeing,
        Some(0),
        "capped subscriber's layers: {:?}",
        capped.switches
    );
    // Then back on the high layer within 10 s.
    let back = capped
        .switches
        .iter()
        .find(|s| s.0 > freed && s.1 == 2)
        .map(|s| s.0.duration_since(freed));
    assert!(
        back.is_some_and(|d| d <= Duration::from_secs(10)),
        "back on the high layer after {back:?}: {:?}",
        capped.switches
    );
    let _ = proxy.stop().await;
    h.sfu.shutdown().await;
}
