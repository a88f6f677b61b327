//! Heads as a vector clock, and which entries one side lacks of the other's.
//!
//! Heads are a vector clock: for each author, the highest seq a side holds. Logs have no gaps,
//! so "what you lack" is always one contiguous range per author.

use std::collections::BTreeMap;

use crate::entry::Author;

/// For each author, the highest seq held (authors not present hold nothing).
pub type Heads = BTreeMap<Author, u64>;

/// A contiguous run of one author's log, `from..=to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Whose log.
    pub author: Author,
    /// First seq of the run.
    pub from: u64,
    /// Last seq of the run (inclusive).
    pub to: u64,
}

impl Range {
    /// How many entries the range holds.
    pub fn size(&self) -> u64 {
        self.to - self.from + 1
    }
}

/// The ranges that a side with heads `theirs` lacks from a side with heads `ours`,
/// in author order. Call it with the arguments swapped for the other direction.
pub fn missing(ours: &Heads, theirs: &Heads) -> Vec<Range> {
    ours.iter()
        .filter_map(|(&author, &our_seq)| {
            let their_seq = theirs.get(&author).copied().unwrap_or(0);
            (our_seq > their_seq).then_some(Range {
                author,
                from: their_seq + 1,
                to: our_seq,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author(n: u8) -> Author {
        Author::from_bytes([n; 32])
    }

    fn heads(list: &[(u8, u64)]) -> Heads {
        list.iter().map(|&(a, s)| (author(a), s)).collect()
    }

    #[test]
    fn empty_sides_lack_nothing() {
        assert_eq!(missing(&Heads::new(), &Heads::new()), vec![]);
        assert_eq!(missing(&Heads::new(), &heads(&[(1, 5)])), vec![]);
    }

    #[test]
    fn disjoint_authors_are_sent_whole() {
        let ours = heads(&[(1, 3)]);
        let theirs = heads(&[(2, 4)]);
        assert_eq!(
            missing(&ours, &theirs),
            vec![Range {
                author: author(1),
                from: 1,
                to: 3
            }]
        );
        assert_eq!(
            missing(&theirs, &ours),
            vec![Range {
                author: author(2),
                from: 1,
                to: 4
            }]
        );
    }

    #[test]
    fn partial_overlap_sends_only_the_tail() {
        let ours = heads(&[(1, 10)]);
        let theirs = heads(&[(1, 7)]);
        assert_eq!(
            missing(&ours, &theirs),
            vec![Range {
                author: author(1),
                from: 8,
                to: 10
            }]
        );
        assert_eq!(missing(&theirs, &ours), vec![]);
    }

    #[test]
    fn remote_ahead_means_we_send_nothing() {
        let ours = heads(&[(1, 2), (2, 2)]);
        let theirs = heads(&[(1, 9), (2, 9)]);
        assert_eq!(missing(&ours, &theirs), vec![]);
        assert_eq!(missing(&theirs, &ours).len(), 2);
    }

    #[test]
    fn both_ahead_on_different_authors() {
        let ours = heads(&[(1, 5), (2, 1)]);
        let theirs = heads(&[(1, 2), (2, 6), (3, 1)]);
        assert_eq!(
            missing(&ours, &theirs),
            vec![Range {
                author: author(1),
                from: 3,
                to: 5
            }]
        );
        assert_eq!(
            missing(&theirs, &ours),
            vec![
                Range {
                    author: author(2),
                    from: 2,
                    to: 6
                },
                Range {
                    author: author(3),
                    from: 1,
                    to: 1
                }
            ]
        );
    }
}
