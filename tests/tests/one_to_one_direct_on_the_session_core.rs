//! A one-to-one call peer to peer on the session core (the room pipeline every group
//! call and relayed call runs on): a real signaling server with no SFU at all, two real
//! endpoints on loopback. After the ring and the answer, both run the call's room with
//! `PairCall::direct`: the caller's link offers through the call's relay, the callee's
//! answers, and each decodes the other's audio and video under the call's MLS keys, the
//! media going straight between them, its encoders following the send-side estimate.
//!
//! This is the path `call.rs` moves onto (NOTES, "the plan for 1:1 on the session core").

use std::time::Duration;

use sotto_client::{
    call::Endpoint,
    room::{JoinOptions, PairCall, RoomPhase, RoomReport},
    session::LeftReason,
    video::{Layer, VideoSend},
};
use sotto_proto::{CallId, DeviceAddr, Request, Response, RoomId};
use sotto_tests::{
    h, key_for,
    room::{InRoom, heard, join_opts, latest_when, played_share},
    server,
};

const SECONDS: u64 = 4;

fn device(name: &str) -> DeviceAddr {
    DeviceAddr {
        handle: h(name),
        device: 1,
    }
}

fn side(ep: Endpoint, call: CallId, peer: &str, caller: bool, hz: f64) -> InRoom {
    let opts = JoinOptions {
        audio: sotto_media::synth::AudioSignal::Tone { hz },
        video: Some(VideoSend {
            layers: vec![Layer {
                width: 320,
                height: 180,
                bitrate: 150_000,
            }],
            fps: 15,
            camera: None,
        }),
        pair: Some(PairCall {
            call,
            peer: device(peer),
            arrive_within: Duration::from_secs(10),
            caller,
            direct: true,
            relay_after: None,
        }),
        ..JoinOptions::default()
    };
    join_opts(ep, RoomId(call.0), opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_on_the_session_core_needs_no_sfu() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let s = server(|_| {}).await;
    let connect = |name: &'static str| {
        let (addr, pin) = (s.running.addr, s.pin.clone());
        async move {
            Endpoint::connect(addr, &pin, h(name), key_for(name), 1)
                .await
                .expect("logs in")
        }
    };
    let alice = connect("@alice").await;
    let bob = connect("@bob").await;
    let call = CallId([42; 16]);
    let ring = alice
        .signaling()
        .request(Request::Invite {
            call,
            to: h("@bob"),
        })
        .await;
    assert!(matches!(ring, Ok(Response::Ringing { .. })), "{ring:?}");
    let answer = bob.signaling().request(Request::Accept { call }).await;
    assert!(matches!(answer, Ok(Response::Ok)), "{answer:?}");

    let mut a = side(alice, call, "@bob", true, 440.0);
    let mut b = side(bob, call, "@alice", false, 660.0);
    let both = latest_when(&mut [&mut a, &mut b], Duration::from_secs(15), |l| {
        l.phase == RoomPhase::InCall && l.members.len() == 2
    })
    .await
    .expect("both in the call with each other");
    let start: Vec<u64> = both
        .iter()
        .map(|l| l.last_frame_id.expect("sent"))
        .collect();
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    let end = latest_when(&mut [&mut a, &mut b], Duration::from_secs(3), |_| true)
        .await
        .expect("lines");
    // Both leave, and both endpoints stay connected until both have: without `call.rs`
    // to hang up, the first one's connection closing ends the call, and the service then
    // closes its room under the other.
    let _ = (a.leave.send(true), b.leave.send(true));
    let (ea, ra) = a.call.await.expect("alice's task");
    let (eb, rb) = b.call.await.expect("bob's task");
    let reports: Vec<RoomReport> = vec![ra.expect("alice's call"), rb.expect("bob's call")];
    drop((ea, eb));

    for (i, (r, other)) in reports.iter().zip(["@bob", "@alice"]).enumerate() {
        assert_eq!(r.ended, Some(LeftReason::Left), "side {i}");
        let o = 1 - i;
        let got = heard(r, other).unwrap_or_else(|| panic!("side {i} heard nothing"));
        let ids = start[o] + 1..=end[o].last_frame_id.expect("sent");
        let share = played_share(got, ids.clone());
        assert!(
            share >= 0.95,
            "side {i} played {:.1} % of {other}'s frames {ids:?}",
            share * 100.0
        );
        assert!(got.video_decoded > 10, "side {i} decoded {other}'s video");
        assert_eq!(
            got.video_mismatches, 0,
            "side {i}: pictures match their stamps"
        );
        // Straight between the two: the media came from loopback, and the link's remote
        // end (the peer's SDP) names only loopback.
        assert!(
            r.media_from.iter().all(|ip| ip.is_loopback()),
            "side {i} got media from {:?}",
            r.media_from
        );
        assert!(
            !r.sfu_addrs.is_empty() && r.sfu_addrs.iter().all(|ip| ip.is_loopback()),
            "side {i}'s link named {:?}",
            r.sfu_addrs
        );
        // The encoders follow the send-side estimate (transport-wide CC), as a call's do.
        assert!(
            r.estimate_bps.is_some_and(|b| b > 0) && r.audio_bitrate > 0 && r.video_bitrate > 0,
            "side {i}: estimate {:?}, audio {} bps, video {} bps",
            r.estimate_bps,
            r.audio_bitrate,
            r.video_bitrate
        );
    }
    assert_eq!(
        reports[0].codes.last(),
        reports[1].codes.last(),
        "one epoch, one code"
    );
}
