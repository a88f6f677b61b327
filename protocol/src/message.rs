//! Frames and messages of protocol version 3 (docs/protocol.md, section 9).
//!
//! Each side of a connection opens two ordered streams to the other and writes [`Frame`]s on
//! them, each as a 4-byte big-endian length followed by that many bytes of CBOR:
//! - [`Lane::Live`] on [`LIVE_PROTOCOL`]: the membership handshake first ([`Frame::Greet`],
//!   then [`Frame::Proof`]), then everything small and urgent of every shared room (hellos,
//!   head queries and replies, notes, routing, acks, keep-alives, and new entries);
//! - [`Lane::Bulk`] on [`BULK_PROTOCOL`]: catch-up batches.
//!
//! After the handshake every frame is a [`Frame::Room`]: one room's [`Message`], tagged with
//! the room's slot. A receiver treats a message the same whichever lane it came on; the lane
//! is the sender's choice of priority, so a live line never waits behind a catch-up.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::entry::{Author, DecodeError, Hash, check_name};
use crate::limits::{
    MAX_BATCH_ENTRIES, MAX_MESSAGE_NOTES, MAX_QUERY_RANGES, MAX_REPLY_HEADS, MAX_ROUTE_AUTHORS,
};
use crate::membership::{Greet, MAX_ROOMS, Tag};

/// The version spoken here; a hello with another version is refused.
pub const PROTOCOL_VERSION: u32 = 3;
/// The live lane's stream protocol name.
pub const LIVE_PROTOCOL: &str = "/p2pchat/live/3";
/// The bulk lane's stream protocol name.
pub const BULK_PROTOCOL: &str = "/p2pchat/bulk/3";

/// Which of a peer's two streams a message goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Control messages and new entries: never queued behind a catch-up.
    Live,
    /// Catch-up batches.
    Bulk,
}

/// One frame on a lane: the membership handshake, then messages of the shared rooms.
///
/// The live lane carries the [`Frame::Greet`] first and the [`Frame::Proof`] second; after
/// them, every frame on either lane is a [`Frame::Room`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The sender's protocol version and fresh nonce.
    Greet(Greet),
    /// One membership tag per room the sender is in (at most [`MAX_ROOMS`]), sorted.
    Proof(Vec<Tag>),
    /// A message of the shared room numbered `slot` (shared rooms numbered from 0 in the
    /// order of their ids).
    Room(u8, Message),
}

/// One message of a room's replication session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The first message on the live lane: who the sender is and a summary of what it holds.
    Hello(Hello),
    /// "Tell me your heads in these ranges of authors" (at most [`MAX_QUERY_RANGES`]).
    Query(Vec<AuthorRange>),
    /// The answer to a [`Message::Query`]: one [`Part`] per range asked, in the same order.
    Reply(Vec<Part>),
    /// "I hold these logs through these seqs" (at most [`MAX_MESSAGE_NOTES`]): notes on logs
    /// the receiver asked the sender to skip. A receiver only ever raises what it knows.
    Have(Vec<HeadNote>),
    /// "Send me this log again from `from` on": a batch came that did not join the log.
    Want(HeadNote),
    /// Changes to the sender's skip list: logs the receiver should send notes of instead of
    /// entries (`skip`), and logs it should send entries of again (`unskip`), each at most
    /// [`MAX_ROUTE_AUTHORS`].
    Route {
        /// Logs to note, not push.
        skip: Vec<Author>,
        /// Logs to push again.
        unskip: Vec<Author>,
    },
    /// Consecutive entries of one log.
    Batch(Batch),
    /// The sender has processed (stored or refused) this many more of the receiver's batches.
    Ack(u32),
    /// Nothing else to say for a while: the sender is alive.
    Ping,
}

/// A peer's introduction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The user name the peer claims.
    pub name: String,
    /// What the sender holds, summed up: equal summaries mean equal heads.
    pub heads: Summary,
}

/// A set of heads summed up: how many, and their [`Fingerprint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// How many logs.
    pub count: u64,
    /// Their fingerprint.
    pub fingerprint: Fingerprint,
}

/// The XOR of the BLAKE3 hashes of a set of heads (docs/protocol.md, section 9.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(#[serde(with = "serde_bytes")] pub [u8; 32]);

/// A range of authors `start..end` (`end` excluded; `None`: to the last author).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorRange {
    /// The first author in the range.
    pub start: Author,
    /// The first author past the range, if any.
    pub end: Option<Author>,
}

impl AuthorRange {
    /// Every author.
    pub const ALL: AuthorRange = AuthorRange {
        start: Author::MIN,
        end: None,
    };

    /// Whether `author` lies in the range.
    pub fn contains(&self, author: &Author) -> bool {
        *author >= self.start && self.end.is_none_or(|end| *author < end)
    }
}

/// What a replier holds in one range asked about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// Every head it holds in the range.
    Heads {
        /// The range.
        range: AuthorRange,
        /// Its heads there, in author order.
        heads: Vec<HeadInfo>,
    },
    /// Too many heads to list: the range split into smaller ones, each summed up, covering it
    /// exactly and in order.
    Split(Vec<(AuthorRange, Summary)>),
}

/// One log's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadInfo {
    /// Whose log.
    pub author: Author,
    /// Highest seq held.
    pub seq: u64,
    /// Hash of the entry at `seq` (lets the receiver notice a fork).
    pub hash: Hash,
}

/// How far a log is held (or, in [`Message::Want`], the seq wanted from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadNote {
    /// Whose log.
    pub author: Author,
    /// The seq.
    pub seq: u64,
}

/// Consecutive entries of one author's log, oldest first, as envelope bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Whose log; every entry must be signed by this author.
    pub author: Author,
    /// Envelopes (see [`crate::entry`]).
    pub entries: Vec<ByteBuf>,
}

/// Why a message was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// The bytes are not CBOR of a [`Message`].
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A list in the message is over its limit.
    #[error("a message holds {found} {what}, over the limit of {limit}")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// How many there were.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// A greet or hello of another protocol version.
    #[error("peer speaks protocol version {0}, we speak {PROTOCOL_VERSION}")]
    Version(u32),
    /// The claimed name breaks the name rules.
    #[error(transparent)]
    Name(#[from] DecodeError),
}

impl Frame {
    /// Encodes the frame as the body of one length-prefixed frame.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes the body of one frame and checks its limits: a greet's version, a proof's
    /// number of tags, and a room message as [`Message::decode`] does.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let frame: Frame = decode_whole(bytes)?;
        match &frame {
            Frame::Greet(greet) if greet.version != PROTOCOL_VERSION => {
                Err(MessageError::Version(greet.version))
            }
            Frame::Greet(_) => Ok(()),
            Frame::Proof(tags) if tags.len() > MAX_ROOMS => Err(MessageError::TooLarge {
                what: "membership tags",
                found: tags.len(),
                limit: MAX_ROOMS,
            }),
            Frame::Proof(_) => Ok(()),
            Frame::Room(_, message) => message.check(),
        }?;
        Ok(frame)
    }
}

/// The one CBOR item that makes up the whole of `bytes` (bytes after it are refused).
fn decode_whole<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, MessageError> {
    use cbor4ii::core::dec::{Read, Reference};
    let mut deserializer =
        cbor4ii::serde::Deserializer::new(cbor4ii::core::utils::SliceReader::new(bytes));
    let value = T::deserialize(&mut deserializer)
        .map_err(|e| MessageError::Malformed(crate::cbor::serde_error_words(&e)))?;
    let mut rest = deserializer.into_inner();
    match rest.fill(1) {
        Ok(Reference::Long(left) | Reference::Short(left)) if !left.is_empty() => Err(
            MessageError::Malformed("bytes follow the end of the CBOR item".into()),
        ),
        _ => Ok(value),
    }
}

/// CBOR of `value`.
fn encode(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail: `Vec`'s writer only fails when memory runs out, which
    // aborts the process instead.
    if let Err(never) = cbor4ii::serde::to_writer(&mut out, value) {
        unreachable!("encoding into memory failed: {never}");
    }
    out
}

impl Message {
    /// Encodes the message as CBOR (inside a [`Frame::Room`] on the wire).
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a message's CBOR and checks its limits (and a hello's version and name).
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let message: Message = decode_whole(bytes)?;
        message.check()?;
        Ok(message)
    }

    fn check(&self) -> Result<(), MessageError> {
        let limit = |what, found: usize, limit| {
            if found > limit {
                Err(MessageError::TooLarge { what, found, limit })
            } else {
                Ok(())
            }
        };
        match self {
            Message::Hello(hello) => {
                if hello.version != PROTOCOL_VERSION {
                    return Err(MessageError::Version(hello.version));
                }
                check_name(&hello.name)?;
                Ok(())
            }
            Message::Query(ranges) => limit("ranges", ranges.len(), MAX_QUERY_RANGES),
            Message::Reply(parts) => {
                limit("parts", parts.len(), MAX_QUERY_RANGES)?;
                let heads = parts.iter().map(Part::len).sum();
                limit("heads", heads, MAX_REPLY_HEADS)
            }
            Message::Have(notes) => limit("notes", notes.len(), MAX_MESSAGE_NOTES),
            Message::Route { skip, unskip } => {
                limit("authors to skip", skip.len(), MAX_ROUTE_AUTHORS)?;
                limit("authors to unskip", unskip.len(), MAX_ROUTE_AUTHORS)
            }
            Message::Batch(batch) => limit("entries", batch.entries.len(), MAX_BATCH_ENTRIES),
            Message::Want(_) | Message::Ack(_) | Message::Ping => Ok(()),
        }
    }
}

impl Part {
    /// How many heads or sub-ranges the part lists.
    fn len(&self) -> usize {
        match self {
            Part::Heads { heads, .. } => heads.len(),
            Part::Split(ranges) => ranges.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author(n: u8) -> Author {
        Author::from_bytes([n; 32])
    }

    #[test]
    fn a_bad_frame_is_said_in_words_not_rust_debug_text() {
        let garbage: [&[u8]; 5] = [&[0xff, 0x00], &[0xa1], &[0x1c], &[0x64, 0x50, 0x69], b"{}"];
        for bytes in garbage {
            let Err(MessageError::Malformed(why)) = Frame::decode(bytes) else {
                panic!("{bytes:?} decoded");
            };
            assert!(
                !why.contains("Core(") && !why.contains('{') && !why.is_empty(),
                "{bytes:?}: {why}"
            );
        }
    }

    #[test]
    fn bytes_after_a_frame_are_refused() {
        let mut bytes = Frame::Room(0, Message::Ping).encode();
        assert_eq!(Frame::decode(&bytes), Ok(Frame::Room(0, Message::Ping)));
        bytes.push(0);
        assert!(matches!(
            Frame::decode(&bytes),
            Err(MessageError::Malformed(why)) if why.contains("bytes follow")
        ));
        let mut ping = Message::Ping.encode();
        ping.push(0xf6);
        assert!(matches!(
            Message::decode(&ping),
            Err(MessageError::Malformed(_))
        ));
    }

    #[test]
    fn messages_round_trip() {
        let messages = [
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                name: "alice".into(),
                heads: Summary {
                    count: 3,
                    fingerprint: Fingerprint([9; 32]),
                },
            }),
            Message::Query(vec![AuthorRange::ALL]),
            Message::Reply(vec![Part::Heads {
                range: AuthorRange::ALL,
                heads: vec![HeadInfo {
                    author: author(1),
                    seq: 4,
                    hash: Hash::of(b"x"),
                }],
            }]),
            Message::Have(vec![HeadNote {
                author: author(2),
                seq: 7,
            }]),
            Message::Route {
                skip: vec![author(3)],
                unskip: vec![],
            },
            Message::Batch(Batch {
                author: author(1),
                entries: vec![ByteBuf::from(vec![1, 2])],
            }),
            Message::Ack(2),
            Message::Ping,
        ];
        for message in messages {
            assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The encodings quoted in docs/protocol.md, section 9.2.
    #[test]
    fn the_documented_encodings_hold() {
        assert_eq!(hex(&Message::Ping.encode()), "6450696e67");
        assert_eq!(hex(&Message::Ack(3).encode()), "a16341636b03");
        let author = author(0x8a);
        let want = Message::Want(HeadNote { author, seq: 2 });
        let key = hex(author.as_bytes());
        assert_eq!(
            hex(&want.encode()),
            format!("a16457616e74a266617574686f725820{key}6373657102")
        );
        let have = Message::Have(vec![HeadNote { author, seq: 2 }]);
        assert_eq!(have.encode().len(), 54);
        assert_eq!(
            hex(&have.encode()),
            format!("a1644861766581a266617574686f725820{key}6373657102")
        );
    }

    /// The frame encodings quoted in docs/protocol.md.
    #[test]
    fn the_documented_frame_encodings_hold() {
        use crate::membership::{Greet, Nonce, Tag};
        assert_eq!(
            hex(&Frame::Room(0, Message::Ping).encode()),
            "a164526f6f6d82006450696e67"
        );
        let greet = Frame::Greet(Greet {
            version: PROTOCOL_VERSION,
            nonce: Nonce::new([0x11; 32]),
        });
        assert_eq!(
            hex(&greet.encode()),
            format!(
                "a1654772656574a26776657273696f6e03656e6f6e63655820{}",
                "11".repeat(32)
            )
        );
        let proof = Frame::Proof(vec![Tag(serde_bytes::ByteArray::new([0x22; 32]))]);
        assert_eq!(
            hex(&proof.encode()),
            format!("a16550726f6f66815820{}", "22".repeat(32))
        );
    }

    #[test]
    fn garbage_and_oversized_messages_are_refused() {
        assert!(matches!(
            Message::decode(&[0xff, 0x00]),
            Err(MessageError::Malformed(_))
        ));
        let notes = Message::Have(vec![
            HeadNote {
                author: author(1),
                seq: 1
            };
            MAX_MESSAGE_NOTES + 1
        ]);
        assert!(matches!(
            Message::decode(&notes.encode()),
            Err(MessageError::TooLarge { what: "notes", .. })
        ));
        let old = Message::Hello(Hello {
            version: 1,
            name: "bob".into(),
            heads: Summary {
                count: 0,
                fingerprint: Fingerprint::default(),
            },
        });
        assert_eq!(
            Message::decode(&old.encode()),
            Err(MessageError::Version(1))
        );
    }

    #[test]
    fn frames_round_trip_and_are_checked() {
        use crate::membership::{Greet, Nonce};
        let tag = || crate::membership::Tag(serde_bytes::ByteArray::new([3; 32]));
        let frames = [
            Frame::Greet(Greet {
                version: PROTOCOL_VERSION,
                nonce: Nonce::new([1; 32]),
            }),
            Frame::Proof(vec![tag(); MAX_ROOMS]),
            Frame::Room(2, Message::Ack(1)),
        ];
        for frame in frames {
            assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
        let old = Frame::Greet(Greet {
            version: 2,
            nonce: Nonce::new([1; 32]),
        });
        assert_eq!(Frame::decode(&old.encode()), Err(MessageError::Version(2)));
        let many = Frame::Proof(vec![tag(); MAX_ROOMS + 1]);
        assert!(matches!(
            Frame::decode(&many.encode()),
            Err(MessageError::TooLarge {
                what: "membership tags",
                ..
            })
        ));
        let notes = vec![
            HeadNote {
                author: author(1),
                seq: 1
            };
            MAX_MESSAGE_NOTES + 1
        ];
        let inner = Frame::Room(0, Message::Have(notes));
        assert!(matches!(
            Frame::decode(&inner.encode()),
            Err(MessageError::TooLarge { what: "notes", .. })
        ));
        // A bare message (protocol 2's frame) is no frame.
        assert!(matches!(
            Frame::decode(&Message::Ping.encode()),
            Err(MessageError::Malformed(_))
        ));
    }

    #[test]
    fn ranges_hold_their_start_but_not_their_end() {
        let range = AuthorRange {
            start: author(2),
            end: Some(author(5)),
        };
        assert!(!range.contains(&author(1)));
        assert!(range.contains(&author(2)));
        assert!(range.contains(&author(4)));
        assert!(!range.contains(&author(5)));
        assert!(AuthorRange::ALL.contains(&author(255)));
    }
}
