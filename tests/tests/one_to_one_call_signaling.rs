//! Every path of a one-to-one call over real QUIC: each ends on both sides with a reason.

use std::time::Duration;

use sotto_client::signaling::{ClientError, Incoming};
use sotto_proto::{CallId, EndReason, ErrorCode, Event, Request, Response, RtcSignal};
use sotto_tests::{User, h, random, server};

fn call_id() -> CallId {
    CallId(random())
}

async fn invite(from: &User, to: &str) -> CallId {
    let call = call_id();
    let r = from
        .client
        .request(Request::Invite { call, to: h(to) })
        .await
        .expect("invite");
    assert!(matches!(r, Response::Ringing { .. }), "{r:?}");
    call
}

async fn rings(u: &mut User, call: CallId) {
    u.expect(
        "incoming call",
        |i| matches!(i, Incoming::Event(Event::IncomingCall { call: c, .. }) if *c == call),
    )
    .await;
}

async fn ended(u: &mut User, call: CallId, reason: EndReason) {
    u.expect("call end", |i| {
        *i == Incoming::Event(Event::CallEnded { call, reason })
    })
    .await;
}

fn code(r: Result<Response, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Server(e)) => e.code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn answered_on_one_device_other_stops_ringing_then_caller_hangs_up() {
    let s = server(|_| {}).await;
    let mut alice = s.user("@alice", 1).await;
    let mut bob1 = s.user("@bob", 1).await;
    let mut bob2 = s.user("@bob", 2).await;
    let call = invite(&alice, "@bob").await;
    rings(&mut bob1, call).await;
    rings(&mut bob2, call).await;

    // Both devices answer at once: exactly one wins.
    let (a, b) = tokio::join!(
        bob1.client.request(Request::Accept { call }),
        bob2.client.request(Request::Accept { call })
    );
    let (winner, loser, loser_result) = match (a, b) {
        (Ok(Response::Ok), r) => (&mut bob1, &mut bob2, r),
        (r, Ok(Response::Ok)) => (&mut bob2, &mut bob1, r),
        other => panic!("one accept must win: {other:?}"),
    };
    assert_eq!(code(loser_result), ErrorCode::AlreadyAnswered);
    ended(loser, call, EndReason::AnsweredElsewhere).await;
    let by = winner.device;
    alice
        .expect(
            "accepted",
            |i| matches!(i, Incoming::Event(Event::CallAccepted { by: d, .. }) if d.device == by),
        )
        .await;

    // SDP and ICE go between the two parties only.
    alice
        .client
        .request(Request::Relay {
            call,
            signal: RtcSignal::Offer("v=0 offer".into()),
        })
        .await
        .expect("relay");
    winner
        .expect("offer", |i| matches!(i, Incoming::Event(Event::Relayed { signal: RtcSignal::Offer(s), .. }) if s == "v=0 offer"))
        .await;
    winner
        .client
        .request(Request::Relay {
            call,
            signal: RtcSignal::Answer("v=0 answer".into()),
        })
        .await
        .expect("relay");
    alice
        .expect("answer", |i| {
            matches!(
                i,
                Incoming::Event(Event::Relayed {
                    signal: RtcSignal::Answer(_),
                    ..
                })
            )
        })
        .await;
    // The device that lost the race is no party to the call.
    assert_eq!(
        code(
            loser
                .client
                .request(Request::Relay {
                    call,
                    signal: RtcSignal::EndOfCandidates
                })
                .await
        ),
        ErrorCode::Forbidden
    );
    loser.quiet_for(Duration::from_millis(200)).await;

    alice
        .client
        .request(Request::Hangup { call })
        .await
        .expect("hangup");
    ended(&mut alice, call, EndReason::HungUp).await;
    ended(winner, call, EndReason::HungUp).await;
}

#[tokio::test]
async fn callee_hangs_up() {
    let s = server(|_| {}).await;
    let mut alice = s.user("@alice", 1).await;
    let mut bob = s.user("@bob", 1).await;
    let call = invite(&alice, "@bob").await;
    rings(&mut bob, call).await;
    bob.client
        .request(Request::Accept { call })
        .await
        .expect("accept");
    bob.client
        .request(Request::Hangup { call })
        .await
        .expect("hangup");
    ended(&mut alice, call, EndReason::HungUp).await;
    ended(&mut bob, call, EndReason::HungUp).await;
}

#[tokio::test]
async fn decline_stops_every_device() {
    let s = server(|_| {}).await;
    let mut alice = s.user("@alice", 1).await;
    let mut bob1 = s.user("@bob", 1).await;
    let mut bob2 = s.user("@bob", 2).await;
    let call = invite(&alice, "@bob").await;
    rings(&mut bob1, call).await;
    rings(&mut bob2, call).await;
    bob1.client
        .request(Request::Decline { call })
        .await
        .expect("decline");
    ended(&mut alice, call, EndReason::Declined).await;
    ended(&mut bob1, call, EndReason::Declined).await;
    ended(&mut bob2, call, EndReason::Declined).await;
}

#[tokio::test]
async fn caller_cancels_before_answer() {
    let s = server(|_| {}).await;
    let mut alice = s.user("@alice", 1).await;
    let mut bob = s.user("@bob", 1).await;
    let call = invite(&alice, "@bob").await;
    rings(&mut bob, call).await;
    alice
        .client
        .request(Request::Cancel { call })
        .await
        .expect("cancel");
    ended(&mut bob, call, EndReason::Cancelled).await;
    ended(&mut alice, call, EndReason::Cancelled).await;
    assert_eq!(
        code(bob.client.request(Request::Accept { call }).await),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn busy_and_offline_are_refused() {
    let s = server(|_| {}).await;
    let alice = s.user("@alice", 1).await;
    let mut bob = s.user("@bob", 1).await;
    let carol = s.user("@carol", 1).await;
    let call = invite(&alice, "@bob").await;
    rings(&mut bob, call).await;
    bob.client
        .request(Request::Accept { call })
        .await
        .expect("accept");
    assert_eq!(
        code(
            carol
                .client
                .request(Request::Invite {
                    call: call_id(),
                    to: h("@bob")
                })
                .await
        ),
        ErrorCode::Busy
    );
    s.user("@dave", 1).await.client.close();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        code(
            carol
                .client
                .request(Request::Invite {
                    call: call_id(),
                    to: h("@dave")
                })
                .await
        ),
        ErrorCode::Offline
    );
    assert_eq!(
        code(
            carol
                .client
                .request(Request::Invite {
                    call: call_id(),
                    to: h("@nobody")
                })
                .await
        ),
        ErrorCode::NotFound
    );
}

#[tokio::test]
async fn unanswered_call_times_out_on_both_sides() {
    let s = server(|c| c.core.ring_timeout = Duration::from_millis(600)).await;
    let mut alice = s.user("@alice", 1).await;
    let mut bob = s.user("@bob", 1).await;
    let call = invite(&alice, "@bob").await;
    rings(&mut bob, call).await;
    ended(&mut alice, call, EndReason::Timeout).await;
    ended(&mut bob, call, EndReason::Timeout).await;
}

#[tokio::test]
async fn losing_the_connection_ends_the_call_for_the_other_side() {
    let s = server(|_| {}).await;
    let mut alice = s.user("@alice", 1).await;
    let mut bob = s.user("@bob", 1).await;
    let call = invite(&alice, "@bob").await;
    rings(&mut bob, call).await;
    bob.client
        .request(Request::Accept { call })
        .await
        .expect("accept");
    bob.client.close();
    ended(&mut alice, call, EndReason::PeerDisconnected).await;
}
