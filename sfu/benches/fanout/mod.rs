//! What both fan-out benchmarks share: the workload, a counting allocator, and the report.
//!
//! The workload (DESIGN §4.4, issue 9): one publisher sends RTP to the SFU; the SFU side
//! holds one WebRTC connection to the publisher and one to each of [`FANOUT`] subscribers,
//! all driven in memory on a virtual clock; every packet received from the publisher is
//! written to every subscriber. Only the SFU side's work is timed and counted: receiving
//! the publisher's SRTP datagram (decrypt, parse) and producing the subscribers' SRTP
//! datagrams (rewrite, encrypt, serialize). The publisher's packets are made before the
//! timed part, and what the SFU sends to subscribers is dropped unread.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

/// Subscribers per publisher.
pub const FANOUT: usize = 10;
/// Packets the publisher sends in one measured run (after a warm-up of the same size).
pub const PACKETS: usize = 5_000;
/// Virtual time between two publisher packets (a 1 Mbit/s video stream of ~1.1 kB packets
/// sends about one every 9 ms; audio one every 20 ms; closer spacing only runs timers less).
pub const SPACING: Duration = Duration::from_millis(2);
/// Payload sizes measured: an Opus frame's SFrame ciphertext, and a full video packet.
pub const PAYLOADS: [usize; 2] = [100, 1100];

/// Counts allocations made on the measuring thread while [`Counting`] is switched on.
pub struct CountingAlloc;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    let _ = ON.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
            let _ = BYTES.try_with(|b| b.set(b.get() + size as u64));
        }
    });
}

// SAFETY (why `unsafe`): a global allocator must implement the unsafe `GlobalAlloc`
// trait. Every method forwards to `System` unchanged with the same arguments, and only
// bumps thread-local counters, which never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same layout the caller gave us.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` was allocated by `System` with `layout` (all our allocations are).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Time and allocations of the SFU side, summed over the timed sections of one run.
#[derive(Default, Debug, Clone, Copy)]
pub struct Tally {
    /// Time inside timed sections.
    pub elapsed: Duration,
    /// Allocations (including reallocations) inside timed sections.
    pub allocs: u64,
    /// Bytes those allocations asked for.
    pub bytes: u64,
    /// Packets the SFU side produced for subscribers (publisher packets × fan-out, when
    /// nothing is lost).
    pub forwarded: u64,
    /// RTP packets the SFU side received from the publisher.
    pub received: u64,
}

impl Tally {
    /// Runs `f` as SFU-side work: timed, with its allocations counted.
    pub fn measure<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let a0 = ALLOCS.with(Cell::get);
        let b0 = BYTES.with(Cell::get);
        ON.with(|on| on.set(true));
        let start = std::time::Instant::now();
        let out = f();
        self.elapsed += start.elapsed();
        ON.with(|on| on.set(false));
        self.allocs += ALLOCS.with(Cell::get) - a0;
        self.bytes += BYTES.with(Cell::get) - b0;
        out
    }

    /// Prints one line: per forwarded packet CPU and allocations.
    pub fn report(&self, stack: &str, payload: usize) {
        let per = self.forwarded.max(1) as f64;
        println!(
            "{stack:<6} payload {payload:>5} B  fan-out {FANOUT}: {:>7.0} ns/forwarded packet  \
             {:>5.2} allocs/forwarded packet ({:>6.0} B)  {:>9.0} forwarded/s/core  \
             (received {}, forwarded {})",
            self.elapsed.as_nanos() as f64 / per,
            self.allocs as f64 / per,
            self.bytes as f64 / per,
            per / self.elapsed.as_secs_f64(),
            self.received,
            self.forwarded,
        );
    }
}

/// A recognisable payload: the packet's index, then filler.
pub fn payload(index: usize, len: usize) -> Vec<u8> {
    let mut p = vec![0x5a; len];
    p[..8].copy_from_slice(&(index as u64).to_be_bytes());
    p
}
