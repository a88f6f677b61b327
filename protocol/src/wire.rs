//! Messages exchanged between peers.
//!
//! Two libp2p protocols carry them:
//! - [`SYNC_PROTOCOL`], request-response with CBOR bodies: [`Request`] / [`Response`]
//!   (a [`Hello`] both ways on connect, and [`RangeRequest`]s to fill gaps);
//! - [`PUSH_PROTOCOL`], one long-lived stream per peer and direction, carrying [`Frame`]s (entry
//!   batches, or notes on logs the receiver skips) as a 4-byte big-endian length followed by
//!   that many bytes of CBOR.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::entry::{Author, DecodeError, Hash, check_name};
use crate::limits::{MAX_BATCH_ENTRIES, MAX_HELLO_HEADS};
use crate::sync::Heads;

/// The version of the sync protocol spoken here; a hello with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// The request-response protocol name.
pub const SYNC_PROTOCOL: &str = "/p2pchat/sync/1";
/// The push stream protocol name.
pub const PUSH_PROTOCOL: &str = "/p2pchat/push/1";

/// A request on [`SYNC_PROTOCOL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "Here is who I am and what I hold": sent by both sides on every new connection.
    Hello(Hello),
    /// "Send me this part of a log."
    Range(RangeRequest),
    /// "Do not push me these logs; send me [`Frame::Notes`] about them instead." Replaces any
    /// earlier skip list; at most [`MAX_HELLO_HEADS`] authors. A node asks this of every peer
    /// but the one it chose as the source of each log, so each entry reaches it about once.
    Skip(Vec<Author>),
}

/// An answer on [`SYNC_PROTOCOL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The answer to a [`Request::Hello`]: the responder's own hello.
    Hello(Hello),
    /// The answer to a [`Request::Range`]: the entries found, oldest first (possibly fewer than
    /// asked, never more than [`MAX_BATCH_ENTRIES`]).
    Entries(Batch),
    /// The request was done (the answer to a [`Request::Skip`]).
    Done,
    /// The request was refused; the text says why.
    Refused(String),
}

/// One frame on a push stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Entries the receiver lacks.
    Batch(Batch),
    /// For logs the receiver asked to skip: how far the sender holds them, so the receiver
    /// can switch to this sender if its chosen source stalls.
    Notes(Vec<HeadNote>),
}

/// How far the sender of a [`Frame::Notes`] holds one log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadNote {
    /// Whose log.
    pub author: Author,
    /// The highest seq held.
    pub seq: u64,
}

/// A peer's introduction: protocol version, claimed name, and heads (its vector clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The user name the peer claims.
    pub name: String,
    /// The last entry the peer holds of each log it knows.
    pub heads: Vec<HeadInfo>,
}

/// One log's head as announced in a [`Hello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadInfo {
    /// Whose log.
    pub author: Author,
    /// Highest seq held.
    pub seq: u64,
    /// Hash of the entry at `seq` (lets the receiver notice a fork).
    pub hash: Hash,
}

/// A request for entries `from, from + 1, …` of one log, at most `limit` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    /// Whose log.
    pub author: Author,
    /// First seq wanted.
    pub from: u64,
    /// Most entries wanted; capped at [`MAX_BATCH_ENTRIES`] by the responder.
    pub limit: u32,
}

/// Consecutive entries of one author's log, oldest first, as envelope bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Whose log; every entry must be signed by this author.
    pub author: Author,
    /// Envelopes (see [`crate::entry`]).
    pub entries: Vec<ByteBuf>,
}

/// Why a hello is refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelloError {
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {0}, we speak {PROTOCOL_VERSION}")]
    Version(u32),
    /// The hello announces more than [`MAX_HELLO_HEADS`] logs.
    #[error("hello announces {0} logs, over the limit of {MAX_HELLO_HEADS}")]
    TooManyHeads(usize),
    /// The claimed name breaks the name rules.
    #[error(transparent)]
    Name(#[from] DecodeError),
}

impl Hello {
    /// Checks version, name and size; returns the announced heads as a vector clock.
    pub fn check(&self) -> Result<Heads, HelloError> {
        if self.version != PROTOCOL_VERSION {
            return Err(HelloError::Version(self.version));
        }
        if self.heads.len() > MAX_HELLO_HEADS {
            return Err(HelloError::TooManyHeads(self.heads.len()));
        }
        check_name(&self.name)?;
        Ok(self
            .heads
            .iter()
            .map(|head| (head.author, head.seq))
            .collect())
    }
}

/// Why a push frame was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is not CBOR of a [`Frame`].
    #[error("malformed push frame: {0}")]
    Malformed(String),
    /// The frame holds more than [`MAX_BATCH_ENTRIES`] entries, or more notes than
    /// [`MAX_HELLO_HEADS`].
    #[error("frame of {0} items is over the limit")]
    TooLarge(usize),
}

impl Frame {
    /// Encodes the frame as the body of one length-prefixed push frame.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding into a Vec fails only when memory runs out, which aborts anyway.
        cbor4ii::serde::to_vec(Vec::new(), self).unwrap_or_default()
    }

    /// Decodes the body of one push frame, checking its counts.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let frame: Frame =
            cbor4ii::serde::from_slice(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
        match &frame {
            Frame::Batch(batch) if batch.entries.len() > MAX_BATCH_ENTRIES => {
                Err(FrameError::TooLarge(batch.entries.len()))
            }
            Frame::Notes(notes) if notes.len() > MAX_HELLO_HEADS => {
                Err(FrameError::TooLarge(notes.len()))
            }
            _ => Ok(frame),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let author = Author::from_bytes([7; 32]);
        let batch = Frame::Batch(Batch {
            author,
            entries: vec![ByteBuf::from(vec![1, 2, 3])],
        });
        assert_eq!(Frame::decode(&batch.encode()).unwrap(), batch);
        let notes = Frame::Notes(vec![HeadNote { author, seq: 9 }]);
        assert_eq!(Frame::decode(&notes.encode()).unwrap(), notes);
    }

    #[test]
    fn garbage_frame_is_an_error() {
        assert!(Frame::decode(&[0xff, 0x00, 0x13]).is_err());
        assert!(Frame::decode(&[]).is_err());
    }

    #[test]
    fn oversized_frames_are_refused() {
        let author = Author::from_bytes([7; 32]);
        let batch = Frame::Batch(Batch {
            author,
            entries: vec![ByteBuf::new(); MAX_BATCH_ENTRIES + 1],
        });
        assert!(matches!(
            Frame::decode(&batch.encode()),
            Err(FrameError::TooLarge(_))
        ));
        let notes = Frame::Notes(vec![HeadNote { author, seq: 1 }; MAX_HELLO_HEADS + 1]);
        assert!(matches!(
            Frame::decode(&notes.encode()),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn hello_rules() {
        let mut hello = Hello {
            version: PROTOCOL_VERSION,
            name: "bob".into(),
            heads: vec![],
        };
        assert!(hello.check().unwrap().is_empty());
        hello.version = 2;
        assert_eq!(hello.check(), Err(HelloError::Version(2)));
        hello.version = PROTOCOL_VERSION;
        hello.name = String::new();
        assert!(matches!(hello.check(), Err(HelloError::Name(_))));
        hello.name = "bob".into();
        let head = HeadInfo {
            author: Author::from_bytes([1; 32]),
            seq: 1,
            hash: Hash::of(b""),
        };
        hello.heads = vec![head; MAX_HELLO_HEADS + 1];
        assert_eq!(
            hello.check(),
            Err(HelloError::TooManyHeads(MAX_HELLO_HEADS + 1))
        );
    }
}
