//! A member that asks for at most the lowest simulcast layer (`--max-layer 0`) gets only
//! that layer of a publisher's video, while another member with the same bandwidth and no
//! cap gets a higher one: the request reached the SFU and the SFU kept to it. The layers
//! are told apart by the decoded pictures' widths (the pattern makes the lowest 384 wide,
//! the narrowest its frame id fits in; then 480 and 640).

use std::time::Duration;

use sotto_client::room::{JoinOptions, RoomPhase};
use sotto_media::synth::AudioSignal;
use sotto_tests::{
    h,
    room::{heard, join_opts, join_with, latest_when, leave, person, small_simulcast},
    sfu::start_sfu,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_capped_at_the_lowest_layer_gets_only_that_layer() {
    let net = start_sfu(1).await;
    let mut owner = person(&net, "@publisher").await;
    let (c, f) = (person(&net, "@capped").await, person(&net, "@free").await);
    let room = owner.create_room().await.expect("room");
    owner
        .invite_to_room(room, vec![h("@capped"), h("@free")])
        .await
        .expect("invited");
    let mut publisher = join_with(owner, room, 300.0, Some(small_simulcast()));
    let mut capped = join_opts(
        c,
        room,
        JoinOptions {
            audio: AudioSignal::Tone { hz: 450.0 },
            max_layer: Some(0),
            ..JoinOptions::default()
        },
    );
    let mut free = join_with(f, room, 600.0, None);
    let mut all = [&mut publisher, &mut capped, &mut free];
    latest_when(&mut all, Duration::from_secs(20), |l| {
        l.phase == RoomPhase::InCall && l.members.len() == 3
    })
    .await
    .expect("three in the call");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, capped, free) = (
        leave(publisher).await,
        leave(capped).await,
        leave(free).await,
    );
    let widths = |r, who| {
        heard(r, "@publisher")
            .unwrap_or_else(|| panic!("{who} heard the publisher"))
            .video_widths
            .clone()
    };
    let (capped, free) = (widths(&capped, "capped"), widths(&free, "free"));
    eprintln!("capped decoded widths {capped:?}, uncapped {free:?}");
    // One layer only, and a narrower one than the uncapped member climbed to.
    let capped: Vec<usize> = capped.into_iter().collect();
    assert_eq!(
        capped.len(),
        1,
        "the capped member decoded one layer only: {capped:?}"
    );
    assert!(
        free.iter().any(|w| *w > capped[0]),
        "the uncapped member got a higher layer than the capped one: {free:?}"
    );
}
