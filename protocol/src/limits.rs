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
/// Largest clock accepted (2^62: milliseconds up to the year 4199 in a hybrid logical clock,
/// see [`crate::clock`]; never near overflow).
pub const MAX_CLOCK: u64 = 1 << 62;
/// How far ahead of the receiver's wall time an entry may be dated (its timestamp, or for
/// format 2 its clock's milliseconds) before it is flagged (10 minutes). Such entries are still
/// accepted and ordered by their clock like any other; the flag tells the user that the
/// author's clock is wrong. A node's own clock never follows a seen clock further ahead than
/// this ([`crate::clock::next`]).
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
