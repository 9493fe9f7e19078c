//! A member whose key does not check out is removed, never keyed: a careless member's
//! commit (it adds what it claimed without checking) brings in a KeyPackage the server
//! substituted for @dee's (credential naming @dee, the attacker's key), and a server that
//! gave up checking accepts it. The honest members report it, commit its removal, and
//! never derive the media keys of the epoch it was in (so nothing of theirs is encrypted
//! to it, nothing of its decrypted); the call among them goes on, and the real @dee is
//! let in afterwards.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use sotto_client::room::{JoinOptions, RoomLine, RoomPhase};
use sotto_media::synth::AudioSignal;
use sotto_tests::{
    h,
    hostile::{Attack, Hostile, Log},
    room::{heard, join, join_opts, latest_when, leave, person, played_share},
    sfu::start_sfu_wrapping,
};

fn in_call_with(n: usize) -> impl Fn(&RoomLine) -> bool {
    move |l| l.phase == RoomPhase::InCall && l.members.len() == n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_substituted_key_is_removed_before_any_key_is_shared_with_it() {
    let log = Arc::new(Mutex::new(Log::default()));
    let l = log.clone();
    let net = start_sfu_wrapping(1, None, move |s| {
        Hostile::wrap(s, Attack::SubstituteKeyPackageOnce, "@dee", "@dee", l)
    })
    .await;
    let mut owner = person(&net, "@ana").await;
    let (b, c, d) = (
        person(&net, "@ben").await,
        person(&net, "@cyd").await,
        person(&net, "@dee").await,
    );
    let room = owner.create_room().await.expect("room");
    owner
        .invite_to_room(room, vec![h("@ben"), h("@cyd"), h("@dee")])
        .await
        .expect("invited");
    // @ana, first in line to commit, adds whatever she claims unchecked.
    let careless = JoinOptions {
        audio: AudioSignal::Tone { hz: 330.0 },
        test_add_unchecked: true,
        ..JoinOptions::default()
    };
    let mut ana = join_opts(owner, room, careless);
    // She starts the room's group (so she is leaf 0), then the others come.
    latest_when(&mut [&mut ana], Duration::from_secs(30), |l| {
        l.epoch == 0 && l.phase != RoomPhase::WaitingToBeLetIn
    })
    .await
    .expect("ana in her group");
    let mut ben = join(b, room, 440.0);
    let mut cyd = join(c, room, 550.0);
    latest_when(
        &mut [&mut ana, &mut ben, &mut cyd],
        Duration::from_secs(30),
        in_call_with(3),
    )
    .await
    .expect("three in the call");

    // @dee arrives: @ana's claim gets the substitute and she commits it; @ben and @cyd
    // remove it; then @ana claims again, gets @dee's real package, and lets her in.
    let mut dee = join(d, room, 660.0);
    let four = latest_when(
        &mut [&mut ana, &mut ben, &mut cyd, &mut dee],
        Duration::from_secs(40),
        in_call_with(4),
    )
    .await
    .expect("the real @dee in the call");
    assert!(
        four.iter().all(|l| l.code == four[0].code),
        "one group: {four:?}"
    );
    assert_eq!(log.lock().expect("log").packages_substituted, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let reports = [
        leave(ana).await,
        leave(ben).await,
        leave(cyd).await,
        leave(dee).await,
    ];
    let [ana, ben, cyd, _dee] = &reports;
    let epochs = |r: &sotto_client::room::RoomReport| -> BTreeSet<u64> {
        r.codes.iter().map(|(e, _)| *e).collect()
    };
    // An epoch's code is reported once its media keys are derived. The honest members'
    // epochs run without a break from their join but for one, the epoch the substitute
    // was in, which @ana keyed (she checked nothing).
    for honest in [ben, cyd] {
        let mine = epochs(honest);
        let (first, last) = (
            *mine.first().expect("epochs"),
            *mine.last().expect("epochs"),
        );
        let skipped: Vec<u64> = (first..=last).filter(|e| !mine.contains(e)).collect();
        assert_eq!(
            skipped.len(),
            1,
            "an honest member derived keys for every epoch, the substitute's too: {:?}",
            honest.codes
        );
        assert!(
            epochs(ana).contains(&skipped[0]),
            "ana {:?}, honest {:?}",
            ana.codes,
            honest.codes
        );
        assert_eq!(
            honest.refused_members.len(),
            1,
            "{:?}",
            honest.refused_members
        );
        assert!(
            honest.refused_members[0].starts_with("@dee"),
            "{:?}",
            honest.refused_members
        );
        assert!(
            !matches!(
                honest.ended,
                Some(sotto_client::session::LeftReason::KeyMismatch { .. })
            ),
            "the honest members stay: {:?}",
            honest.ended
        );
    }
    assert!(ana.refused_members.is_empty(), "she checked nothing");
    // The call between the honest went on through it.
    let from_cyd = heard(ben, "@cyd").expect("ben heard cyd");
    let ids = from_cyd.played.first().map(|p| p.0).unwrap_or(0)
        ..=from_cyd.played.last().map(|p| p.0).unwrap_or(0);
    let share = played_share(from_cyd, ids);
    assert!(
        share >= 0.9,
        "ben played {:.1} % of cyd's audio",
        share * 100.0
    );
}
