//! The sans-IO core: one direction of a path.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use crate::conditions::{Conditions, GilbertElliott, QueueLimit};
use crate::rng::Rng;
use crate::schedule::Schedule;

/// How many leading bytes of a dropped datagram the drop log keeps (enough for an RTP
/// header's sequence number and SSRC).
pub const DROP_HEAD_LEN: usize = 16;

/// How many drops the log keeps by default; the counts in [`Stats`] go on beyond it.
const DEFAULT_DROP_LOG_LIMIT: usize = 1 << 20;

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The path was a black-hole.
    Blackhole,
    /// Lost by the Gilbert–Elliott burst model.
    Burst,
    /// Lost at random (`loss`).
    Random,
    /// The queue in front of the rate cap was full (tail drop).
    Queue,
}

/// One dropped datagram in the drop log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// When it was pushed (and dropped).
    pub at: Instant,
    /// Its index: the number of datagrams pushed before it.
    pub index: u64,
    /// The tag it was pushed with (the proxy's client mapping; 0 for [`Impairment::push`]).
    pub tag: u64,
    /// Its length in bytes.
    pub len: usize,
    /// Why.
    pub reason: DropReason,
    /// Its first [`DROP_HEAD_LEN`] bytes (fewer if it was shorter).
    pub head: Vec<u8>,
}

/// Drops counted by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// [`DropReason::Blackhole`].
    pub blackhole: u64,
    /// [`DropReason::Burst`].
    pub burst: u64,
    /// [`DropReason::Random`].
    pub random: u64,
    /// [`DropReason::Queue`].
    pub queue: u64,
}

impl DropCounts {
    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Blackhole => self.blackhole,
            DropReason::Burst => self.burst,
            DropReason::Random => self.random,
            DropReason::Queue => self.queue,
        }
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.blackhole + self.burst + self.random + self.queue
    }

    fn add(&mut self, reason: DropReason) {
        let count = match reason {
            DropReason::Blackhole => &mut self.blackhole,
            DropReason::Burst => &mut self.burst,
            DropReason::Random => &mut self.random,
            DropReason::Queue => &mut self.queue,
        };
        *count += 1;
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams pushed in.
    pub received: u64,
    /// Bytes pushed in.
    pub received_bytes: u64,
    /// Datagrams handed out by `poll` (duplicates included).
    pub delivered: u64,
    /// Bytes handed out by `poll`.
    pub delivered_bytes: u64,
    /// Extra copies made by `duplicate`.
    pub duplicated: u64,
    /// Datagrams held back by `reorder`.
    pub reordered: u64,
    /// Drops by reason.
    pub dropped: DropCounts,
}

impl Stats {
    /// Datagrams accepted but not yet delivered.
    pub fn in_flight(&self) -> u64 {
        (self.received + self.duplicated).saturating_sub(self.dropped.total() + self.delivered)
    }
}

/// A datagram due for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The datagram.
    pub data: Vec<u8>,
    /// Its index (see [`Dropped::index`]).
    pub index: u64,
    /// The tag it was pushed with.
    pub tag: u64,
    /// When it was due (at or before the `now` it was polled at).
    pub due: Instant,
    /// Whether this is the extra copy of a duplicated datagram.
    pub duplicate: bool,
}

/// How full the queue in front of the rate cap is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Datagrams queued (including the one being serialized).
    pub packets: usize,
    /// Their bytes.
    pub bytes: usize,
}

/// A datagram waiting for its delivery time.
#[derive(Debug)]
struct Pending {
    due: Instant,
    /// Push order, to break ties in delivery time (FIFO).
    seq: u64,
    delivery: Delivery,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// One random stream per effect, so that changing one effect does not change which
/// datagrams another picks.
#[derive(Debug, Clone)]
struct Streams {
    loss: Rng,
    burst: Rng,
    jitter: Rng,
    reorder: Rng,
    duplicate: Rng,
}

impl Streams {
    fn new(seed: u64) -> Self {
        Self {
            loss: Rng::stream(seed, 1),
            burst: Rng::stream(seed, 2),
            jitter: Rng::stream(seed, 3),
            reorder: Rng::stream(seed, 4),
            duplicate: Rng::stream(seed, 5),
        }
    }
}

/// The rate cap's state: when the link is free and what is still being serialized.
#[derive(Debug, Default)]
struct Bottleneck {
    free_at: Option<Instant>,
    /// `(done, len)` of each datagram still in the queue, oldest first.
    queued: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
}

impl Bottleneck {
    /// Forgets datagrams fully serialized by `now`.
    fn drain(&mut self, now: Instant) {
        while let Some(&(done, len)) = self.queued.front() {
            if done > now {
                break;
            }
            self.queued.pop_front();
            self.queued_bytes -= len;
        }
    }

    /// Whether a datagram of `len` bytes does not fit.
    fn full(&self, limit: QueueLimit, len: usize) -> bool {
        match limit {
            QueueLimit::Packets(n) => self.queued.len() >= n,
            QueueLimit::Bytes(n) => self.queued_bytes + len > n,
        }
    }

    /// Serializes a datagram of `len` bytes at `rate` from `now`; returns when its last bit
    /// is out.
    fn send(&mut self, now: Instant, rate: u64, len: usize) -> Instant {
        let begin = self.free_at.map_or(now, |free| free.max(now));
        let done = begin + transmission_time(len, rate);
        self.free_at = Some(done);
        self.queued.push_back((done, len));
        self.queued_bytes += len;
        done
    }
}

/// `len * 8 / rate` seconds (a zero rate counts as 1 bit/s).
fn transmission_time(len: usize, rate: u64) -> Duration {
    let nanos = (len as u128 * 8 * 1_000_000_000) / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// One direction of a path, sans IO: push datagrams in, poll them out when due. It never
/// reads a clock; every `now` is passed in and should not go backwards (an earlier `now`
/// than one already seen counts as the latest seen). The same seed, schedule, datagrams
/// and times always give the same deliveries and drops.
#[derive(Debug)]
pub struct Impairment {
    schedule: Schedule,
    start: Instant,
    latest: Instant,
    rng: Streams,
    /// The Gilbert–Elliott chain is in its bad state.
    bad: bool,
    next_index: u64,
    next_seq: u64,
    bottleneck: Bottleneck,
    /// The latest delivery time of a datagram that was not reordered (FIFO floor).
    fifo_floor: Option<Instant>,
    pending: BinaryHeap<Reverse<Pending>>,
    drops: Vec<Dropped>,
    drop_log_limit: usize,
    stats: Stats,
}

impl Impairment {
    /// A direction applying `schedule` from `start`, with random streams from `seed`.
    pub fn new(start: Instant, schedule: impl Into<Schedule>, seed: u64) -> Self {
        Self {
            schedule: schedule.into(),
            start,
            latest: start,
            rng: Streams::new(seed),
            bad: false,
            next_index: 0,
            next_seq: 0,
            bottleneck: Bottleneck::default(),
            fifo_floor: None,
            pending: BinaryHeap::new(),
            drops: Vec::new(),
            drop_log_limit: DEFAULT_DROP_LOG_LIMIT,
            stats: Stats::default(),
        }
    }

    /// Keeps at most `limit` entries in the drop log (default 2^20); counts go on.
    pub fn set_drop_log_limit(&mut self, limit: usize) {
        self.drop_log_limit = limit;
    }

    /// Replaces the schedule with `conditions` from now on. Datagrams already accepted keep
    /// their delivery times.
    pub fn set_conditions(&mut self, now: Instant, conditions: Conditions) {
        self.set_schedule(now, Schedule::constant(conditions));
    }

    /// Replaces the schedule, which starts over at `now`.
    pub fn set_schedule(&mut self, now: Instant, schedule: Schedule) {
        self.start = self.advance(now);
        self.schedule = schedule;
    }

    /// The conditions that apply at `now`.
    pub fn conditions(&self, now: Instant) -> &Conditions {
        self.schedule.at(now.saturating_duration_since(self.start))
    }

    /// The schedule in force and when it started.
    pub fn schedule(&self) -> (&Schedule, Instant) {
        (&self.schedule, self.start)
    }

    /// Pushes a datagram in at `now` (tag 0); returns its index.
    pub fn push(&mut self, now: Instant, datagram: Vec<u8>) -> u64 {
        self.push_tagged(now, datagram, 0)
    }

    /// Pushes a datagram in at `now` with a tag that comes back with its delivery or in its
    /// drop record; returns its index.
    pub fn push_tagged(&mut self, now: Instant, datagram: Vec<u8>, tag: u64) -> u64 {
        let now = self.advance(now);
        let index = self.next_index;
        self.next_index += 1;
        self.stats.received += 1;
        self.stats.received_bytes += datagram.len() as u64;
        let conditions = self.conditions(now).clone();
        self.bottleneck.drain(now);
        if let Some(reason) = self.verdict(&conditions, datagram.len()) {
            self.record_drop(now, index, tag, &datagram, reason);
            return index;
        }
        let departure = match conditions.rate {
            Some(rate) => self.bottleneck.send(now, rate, datagram.len()),
            None => now,
        };
        let due = self.due_time(departure, &conditions);
        let copy = self
            .rng
            .duplicate
            .chance(conditions.duplicate)
            .then(|| datagram.clone());
        // The original goes in first so that it comes out before its copy.
        self.schedule_delivery(due, index, tag, datagram, false);
        if let Some(copy) = copy {
            self.stats.duplicated += 1;
            self.schedule_delivery(due, index, tag, copy, true);
        }
        index
    }

    /// The next datagram due at or before `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.poll_delivery(now).map(|d| d.data)
    }

    /// Like [`poll`](Self::poll), with the datagram's index, tag and due time.
    pub fn poll_delivery(&mut self, now: Instant) -> Option<Delivery> {
        let Reverse(next) = self.pending.peek()?;
        if next.due > now {
            return None;
        }
        let Reverse(next) = self.pending.pop()?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes += next.delivery.data.len() as u64;
        Some(next.delivery)
    }

    /// When the next datagram is due (`None`: nothing in flight). Poll then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.peek().map(|Reverse(p)| p.due)
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The drop log, oldest first.
    pub fn drops(&self) -> &[Dropped] {
        &self.drops
    }

    /// Datagrams accepted and not yet polled out.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The queue in front of the rate cap at `now`.
    pub fn queue_depth(&self, now: Instant) -> QueueDepth {
        let mut depth = QueueDepth::default();
        for &(done, len) in &self.bottleneck.queued {
            if done > now {
                depth.packets += 1;
                depth.bytes += len;
            }
        }
        depth
    }

    /// `now`, not earlier than any time seen before.
    fn advance(&mut self, now: Instant) -> Instant {
        self.latest = self.latest.max(now);
        self.latest
    }

    /// Whether (and why) a datagram of `len` bytes is dropped.
    fn verdict(&mut self, conditions: &Conditions, len: usize) -> Option<DropReason> {
        if conditions.blackhole {
            return Some(DropReason::Blackhole);
        }
        if self.burst_loss(conditions.burst.as_ref()) {
            return Some(DropReason::Burst);
        }
        if self.rng.loss.chance(conditions.loss) {
            return Some(DropReason::Random);
        }
        let queue_full = conditions.rate.is_some() && self.bottleneck.full(conditions.queue, len);
        queue_full.then_some(DropReason::Queue)
    }

    /// One step of the Gilbert–Elliott chain, then whether the datagram is lost in the new
    /// state. Without a model the chain rests in the good state.
    fn burst_loss(&mut self, model: Option<&GilbertElliott>) -> bool {
        let Some(ge) = model else {
            self.bad = false;
            return false;
        };
        let rng = &mut self.rng.burst;
        self.bad = if self.bad {
            !rng.chance(ge.p_bad_to_good)
        } else {
            rng.chance(ge.p_good_to_bad)
        };
        rng.chance(if self.bad {
            ge.loss_in_bad
        } else {
            ge.loss_in_good
        })
    }

    /// The delivery time of a datagram that leaves the rate cap at `departure`: plus delay
    /// and jitter, not before the previous in-order datagram, plus the gap if reordered.
    fn due_time(&mut self, departure: Instant, conditions: &Conditions) -> Instant {
        let jittered = self.jittered(departure, conditions.delay, conditions.jitter);
        let in_order = self
            .fifo_floor
            .map_or(jittered, |floor| floor.max(jittered));
        if self.rng.reorder.chance(conditions.reorder) {
            self.stats.reordered += 1;
            return in_order + conditions.reorder_gap;
        }
        self.fifo_floor = Some(in_order);
        in_order
    }

    /// `departure + delay + U[-jitter, +jitter]`, not before `departure`.
    fn jittered(&mut self, departure: Instant, delay: Duration, jitter: Duration) -> Instant {
        let base = departure + delay;
        let span = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX / 2);
        if span == 0 {
            return base;
        }
        let draw = self.rng.jitter.below(2 * span + 1);
        if draw >= span {
            base + Duration::from_nanos(draw - span)
        } else {
            base.checked_sub(Duration::from_nanos(span - draw))
                .map_or(departure, |t| t.max(departure))
        }
    }

    fn schedule_delivery(
        &mut self,
        due: Instant,
        index: u64,
        tag: u64,
        data: Vec<u8>,
        duplicate: bool,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let delivery = Delivery {
            data,
            index,
            tag,
            due,
            duplicate,
        };
        self.pending.push(Reverse(Pending { due, seq, delivery }));
    }

    fn record_drop(
        &mut self,
        now: Instant,
        index: u64,
        tag: u64,
        datagram: &[u8],
        reason: DropReason,
    ) {
        self.stats.dropped.add(reason);
        if self.drops.len() < self.drop_log_limit {
            self.drops.push(Dropped {
                at: now,
                index,
                tag,
                len: datagram.len(),
                reason,
                head: datagram[..datagram.len().min(DROP_HEAD_LEN)].to_vec(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
