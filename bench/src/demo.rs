//! The main job: a real end-to-end encrypted 1:1 call on loopback with a latency report.
//!
//! Starts the signaling service in-process, registers two headless clients, and has
//! @alice call @bob for the given time with synthetic audio (a 440 Hz tone one way, 660 Hz
//! the other). Everything real: QUIC signaling with a pinned certificate, an MLS group of
//! two, SFrame, WebRTC (ICE, DTLS-SRTP), Opus, H.264, the jitter buffer.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use ed25519_dalek::SigningKey;
use sotto_client::{
    call::{CallOptions, CallReport, Endpoint, VideoOptions},
    codec::audio::AudioEncoder,
    transport::TransportConfig,
};
use sotto_media::synth::AudioSignal;
use sotto_proto::Handle;
use sotto_signaling::server::{ServerConfig, start};

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
    )
}

fn side(label: &str, me: &CallReport, peer: &CallReport) {
    println!(
        "  {label:<16} sent {:>4}  played {:>4} ({:.1} %)  concealed {:>3} (FEC {})  decrypt failures {}  heard {}",
        peer.audio_sent,
        me.audio_played,
        100.0 * me.audio_played as f64 / peer.audio_sent.max(1) as f64,
        me.audio_concealed,
        me.audio_fec,
        me.decrypt_failures.values().sum::<u64>(),
        me.received_hz
            .map_or_else(|| "nothing".to_owned(), |h| format!("{h:.1} Hz")),
    );
}

/// Runs the demo call for `seconds`.
pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("sotto demo: an end-to-end encrypted 1:1 call on loopback, {seconds} s\n");
    let dir = tempfile::tempdir()?;
    let server = start(ServerConfig::new(
        "127.0.0.1:0".parse()?,
        dir.path().to_owned(),
    ))
    .await
    .context("starting the signaling service")?;
    let pin = server.fingerprint.parse()?;
    println!(
        "  signaling        QUIC on {} (certificate pinned, sha256 {}…)",
        server.addr,
        &server.fingerprint[..16]
    );

    let mut seed = [0u8; 64];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let alice_key = SigningKey::from_bytes(seed[..32].try_into()?);
    let bob_key = SigningKey::from_bytes(seed[32..].try_into()?);
    let (alice_h, bob_h) = (Handle::parse("@alice")?, Handle::parse("@bob")?);
    let mut alice = Endpoint::connect(server.addr, &pin, alice_h.clone(), alice_key, 1).await?;
    let mut bob = Endpoint::connect(server.addr, &pin, bob_h.clone(), bob_key, 1).await?;
    println!(
        "  accounts         @alice and @bob registered (Ed25519 challenge-response), KeyPackages published"
    );

    let bob_opts = CallOptions {
        duration: None,
        audio: AudioSignal::Tone { hz: 660.0 },
        video: Some(VideoOptions::default()),
        // The demo measures latency: capture stamps ride inside the encrypted frames.
        stamps: true,
        // The demo sends on loopback only, never to this machine's other addresses.
        transport: TransportConfig::loopback(),
        ..CallOptions::default()
    };
    let cpu_before = crate::signaling::cpu_time(std::process::id())?;
    let call_started = Instant::now();
    let callee = tokio::spawn(async move { bob.answer(&bob_opts, Duration::from_secs(30)).await });
    println!(
        "  call             @alice → @bob: ringing… (answered by @bob's device; MLS group of two; ICE + DTLS-SRTP)"
    );
    let progress = tokio::spawn(async move {
        let t0 = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            eprint!("\r  in call          {:>2} s", t0.elapsed().as_secs());
        }
    });
    let alice_opts = CallOptions {
        duration: Some(Duration::from_secs(seconds)),
        audio: AudioSignal::Tone { hz: 440.0 },
        video: Some(VideoOptions::default()),
        // Two MLS self-updates mid-call (at 2/5 and 4/5 of it): new media keys each time.
        rekey_every: Some(Duration::from_millis(seconds * 400)),
        stamps: true,
        transport: TransportConfig::loopback(),
        ..CallOptions::default()
    };
    let a = alice
        .call(&bob_h, &alice_opts)
        .await
        .context("placing the call")?;
    let b = callee.await?.context("answering the call")?;
    progress.abort();
    let cpu = crate::signaling::cpu_time(std::process::id())?.saturating_sub(cpu_before);
    let per_client = cpu.as_secs_f64() / call_started.elapsed().as_secs_f64() / 2.0;
    eprintln!();

    let fill = Fill {
        frame: Duration::from_millis(u64::from(alice_opts.frame_ms)),
        lookahead: AudioEncoder::new()?.lookahead()?,
    };
    print_report(&a, &b, per_client, &fill);
    check_flowed(&a, &b)?;
    server.shutdown().await;
    println!(
        "\ndemo passed: media flowed both ways, end to end encrypted ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What mouth-to-ear latency adds to the frame latency the stamps measure.
struct Fill {
    /// A frame's duration: its first sample waits that long for the frame to be ready.
    frame: Duration,
    /// The encoder's algorithmic delay.
    lookahead: Duration,
}

/// The call's figures, both directions, as the demo prints them.
fn print_report(a: &CallReport, b: &CallReport, per_client: f64, fill: &Fill) {
    println!(
        "  setup            {} from invite to first sound",
        ms(a.setup_time)
    );
    let reason = |r: &CallReport| {
        r.ended
            .map_or_else(|| "no reason".to_owned(), |e| e.to_string())
    };
    println!(
        "  ended            @alice sees {}, @bob sees {}",
        reason(a),
        reason(b)
    );
    println!("  safety number    {}", a.safety_number);
    println!("                   {} (bob's view)", b.safety_number);
    println!(
        "  verification     {} / {} (MLS epoch authenticator)",
        a.verification_code, b.verification_code
    );
    println!("  audio (Opus 20 ms, SFrame AES-128-GCM):");
    side("@alice → @bob", b, a);
    side("@bob → @alice", a, b);
    println!("  audio frame latency, frame ready → playout start, one clock (goal p50 ≤ 10 ms):");
    for (label, r) in [("@alice → @bob", b), ("@bob → @alice", a)] {
        println!(
            "  {label:<16} p50 {}   p99 {}   max {}",
            ms(r.latency.latency_quantile(0.5)),
            ms(r.latency.latency_quantile(0.99)),
            ms(r.latency.latency_quantile(1.0)),
        );
    }
    println!(
        "  mouth-to-ear, first sample captured → played: the frame latency + {} of frame fill + {} Opus look-ahead:",
        ms(Some(fill.frame)),
        ms(Some(fill.lookahead))
    );
    for (label, r) in [("@alice → @bob", b), ("@bob → @alice", a)] {
        let m2e = |q| {
            r.latency
                .latency_quantile(q)
                .map(|l| l + fill.frame + fill.lookahead)
        };
        println!("  {label:<16} p50 {}   p99 {}", ms(m2e(0.5)), ms(m2e(0.99)));
    }
    println!(
        "  epochs           {} MLS self-updates mid-call (new SFrame keys, old ones kept 2 s); keyframes right after: @alice {}, @bob {}",
        a.epoch_changes, a.epoch_keyframes, b.epoch_keyframes
    );
    let kbps = |e: Option<u64>| e.map_or_else(|| "-".to_owned(), |e| format!("{} kb/s", e / 1000));
    for (label, r) in [("@alice sends", a), ("@bob sends", b)] {
        println!(
            "  {label:<16} estimate {} (str0m, transport-wide CC, {} updates) → Opus {} kb/s, video {} kb/s",
            kbps(r.estimate_bps),
            r.estimate_updates,
            r.audio_bitrate / 1000,
            r.video_bitrate / 1000
        );
    }
    println!("  RTT              {}", ms(a.rtt));
    println!(
        "  CPU              {:.1} % of one core per client (both clients and the server share this process)",
        per_client * 100.0
    );
    let v = VideoOptions::default();
    println!(
        "  video (H.264 {}x{} @ {} fps, {} kb/s, SFrame per frame, frame marking):",
        v.width,
        v.height,
        v.fps,
        v.bitrate / 1000
    );
    for (label, me, peer) in [("@alice → @bob", b, a), ("@bob → @alice", a, b)] {
        println!(
            "  {label:<16} sent {:>4} ({} keyframes)  decoded {:>4} ({:.1} %)  ids in order: {}  wrong picture: {}",
            peer.video_sent,
            peer.video_keyframes,
            me.video_decoded,
            100.0 * me.video_decoded as f64 / peer.video_sent.max(1) as f64,
            if me.video.in_order() { "yes" } else { "NO" },
            me.video_mismatches,
        );
    }
    println!("  glass-to-glass latency, capture → decoded picture (no display buffer):");
    for (label, r) in [("@alice → @bob", b), ("@bob → @alice", a)] {
        println!(
            "  {label:<16} p50 {}   p99 {}   max {}",
            ms(r.video.latency_quantile(0.5)),
            ms(r.video.latency_quantile(0.99)),
            ms(r.video.latency_quantile(1.0)),
        );
    }
}

/// Whether media flowed both ways, end to end encrypted, and the two sides agree.
fn check_flowed(a: &CallReport, b: &CallReport) -> anyhow::Result<()> {
    let flowed = |me: &CallReport, peer: &CallReport| {
        me.audio_played * 10 >= peer.audio_sent * 9 && me.audio_played > 0
    };
    ensure!(a.safety_number == b.safety_number, "safety numbers differ");
    ensure!(
        a.verification_code == b.verification_code,
        "verification codes differ"
    );
    ensure!(
        a.epoch_changes == b.epoch_changes && a.epoch_changes > 0,
        "epoch changes: @alice {}, @bob {}",
        a.epoch_changes,
        b.epoch_changes
    );
    ensure!(flowed(b, a), "audio did not flow @alice → @bob");
    ensure!(flowed(a, b), "audio did not flow @bob → @alice");
    let video_flowed = |me: &CallReport, peer: &CallReport| {
        me.video_decoded * 10 >= peer.video_sent * 9
            && me.video_decoded > 0
            && me.video.in_order()
            && me.video_mismatches == 0
    };
    ensure!(video_flowed(b, a), "video did not flow @alice → @bob");
    ensure!(video_flowed(a, b), "video did not flow @bob → @alice");
    Ok(())
}
