//! Messages exchanged between peers.
//!
//! Two libp2p protocols carry them:
//! - [`SYNC_PROTOCOL`], request-response with CBOR bodies: [`Request`] / [`Response`]
//!   (a [`Hello`] both ways on connect, and [`RangeRequest`]s to fill gaps);
//! - [`PUSH_PROTOCOL`], one long-lived stream per peer and direction, carrying [`Batch`]es as
//!   frames of a 4-byte big-endian length followed by that many bytes of CBOR.

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
}

/// An answer on [`SYNC_PROTOCOL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The answer to a [`Request::Hello`]: the responder's own hello.
    Hello(Hello),
    /// The answer to a [`Request::Range`]: the entries found, oldest first (possibly fewer than
    /// asked, never more than [`MAX_BATCH_ENTRIES`]).
    Entries(Batch),
    /// The request was refused; the text says why.
    Refused(String),
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
        Ok(self.heads.iter().map(|head| (head.author, head.seq)).collect())
    }
}

/// Why a push frame was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is not CBOR of a [`Batch`].
    #[error("malformed batch frame: {0}")]
    Malformed(String),
    /// The batch holds more than [`MAX_BATCH_ENTRIES`] entries.
    #[error("batch of {0} entries is over the limit of {MAX_BATCH_ENTRIES}")]
    TooManyEntries(usize),
}

impl Batch {
    /// Encodes the batch as the body of one push frame.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding into a Vec fails only when memory runs out, which aborts anyway.
        cbor4ii::serde::to_vec(Vec::new(), self).unwrap_or_default()
    }

    /// Decodes the body of one push frame.
    pub fn decode(frame: &[u8]) -> Result<Self, FrameError> {
        let batch: Batch =
            cbor4ii::serde::from_slice(frame).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if batch.entries.len() > MAX_BATCH_ENTRIES {
            return Err(FrameError::TooManyEntries(batch.entries.len()));
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips() {
        let batch = Batch { author: Author::from_bytes([7; 32]), entries: vec![ByteBuf::from(vec![1, 2, 3])] };
        assert_eq!(Batch::decode(&batch.encode()).unwrap(), batch);
    }

    #[test]
    fn garbage_frame_is_an_error() {
        assert!(Batch::decode(&[0xff, 0x00, 0x13]).is_err());
        assert!(Batch::decode(&[]).is_err());
    }

    #[test]
    fn oversized_batch_is_refused() {
        let batch = Batch {
            author: Author::from_bytes([7; 32]),
            entries: vec![ByteBuf::new(); MAX_BATCH_ENTRIES + 1],
        };
        assert!(matches!(Batch::decode(&batch.encode()), Err(FrameError::TooManyEntries(_))));
    }

    #[test]
    fn hello_rules() {
        let mut hello = Hello { version: PROTOCOL_VERSION, name: "bob".into(), heads: vec![] };
        assert!(hello.check().unwrap().is_empty());
        hello.version = 2;
        assert_eq!(hello.check(), Err(HelloError::Version(2)));
        hello.version = PROTOCOL_VERSION;
        hello.name = String::new();
        assert!(matches!(hello.check(), Err(HelloError::Name(_))));
        hello.name = "bob".into();
        let head = HeadInfo { author: Author::from_bytes([1; 32]), seq: 1, hash: Hash::of(b"") };
        hello.heads = vec![head; MAX_HELLO_HEADS + 1];
        assert_eq!(hello.check(), Err(HelloError::TooManyHeads(MAX_HELLO_HEADS + 1)));
    }
}
