//! A tap inside the SFU records every packet it forwards (payload and the header extension
//! values it passes on); no 8-byte window of the load participants' known plaintext
//! appears in any of them, while the participants decrypt that plaintext from the very
//! same packets.

use sotto_bench::load::peer::KNOWN_PLAINTEXT;
use sotto_sfu::core::{Tap, Tapped};
use sotto_tests::sfu::{run_for, start_sfu_with};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Seen {
    packets: u64,
    bytes: u64,
    leaks: u64,
}

/// 8-byte windows of the known plaintext found in `bytes`.
fn leaks(bytes: &[u8], windows: &HashSet<[u8; 8]>) -> u64 {
    bytes
        .windows(8)
        .filter(|w| <[u8; 8]>::try_from(*w).is_ok_and(|w| windows.contains(&w)))
        .count() as u64
}

fn known_windows() -> HashSet<[u8; 8]> {
    KNOWN_PLAINTEXT
        .windows(8)
        .filter_map(|w| w.try_into().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_forwarded_byte_is_plaintext() {
    let windows = known_windows();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    // The extension values the SFU passes on (a level byte, a packed frame marking) are
    // shorter than a window; the payload is where plaintext could show.
    let tap: Tap = Arc::new(move |t: Tapped<'_>| {
        let mut s = record.lock().expect("tap lock");
        s.packets += 1;
        s.bytes += t.payload.len() as u64;
        s.leaks += leaks(t.payload, &windows);
    });
    let h = start_sfu_with(1, Some(tap)).await;
    let (_room, participants) = h.room(3, (4, 4)).await;
    let done = run_for(participants, Duration::from_secs(2)).await;
    // The participants did get the plaintext out of those packets.
    for (p, stats) in &done {
        let frames: u64 = stats.tracks.values().map(|t| t.frames).sum();
        assert!(
            frames > 300,
            "leaf {} decrypted only {frames}",
            p.joined.leaf
        );
        assert_eq!(stats.undecryptable, 0);
    }
    let (packets, bytes, leaks) = {
        let s = seen.lock().expect("tap lock");
        (s.packets, s.bytes, s.leaks)
    };
    assert!(packets > 1000, "the tap saw {packets} packets");
    assert!(bytes > 500_000, "the tap saw {bytes} bytes");
    assert_eq!(leaks, 0, "known plaintext crossed the SFU in the clear");
    h.sfu.shutdown().await;
}

/// The check above can fail: the same scan over a frame's plaintext finds the windows.
#[test]
fn the_scan_finds_plaintext_where_there_is_some() {
    let mut plain = b"xx".to_vec();
    plain.extend_from_slice(KNOWN_PLAINTEXT);
    assert!(leaks(&plain, &known_windows()) > 0);
    assert_eq!(leaks(&[0x5a; 200], &known_windows()), 0);
}
