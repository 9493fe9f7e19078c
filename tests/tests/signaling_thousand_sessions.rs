//! 1,000 concurrent sessions on loopback each complete a login and a message round-trip
//! (a call invitation to a partner that it answers and the caller hears about).

use std::time::Instant;

use sotto_client::signaling::Incoming;
use sotto_proto::{CallId, Event, Request, Response};
use sotto_tests::{h, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sessions_log_in_and_round_trip() {
    const PAIRS: usize = 500;
    let s = server(|_| {}).await;
    let started = Instant::now();
    let users = futures_util::future::join_all(
        (0..2 * PAIRS).map(|i| s.user_owned(format!("@load{i:04}"))),
    )
    .await;
    let login_time = started.elapsed();
    assert_eq!(
        s.running
            .metrics
            .sessions_open
            .load(std::sync::atomic::Ordering::Relaxed),
        2 * PAIRS as u64
    );

    // Each even user calls the next odd one; the callee accepts; the caller hears it.
    let mut it = users.into_iter();
    let mut pairs = Vec::new();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        pairs.push((a, b));
    }
    let t = Instant::now();
    let done = futures_util::future::join_all(pairs.into_iter().enumerate().map(
        |(i, (mut a, mut b))| async move {
            let call = CallId([
                (i % 256) as u8,
                (i / 256) as u8,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
            ]);
            let r = a
                .client
                .request(Request::Invite {
                    call,
                    to: b.handle.clone(),
                })
                .await
                .expect("invite");
            assert!(matches!(r, Response::Ringing { .. }));
            b.expect("ring", |e| {
                matches!(e, Incoming::Event(Event::IncomingCall { .. }))
            })
            .await;
            b.client
                .request(Request::Accept { call })
                .await
                .expect("accept");
            a.expect("accepted", |e| {
                matches!(e, Incoming::Event(Event::CallAccepted { .. }))
            })
            .await;
            (a, b)
        },
    ))
    .await;
    assert_eq!(done.len(), PAIRS);
    eprintln!(
        "1000 sessions: logins in {:?} ({:.0}/s), 500 call round-trips in {:?}",
        login_time,
        (2 * PAIRS) as f64 / login_time.as_secs_f64(),
        t.elapsed()
    );
    let _ = h("@load0000");
}
