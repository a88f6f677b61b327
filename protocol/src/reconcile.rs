//! Comparing two sets of heads without sending them all (range-based set reconciliation,
//! docs/protocol.md, section 9.3).
//!
//! Each head has an *item hash*, BLAKE3 of [`HEAD_DOMAIN`] ‖ author ‖ seq (u64 big-endian) ‖
//! hash; a set of heads is summed up as its count and the XOR of its item hashes. The asker
//! ([`Reconciler`]) starts from the peer's summary of every head and asks about ranges of
//! authors whose summaries differ from its own; the replier ([`HeadSet::answer`]) either lists
//! its heads in a range or, when it holds too many there, splits the range into smaller ones,
//! each summed up. Ranges whose summaries agree are settled without sending their heads, so
//! two nodes holding the same heads exchange only their summaries, and one change among many
//! heads costs a few rounds of a few kilobytes.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use crate::entry::Author;
use crate::limits::{MAX_LISTED_HEADS, MAX_QUERY_RANGES, SPLIT_PARTS};
use crate::message::{AuthorRange, Fingerprint, HeadInfo, Part, Summary};

/// Prefix of the bytes hashed into a head's item hash.
pub const HEAD_DOMAIN: &[u8] = b"p2pchat/head/2";
/// Most ranges an asker keeps to ask about. An honest replier never comes near it (the asker
/// works through ranges depth first, so it holds at most about a thousand per level of
/// splitting); a reply that would go over it is refused, so a hostile replier cannot grow the
/// asker's memory.
pub const MAX_PENDING_RANGES: usize = 65_536;

/// A head's item hash: BLAKE3 of [`HEAD_DOMAIN`] ‖ author (32) ‖ seq (u64 big-endian) ‖
/// hash (32).
pub fn item_hash(head: &HeadInfo) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(HEAD_DOMAIN);
    hasher.update(head.author.as_bytes());
    hasher.update(&head.seq.to_be_bytes());
    hasher.update(head.hash.as_bytes());
    *hasher.finalize().as_bytes()
}

/// The running sum of a set of heads: their count and the XOR of their item hashes.
#[derive(Clone, Copy, Debug, Default)]
struct Sum {
    count: u64,
    fingerprint: [u8; 32],
}

impl Sum {
    fn add(&mut self, item: &[u8; 32]) {
        self.count += 1;
        xor_into(&mut self.fingerprint, item);
    }

    fn summary(self) -> Summary {
        Summary {
            count: self.count,
            fingerprint: Fingerprint(self.fingerprint),
        }
    }
}

fn xor_into(target: &mut [u8; 32], item: &[u8; 32]) {
    for (t, i) in target.iter_mut().zip(item) {
        *t ^= i;
    }
}

/// A head and its item hash.
#[derive(Clone, Debug)]
struct Held {
    head: HeadInfo,
    item: [u8; 32],
}

/// The heads a node holds, with what it takes to sum up any range of them quickly.
#[derive(Clone, Debug, Default)]
pub struct HeadSet {
    heads: BTreeMap<Author, Held>,
    /// XOR of every item hash: the summary of every author without a pass over the heads.
    total: [u8; 32],
}

impl HeadSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds `head`, replacing the author's earlier head.
    pub fn insert(&mut self, head: HeadInfo) {
        let item = item_hash(&head);
        xor_into(&mut self.total, &item);
        if let Some(old) = self.heads.insert(head.author, Held { head, item }) {
            xor_into(&mut self.total, &old.item);
        }
    }
    /// Takes `author`'s log out of the set.
    pub fn remove(&mut self, author: &Author) {
        if let Some(old) = self.heads.remove(author) {
            xor_into(&mut self.total, &old.item);
        }
    }
    /// The head of `author`'s log, if held.
    pub fn get(&self, author: &Author) -> Option<&HeadInfo> {
        self.heads.get(author).map(|held| &held.head)
    }
    /// How many logs.
    pub fn len(&self) -> usize {
        self.heads.len()
    }
    /// Whether it holds no log.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
    /// Every head, in author order.
    pub fn iter(&self) -> impl Iterator<Item = &HeadInfo> {
        self.heads.values().map(|held| &held.head)
    }
    /// The heads in `range`, in author order (none if the range is empty or reversed).
    pub fn in_range(&self, range: &AuthorRange) -> impl Iterator<Item = &HeadInfo> {
        self.held_in(range).map(|held| &held.head)
    }
    /// The summary of the heads in `range`.
    pub fn summary(&self, range: &AuthorRange) -> Summary {
        if *range == AuthorRange::ALL {
            return Sum {
                count: self.heads.len() as u64,
                fingerprint: self.total,
            }
            .summary();
        }
        sum(self.held_in(range)).summary()
    }
    /// The replier's side: what it holds in each of `ranges`, listed or split. Answers at most
    /// [`MAX_QUERY_RANGES`] ranges (a longer query is refused when decoded), so the reply stays
    /// within the limits of a [`crate::message::Message::Reply`].
    pub fn answer(&self, ranges: &[AuthorRange]) -> Vec<Part> {
        ranges
            .iter()
            .take(MAX_QUERY_RANGES)
            .map(|range| self.answer_range(range))
            .collect()
    }

    /// Lists the heads in `range` if there are at most [`MAX_LISTED_HEADS`], else splits it
    /// into [`SPLIT_PARTS`] sub-ranges holding nearly equal numbers of heads, each starting at
    /// one of the heads (the first at the range's start) and ending where the next starts (the
    /// last at the range's end).
    fn answer_range(&self, range: &AuthorRange) -> Part {
        let held: Vec<&Held> = self.held_in(range).collect();
        if held.len() <= MAX_LISTED_HEADS {
            return Part::Heads {
                range: *range,
                heads: held.iter().map(|held| held.head).collect(),
            };
        }
        // More heads than parts, so every cut is at a different head and no part is empty.
        let cut = |part: usize| part * held.len() / SPLIT_PARTS;
        let parts = (0..SPLIT_PARTS)
            .map(|part| {
                let (from, to) = (cut(part), cut(part + 1));
                let start = if part == 0 {
                    range.start
                } else {
                    held[from].head.author
                };
                let end = if part + 1 == SPLIT_PARTS {
                    range.end
                } else {
                    Some(held[to].head.author)
                };
                let summary = sum(held[from..to].iter().copied()).summary();
                (AuthorRange { start, end }, summary)
            })
            .collect();
        Part::Split(parts)
    }

    fn held_in(&self, range: &AuthorRange) -> impl Iterator<Item = &Held> {
        let bounds = match range.end {
            None => Some((Bound::Included(range.start), Bound::Unbounded)),
            Some(end) if end > range.start => {
                Some((Bound::Included(range.start), Bound::Excluded(end)))
            }
            Some(_) => None,
        };
        bounds
            .into_iter()
            .flat_map(|bounds| self.heads.range(bounds))
            .map(|(_, held)| held)
    }
}

fn sum<'a>(held: impl Iterator<Item = &'a Held>) -> Sum {
    held.fold(Sum::default(), |mut sum, held| {
        sum.add(&held.item);
        sum
    })
}

/// Why a reply cannot be taken (only a broken or hostile peer sends one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// No query was in flight.
    #[error("a reply came while no query was in flight")]
    Unasked,
    /// Not one part per range asked.
    #[error("the reply has {found} parts for a query of {asked} ranges")]
    PartCount {
        /// Ranges asked.
        asked: usize,
        /// Parts in the reply.
        found: usize,
    },
    /// A part lists the heads of another range than the one asked in its place.
    #[error("part {part} lists the heads of another range than the one asked")]
    WrongRange {
        /// Index of the part in the reply.
        part: usize,
    },
    /// A part lists more heads than a replier may list.
    #[error("part {part} lists {found} heads, over the limit of {MAX_LISTED_HEADS}")]
    TooManyListed {
        /// Index of the part in the reply.
        part: usize,
        /// Heads listed.
        found: usize,
    },
    /// A listed head lies outside the range asked.
    #[error("part {part} lists the head of author {author}, outside the range asked")]
    HeadOutsideRange {
        /// Index of the part in the reply.
        part: usize,
        /// The author listed.
        author: Author,
    },
    /// Listed heads are not in strictly increasing author order (or an author comes twice).
    #[error("part {part} lists author {author} out of order or twice")]
    HeadsOutOfOrder {
        /// Index of the part in the reply.
        part: usize,
        /// The author out of place.
        author: Author,
    },
    /// A split into fewer than 2 sub-ranges (which gets no closer to the heads) or more than
    /// [`SPLIT_PARTS`].
    #[error("part {part} splits the range into {found} sub-ranges, not 2 to {SPLIT_PARTS}")]
    SplitParts {
        /// Index of the part in the reply.
        part: usize,
        /// Sub-ranges given.
        found: usize,
    },
    /// The sub-ranges of a split leave a gap, overlap, or go past the range asked.
    #[error("part {part}'s sub-ranges do not cover the range asked exactly and in order")]
    SplitNotCovering {
        /// Index of the part in the reply.
        part: usize,
    },
    /// A sub-range holds no author or, by its count, no head.
    #[error("sub-range {index} of part {part} is empty")]
    EmptySubRange {
        /// Index of the part in the reply.
        part: usize,
        /// Index of the sub-range in the part.
        index: usize,
    },
    /// A split of a range that holds few enough heads to be listed.
    #[error(
        "part {part} splits a range of {count} heads instead of listing them (at most {MAX_LISTED_HEADS})"
    )]
    SplitTooSmall {
        /// Index of the part in the reply.
        part: usize,
        /// Heads in the range by the sub-ranges' counts.
        count: u64,
    },
    /// The reply would leave more ranges to ask about than an asker keeps.
    #[error(
        "the reply would leave {found} ranges to ask about, over the limit of {MAX_PENDING_RANGES}"
    )]
    TooManyPending {
        /// Ranges that would be pending.
        found: usize,
    },
}

/// What one reply taught the asker about the replier's heads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Learned {
    /// Ranges where the replier holds exactly what we hold (at the time of comparing).
    pub same: Vec<AuthorRange>,
    /// Ranges whose heads the replier listed, with those heads: in each, it holds exactly
    /// these (and nothing of the other authors in the range).
    pub listed: Vec<(AuthorRange, Vec<HeadInfo>)>,
}

/// The asker's side of one reconciliation: which ranges are still to be asked about.
///
/// Pending ranges are disjoint and kept in author order; a query takes the first ones and the
/// sub-ranges of its reply that still differ take their place at the front, so the work goes
/// depth first through the authors and the pending list stays short.
#[derive(Debug, Clone)]
pub struct Reconciler {
    pending: VecDeque<AuthorRange>,
    in_flight: Option<Vec<AuthorRange>>,
}

impl Reconciler {
    /// Starts comparing our heads with a peer's, summed up in its hello. Done at once when
    /// the summaries are equal (every author is then the same, and no reply will say so).
    pub fn new(ours: &HeadSet, theirs: Summary) -> Self {
        let pending = if ours.summary(&AuthorRange::ALL) == theirs {
            VecDeque::new()
        } else {
            VecDeque::from([AuthorRange::ALL])
        };
        Self {
            pending,
            in_flight: None,
        }
    }
    /// The next query to send, if one is due (one is in flight at a time).
    pub fn next_query(&mut self) -> Option<Vec<AuthorRange>> {
        if self.in_flight.is_some() || self.pending.is_empty() {
            return None;
        }
        let take = self.pending.len().min(MAX_QUERY_RANGES);
        let query: Vec<AuthorRange> = self.pending.drain(..take).collect();
        self.in_flight = Some(query.clone());
        Some(query)
    }
    /// Takes the reply to the query in flight, comparing its summaries with `ours`. A reply
    /// that does not answer the query is refused whole (and the reconciliation is over: the
    /// peer is broken or hostile).
    pub fn on_reply(
        &mut self,
        ours: &HeadSet,
        parts: Vec<Part>,
    ) -> Result<Learned, ReconcileError> {
        let asked = self.in_flight.take().ok_or(ReconcileError::Unasked)?;
        if parts.len() != asked.len() {
            return Err(ReconcileError::PartCount {
                asked: asked.len(),
                found: parts.len(),
            });
        }
        for (index, (range, part)) in asked.iter().zip(&parts).enumerate() {
            check_part(index, range, part)?;
        }
        let mut learned = Learned::default();
        let mut differing = Vec::new();
        for part in parts {
            match part {
                Part::Heads { range, heads } => learned.listed.push((range, heads)),
                Part::Split(subs) => {
                    for (sub, theirs) in subs {
                        if ours.summary(&sub) == theirs {
                            learned.same.push(sub);
                        } else {
                            differing.push(sub);
                        }
                    }
                }
            }
        }
        let pending = self.pending.len() + differing.len();
        if pending > MAX_PENDING_RANGES {
            return Err(ReconcileError::TooManyPending { found: pending });
        }
        for sub in differing.into_iter().rev() {
            self.pending.push_front(sub);
        }
        Ok(learned)
    }
    /// Whether a query is in flight.
    pub fn is_waiting(&self) -> bool {
        self.in_flight.is_some()
    }
    /// Whether every range is settled.
    pub fn is_done(&self) -> bool {
        self.in_flight.is_none() && self.pending.is_empty()
    }
}

/// Checks that `part` (the `index`th of a reply) answers the query for `asked`.
fn check_part(index: usize, asked: &AuthorRange, part: &Part) -> Result<(), ReconcileError> {
    match part {
        Part::Heads { range, heads } => {
            if range != asked {
                return Err(ReconcileError::WrongRange { part: index });
            }
            if heads.len() > MAX_LISTED_HEADS {
                return Err(ReconcileError::TooManyListed {
                    part: index,
                    found: heads.len(),
                });
            }
            let mut previous: Option<Author> = None;
            for head in heads {
                if !asked.contains(&head.author) {
                    return Err(ReconcileError::HeadOutsideRange {
                        part: index,
                        author: head.author,
                    });
                }
                if previous.is_some_and(|previous| head.author <= previous) {
                    return Err(ReconcileError::HeadsOutOfOrder {
                        part: index,
                        author: head.author,
                    });
                }
                previous = Some(head.author);
            }
            Ok(())
        }
        Part::Split(subs) => {
            if !(2..=SPLIT_PARTS).contains(&subs.len()) {
                return Err(ReconcileError::SplitParts {
                    part: index,
                    found: subs.len(),
                });
            }
            let (first, last) = (subs[0].0, subs[subs.len() - 1].0);
            let joined = subs
                .windows(2)
                .all(|pair| pair[0].0.end == Some(pair[1].0.start));
            if first.start != asked.start || last.end != asked.end || !joined {
                return Err(ReconcileError::SplitNotCovering { part: index });
            }
            let mut count: u64 = 0;
            for (sub_index, (sub, summary)) in subs.iter().enumerate() {
                let holds_authors = sub.end.is_none_or(|end| end > sub.start);
                if !holds_authors || summary.count == 0 {
                    return Err(ReconcileError::EmptySubRange {
                        part: index,
                        index: sub_index,
                    });
                }
                count = count.saturating_add(summary.count);
            }
            if count <= MAX_LISTED_HEADS as u64 {
                return Err(ReconcileError::SplitTooSmall { part: index, count });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Hash;
    use crate::message::Message;

    /// An author spread over the key space like real keys are.
    fn author(n: u64) -> Author {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"test author");
        hasher.update(&n.to_be_bytes());
        Author::from_bytes(*hasher.finalize().as_bytes())
    }

    fn head(author: Author, seq: u64) -> HeadInfo {
        let mut envelope = author.as_bytes().to_vec();
        envelope.extend_from_slice(&seq.to_be_bytes());
        HeadInfo {
            author,
            seq,
            hash: Hash::of(&envelope),
        }
    }

    fn set(heads: impl IntoIterator<Item = HeadInfo>) -> HeadSet {
        let mut set = HeadSet::new();
        for head in heads {
            set.insert(head);
        }
        set
    }

    fn range(start: Author, end: Option<Author>) -> AuthorRange {
        AuthorRange { start, end }
    }

    fn summary(count: u64) -> Summary {
        Summary {
            count,
            fingerprint: Fingerprint([7; 32]),
        }
    }

    /// What running a reconciliation to its end took and taught.
    struct Run {
        learned: Learned,
        rounds: usize,
        /// Frames of queries and replies, length prefixes included.
        bytes: usize,
        /// Most splits on the way from every author to a range asked about, plus one.
        depth: usize,
        ranges_asked: usize,
    }

    /// Runs the asker `ours` against the replier `theirs`, through encoded messages.
    fn reconcile(ours: &HeadSet, theirs: &HeadSet) -> Run {
        let mut reconciler = Reconciler::new(ours, theirs.summary(&AuthorRange::ALL));
        let mut depths = BTreeMap::from([((Author::MIN, None), 1)]);
        let mut run = Run {
            learned: Learned::default(),
            rounds: 0,
            bytes: 0,
            depth: 0,
            ranges_asked: 0,
        };
        if reconciler.is_done() {
            // Equal summaries in the hellos settle every author at once.
            run.learned.same.push(AuthorRange::ALL);
        }
        while let Some(query) = reconciler.next_query() {
            assert!(reconciler.is_waiting() && !reconciler.is_done());
            assert!(
                reconciler.next_query().is_none(),
                "one query in flight at a time"
            );
            run.rounds += 1;
            run.ranges_asked += query.len();
            let query_bytes = Message::Query(query.clone()).encode();
            let Ok(Message::Query(query)) = Message::decode(&query_bytes) else {
                panic!("a query the asker made is refused");
            };
            let reply_bytes = Message::Reply(theirs.answer(&query)).encode();
            run.bytes += 8 + query_bytes.len() + reply_bytes.len();
            let Ok(Message::Reply(parts)) = Message::decode(&reply_bytes) else {
                panic!("a reply the replier made is refused");
            };
            for (asked, part) in query.iter().zip(&parts) {
                let depth = depths[&(asked.start, asked.end)];
                run.depth = run.depth.max(depth);
                if let Part::Split(subs) = part {
                    for (sub, _) in subs {
                        depths.insert((sub.start, sub.end), depth + 1);
                    }
                }
            }
            let learned = reconciler.on_reply(ours, parts).expect("an honest reply");
            run.learned.same.extend(learned.same);
            run.learned.listed.extend(learned.listed);
        }
        assert!(reconciler.is_done() && !reconciler.is_waiting());
        run
    }

    /// Checks that what the asker learned is true and settles every author: ranges called the
    /// same hold the same heads, listed ranges hold exactly the heads listed, and together they
    /// cover every author once, so every author whose heads differ lies in a listed range.
    fn check_learned(ours: &HeadSet, theirs: &HeadSet, learned: &Learned) {
        let heads = |set: &HeadSet, range| set.in_range(range).copied().collect::<Vec<_>>();
        for range in &learned.same {
            assert_eq!(
                heads(ours, range),
                heads(theirs, range),
                "{range:?} called the same"
            );
        }
        for (range, listed) in &learned.listed {
            assert_eq!(*listed, heads(theirs, range), "{range:?} listed wrongly");
        }
        let mut settled: Vec<AuthorRange> = learned.same.clone();
        settled.extend(learned.listed.iter().map(|(range, _)| *range));
        settled.sort_by_key(|range| range.start);
        let mut from = Some(Author::MIN);
        for range in &settled {
            assert_eq!(
                Some(range.start),
                from,
                "settled ranges leave a gap or overlap"
            );
            from = range.end;
        }
        assert_eq!(from, None, "settled ranges stop short of the last author");
        let authors: std::collections::BTreeSet<Author> = ours
            .iter()
            .chain(theirs.iter())
            .map(|head| head.author)
            .collect();
        for author in authors {
            if ours.get(&author) != theirs.get(&author) {
                assert!(
                    learned
                        .listed
                        .iter()
                        .any(|(range, _)| range.contains(&author)),
                    "{author:?} differs but was not listed"
                );
            }
        }
    }

    /// An asker with the query `[ALL]` in flight.
    fn asking_all() -> Reconciler {
        let mut reconciler = Reconciler::new(&HeadSet::new(), summary(40));
        assert_eq!(reconciler.next_query(), Some(vec![AuthorRange::ALL]));
        reconciler
    }

    #[test]
    fn a_set_sums_up_the_same_whatever_the_order_of_inserts() {
        let heads: Vec<HeadInfo> = (0..100).map(|n| head(author(n), n + 1)).collect();
        let forward = set(heads.iter().copied());
        let mut backward = set(heads.iter().rev().copied());
        assert_eq!(
            forward.summary(&AuthorRange::ALL),
            backward.summary(&AuthorRange::ALL)
        );
        // A replaced head leaves no trace of the old one.
        backward.insert(head(author(3), 99));
        backward.insert(heads[3]);
        assert_eq!(
            forward.summary(&AuthorRange::ALL),
            backward.summary(&AuthorRange::ALL)
        );
        let manual = heads.iter().fold([0; 32], |mut acc, head| {
            xor_into(&mut acc, &item_hash(head));
            acc
        });
        assert_eq!(
            forward.summary(&AuthorRange::ALL),
            Summary {
                count: 100,
                fingerprint: Fingerprint(manual)
            }
        );
        // The quick summary of every author is the one-pass summary.
        assert_eq!(
            forward.summary(&AuthorRange::ALL),
            sum(forward.heads.values()).summary()
        );
        assert_eq!(
            HeadSet::new().summary(&AuthorRange::ALL),
            Summary {
                count: 0,
                fingerprint: Fingerprint::default()
            }
        );
    }

    #[test]
    fn ranges_hold_their_start_not_their_end_and_reversed_ranges_hold_nothing() {
        let heads = set((1..=5).map(|n| head(Author::from_bytes([n; 32]), 1)));
        let a = |n| Author::from_bytes([n; 32]);
        let authors = |r| heads.in_range(&r).map(|h| h.author).collect::<Vec<_>>();
        assert_eq!(authors(range(a(2), Some(a(4)))), [a(2), a(3)]);
        assert_eq!(authors(range(a(4), None)), [a(4), a(5)]);
        assert_eq!(authors(range(a(4), Some(a(4)))), []);
        assert_eq!(authors(range(a(4), Some(a(2)))), []);
        assert_eq!(heads.summary(&range(a(4), Some(a(2)))).count, 0);
    }

    #[test]
    fn small_ranges_are_listed_and_large_ones_split_evenly_at_own_heads() {
        let heads = set((0..1000).map(|n| head(author(n), 1)));
        let small = set((0..MAX_LISTED_HEADS as u64).map(|n| head(author(n), 1)));
        let [
            Part::Heads {
                range,
                heads: listed,
            },
        ] = &small.answer(&[AuthorRange::ALL])[..]
        else {
            panic!("32 heads are listed");
        };
        assert_eq!(*range, AuthorRange::ALL);
        assert_eq!(listed.len(), MAX_LISTED_HEADS);

        let [Part::Split(subs)] = &heads.answer(&[AuthorRange::ALL])[..] else {
            panic!("1000 heads are split");
        };
        assert_eq!(subs.len(), SPLIT_PARTS);
        assert_eq!(subs[0].0.start, Author::MIN);
        assert_eq!(subs[SPLIT_PARTS - 1].0.end, None);
        for pair in subs.windows(2) {
            assert_eq!(pair[0].0.end, Some(pair[1].0.start));
            assert!(heads.get(&pair[1].0.start).is_some(), "cut at an own head");
        }
        for (sub, sub_summary) in subs {
            assert_eq!(*sub_summary, heads.summary(sub));
            assert!(
                (62..=63).contains(&sub_summary.count),
                "{}",
                sub_summary.count
            );
        }
        let total = subs.iter().map(|(_, s)| s.count).sum::<u64>();
        assert_eq!(total, 1000);
    }

    #[test]
    fn a_full_reply_stays_within_the_message_limits() {
        let heads = set((0..5000).map(|n| head(author(n), 1)));
        let listed = set((0..MAX_LISTED_HEADS as u64).map(|n| head(author(n), 1)));
        let query = vec![AuthorRange::ALL; MAX_QUERY_RANGES + 5];
        for replier in [&heads, &listed] {
            let reply = Message::Reply(replier.answer(&query));
            let decoded = Message::decode(&reply.encode());
            assert_eq!(decoded.as_ref(), Ok(&reply));
            let Ok(Message::Reply(parts)) = decoded else {
                unreachable!()
            };
            assert_eq!(parts.len(), MAX_QUERY_RANGES);
        }
    }

    #[test]
    fn equal_sets_cost_only_the_summary() {
        let heads = set((0..10_000).map(|n| head(author(n), n % 7 + 1)));
        let mut reconciler = Reconciler::new(&heads, heads.clone().summary(&AuthorRange::ALL));
        assert!(reconciler.is_done() && !reconciler.is_waiting());
        assert_eq!(reconciler.next_query(), None);
        let run = reconcile(&heads, &heads.clone());
        assert_eq!((run.rounds, run.bytes), (0, 0));
    }

    #[test]
    fn one_change_among_many_costs_few_rounds_and_bytes() {
        let ours = set((0..10_000).map(|n| head(author(n), 5)));
        for changed in [head(author(4321), 6), head(author(10_000), 1)] {
            let mut theirs = ours.clone();
            theirs.insert(changed);
            let run = reconcile(&ours, &theirs);
            check_learned(&ours, &theirs, &run.learned);
            let listed: Vec<&HeadInfo> = run
                .learned
                .listed
                .iter()
                .flat_map(|(_, heads)| heads)
                .collect();
            assert!(listed.contains(&&changed));
            // log16(10,000) is 3.3.
            assert!(run.rounds <= 5, "{} rounds", run.rounds);
            assert!(run.bytes < 8 * 1024, "{} bytes", run.bytes);
            println!(
                "10,000 heads, 1 changed: {} rounds, {} bytes of queries and replies",
                run.rounds, run.bytes
            );
        }
    }

    #[test]
    fn disjoint_and_empty_sets_reconcile() {
        let ours = set((0..3000).map(|n| head(author(n), 1)));
        let theirs = set((3000..5000).map(|n| head(author(n), 1)));
        for (asker, replier) in [
            (&ours, &theirs),
            (&theirs, &ours),
            (&HeadSet::new(), &ours),
            (&ours, &HeadSet::new()),
        ] {
            let run = reconcile(asker, replier);
            check_learned(asker, replier, &run.learned);
        }
    }

    #[test]
    fn a_reply_nobody_asked_for_is_refused() {
        let mut reconciler = Reconciler::new(&HeadSet::new(), summary(1));
        assert_eq!(
            reconciler.on_reply(&HeadSet::new(), vec![]),
            Err(ReconcileError::Unasked)
        );
    }

    #[test]
    fn a_reply_with_another_number_of_parts_is_refused() {
        let listing = || Part::Heads {
            range: AuthorRange::ALL,
            heads: vec![],
        };
        for parts in [vec![], vec![listing(), listing()]] {
            let found = parts.len();
            assert_eq!(
                asking_all().on_reply(&HeadSet::new(), parts),
                Err(ReconcileError::PartCount { asked: 1, found })
            );
        }
    }

    #[test]
    fn listed_heads_must_be_of_the_range_asked_in_order_and_few() {
        let (a1, a2, a3) = (
            Author::from_bytes([1; 32]),
            Author::from_bytes([2; 32]),
            Author::from_bytes([3; 32]),
        );
        let reply = |range, heads| vec![Part::Heads { range, heads }];
        let mut reconciler = Reconciler::new(&HeadSet::new(), summary(2));
        reconciler.pending = VecDeque::from([range(a2, Some(a3))]);
        let asking = |parts| {
            let mut reconciler = reconciler.clone();
            reconciler.next_query();
            reconciler.on_reply(&HeadSet::new(), parts)
        };
        let asked = range(a2, Some(a3));
        assert_eq!(
            asking(reply(AuthorRange::ALL, vec![])),
            Err(ReconcileError::WrongRange { part: 0 })
        );
        for outside in [a1, a3] {
            assert_eq!(
                asking(reply(asked, vec![head(outside, 1)])),
                Err(ReconcileError::HeadOutsideRange {
                    part: 0,
                    author: outside
                })
            );
        }
        let mut late = [2; 32];
        late[31] = 9;
        let late = Author::from_bytes(late);
        assert_eq!(
            asking(reply(asked, vec![head(late, 1), head(a2, 1)])),
            Err(ReconcileError::HeadsOutOfOrder {
                part: 0,
                author: a2
            })
        );
        assert_eq!(
            asking(reply(asked, vec![head(a2, 1), head(a2, 2)])),
            Err(ReconcileError::HeadsOutOfOrder {
                part: 0,
                author: a2
            })
        );
        let many: Vec<HeadInfo> = (0..=MAX_LISTED_HEADS as u8)
            .map(|n| {
                let mut bytes = [2; 32];
                bytes[31] = n;
                head(Author::from_bytes(bytes), 1)
            })
            .collect();
        assert_eq!(
            asking(reply(asked, many)),
            Err(ReconcileError::TooManyListed {
                part: 0,
                found: MAX_LISTED_HEADS + 1
            })
        );
        let fine = asking(reply(asked, vec![head(a2, 1), head(late, 1)]));
        assert_eq!(fine.map(|learned| learned.listed.len()), Ok(1));
    }

    #[test]
    fn a_split_must_cover_the_range_asked_exactly_with_nonempty_parts() {
        let (a1, a2, a3) = (
            Author::from_bytes([1; 32]),
            Author::from_bytes([2; 32]),
            Author::from_bytes([3; 32]),
        );
        let split = |subs: &[(Author, Option<Author>, u64)]| {
            let subs = subs
                .iter()
                .map(|&(start, end, count)| (range(start, end), summary(count)))
                .collect();
            asking_all().on_reply(&HeadSet::new(), vec![Part::Split(subs)])
        };
        let min = Author::MIN;
        let not_covering = Err(ReconcileError::SplitNotCovering { part: 0 });
        assert_eq!(
            split(&[(min, None, 40)]),
            Err(ReconcileError::SplitParts { part: 0, found: 1 })
        );
        assert_eq!(
            split(&[]),
            Err(ReconcileError::SplitParts { part: 0, found: 0 })
        );
        let bytes = |n: u8| Author::from_bytes([n; 32]);
        let mut many: Vec<(Author, Option<Author>, u64)> = (0..=SPLIT_PARTS as u8)
            .map(|n| (bytes(n), Some(bytes(n + 1)), 3))
            .collect();
        many[SPLIT_PARTS].1 = None;
        assert_eq!(
            split(&many),
            Err(ReconcileError::SplitParts {
                part: 0,
                found: SPLIT_PARTS + 1
            })
        );
        many.pop();
        many[SPLIT_PARTS - 1].1 = None;
        assert!(split(&many).is_ok());
        // Starts late, ends early, leaves a gap, overlaps.
        assert_eq!(split(&[(a1, Some(a2), 20), (a2, None, 20)]), not_covering);
        assert_eq!(
            split(&[(min, Some(a2), 20), (a2, Some(a3), 20)]),
            not_covering
        );
        assert_eq!(split(&[(min, Some(a1), 20), (a2, None, 20)]), not_covering);
        assert_eq!(split(&[(min, Some(a2), 20), (a1, None, 20)]), not_covering);
        // A sub-range with no author in it, or none by its count.
        assert_eq!(
            split(&[(min, Some(a2), 20), (a2, Some(a2), 1), (a2, None, 20)]),
            Err(ReconcileError::EmptySubRange { part: 0, index: 1 })
        );
        assert_eq!(
            split(&[(min, Some(a2), 40), (a2, Some(a1), 1), (a1, None, 20)]),
            Err(ReconcileError::EmptySubRange { part: 0, index: 1 })
        );
        assert_eq!(
            split(&[(min, Some(a2), 0), (a2, None, 40)]),
            Err(ReconcileError::EmptySubRange { part: 0, index: 0 })
        );
        // Few enough heads to list; and hostile counts do not overflow.
        assert_eq!(
            split(&[(min, Some(a2), 16), (a2, None, 16)]),
            Err(ReconcileError::SplitTooSmall {
                part: 0,
                count: MAX_LISTED_HEADS as u64
            })
        );
        let fine = split(&[(min, Some(a2), u64::MAX), (a2, None, u64::MAX)]);
        assert_eq!(fine.map(|learned| learned.same.len()), Ok(0));
    }

    #[test]
    fn a_reply_that_would_leave_too_many_ranges_pending_is_refused() {
        // A hostile replier can make every sub-range differ; the asker keeps only so many.
        let asked = range(Author::MIN, Some(Author::from_bytes([0x80; 32])));
        let cut = Author::from_bytes([0x40; 32]);
        let reply = || {
            vec![Part::Split(vec![
                (range(Author::MIN, Some(cut)), summary(20)),
                (range(cut, asked.end), summary(20)),
            ])]
        };
        // `left` ranges pending besides the one asked (their bounds do not matter here).
        let asking = |left: usize| Reconciler {
            pending: VecDeque::from(vec![range(Author::from_bytes([0xff; 32]), None); left]),
            in_flight: Some(vec![asked]),
        };
        let mut fits = asking(MAX_PENDING_RANGES - 2);
        assert!(fits.on_reply(&HeadSet::new(), reply()).is_ok());
        assert_eq!(fits.pending.len(), MAX_PENDING_RANGES);
        assert_eq!(fits.pending[1], range(cut, asked.end));
        assert_eq!(
            asking(MAX_PENDING_RANGES - 1).on_reply(&HeadSet::new(), reply()),
            Err(ReconcileError::TooManyPending {
                found: MAX_PENDING_RANGES + 1
            })
        );
    }

    /// How the heads of one author stand between the asker and the replier.
    #[derive(Clone, Copy, Debug)]
    enum Standing {
        Same,
        OtherSeq,
        OnlyOurs,
        OnlyTheirs,
    }

    /// Two head sets over `authors` authors, each author's standing drawn from `seed` with the
    /// given weights (same, other seq, only ours, only theirs). Dense authors are consecutive
    /// numbers from zero (so `Author::MIN` and neighbouring keys occur), else spread at random.
    fn pair(authors: u64, weights: [u64; 4], seed: u64, dense: bool) -> (HeadSet, HeadSet) {
        let total: u64 = weights.iter().sum::<u64>().max(1);
        let (mut ours, mut theirs) = (HeadSet::new(), HeadSet::new());
        for n in 0..authors {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&seed.to_be_bytes());
            hasher.update(&n.to_be_bytes());
            let draw = hasher.finalize();
            let draw = u64::from_be_bytes(draw.as_bytes()[..8].try_into().unwrap_or_default());
            let who = if dense {
                let mut bytes = [0; 32];
                bytes[24..].copy_from_slice(&n.to_be_bytes());
                Author::from_bytes(bytes)
            } else {
                author(seed.wrapping_mul(1 << 20).wrapping_add(n))
            };
            let mut pick = draw % total;
            let standing = [
                Standing::Same,
                Standing::OtherSeq,
                Standing::OnlyOurs,
                Standing::OnlyTheirs,
            ]
            .into_iter()
            .zip(weights)
            .find(|&(_, weight)| {
                let hit = pick < weight;
                pick = pick.saturating_sub(weight);
                hit
            })
            .map_or(Standing::Same, |(standing, _)| standing);
            let seq = draw % 1000 + 1;
            match standing {
                Standing::Same => {
                    ours.insert(head(who, seq));
                    theirs.insert(head(who, seq));
                }
                Standing::OtherSeq => {
                    ours.insert(head(who, seq));
                    theirs.insert(head(who, seq + 1 + draw % 3));
                }
                Standing::OnlyOurs => ours.insert(head(who, seq)),
                Standing::OnlyTheirs => theirs.insert(head(who, seq)),
            }
        }
        (ours, theirs)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the two sets, the asker ends up knowing the replier's heads wherever they
        /// differ, in few rounds: at most log16 of the replier's size + 2 levels of splitting,
        /// and one round per level plus one per full query (so, when the sets differ in at most
        /// a query's worth of authors, at most log16 + 2 rounds).
        #[test]
        fn the_asker_learns_every_difference_in_few_rounds(
            authors in 0u64..=5000,
            weights in proptest::array::uniform4(0u64..=10),
            same_weight in proptest::prop_oneof![0u64..=10, 1000u64..=100_000],
            seed: u64,
            dense: bool,
        ) {
            let [_, other_seq, only_ours, only_theirs] = weights;
            let (ours, theirs) = pair(authors, [same_weight, other_seq, only_ours, only_theirs], seed, dense);
            let run = reconcile(&ours, &theirs);
            check_learned(&ours, &theirs, &run.learned);

            let levels = (theirs.len().max(1) as f64).log(16.0) + 2.0;
            proptest::prop_assert!(run.depth as f64 <= levels, "{} levels for {} heads", run.depth, theirs.len());
            let full_queries = run.ranges_asked / MAX_QUERY_RANGES;
            proptest::prop_assert!(run.rounds <= run.depth + full_queries,
                "{} rounds, {} levels, {} ranges asked", run.rounds, run.depth, run.ranges_asked);
            let differing = ours.iter().chain(theirs.iter())
                .filter(|head| ours.get(&head.author) != theirs.get(&head.author))
                .map(|head| head.author)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            if differing <= MAX_QUERY_RANGES {
                proptest::prop_assert!(run.rounds as f64 <= levels,
                    "{} rounds for {} heads differing in {}", run.rounds, theirs.len(), differing);
            }
        }
    }

    /// Hex with any whitespace in it, as the vectors are written in docs/protocol.md, section 9.3.
    fn unhex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("ascii");
                u8::from_str_radix(pair, 16).expect("hex digits")
            })
            .collect()
    }

    fn unhex32(text: &str) -> [u8; 32] {
        unhex(text).try_into().expect("32 bytes")
    }

    const VECTOR_PREFIX: &str = "703270636861742f686561642f32";
    const VECTOR_PREIMAGE_A: &str = "
        703270636861742f686561642f32
        1111111111111111111111111111111111111111111111111111111111111111
        0000000000000001
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const VECTOR_ITEMS: [&str; 3] = [
        "3ad22e77d6ce84446b3b266cb220b393ea994c17b2a35dc651f619990c1ab7b9",
        "918d45330d311cf48e90baa45fca793eff7a63824eac00540800eba46bd68ed2",
        "8b48c83fe37d9be1621c90321e70e0bc143577b384f539fac91b9c214a494620",
    ];
    const VECTOR_FINGERPRINT: &str =
        "2017a37b3882035187b70cfaf39a2a1101d6582678fa646890ed6e1c2d857f4b";
    const VECTOR_B_XOR_C: &str = "1ac58d0cee4c8715ec8c2a9641ba9982eb4f1431ca5939aec11b7785219fc8f2";
    const VECTOR_QUERY_ALL: &str = "
        a165517565727981a26573746172745820000000000000000000000000000000
        000000000000000000000000000000000063656e64f6";
    const VECTOR_REPLY_ALL: &str = "
        a1655265706c7981a1654865616473a26572616e6765a2657374617274582000
        0000000000000000000000000000000000000000000000000000000000000063
        656e64f665686561647383a366617574686f7258201111111111111111111111
        1111111111111111111111111111111111111111116373657101646861736858
        20aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
        aaa366617574686f725820222222222222222222222222222222222222222222
        2222222222222222222222637365710764686173685820bbbbbbbbbbbbbbbbbb
        bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbba366617574686f7258
        2033333333333333333333333333333333333333333333333333333333333333
        336373657119012c64686173685820cccccccccccccccccccccccccccccccccc
        cccccccccccccccccccccccccccccc";
    const VECTOR_QUERY_TWO: &str = "
        a165517565727982a26573746172745820000000000000000000000000000000
        000000000000000000000000000000000063656e645820222222222222222222
        2222222222222222222222222222222222222222222222a26573746172745820
        2222222222222222222222222222222222222222222222222222222222222222
        63656e64f6";
    const VECTOR_REPLY_TWO: &str = "
        a1655265706c7982a1654865616473a26572616e6765a2657374617274582000
        0000000000000000000000000000000000000000000000000000000000000063
        656e645820222222222222222222222222222222222222222222222222222222
        222222222265686561647381a366617574686f72582011111111111111111111
        1111111111111111111111111111111111111111111163736571016468617368
        5820aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
        aaaaa1654865616473a26572616e6765a2657374617274582022222222222222
        2222222222222222222222222222222222222222222222222263656e64f66568
        6561647382a366617574686f7258202222222222222222222222222222222222
        222222222222222222222222222222637365710764686173685820bbbbbbbbbb
        bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbba366617574
        686f725820333333333333333333333333333333333333333333333333333333
        33333333336373657119012c64686173685820cccccccccccccccccccccccccc
        cccccccccccccccccccccccccccccccccccccc";
    const VECTOR_SPLIT: &str = "
        a1655265706c7981a16553706c69748282a26573746172745820000000000000
        000000000000000000000000000000000000000000000000000063656e645820
        2222222222222222222222222222222222222222222222222222222222222222
        a265636f756e74016b66696e6765727072696e7458203ad22e77d6ce84446b3b
        266cb220b393ea994c17b2a35dc651f619990c1ab7b982a26573746172745820
        2222222222222222222222222222222222222222222222222222222222222222
        63656e64f6a265636f756e74026b66696e6765727072696e7458201ac58d0cee
        4c8715ec8c2a9641ba9982eb4f1431ca5939aec11b7785219fc8f2";

    #[test]
    fn the_documented_vectors_hold() {
        let heads =
            [(0x11, 1, 0xaa), (0x22, 7, 0xbb), (0x33, 300, 0xcc)].map(|(a, seq, h)| HeadInfo {
                author: Author::from_bytes([a; 32]),
                seq,
                hash: Hash::from_bytes([h; 32]),
            });
        assert_eq!(unhex(VECTOR_PREFIX), HEAD_DOMAIN);
        let preimage = unhex(VECTOR_PREIMAGE_A);
        assert_eq!(preimage.len(), 86);
        assert_eq!(
            *blake3::hash(&preimage).as_bytes(),
            unhex32(VECTOR_ITEMS[0])
        );
        for (head, item) in heads.iter().zip(VECTOR_ITEMS) {
            assert_eq!(item_hash(head), unhex32(item), "{head:?}");
        }
        let all = set(heads);
        assert_eq!(
            all.summary(&AuthorRange::ALL),
            Summary {
                count: 3,
                fingerprint: Fingerprint(unhex32(VECTOR_FINGERPRINT))
            }
        );

        let query = vec![AuthorRange::ALL];
        assert_eq!(
            Message::Query(query.clone()).encode(),
            unhex(VECTOR_QUERY_ALL)
        );
        let reply = Message::Reply(all.answer(&query));
        assert_eq!(reply.encode(), unhex(VECTOR_REPLY_ALL));
        assert_eq!(Message::decode(&unhex(VECTOR_REPLY_ALL)), Ok(reply));

        let b = Author::from_bytes([0x22; 32]);
        let two = vec![range(Author::MIN, Some(b)), range(b, None)];
        assert_eq!(
            Message::Query(two.clone()).encode(),
            unhex(VECTOR_QUERY_TWO)
        );
        assert_eq!(
            Message::Reply(all.answer(&two)).encode(),
            unhex(VECTOR_REPLY_TWO)
        );

        let split = vec![Part::Split(
            two.iter().map(|sub| (*sub, all.summary(sub))).collect(),
        )];
        assert_eq!(
            all.summary(&two[1]).fingerprint,
            Fingerprint(unhex32(VECTOR_B_XOR_C))
        );
        assert_eq!(Message::Reply(split.clone()).encode(), unhex(VECTOR_SPLIT));
        // As the document says, an asker refuses it: three heads must be listed.
        assert_eq!(
            asking_all().on_reply(&HeadSet::new(), split),
            Err(ReconcileError::SplitTooSmall { part: 0, count: 3 })
        );
    }
}
