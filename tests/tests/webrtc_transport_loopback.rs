//! Two real WebRTC peer connections on loopback (ICE, DTLS-SRTP): offer/answer and trickled
//! candidates pass through a relay, then SFrame-packetized audio and video flow with their
//! header extensions, and video frames reassemble byte for byte.

use std::time::Duration;

use sotto_client::transport::{Transport, TransportConfig, TransportEvent};
use sotto_proto::RtcSignal;
use sotto_wire::{
    rtp_ext::AudioLevel,
    rtp_sframe::{AssemblerLimits, FrameAssembler},
};
use webrtc::peer_connection::RTCPeerConnectionState;

/// Relays one side's candidates to the other until both are connected.
async fn connect(
    a: &Transport,
    a_rx: &mut tokio::sync::mpsc::Receiver<TransportEvent>,
    b: &Transport,
    b_rx: &mut tokio::sync::mpsc::Receiver<TransportEvent>,
) {
    let offer = a.create_offer().await.expect("offer");
    let answer = b.accept_offer(offer).await.expect("answer");
    a.accept_answer(answer).await.expect("accept answer");
    let (mut a_up, mut b_up) = (false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(a_up && b_up) {
        tokio::select! {
            Some(e) = a_rx.recv() => match e {
                TransportEvent::Signal(RtcSignal::Candidate { candidate, mid }) => b.add_remote_candidate(candidate, mid).await.expect("cand"),
                TransportEvent::State(RTCPeerConnectionState::Connected) => a_up = true,
                TransportEvent::State(s @ RTCPeerConnectionState::Failed) => panic!("a: {s}"),
                _ => {}
            },
            Some(e) = b_rx.recv() => match e {
                TransportEvent::Signal(RtcSignal::Candidate { candidate, mid }) => a.add_remote_candidate(candidate, mid).await.expect("cand"),
                TransportEvent::State(RTCPeerConnectionState::Connected) => b_up = true,
                TransportEvent::State(s @ RTCPeerConnectionState::Failed) => panic!("b: {s}"),
                _ => {}
            },
            () = tokio::time::sleep_until(deadline) => panic!("not connected within 10 s (a {a_up}, b {b_up})"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sframe_packets_flow_both_ways_with_extensions() {
    let cfg = TransportConfig::loopback();
    let (a, mut a_rx) = Transport::new(&cfg, true, 0x1000).await.expect("a");
    let (b, mut b_rx) = Transport::new(&cfg, true, 0x2000).await.expect("b");
    connect(&a, &mut a_rx, &b, &mut b_rx).await;
    // Let the tracks bind after DTLS.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let video_frame: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
    for i in 0..50u32 {
        a.send_audio(
            i * 960,
            &[i as u8; 80],
            AudioLevel {
                voice: true,
                level: 30,
            },
        )
        .await
        .expect("audio");
        b.send_audio(
            i * 960,
            &[i as u8; 60],
            AudioLevel {
                voice: false,
                level: 90,
            },
        )
        .await
        .expect("audio");
        if i % 5 == 0 {
            a.send_video(i * 3000, &video_frame, i == 0)
                .await
                .expect("video");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut b_audio = 0;
    let mut b_frames = Vec::new();
    let mut keyframes = 0;
    let mut assembler = FrameAssembler::new(AssemblerLimits::default());
    let mut a_audio = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (b_audio < 45 || b_frames.len() < 9 || a_audio < 45)
        && tokio::time::Instant::now() < deadline
    {
        tokio::select! {
            Some(e) = b_rx.recv() => match e {
                TransportEvent::Audio(r) => {
                    assert_eq!(r.audio_level, Some(AudioLevel { voice: true, level: 30 }), "audio level arrives");
                    assert_eq!(r.payload.len(), 81, "descriptor + frame");
                    b_audio += 1;
                }
                TransportEvent::Video(r) => {
                    let fm = r.frame_marking.expect("frame marking on every video packet");
                    if fm.start && fm.independent {
                        keyframes += 1;
                    }
                    b_frames.extend(assembler.push(
                        r.seq,
                        r.timestamp,
                        &r.payload,
                        std::time::Instant::now(),
                    ));
                }
                _ => {}
            },
            Some(e) = a_rx.recv() => if let TransportEvent::Audio(r) = e {
                assert_eq!(r.audio_level, Some(AudioLevel { voice: false, level: 90 }));
                a_audio += 1;
            },
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    assert!(b_audio >= 45, "b got {b_audio}/50 audio packets");
    assert!(a_audio >= 45, "a got {a_audio}/50 audio packets");
    assert!(
        b_frames.len() >= 9,
        "b reassembled {}/10 video frames",
        b_frames.len()
    );
    assert!(b_frames.iter().all(|f| f.frame == video_frame));
    assert_eq!(keyframes, 1);
    a.close().await;
    b.close().await;
}
