//! What the replication core and the insert planner need from a store of logs.
//!
//! The fjall store (`p2pchat-storage`) and [`MemoryStore`] implement [`Logs`]. Writing is not
//! part of the trait: the core asks its driver to store a batch (`Output::Store`), the driver
//! plans the insert with [`plan_insert`], commits the plan atomically, syncs, and reports the
//! [`Inserted`] outcome back.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::clock;
use crate::entry::{Author, Body, DecodeError, Draft, Entry, Hash, SigningKey};
use crate::message::HeadInfo;
use crate::room::RoomId;
use crate::validate::{
    ValidationError, check_known, check_link, check_next, newest_vouches_for_run,
};

/// Reads of a store of logs: one room's logs.
pub trait Logs {
    /// A failed read.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The room whose logs the store holds: it takes no entry that names another.
    fn room(&self) -> RoomId;

    /// The highest seq held of `author`'s log (0: none).
    fn head_seq(&self, author: &Author) -> u64;

    /// Whether `author` forked their log (nothing more of it is accepted or relayed).
    fn is_frozen(&self, author: &Author) -> bool;

    /// The entry at `seq` of `author`'s log, if held.
    fn entry(&self, author: &Author, seq: u64) -> Result<Option<Entry>, Self::Error>;

    /// Envelopes of `author`'s log from `from` on, oldest first: at most `max_entries`, and
    /// no more once `max_bytes` are reached (at least one if any is held).
    fn envelopes(
        &self,
        author: &Author,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, Self::Error>;
}

/// The result of offering a batch of remote entries to a store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Entries newly stored, oldest first.
    pub stored: Vec<Entry>,
    /// Entries skipped because the store already held them.
    pub duplicates: usize,
    /// The highest seq of the batch that the store now holds (stored or duplicate); 0 if none.
    pub held_through: u64,
    /// Why the batch stopped early, if it did; everything before it was stored.
    pub rejected: Option<ValidationError>,
}

/// What a store must write, atomically, to take a batch: made by [`plan_insert`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsertPlan {
    /// The outcome once the plan is committed; its `stored` entries are the new valid run
    /// that extends the log, oldest first.
    pub outcome: Inserted,
    /// A second, validly signed entry at a seq the log holds: to be kept as proof of the
    /// fork, and the author frozen.
    pub fork: Option<Entry>,
}

impl InsertPlan {
    /// The new entries to append to the log, oldest first (they link to its head).
    pub fn run(&self) -> &[Entry] {
        &self.outcome.stored
    }
}

/// Why a batch could not be planned (the batch itself was fine to look at; the store was not).
#[derive(Debug, thiserror::Error)]
pub enum PlanError<E> {
    /// Reading the store failed.
    #[error(transparent)]
    Read(E),
    /// The store should hold the entry at `seq` (it is at or below the log's head) but does
    /// not: the store is damaged.
    #[error("entry {seq} of a log at or below its head is missing")]
    Missing {
        /// The missing entry's seq.
        seq: u64,
    },
}

/// Plans the insert of consecutive entries of `author`'s log received from a peer, against
/// what `logs` holds (docs/protocol.md, 6.2). Every entry must belong to the store's room
/// ([`crate::validate::check_room`]): one that names another room, or a format 1 entry where
/// the log holds a format 2 one, is [`ValidationError::WrongRoom`] (never a fork). Entries
/// already held are skipped (counted as
/// duplicates); a different valid entry at a held seq is a fork: it becomes the plan's proof
/// and the batch stops there. New entries are checked link by link and their signatures
/// through the newest one ([`newest_vouches_for_run`]); the valid prefix is planned, and the
/// first bad entry is the outcome's `rejected`. An old entry after new ones ends the batch
/// (a gap). Nothing is offered for a frozen author.
pub fn plan_insert<L: Logs>(
    logs: &L,
    author: Author,
    envelopes: impl IntoIterator<Item = Bytes>,
) -> Result<InsertPlan, PlanError<L::Error>> {
    plan_insert_vouched(logs, author, envelopes, |_| false)
}

/// [`plan_insert`], where `vouched` says of the run's newest entry whether its signature is
/// known to verify already (then it is not checked again).
fn plan_insert_vouched<L: Logs>(
    logs: &L,
    author: Author,
    envelopes: impl IntoIterator<Item = Bytes>,
    vouched: impl Fn(&Entry) -> bool,
) -> Result<InsertPlan, PlanError<L::Error>> {
    let mut outcome = Inserted::default();
    if logs.is_frozen(&author) {
        outcome.rejected = Some(ValidationError::AuthorFrozen);
        return Ok(InsertPlan {
            outcome,
            fork: None,
        });
    }
    let held = |seq| match logs.entry(&author, seq) {
        Ok(Some(entry)) => Ok(entry),
        Ok(None) => Err(PlanError::Missing { seq }),
        Err(e) => Err(PlanError::Read(e)),
    };
    let mut last = match logs.head_seq(&author) {
        0 => None,
        head => Some(held(head)?),
    };
    let mut fork = None;
    let mut run: Vec<Entry> = Vec::new();
    for envelope in envelopes {
        let entry = match Entry::decode(envelope) {
            Ok(entry) => entry,
            Err(e) => {
                outcome.rejected = Some(e.into());
                break;
            }
        };
        let last_seq = last.as_ref().map_or(0, Entry::seq);
        if entry.seq() != 0 && entry.seq() <= last_seq && entry.author() == author {
            if !run.is_empty() {
                // An old entry after new ones: the run is over; stop here.
                outcome.rejected = Some(ValidationError::Gap {
                    expected: last_seq + 1,
                    found: entry.seq(),
                });
                break;
            }
            match check_known(logs.room(), &held(entry.seq())?, &entry) {
                Ok(()) => {
                    outcome.duplicates += 1;
                    outcome.held_through = outcome.held_through.max(entry.seq());
                    continue;
                }
                Err(e) => {
                    if matches!(e, ValidationError::Fork { .. }) {
                        fork = Some(entry);
                    }
                    outcome.rejected = Some(e);
                    break;
                }
            }
        }
        if let Err(e) = check_link(logs.room(), author, last.as_ref(), &entry) {
            outcome.rejected = Some(e);
            break;
        }
        last = Some(entry.clone());
        run.push(entry);
    }
    let (valid, bad_signature) = match run.last() {
        Some(newest) if vouched(newest) => (run.len(), None),
        _ => newest_vouches_for_run(&run),
    };
    run.truncate(valid);
    if bad_signature.is_some() {
        outcome.rejected = bad_signature;
    }
    if let Some(newest) = run.last() {
        outcome.held_through = newest.seq();
    }
    outcome.stored = run;
    Ok(InsertPlan { outcome, fork })
}

/// A log in a [`MemoryStore`] that does not verify ([`MemoryStore::verify_chains`]).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("the log of {author:?} is broken at seq {seq}: {error}")]
pub struct BrokenLog {
    /// Whose log.
    pub author: Author,
    /// The first entry that does not verify.
    pub seq: u64,
    /// What is wrong with it.
    pub error: ValidationError,
}

/// Most envelopes a [`SignatureCache`] remembers; past it, it starts over empty.
pub const MAX_CACHED_SIGNATURES: usize = 1 << 20;

/// The hashes of envelopes whose signatures verified, shared by the [`MemoryStore`]s of a
/// simulated world, so that each entry's signature is checked once in the world, not once
/// per node that stores it. An envelope's hash covers its payload and its signature, so an
/// envelope with a hash in the cache is one that verified: the rules are unchanged, only
/// their cost. Bounded by [`MAX_CACHED_SIGNATURES`].
#[derive(Clone, Debug, Default)]
pub struct SignatureCache(Arc<Mutex<HashSet<Hash>>>);

impl SignatureCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `entry`'s envelope verified before.
    pub fn contains(&self, entry: &Entry) -> bool {
        let set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.contains(&entry.hash())
    }

    /// Remembers that `entry`'s envelope verifies.
    fn insert(&self, entry: &Entry) {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if set.len() >= MAX_CACHED_SIGNATURES {
            set.clear();
        }
        set.insert(entry.hash());
    }
}

/// An in-memory store of one room's logs, with the same insert rules as the fjall store: for
/// tests and the simulator. It holds what it is given, nothing more.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    /// The room whose logs it holds.
    room: RoomId,
    /// Each author's log, entry `seq` at index `seq - 1` (logs have no gaps).
    logs: BTreeMap<Author, Vec<Entry>>,
    /// For each author who forked, the second entry kept as proof.
    forks: BTreeMap<Author, Entry>,
    /// The largest clock of any stored entry.
    max_clock: u64,
    /// Signatures already checked, if shared with other stores.
    signatures: Option<SignatureCache>,
}

impl MemoryStore {
    /// An empty store of `room`'s logs.
    pub fn new(room: RoomId) -> Self {
        Self {
            room,
            logs: BTreeMap::new(),
            forks: BTreeMap::new(),
            max_clock: 0,
            signatures: None,
        }
    }

    /// An empty store of `room`'s logs that checks a signature only if no store sharing
    /// `signatures` checked it before.
    pub fn with_signature_cache(room: RoomId, signatures: SignatureCache) -> Self {
        Self {
            signatures: Some(signatures),
            ..Self::new(room)
        }
    }

    /// Offers consecutive entries of `author`'s log received from a peer, as the fjall
    /// store's `insert_remote` does: planned by [`plan_insert`], then applied.
    pub fn insert(
        &mut self,
        author: Author,
        envelopes: impl IntoIterator<Item = Bytes>,
    ) -> Inserted {
        let signatures = self.signatures.clone();
        let vouched = |entry: &Entry| signatures.as_ref().is_some_and(|c| c.contains(entry));
        let plan = match plan_insert_vouched(self, author, envelopes, vouched) {
            Ok(plan) => plan,
            Err(PlanError::Read(never)) => match never {},
            // Logs here are vectors without gaps: every seq up to the head is held.
            Err(PlanError::Missing { seq }) => unreachable!("a memory log lacks entry {seq}"),
        };
        self.remember(author, plan.run());
        if let (Some(signatures), Some(newest)) = (&self.signatures, plan.run().last()) {
            signatures.insert(newest);
        }
        if let Some(fork) = plan.fork {
            self.forks.insert(author, fork);
        }
        plan.outcome
    }

    /// Signs `body` as the next entry of `key`'s own log in the store's room, written at wall
    /// time `timestamp_ms`, and stores it. Its clock is [`clock::next`] of that time, the
    /// log's last clock and the largest clock stored. Seq 1 must be a profile: that is the
    /// caller's job. Fails, storing nothing, if the body breaks a limit.
    pub fn append(
        &mut self,
        key: &SigningKey,
        body: Body,
        timestamp_ms: u64,
    ) -> Result<Entry, DecodeError> {
        let author = Author::of(key);
        let last = self.logs.get(&author).and_then(|log| log.last());
        let draft = Draft {
            room: self.room,
            seq: last.map_or(0, Entry::seq) + 1,
            prev: last.map(Entry::hash),
            timestamp: timestamp_ms,
            clock: clock::next(timestamp_ms, last.map_or(0, Entry::clock), self.max_clock),
            body,
        };
        let entry = Entry::sign(key, draft)?;
        if let Some(signatures) = &self.signatures {
            signatures.insert(&entry);
        }
        self.remember(author, std::slice::from_ref(&entry));
        Ok(entry)
    }

    /// Appends `run`, which links to `author`'s head, to their log.
    fn remember(&mut self, author: Author, run: &[Entry]) {
        if let Some(max) = run.iter().map(Entry::clock).max() {
            self.max_clock = self.max_clock.max(max);
            self.logs.entry(author).or_default().extend_from_slice(run);
        }
    }

    /// Every log's head, in author order.
    pub fn heads(&self) -> Vec<HeadInfo> {
        self.logs
            .iter()
            .filter_map(|(&author, log)| {
                let head = log.last()?;
                Some(HeadInfo {
                    author,
                    seq: head.seq(),
                    hash: head.hash(),
                })
            })
            .collect()
    }

    /// How many entries the store holds, over all logs (fork proofs not counted).
    pub fn len(&self) -> usize {
        self.logs.values().map(Vec::len).sum()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// The largest clock of any stored entry (0 if none).
    pub fn max_clock(&self) -> u64 {
        self.max_clock
    }

    /// `author`'s log, oldest first (empty if none is held).
    pub fn entries_of(&self, author: &Author) -> &[Entry] {
        self.logs.get(author).map_or(&[], Vec::as_slice)
    }

    /// The second entry kept as proof that `author` forked, if they did.
    pub fn fork_of(&self, author: &Author) -> Option<&Entry> {
        self.forks.get(author)
    }

    /// Checks every log from scratch: each entry links to the one before and its signature
    /// verifies. The first broken log is returned.
    pub fn verify_chains(&self) -> Result<(), BrokenLog> {
        for (&author, log) in &self.logs {
            let mut last = None;
            for entry in log {
                check_next(self.room, author, last, entry).map_err(|error| BrokenLog {
                    author,
                    seq: entry.seq(),
                    error,
                })?;
                last = Some(entry);
            }
        }
        Ok(())
    }
}

impl Logs for MemoryStore {
    type Error = Infallible;

    fn room(&self) -> RoomId {
        self.room
    }

    fn head_seq(&self, author: &Author) -> u64 {
        self.entries_of(author).last().map_or(0, Entry::seq)
    }

    fn is_frozen(&self, author: &Author) -> bool {
        self.forks.contains_key(author)
    }

    fn entry(&self, author: &Author, seq: u64) -> Result<Option<Entry>, Infallible> {
        let index = seq.checked_sub(1).and_then(|i| usize::try_from(i).ok());
        Ok(index.and_then(|i| self.entries_of(author).get(i)).cloned())
    }

    fn envelopes(
        &self,
        author: &Author,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, Infallible> {
        let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in self.entries_of(author).iter().skip(skip).take(max_entries) {
            bytes += entry.envelope().len();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push((entry.seq(), entry.envelope().clone()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
