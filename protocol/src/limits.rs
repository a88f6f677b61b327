//! Size and count limits, shared by every part of the protocol.

/// Largest encoded entry (envelope bytes), in bytes.
pub const MAX_ENTRY_BYTES: usize = 8 * 1024;
/// Largest text body, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 4 * 1024;
/// Largest user name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 64;
/// Largest message on a lane, in bytes (length prefix excluded).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Entry bytes put in one batch before it is closed (keeps a batch below [`MAX_FRAME_BYTES`]).
pub const BATCH_BYTE_BUDGET: usize = 512 * 1024;
/// Most entries in one batch.
pub const MAX_BATCH_ENTRIES: usize = 1024;
/// Largest lamport clock accepted (2^53: far beyond any real chat, and never near overflow).
pub const MAX_LAMPORT: u64 = 1 << 53;
/// A node's own clock follows the clocks it has seen only up to this (2^52). Someone relaying an
/// entry with an absurd clock cannot push everyone else's next entries past [`MAX_LAMPORT`].
pub const LAMPORT_FOLLOW_LIMIT: u64 = 1 << 52;
/// How far ahead of the receiver's clock an entry's timestamp may be before it is flagged (10
/// minutes). Such entries are still accepted, and ordered by lamport clock like any other: the
/// flag only tells the user that the author's clock is wrong.
pub const MAX_CLOCK_AHEAD_MS: u64 = 10 * 60 * 1000;
/// Most author ranges in one head query, and parts in its reply.
pub const MAX_QUERY_RANGES: usize = 64;
/// A replier lists the heads of a range holding at most this many; a larger range is split.
pub const MAX_LISTED_HEADS: usize = 32;
/// How many sub-ranges a replier splits a range into when it holds too many heads to list.
pub const SPLIT_PARTS: usize = 16;
/// Most heads (or sub-ranges) in one reply: every part listed or split to the full.
pub const MAX_REPLY_HEADS: usize = MAX_QUERY_RANGES * MAX_LISTED_HEADS;
/// Most notes in one [`crate::message::Message::Have`].
pub const MAX_MESSAGE_NOTES: usize = 4096;
/// Most authors in each list of one [`crate::message::Message::Route`].
pub const MAX_ROUTE_AUTHORS: usize = 4096;
