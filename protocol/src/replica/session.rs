//! One accepted peer: what it holds, what we sent it, its skip list and ours, the batches in
//! flight both ways, and its catch-up.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::entry::Author;
use crate::limits::BATCH_BYTE_BUDGET;
use crate::message::{Batch, Lane};
use crate::reconcile::Reconciler;
use crate::sync::Heads;

/// Most batches of ours a peer may hold unacked on the bulk lane.
pub const BULK_WINDOW_BATCHES: usize = 48;
/// Most batches of ours a peer may hold unacked on the live lane.
pub const LIVE_WINDOW_BATCHES: usize = 16;
/// How much sending time the bulk lane may queue ahead of a live line: the bulk window in
/// bytes is the measured delivery rate times this.
pub const BULK_QUEUE_TIME: Duration = Duration::from_millis(250);
/// The shortest time over which the bulk lane's delivery rate is measured.
pub const RATE_INTERVAL: Duration = Duration::from_millis(50);
/// The bulk window, in bytes, before any rate was measured, and never below.
pub const MIN_BULK_WINDOW: usize = 32 * 1024;
/// The bulk window, in bytes, never above: what a catch-up holds in flight, decoded and
/// waiting to be stored at the receiver (8 MiB cost the receiver ~15 MB more than 2 MiB at no
/// gain in speed on loopback; docs/benchmarks.md).
pub const MAX_BULK_WINDOW: usize = 2 * 1024 * 1024;
/// Smallest bulk batch, in bytes of entries (at least one entry is always sent).
pub const MIN_BULK_BATCH: usize = 8 * 1024;
/// Most live batches of a peer that arrived ahead of their log's prefix, kept until it comes.
pub const MAX_STASHED_BATCHES: usize = 8;
/// Most logs a peer's heads (as compared, 9.3) may claim that we do not hold: claims without
/// entries are bounded (the entries of new logs are always taken). Beyond it, a catch-up's
/// progress undercounts; nothing else changes.
pub const MAX_UNKNOWN_CLAIMS: usize = 65_536;
/// Most logs we do not hold that a peer's notes may claim (counted with the claims above).
pub const MAX_UNKNOWN_NOTES: usize = 4096;

/// A batch of ours the peer has not acked yet.
#[derive(Debug)]
pub struct InFlight {
    pub lane: Lane,
    pub bytes: usize,
    pub sent_at: Instant,
}

/// Progress towards holding what the peer holds and we lacked.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// For each log where the peer is ahead, the seq to reach.
    pub target: Heads,
    /// Entries known to be missing, in all.
    pub total: u64,
    /// Entries still missing.
    pub remaining: u64,
    /// Whether `SyncComplete` was said.
    pub complete: bool,
}

impl CatchUp {
    /// The peer holds `author`'s log through `seq`, while we hold `ours`.
    pub fn claim(&mut self, author: Author, seq: u64, ours: u64) {
        if seq <= ours {
            return;
        }
        let old = self.target.get(&author).copied().unwrap_or(ours).max(ours);
        if seq > old {
            self.target.insert(author, seq);
            self.total = self.total.saturating_add(seq - old);
            self.remaining = self.remaining.saturating_add(seq - old);
        }
    }

    /// Our head of `author`'s log moved from `from` to `to`.
    pub fn advanced(&mut self, author: &Author, from: u64, to: u64) {
        if let Some(&target) = self.target.get(author) {
            let gained = to.min(target).saturating_sub(from.min(target));
            self.remaining = self.remaining.saturating_sub(gained);
            if to >= target {
                self.target.remove(author);
            }
        }
    }

    /// Entries received so far.
    pub fn received(&self) -> u64 {
        self.total - self.remaining
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Session {
    /// The name it claimed.
    pub name: String,
    /// Our side of comparing heads with it.
    pub reconciler: Reconciler,
    /// For each log, the highest seq it is known to hold (hello, replies, notes, what it sent).
    pub known: Heads,
    /// How many entries of `known` are logs we do not hold.
    pub unknown_claims: usize,
    /// For each log, the highest seq we sent it on this session.
    pub sent: Heads,
    /// Logs it asked us to skip: we send notes of them.
    pub skipped_by_it: BTreeSet<Author>,
    /// Logs new to us during the session, of which it holds nothing: offered by a note, sent
    /// once it asks (`unskip`), so a new log is not pushed by every neighbour at once.
    pub offered_only: BTreeSet<Author>,
    /// What we last noted to it of each skipped log.
    pub noted: Heads,
    /// Logs we asked it to skip (as last told).
    pub skipped_by_us: BTreeSet<Author>,
    /// Logs whose sending may be due.
    pub dirty: BTreeSet<Author>,
    /// Logs with a long run due (a catch-up): sent a batch of each in turn, after the others.
    pub backlog: BTreeSet<Author>,
    /// The log of the backlog that had the last turn.
    pub backlog_turn: Option<Author>,
    /// Whether the peer said how it routes (its first `Route`): nothing is pushed before.
    pub routed_by_it: bool,
    /// Whether we sent our first `Route` (once our comparison was done).
    pub routed_by_us: bool,
    /// Logs that got new entries while it held all we had of them: those go on the live lane.
    pub live: BTreeSet<Author>,
    /// Our batches it has not acked, oldest first.
    pub in_flight: VecDeque<InFlight>,
    /// Measured delivery rate of the bulk lane, bytes per second (0: not measured yet).
    pub bulk_rate: f64,
    /// Bulk bytes acked since the current measurement began.
    pub acked_bytes: usize,
    /// When the current measurement of the bulk lane's rate began.
    pub measuring_since: Option<Instant>,
    /// Its batches given to the store and not stored yet.
    pub storing: usize,
    /// Its batches stored since we last acked.
    pub to_ack: u32,
    /// Its live batches that came before their log's prefix.
    pub stash: Vec<Batch>,
    /// Our catch-up on what it holds.
    pub catch_up: CatchUp,
}

impl Session {
    /// A session with `name`, comparing heads through `reconciler`.
    pub fn new(name: String, reconciler: Reconciler) -> Self {
        Self {
            name,
            reconciler,
            known: Heads::new(),
            unknown_claims: 0,
            sent: Heads::new(),
            skipped_by_it: BTreeSet::new(),
            offered_only: BTreeSet::new(),
            noted: Heads::new(),
            skipped_by_us: BTreeSet::new(),
            dirty: BTreeSet::new(),
            backlog: BTreeSet::new(),
            backlog_turn: None,
            routed_by_it: false,
            routed_by_us: false,
            live: BTreeSet::new(),
            in_flight: VecDeque::new(),
            bulk_rate: 0.0,
            acked_bytes: 0,
            measuring_since: None,
            storing: 0,
            to_ack: 0,
            stash: Vec::new(),
            catch_up: CatchUp::default(),
        }
    }

    /// The highest seq of `author`'s log it holds or will hold once what we sent arrives.
    pub fn has(&self, author: &Author) -> u64 {
        let known = self.known.get(author).copied().unwrap_or(0);
        known.max(self.sent.get(author).copied().unwrap_or(0))
    }

    /// Raises what it is known to hold of `author`'s log to `seq`; `held` says whether we hold
    /// that log (claims on logs we do not hold are kept while fewer than `limit`). Returns
    /// whether it rose.
    pub fn learn(&mut self, author: Author, seq: u64, held: bool, limit: usize) -> bool {
        match self.known.get_mut(&author) {
            Some(known) if *known >= seq => false,
            Some(known) => {
                *known = seq;
                true
            }
            None if held => {
                self.known.insert(author, seq);
                true
            }
            None if self.unknown_claims < limit => {
                self.unknown_claims += 1;
                self.known.insert(author, seq);
                true
            }
            None => false,
        }
    }

    /// We now hold `author`'s log: its claim on it no longer counts as one on an unknown log.
    pub fn now_held(&mut self, author: &Author, was_held: bool) {
        if !was_held && self.known.contains_key(author) {
            self.unknown_claims = self.unknown_claims.saturating_sub(1);
        }
    }

    /// The log of the backlog whose turn it is (after the last one's, wrapping around).
    pub fn next_in_backlog(&mut self) -> Option<Author> {
        let next = match self.backlog_turn {
            Some(last) => self
                .backlog
                .range((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded))
                .next()
                .or_else(|| self.backlog.first()),
            None => self.backlog.first(),
        }
        .copied();
        self.backlog_turn = next;
        next
    }

    /// How many batches and bytes of ours are in flight on `lane`.
    pub fn in_flight_on(&self, lane: Lane) -> (usize, usize) {
        self.in_flight
            .iter()
            .filter(|f| f.lane == lane)
            .fold((0, 0), |(n, bytes), f| (n + 1, bytes + f.bytes))
    }

    /// The bulk window in bytes: the measured rate times [`BULK_QUEUE_TIME`], bounded.
    pub fn bulk_window(&self) -> usize {
        if self.bulk_rate <= 0.0 {
            return MIN_BULK_WINDOW;
        }
        let window = self.bulk_rate * BULK_QUEUE_TIME.as_secs_f64();
        (window as usize).clamp(MIN_BULK_WINDOW, MAX_BULK_WINDOW)
    }

    /// Bytes of entries to put in the next bulk batch: half the window, bounded.
    pub fn bulk_batch_bytes(&self) -> usize {
        (self.bulk_window() / 2).clamp(MIN_BULK_BATCH, BATCH_BYTE_BUDGET)
    }

    /// It acked `count` of our batches at `now`: they leave the window, and the bulk lane's
    /// delivery rate is measured from them: the bulk bytes acked over at least
    /// [`RATE_INTERVAL`], from when the first of them was sent (or the last measurement, while
    /// the lane stayed busy). Acks come in bursts (a receiver stores batches in groups), so a
    /// single ack says little about the rate.
    pub fn acked(&mut self, count: u32, now: Instant) {
        for _ in 0..count {
            let Some(batch) = self.in_flight.pop_front() else {
                break;
            };
            if batch.lane == Lane::Bulk {
                self.acked_bytes += batch.bytes;
                self.measuring_since.get_or_insert(batch.sent_at);
            }
        }
        let Some(since) = self.measuring_since else {
            return;
        };
        let took = now.saturating_duration_since(since);
        if took < RATE_INTERVAL {
            return;
        }
        let sample = self.acked_bytes as f64 / took.as_secs_f64();
        self.bulk_rate = if self.bulk_rate <= 0.0 {
            sample
        } else {
            0.75 * self.bulk_rate + 0.25 * sample
        };
        self.acked_bytes = 0;
        let busy = self.in_flight.iter().any(|f| f.lane == Lane::Bulk);
        self.measuring_since = busy.then_some(now);
    }

    /// A rough count of the items this session holds (for the simulator's state figures).
    pub fn footprint(&self) -> usize {
        self.known.len()
            + self.sent.len()
            + self.skipped_by_it.len()
            + self.offered_only.len()
            + self.noted.len()
            + self.skipped_by_us.len()
            + self.dirty.len()
            + self.backlog.len()
            + self.live.len()
            + self.in_flight.len()
            + self.stash.len()
            + self.catch_up.target.len()
    }
}

/// The skip-list changes that turn `told` into `wanted`: (to skip, to unskip).
pub fn route_delta(
    told: &BTreeSet<Author>,
    wanted: &BTreeSet<Author>,
) -> (Vec<Author>, Vec<Author>) {
    let skip = wanted.difference(told).copied().collect();
    let unskip = told.difference(wanted).copied().collect();
    (skip, unskip)
}

/// The first and last seq of a batch's entries, when their envelopes decode far enough.
pub fn batch_seqs(batch: &Batch) -> Option<(u64, u64)> {
    let seq = |bytes: &serde_bytes::ByteBuf| {
        crate::Entry::decode(bytes::Bytes::copy_from_slice(bytes))
            .ok()
            .map(|e| e.seq())
    };
    let first = seq(batch.entries.first()?)?;
    let last = seq(batch.entries.last()?)?;
    Some((first, last))
}
