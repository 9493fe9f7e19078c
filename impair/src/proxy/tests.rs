//! The shell on real loopback sockets.

use std::collections::HashSet;

use tokio::time::timeout;

use super::*;
use crate::link::DropReason;

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn conditions(s: &str) -> Conditions {
    s.parse().expect("test conditions parse")
}

/// A UDP echo server on 127.0.0.1; also reports each distinct source address it sees.
async fn echo_server() -> (SocketAddr, Arc<Mutex<HashSet<SocketAddr>>>) {
    let socket = UdpSocket::bind(loopback()).await.expect("bind echo server");
    let addr = socket.local_addr().expect("echo server address");
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            record.lock().expect("not poisoned").insert(from);
            // The test sees a failed echo as a lost datagram.
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    (addr, seen)
}

/// A client socket "connected" to the proxy.
async fn client(proxy: &Proxy) -> UdpSocket {
    let socket = UdpSocket::bind(loopback()).await.expect("bind client");
    socket.connect(proxy.addr()).await.expect("connect client");
    socket
}

/// Receives echoes until none arrives for `quiet`; returns their first bytes (indices).
async fn collect_echoes(socket: &UdpSocket, quiet: Duration) -> Vec<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(Ok(len)) = timeout(quiet, socket.recv(&mut buf)).await {
        assert!(len >= 2);
        got.push(u16::from_be_bytes([buf[0], buf[1]]));
    }
    got
}

/// 40 ms each way: every round trip through the proxy takes at least 80 ms (and less than
/// 600 ms, leaving room for a loaded machine).
#[tokio::test]
async fn delay_shows_in_round_trip_time() {
    let (echo, _) = echo_server().await;
    let config = ProxyConfig::new(echo).with_both(conditions("delay=40ms"));
    let proxy = Proxy::start(config).await.expect("start proxy");
    let socket = client(&proxy).await;
    let mut buf = [0u8; 64];
    for i in 0u8..5 {
        let sent = Instant::now();
        socket.send(&[i; 32]).await.expect("send");
        let len = timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .expect("echo within 2 s")
            .expect("receive");
        let rtt = sent.elapsed();
        assert_eq!(&buf[..len], &[i; 32]);
        assert!(rtt >= Duration::from_millis(80), "rtt {rtt:?}");
        assert!(rtt < Duration::from_millis(600), "rtt {rtt:?}");
    }
    let report = proxy.stop().await.expect("stop");
    assert_eq!(report.stats.up.delivered, 5);
    assert_eq!(report.stats.down.delivered, 5);
}

/// 50% loss upstream over 400 datagrams: 40–60% come back, and exactly the ones missing
/// from the echoes are in the proxy's drop log.
#[tokio::test]
async fn half_loss_loses_about_half_and_matches_the_drop_log() {
    const COUNT: u16 = 400;
    let (echo, _) = echo_server().await;
    let config = ProxyConfig::new(echo)
        .with_up(conditions("loss=50%"))
        .with_seed(5);
    let proxy = Proxy::start(config).await.expect("start proxy");
    let socket = Arc::new(client(&proxy).await);
    // Echoes are read while sending, so that none overflows the client's receive buffer.
    let reader = Arc::clone(&socket);
    let collector =
        tokio::spawn(async move { collect_echoes(&reader, Duration::from_millis(500)).await });
    for i in 0..COUNT {
        let mut datagram = vec![0u8; 100];
        datagram[..2].copy_from_slice(&i.to_be_bytes());
        socket.send(&datagram).await.expect("send");
        if i % 20 == 19 {
            // Paced so that no loopback buffer overflows.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let echoed = collector.await.expect("collector");
    let share = f64::from(echoed.len() as u32) / f64::from(COUNT);
    assert!((0.4..=0.6).contains(&share), "echoed {share}");
    let drops = proxy.drops(Direction::Up);
    assert!(
        drops
            .iter()
            .all(|d| d.reason == DropReason::Random && d.tag == 0)
    );
    let dropped: HashSet<u16> = drops
        .iter()
        .map(|d| u16::from_be_bytes([d.head[0], d.head[1]]))
        .collect();
    let echoed: HashSet<u16> = echoed.into_iter().collect();
    assert!(dropped.is_disjoint(&echoed));
    assert_eq!(dropped.len() + echoed.len(), usize::from(COUNT));
    let stats = proxy.stats();
    assert_eq!(stats.up.received, u64::from(COUNT));
    assert_eq!(stats.io_errors, 0);
}

/// Black-holed upstream, then switched to free while running; two clients get two
/// distinct upstream addresses, which the mappings report.
#[tokio::test]
async fn live_switch_and_one_mapping_per_client() {
    let (echo, seen) = echo_server().await;
    let config = ProxyConfig::new(echo).with_up(Conditions::blackhole());
    let proxy = Proxy::start(config).await.expect("start proxy");
    let (a, b) = (client(&proxy).await, client(&proxy).await);
    for i in 0u16..10 {
        a.send(&i.to_be_bytes()).await.expect("send");
    }
    assert!(
        collect_echoes(&a, Duration::from_millis(100))
            .await
            .is_empty()
    );
    assert_eq!(proxy.stats().up.dropped.blackhole, 10);
    proxy.set(Direction::Up, Conditions::free());
    assert!(proxy.conditions(Direction::Up).is_free());
    for i in 0u16..10 {
        a.send(&i.to_be_bytes()).await.expect("send");
        b.send(&i.to_be_bytes()).await.expect("send");
    }
    assert_eq!(
        collect_echoes(&a, Duration::from_millis(200)).await.len(),
        10
    );
    assert_eq!(
        collect_echoes(&b, Duration::from_millis(200)).await.len(),
        10
    );
    let stats = proxy.stats();
    assert_eq!(stats.mappings.len(), 2);
    let upstream_side: HashSet<SocketAddr> =
        stats.mappings.iter().map(|m| m.upstream_local).collect();
    assert_eq!(*seen.lock().expect("not poisoned"), upstream_side);
    let clients: HashSet<SocketAddr> = stats.mappings.iter().map(|m| m.client).collect();
    let expected: HashSet<SocketAddr> =
        [a.local_addr().expect("a"), b.local_addr().expect("b")].into();
    assert_eq!(clients, expected);
}

/// Nothing off loopback without `allow_non_loopback`.
#[tokio::test]
async fn refuses_addresses_off_loopback() {
    let upstream = SocketAddr::from(([10, 0, 0, 1], 9));
    let refused = Proxy::start(ProxyConfig::new(upstream)).await;
    assert!(matches!(
        refused,
        Err(ProxyError::NotLoopback {
            what: "upstream",
            ..
        })
    ));
    let mut config = ProxyConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 9)));
    config.listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let refused = Proxy::start(config).await;
    assert!(matches!(
        refused,
        Err(ProxyError::NotLoopback { what: "listen", .. })
    ));
    let other_loopback = ProxyConfig::new(SocketAddr::from(([127, 0, 0, 2], 9)));
    let proxy = Proxy::start(other_loopback)
        .await
        .expect("127.0.0.0/8 is loopback");
    assert!(proxy.addr().ip().is_loopback());
}
