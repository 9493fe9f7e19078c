//! The core's effects on a virtual clock, each within a stated tolerance.

use super::*;

/// Datagrams per run unless a test says otherwise.
const N: u64 = 10_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn conditions(s: &str) -> Conditions {
    s.parse().expect("test conditions parse")
}

/// A datagram of `len` bytes (at least 8) starting with its index.
fn payload(index: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0xAB; len.max(8)];
    data[..8].copy_from_slice(&index.to_be_bytes());
    data
}

/// The index a datagram starts with.
fn index_of(data: &[u8]) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&data[..8]);
    u64::from_be_bytes(bytes)
}

/// A constant-rate sender: `count` datagrams of `len` bytes, one every `interval`.
#[derive(Clone, Copy)]
struct Sender {
    start: Instant,
    count: u64,
    interval: Duration,
    len: usize,
}

impl Sender {
    fn new(count: u64, interval: Duration, len: usize) -> Self {
        Self {
            start: Instant::now(),
            count,
            interval,
            len,
        }
    }

    fn sent_at(&self, index: u64) -> Instant {
        let nanos = u64::try_from(self.interval.as_nanos()).expect("small interval") * index;
        self.start + Duration::from_nanos(nanos)
    }

    fn end(&self) -> Instant {
        self.sent_at(self.count) + Duration::from_secs(3600)
    }

    /// Runs the impairment, calling `before_push(impairment, index, now)` before each push;
    /// every datagram is polled out exactly at its due time.
    fn run_with(
        &self,
        imp: &mut Impairment,
        mut before_push: impl FnMut(&mut Impairment, u64, Instant),
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        for index in 0..self.count {
            let now = self.sent_at(index);
            drain(imp, now, &mut out);
            before_push(imp, index, now);
            let pushed = imp.push(now, payload(index, self.len));
            assert_eq!(pushed, index);
        }
        drain(imp, self.end(), &mut out);
        assert_eq!(imp.in_flight(), 0);
        out
    }

    fn run(&self, imp: &mut Impairment) -> Vec<Delivery> {
        self.run_with(imp, |_, _, _| {})
    }
}

/// Polls out everything due by `until`, each at its due time.
fn drain(imp: &mut Impairment, until: Instant, out: &mut Vec<Delivery>) {
    while let Some(due) = imp.poll_timeout().filter(|due| *due <= until) {
        let delivery = imp.poll_delivery(due).expect("a datagram is due");
        assert_eq!(delivery.due, due);
        assert_eq!(
            index_of(&delivery.data),
            delivery.index,
            "payload and index agree"
        );
        out.push(delivery);
    }
}

fn impairment(sender: &Sender, conditions: Conditions, seed: u64) -> Impairment {
    Impairment::new(sender.start, conditions, seed)
}

/// Lengths of the runs of consecutive indices in `sorted`.
fn runs(sorted: &[u64]) -> Vec<u64> {
    let mut runs: Vec<u64> = Vec::new();
    let mut previous: Option<u64> = None;
    for &index in sorted {
        match (previous, runs.last_mut()) {
            (Some(p), Some(run)) if index == p + 1 => *run += 1,
            _ => runs.push(1),
        }
        previous = Some(index);
    }
    runs
}

/// How many deliveries arrive after one with a higher index.
fn late(deliveries: &[Delivery]) -> usize {
    let mut highest = None;
    let mut late = 0;
    for d in deliveries.iter().filter(|d| !d.duplicate) {
        if highest.is_some_and(|h| d.index < h) {
            late += 1;
        }
        highest = highest.max(Some(d.index));
    }
    late
}

fn fraction(part: u64, whole: u64) -> f64 {
    part as f64 / whole as f64
}

/// Random loss 5% over 10,000 datagrams: measured in [4%, 6%] for three seeds; the drop
/// log and the deliveries partition the indices.
#[test]
fn random_loss_within_one_point() {
    for seed in [1, 2, 3] {
        let sender = Sender::new(N, ms(1), 200);
        let mut imp = impairment(&sender, conditions("loss=5%"), seed);
        let out = sender.run(&mut imp);
        let dropped = imp.stats().dropped.random;
        let loss = fraction(dropped, N);
        assert!((0.04..=0.06).contains(&loss), "seed {seed}: loss {loss}");
        assert_eq!(imp.stats().dropped.total(), dropped);
        assert_eq!(imp.drops().len() as u64, dropped);
        assert!(imp.drops().iter().all(|d| d.reason == DropReason::Random));
        let mut indices: Vec<u64> = out.iter().map(|d| d.index).collect();
        indices.extend(imp.drops().iter().map(|d| d.index));
        indices.sort_unstable();
        assert_eq!(indices, (0..N).collect::<Vec<_>>());
        assert_eq!(imp.stats().delivered + dropped, N);
    }
}

/// Gilbert–Elliott `loss=5%,burst=3` over 50,000 datagrams (bursts vary more than single
/// losses): overall loss in [3.5%, 6.5%], mean burst length in [2.4, 3.6], three seeds.
#[test]
fn gilbert_elliott_loss_and_burst_length() {
    const COUNT: u64 = 50_000;
    for seed in [1, 2, 3] {
        let sender = Sender::new(COUNT, ms(1), 100);
        let mut imp = impairment(&sender, conditions("loss=5%,burst=3"), seed);
        sender.run(&mut imp);
        assert!(imp.drops().iter().all(|d| d.reason == DropReason::Burst));
        let loss = fraction(imp.stats().dropped.burst, COUNT);
        assert!((0.035..=0.065).contains(&loss), "seed {seed}: loss {loss}");
        let indices: Vec<u64> = imp.drops().iter().map(|d| d.index).collect();
        let runs = runs(&indices);
        let mean = runs.iter().sum::<u64>() as f64 / runs.len() as f64;
        assert!(
            (2.4..=3.6).contains(&mean),
            "seed {seed}: mean burst {mean}"
        );
    }
}

/// Random loss of 5% alone has mean runs near 1/(1-0.05) ≈ 1.05: the burst test above is
/// not passing by accident.
#[test]
fn random_loss_is_not_bursty() {
    let sender = Sender::new(N, ms(1), 100);
    let mut imp = impairment(&sender, conditions("loss=5%"), 1);
    sender.run(&mut imp);
    let indices: Vec<u64> = imp.drops().iter().map(|d| d.index).collect();
    let runs = runs(&indices);
    let mean = runs.iter().sum::<u64>() as f64 / runs.len() as f64;
    assert!(mean < 1.2, "mean run {mean}");
}

/// Delay 40 ms: every datagram exactly 40 ms after it was sent, in order.
#[test]
fn delay_is_exact() {
    let sender = Sender::new(N, ms(1), 100);
    let mut imp = impairment(&sender, conditions("delay=40ms"), 1);
    let out = sender.run(&mut imp);
    assert_eq!(out.len() as u64, N);
    for (i, d) in out.iter().enumerate() {
        assert_eq!(d.index, i as u64);
        assert_eq!(d.due - sender.sent_at(d.index), ms(40));
    }
}

/// Delay 40 ms, jitter 10 ms at 1 ms spacing: every delay in [30, 50] ms and FIFO kept
/// (reorder=0). Holding datagrams behind their predecessors skews delays upward at this
/// rate (a delay under 38 ms needs the twelve draws before it to be low too, about 0.6%),
/// so the low end is checked at 38 ms and the high end at 49 ms.
#[test]
fn jitter_bounded_and_fifo() {
    let sender = Sender::new(N, ms(1), 100);
    let mut imp = impairment(&sender, conditions("delay=40ms,jitter=10ms"), 1);
    let out = sender.run(&mut imp);
    let delays: Vec<Duration> = out
        .iter()
        .map(|d| d.due - sender.sent_at(d.index))
        .collect();
    assert!(delays.iter().all(|d| (ms(30)..=ms(50)).contains(d)));
    assert!(out.windows(2).all(|w| w[0].index < w[1].index), "FIFO");
    assert!(delays.iter().min().is_some_and(|d| *d < ms(38)));
    assert!(delays.iter().max().is_some_and(|d| *d > ms(49)));
}

/// Jitter is uniform: at 20 ms spacing (no FIFO holding) the mean delay is 40 ± 0.5 ms and
/// the share below 35 ms is 25% ± 3 points.
#[test]
fn jitter_is_uniform() {
    let sender = Sender::new(N, ms(20), 100);
    let mut imp = impairment(&sender, conditions("delay=40ms,jitter=10ms"), 1);
    let out = sender.run(&mut imp);
    let delays: Vec<f64> = out
        .iter()
        .map(|d| (d.due - sender.sent_at(d.index)).as_secs_f64() * 1000.0)
        .collect();
    let mean = delays.iter().sum::<f64>() / delays.len() as f64;
    assert!((39.5..=40.5).contains(&mean), "mean {mean} ms");
    let below = delays.iter().filter(|d| **d < 35.0).count() as u64;
    let share = fraction(below, N);
    assert!((0.22..=0.28).contains(&share), "share below 35 ms {share}");
}

/// Reorder 5% (gap 10 ms, 1 ms spacing): the share of datagrams that arrive after a
/// successor is in [4%, 6%], and each of them is one the core held back.
#[test]
fn reorder_about_five_percent() {
    let sender = Sender::new(N, ms(1), 100);
    let mut imp = impairment(&sender, conditions("delay=20ms,reorder=5%,gap=10ms"), 1);
    let out = sender.run(&mut imp);
    let late = late(&out) as u64;
    let share = fraction(late, N);
    assert!((0.04..=0.06).contains(&share), "out of order {share}");
    let held = imp.stats().reordered;
    assert!(held.abs_diff(late) <= 1, "held {held}, late {late}");
    let max_delay = out.iter().map(|d| d.due - sender.sent_at(d.index)).max();
    assert_eq!(max_delay, Some(ms(30)));
}

/// Rate 300 kbit, queue 50, 1200-byte datagrams offered at 1 Mbit for 96 s: throughput
/// over [10 s, 90 s] within 5% of 300 kbit; tail drops exactly when 50 are queued (never
/// before); about 70% dropped ([65%, 75%]); delay at most 51 serialization times.
#[test]
fn rate_cap_with_tail_drop() {
    let sender = Sender::new(N, Duration::from_micros(9_600), 1200);
    let mut imp = impairment(&sender, conditions("rate=300kbit,queue=50"), 1);
    let mut depth_at_push = Vec::new();
    let out = sender.run_with(&mut imp, |imp, _, now| {
        depth_at_push.push(imp.queue_depth(now).packets);
    });
    let window = (
        sender.sent_at(0) + Duration::from_secs(10),
        Duration::from_secs(80),
    );
    let bits: u64 = out
        .iter()
        .filter(|d| d.due >= window.0 && d.due < window.0 + window.1)
        .map(|d| d.data.len() as u64 * 8)
        .sum();
    let throughput = bits as f64 / window.1.as_secs_f64();
    assert!(
        (285_000.0..=315_000.0).contains(&throughput),
        "throughput {throughput}"
    );
    assert!(imp.drops().iter().all(|d| d.reason == DropReason::Queue));
    assert!(
        imp.drops()
            .iter()
            .all(|d| depth_at_push[d.index as usize] == 50)
    );
    assert!(out.iter().all(|d| depth_at_push[d.index as usize] < 50));
    let dropped = fraction(imp.stats().dropped.queue, N);
    assert!((0.65..=0.75).contains(&dropped), "dropped {dropped}");
    let serialization = ms(32);
    let worst = out.iter().map(|d| d.due - sender.sent_at(d.index)).max();
    assert!(worst.is_some_and(|w| w <= serialization * 51), "{worst:?}");
}

/// A byte-limited queue (12 kB = ten 1200-byte datagrams) drops exactly when the next
/// datagram would not fit.
#[test]
fn byte_queue_limit() {
    let sender = Sender::new(1_000, Duration::from_micros(9_600), 1200);
    let mut imp = impairment(&sender, conditions("rate=300kbit,queue=12kb"), 1);
    let mut bytes_at_push = Vec::new();
    sender.run_with(&mut imp, |imp, _, now| {
        bytes_at_push.push(imp.queue_depth(now).bytes);
    });
    assert!(imp.stats().dropped.queue > 0);
    assert!(
        imp.drops()
            .iter()
            .all(|d| bytes_at_push[d.index as usize] == 12_000)
    );
}

/// Black-hole: everything dropped, nothing in flight.
#[test]
fn blackhole_drops_all() {
    let sender = Sender::new(1_000, ms(1), 100);
    let mut imp = impairment(&sender, Conditions::blackhole(), 1);
    let out = sender.run(&mut imp);
    assert!(out.is_empty());
    assert_eq!(imp.poll_timeout(), None);
    assert_eq!(imp.stats().dropped.blackhole, 1_000);
    assert!(
        imp.drops()
            .iter()
            .all(|d| d.reason == DropReason::Blackhole)
    );
}

/// Duplicate 10%: copies in [8%, 12%], each right after its original with the same bytes.
#[test]
fn duplicate_about_ten_percent() {
    let sender = Sender::new(N, ms(1), 100);
    let mut imp = impairment(&sender, conditions("delay=5ms,duplicate=10%"), 1);
    let out = sender.run(&mut imp);
    let copies = imp.stats().duplicated;
    let share = fraction(copies, N);
    assert!((0.08..=0.12).contains(&share), "duplicated {share}");
    assert_eq!(out.len() as u64, N + copies);
    for pair in out.windows(2).filter(|w| w[1].duplicate) {
        assert!(!pair[0].duplicate);
        assert_eq!(
            (pair[0].index, &pair[0].data),
            (pair[1].index, &pair[1].data)
        );
    }
}

/// `1s blackhole`, `2s delay=40ms`, `free`: dropped before 1 s, +40 ms from 1 s to 3 s,
/// then +0 once the datagrams still on the 40 ms path are out (FIFO).
#[test]
fn schedule_switches_on_time() {
    let sender = Sender::new(400, ms(10), 100);
    let schedule = Schedule::parse("1s blackhole\n2s delay=40ms\nfree").expect("parses");
    let mut imp = Impairment::new(sender.start, schedule, 1);
    let out = sender.run(&mut imp);
    let dropped: Vec<u64> = imp.drops().iter().map(|d| d.index).collect();
    assert_eq!(dropped, (0..100).collect::<Vec<_>>());
    let last_delayed = sender.sent_at(299) + ms(40);
    for d in &out {
        let sent = sender.sent_at(d.index);
        let expected = match d.index {
            100..=299 => sent + ms(40),
            _ => sent.max(last_delayed),
        };
        assert_eq!(d.due, expected, "datagram {}", d.index);
    }
    assert_eq!(out.len(), 300);
}

/// `set_conditions` mid-run: capped at 300 kbit until 5 s, then free; after the queue has
/// drained, datagrams pass with no delay and no more are dropped.
#[test]
fn live_switch_from_capped_to_free() {
    let sender = Sender::new(1_000, Duration::from_micros(9_600), 1200);
    let switch = sender.sent_at(0) + Duration::from_secs(5);
    let mut imp = impairment(&sender, conditions("rate=300kbit,queue=20"), 1);
    let out = sender.run_with(&mut imp, |imp, _, now| {
        if now >= switch && imp.conditions(now).rate.is_some() {
            imp.set_conditions(now, Conditions::free());
        }
    });
    assert!(imp.drops().iter().all(|d| sender.sent_at(d.index) < switch));
    let drained = switch + ms(32) * 21;
    let after: Vec<&Delivery> = out
        .iter()
        .filter(|d| sender.sent_at(d.index) > drained)
        .collect();
    assert!(!after.is_empty());
    assert!(after.iter().all(|d| d.due == sender.sent_at(d.index)));
}

/// The effects used by the determinism tests, all at once.
const EVERYTHING: &str =
    "delay=30ms,jitter=10ms,loss=2%,ge=1%/30%/100%/0%,reorder=3%,duplicate=2%,rate=1mbit,queue=30";

/// What a run delivered (index, due after start, copy?) and dropped (index, when, reason).
type Fingerprint = (Vec<(u64, Duration, bool)>, Vec<(u64, Duration, DropReason)>);

fn fingerprint(seed: u64) -> Fingerprint {
    let sender = Sender::new(5_000, ms(1), 150);
    let mut imp = impairment(&sender, conditions(EVERYTHING), seed);
    let out = sender.run(&mut imp);
    let deliveries = out
        .iter()
        .map(|d| (d.index, d.due - sender.start, d.duplicate))
        .collect();
    let drops = imp
        .drops()
        .iter()
        .map(|d| (d.index, d.at - sender.start, d.reason))
        .collect();
    (deliveries, drops)
}

/// Same seed, inputs and times: identical deliveries and drops. Another seed: different.
#[test]
fn deterministic_under_a_seed() {
    let a = fingerprint(42);
    assert!(a == fingerprint(42), "same seed, same run");
    let b = fingerprint(43);
    assert!(a.0 != b.0 && a.1 != b.1, "another seed, another run");
    let reasons: Vec<DropReason> = a.1.iter().map(|d| d.2).collect();
    for reason in [DropReason::Burst, DropReason::Random, DropReason::Queue] {
        assert!(reasons.contains(&reason), "{reason:?} exercised");
    }
}

/// Each effect draws from its own stream: adding jitter does not move the losses.
#[test]
fn effects_do_not_disturb_each_other() {
    let losses = |c: &str| {
        let sender = Sender::new(2_000, ms(1), 100);
        let mut imp = impairment(&sender, conditions(c), 9);
        sender.run(&mut imp);
        imp.drops().iter().map(|d| d.index).collect::<Vec<_>>()
    };
    assert_eq!(losses("loss=5%"), losses("loss=5%,jitter=5ms,reorder=10%"));
}

/// The drop log keeps the tag, the length and the first bytes; its limit caps only the log.
#[test]
fn drop_log_records_datagrams() {
    let start = Instant::now();
    let mut imp = Impairment::new(start, Conditions::blackhole(), 1);
    imp.set_drop_log_limit(2);
    let data: Vec<u8> = (0..40).collect();
    for tag in [7, 8, 9] {
        imp.push_tagged(start + ms(tag), data.clone(), tag);
    }
    let first = &imp.drops()[0];
    assert_eq!((first.index, first.tag, first.len), (0, 7, 40));
    assert_eq!(first.head, data[..DROP_HEAD_LEN].to_vec());
    assert_eq!(first.at, start + ms(7));
    assert_eq!(imp.drops().len(), 2);
    assert_eq!(imp.stats().dropped.get(DropReason::Blackhole), 3);
    assert_eq!(imp.stats().in_flight(), 0);
}
