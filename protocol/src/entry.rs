//! The signed log entry: its canonical CBOR encoding, signature and hash.
//!
//! An entry travels and rests as one byte string, the *envelope*: a CBOR array
//! `[payload: bstr, signature: bstr(64)]`. The payload is itself canonical CBOR,
//! `[2, room, author, seq, prev, timestamp, clock, body]` (format 2, what this version writes),
//! or `[1, author, seq, prev, timestamp, lamport, body]` (format 1, written before rooms: no
//! room, and a lamport clock), and the signature is ed25519 over [`DOMAIN_TAG`] followed by the
//! payload bytes. The entry's [`Hash`](struct@Hash) is BLAKE3 of the whole
//! envelope. Bytes are never re-encoded after signing: what was signed is what is stored and sent.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use cbor4ii::core::Value;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;

use crate::cbor;
use crate::limits::{MAX_ENTRY_BYTES, MAX_NAME_BYTES, MAX_TEXT_BYTES};
use crate::room::RoomId;

pub use ed25519_dalek::SigningKey;

/// Prepended to the payload before signing, so a signature cannot be replayed in another app.
pub const DOMAIN_TAG: &[u8] = b"p2pchat/entry/v1";
/// The payload format version this implementation writes: entries that name their room.
pub const FORMAT_VERSION: u8 = 2;
/// The payload format written before rooms, still read and validated: no room field.
pub const FORMAT_BEFORE_ROOMS: u8 = 1;

/// An author: the 32-byte ed25519 public key that signs a log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Author(ByteArray<32>);

impl Author {
    /// The smallest author (all zero bytes): where the range of every author starts.
    pub const MIN: Author = Author(ByteArray::new([0; 32]));

    /// The author of entries signed by `key`.
    pub fn of(key: &SigningKey) -> Self {
        Self(ByteArray::new(key.verifying_key().to_bytes()))
    }

    /// An author from its raw public key bytes (not checked to be a valid curve point).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(ByteArray::new(bytes))
    }

    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short, human-comparable fingerprint: the first 6 hex digits of the key.
    pub fn fingerprint(&self) -> String {
        hex(&self.0[..3])
    }

    /// Checks that the key can sign for a log (docs/protocol.md, section 3): the 32 bytes
    /// decode to a curve point, are that point's one canonical encoding, and the point is not of
    /// small order (for such a key anyone can make signatures that verify).
    pub fn check_key(&self) -> Result<VerifyingKey, KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::NotAPoint)?;
        if key.to_edwards().compress().to_bytes() != *self.0 {
            return Err(KeyError::NonCanonical);
        }
        if key.is_weak() {
            return Err(KeyError::SmallOrder);
        }
        Ok(key)
    }
}

/// Why an author's public key cannot sign for a log ([`Author::check_key`]).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes do not decode to a point of the curve.
    #[error("is not a point of the curve")]
    NotAPoint,
    /// The point has a shorter, canonical encoding: these bytes are another spelling of it.
    #[error("is not canonically encoded")]
    NonCanonical,
    /// The point is of small order: anyone can make signatures that verify for it.
    #[error("is of small order (anyone can sign for it)")]
    SmallOrder,
}

/// Why an entry's signature is not the author's ([`Entry::verify`]).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The author's key cannot sign at all.
    #[error("the author's key {0}")]
    Key(KeyError),
    /// The key is usable, but the signature does not verify strictly.
    #[error("the signature does not verify")]
    Signature,
}

impl fmt::Display for Author {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0[..]))
    }
}

impl fmt::Debug for Author {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Author({})", self.fingerprint())
    }
}

/// BLAKE3 hash of an entry's envelope bytes; `prev` links make each log a hash chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hash(ByteArray<32>);

impl Hash {
    /// Hashes an envelope.
    pub fn of(envelope: &[u8]) -> Self {
        Self(ByteArray::new(*blake3::hash(envelope).as_bytes()))
    }

    /// A hash from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(ByteArray::new(bytes))
    }

    /// The raw hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0[..]))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", hex(&self.0[..4]))
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// What an entry says.
///
/// On the wire a body is a CBOR array whose first element names its kind:
/// `["profile", name]` or `["text", text]`. Kinds this version does not know are kept,
/// stored and relayed unchanged as [`Body::Unknown`], so new kinds need no format break.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// The author's display name; seq 1 is always a profile, a later one renames.
    Profile {
        /// The claimed user name.
        name: String,
    },
    /// A chat line in the room's default channel, `general`.
    Text {
        /// The line, without its newline.
        text: String,
    },
    /// A chat line in a named channel (never `general`: that is [`Body::Text`]).
    Post {
        /// The channel's name ([`check_channel`]).
        channel: String,
        /// The line, without its newline.
        text: String,
    },
    /// The author's encryption key for direct messages in this room; the latest one counts.
    EncKey {
        /// The X25519 public key.
        key: crate::dm::EncKey,
    },
    /// A direct message, sealed to its recipient and its sender.
    Direct(crate::dm::Sealed),
    /// A kind this version does not understand.
    Unknown {
        /// The kind's name as written on the wire.
        kind: String,
    },
}

impl Body {
    /// Appends the body's canonical encoding (known kinds only: an unknown one cannot be written).
    fn write(&self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let head = |out: &mut Vec<u8>, items, kind| {
            cbor::write_array(out, items);
            cbor::write_text(out, kind);
        };
        match self {
            Body::Profile { name } => {
                head(out, 2, "profile");
                cbor::write_text(out, name);
            }
            Body::Text { text } => {
                head(out, 2, "text");
                cbor::write_text(out, text);
            }
            Body::Post { channel, text } => {
                head(out, 3, "post");
                cbor::write_text(out, channel);
                cbor::write_text(out, text);
            }
            Body::EncKey { key } => {
                head(out, 2, "enckey");
                cbor::write_bytes(out, key.as_bytes());
            }
            Body::Direct(sealed) => {
                head(out, 6, "dm");
                cbor::write_bytes(out, sealed.to.as_bytes());
                cbor::write_bytes(out, sealed.to_key.as_bytes());
                cbor::write_bytes(out, sealed.from_key.as_bytes());
                cbor::write_bytes(out, &sealed.nonce);
                cbor::write_bytes(out, &sealed.ciphertext);
            }
            Body::Unknown { .. } => return Err(DecodeError::InvalidBody),
        }
        Ok(())
    }

    /// Reads a body that makes up the whole of `bytes`, and checks its limits.
    fn read(bytes: &[u8]) -> Result<Self, DecodeError> {
        let body = match Self::read_known(bytes) {
            Some(body) => body,
            None => Self::read_any(bytes)?,
        };
        body.check_limits()?;
        Ok(body)
    }

    /// The fast path: a known kind of the right shape, canonically encoded, and nothing after.
    /// Anything else (also every error) is left to [`Body::read_any`].
    fn read_known(bytes: &[u8]) -> Option<Self> {
        let mut reader = cbor::Reader::new(bytes);
        let items = reader.array().ok()?;
        let text = |reader: &mut cbor::Reader<'_>| reader.text().ok().map(str::to_owned);
        let body = match (reader.text().ok()?, items) {
            ("profile", 2) => Body::Profile {
                name: text(&mut reader)?,
            },
            ("text", 2) => Body::Text {
                text: text(&mut reader)?,
            },
            ("post", 3) => Body::Post {
                channel: text(&mut reader)?,
                text: text(&mut reader)?,
            },
            ("enckey", 2) => Body::EncKey {
                key: crate::dm::EncKey::from_bytes(reader.bytes().ok()?.try_into().ok()?),
            },
            ("dm", 6) => Body::Direct(crate::dm::Sealed {
                to: Author::from_bytes(reader.bytes().ok()?.try_into().ok()?),
                to_key: crate::dm::EncKey::from_bytes(reader.bytes().ok()?.try_into().ok()?),
                from_key: crate::dm::EncKey::from_bytes(reader.bytes().ok()?.try_into().ok()?),
                nonce: reader.bytes().ok()?.try_into().ok()?,
                ciphertext: reader.bytes().ok()?.to_vec(),
            }),
            _ => return None,
        };
        reader.end().ok()?;
        Some(body)
    }

    /// Any other body (unknown kinds, and every malformed one): decoded as a generic CBOR
    /// value, which must re-encode to the same bytes.
    fn read_any(bytes: &[u8]) -> Result<Self, DecodeError> {
        let value: Value = cbor4ii::serde::from_slice(bytes)
            .map_err(|e| DecodeError::Malformed(cbor::serde_error_words(&e)))?;
        if encode(&value)? != bytes {
            return Err(DecodeError::NonCanonical);
        }
        Self::from_value(&value)
    }

    fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let Value::Array(items) = value else {
            return Err(DecodeError::InvalidBody);
        };
        let Some(Value::Text(kind)) = items.first() else {
            return Err(DecodeError::InvalidBody);
        };
        Ok(match (kind.as_str(), &items[1..]) {
            ("profile", [Value::Text(name)]) => Body::Profile { name: name.clone() },
            ("text", [Value::Text(text)]) => Body::Text { text: text.clone() },
            ("post", [Value::Text(channel), Value::Text(text)]) => Body::Post {
                channel: channel.clone(),
                text: text.clone(),
            },
            ("enckey", [Value::Bytes(key)]) => Body::EncKey {
                key: crate::dm::EncKey::from_bytes(fixed(key)?),
            },
            (
                "dm",
                [
                    Value::Bytes(to),
                    Value::Bytes(to_key),
                    Value::Bytes(from_key),
                    Value::Bytes(nonce),
                    Value::Bytes(ciphertext),
                ],
            ) => Body::Direct(crate::dm::Sealed {
                to: Author::from_bytes(fixed(to)?),
                to_key: crate::dm::EncKey::from_bytes(fixed(to_key)?),
                from_key: crate::dm::EncKey::from_bytes(fixed(from_key)?),
                nonce: fixed(nonce)?,
                ciphertext: ciphertext.clone(),
            }),
            ("profile" | "text" | "post" | "enckey" | "dm", _) => {
                return Err(DecodeError::InvalidBody);
            }
            (other, _) => Body::Unknown {
                kind: other.to_owned(),
            },
        })
    }

    /// Checks the body against the size and content rules of its kind.
    pub fn check_limits(&self) -> Result<(), DecodeError> {
        match self {
            Body::Profile { name } => check_name(name),
            Body::Text { text } if text.len() > MAX_TEXT_BYTES => {
                Err(DecodeError::TextTooLong { len: text.len() })
            }
            Body::Post { channel, text } => {
                check_channel(channel)?;
                if text.len() > MAX_TEXT_BYTES {
                    return Err(DecodeError::TextTooLong { len: text.len() });
                }
                Ok(())
            }
            Body::Direct(sealed) if !DM_CIPHERTEXT_BYTES.contains(&sealed.ciphertext.len()) => {
                Err(DecodeError::InvalidBody)
            }
            Body::Text { .. } | Body::EncKey { .. } | Body::Direct(_) | Body::Unknown { .. } => {
                Ok(())
            }
        }
    }
}

/// The sizes a direct message's ciphertext may have: a text of 0 to [`MAX_TEXT_BYTES`] bytes
/// and its 16-byte tag.
pub const DM_CIPHERTEXT_BYTES: std::ops::RangeInclusive<usize> =
    crate::dm::TAG_BYTES..=MAX_TEXT_BYTES + crate::dm::TAG_BYTES;

/// Most bytes in a channel's name.
pub const MAX_CHANNEL_BYTES: usize = 32;

/// A byte string of exactly `N` bytes, or the body is malformed.
fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], DecodeError> {
    bytes.try_into().map_err(|_| DecodeError::InvalidBody)
}

/// The channel every text line without a channel belongs to.
pub const GENERAL: &str = "general";

/// Checks that `channel` is usable as a channel name: 1 to 32 bytes of `a`–`z`, `0`–`9`, `-`,
/// `_`, `.`, starting with a letter or digit, and not [`GENERAL`] (docs/protocol.md 2.3).
pub fn check_channel(channel: &str) -> Result<(), DecodeError> {
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(b);
    let bytes = channel.as_bytes();
    let starts_well = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !starts_well
        || bytes.len() > MAX_CHANNEL_BYTES
        || !bytes.iter().all(allowed)
        || channel == GENERAL
    {
        return Err(DecodeError::InvalidChannel {
            channel: channel.to_owned(),
        });
    }
    Ok(())
}

/// What the node asks to be written as its next own entry: a body known now, or a direct
/// message sealed once its seq is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// An entry's body, as is.
    Body(Body),
    /// A direct message, to seal at its place.
    Letter(crate::dm::Letter),
}

impl Outgoing {
    /// The body to sign as entry `seq` of `author`'s log in `room`.
    pub fn into_body(self, room: &RoomId, author: &Author, seq: u64) -> Result<Body, DecodeError> {
        match self {
            Outgoing::Body(body) => Ok(body),
            Outgoing::Letter(letter) => Ok(Body::Direct(letter.seal(room, author, seq)?)),
        }
    }
}

impl From<Body> for Outgoing {
    fn from(body: Body) -> Self {
        Outgoing::Body(body)
    }
}

impl From<crate::dm::Letter> for Outgoing {
    fn from(letter: crate::dm::Letter) -> Self {
        Outgoing::Letter(letter)
    }
}

/// Checks that `name` is usable as a user name: 1 to [`MAX_NAME_BYTES`] bytes, no control
/// characters, no surrounding whitespace.
pub fn check_name(name: &str) -> Result<(), DecodeError> {
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name.trim() != name
        || name.chars().any(char::is_control)
    {
        return Err(DecodeError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The fields of a new entry, before it is signed (always written as format 2).
#[derive(Clone, Debug)]
pub struct Draft {
    /// The room the entry belongs to (and may only ever be stored in).
    pub room: RoomId,
    /// Position in the author's log, from 1.
    pub seq: u64,
    /// Hash of the entry at `seq - 1`; `None` only at seq 1.
    pub prev: Option<Hash>,
    /// Wall-clock time of writing, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Hybrid logical clock ([`crate::clock::next`]): above the log's previous clock.
    pub clock: u64,
    /// What the entry says.
    pub body: Body,
}

/// A decoded, canonically encoded entry, with its envelope bytes kept for storage and sending.
///
/// Decoding checks the encoding and limits only; the signature is checked by
/// [`Entry::signature_is_valid`] (called by the validation rules), so storage can read its own
/// entries back without paying for it. The hash is computed the first time it is asked for
/// (checking links needs it; showing a message does not).
#[derive(Clone)]
pub struct Entry {
    envelope: Bytes,
    payload: Bytes,
    signature: [u8; 64],
    hash: OnceLock<Hash>,
    format: u8,
    room: Option<RoomId>,
    author: Author,
    seq: u64,
    prev: Option<Hash>,
    timestamp: u64,
    clock: u64,
    body: Body,
}

/// Entries are equal when their envelopes are: every other field is read from those bytes.
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.envelope == other.envelope
    }
}

impl Eq for Entry {}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("room", &self.room)
            .field("author", &self.author)
            .field("seq", &self.seq)
            .field("clock", &self.clock)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

/// Why bytes are not a well-formed entry.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The envelope is larger than [`MAX_ENTRY_BYTES`].
    #[error("entry is {len} bytes, over the {MAX_ENTRY_BYTES}-byte limit")]
    TooLarge {
        /// The envelope's length.
        len: usize,
    },
    /// The bytes are not CBOR of the expected shape.
    #[error("entry is not valid CBOR of the expected shape: {0}")]
    Malformed(String),
    /// The bytes decode, but are not the one canonical encoding of what they hold.
    #[error("entry is not canonically encoded")]
    NonCanonical,
    /// The payload's format version is neither [`FORMAT_VERSION`] nor [`FORMAT_BEFORE_ROOMS`].
    #[error("entry format version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The signature field is not 64 bytes.
    #[error("signature is not 64 bytes")]
    InvalidSignatureLength,
    /// The body is not a well-formed body of its kind.
    #[error("entry body is malformed")]
    InvalidBody,
    /// A text body is longer than [`MAX_TEXT_BYTES`].
    #[error("text is {len} bytes, over the {MAX_TEXT_BYTES}-byte limit")]
    TextTooLong {
        /// The text's length in bytes.
        len: usize,
    },
    /// A profile name breaks the name rules (see [`check_name`]).
    #[error(
        "{name:?} is not a valid name (1 to {MAX_NAME_BYTES} bytes, no control characters or surrounding spaces)"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A post's channel breaks the channel rule (see [`check_channel`]).
    #[error(
        "{channel:?} is not a valid channel name (1 to {MAX_CHANNEL_BYTES} bytes of a-z, 0-9, \
         '-', '_' and '.', starting with a letter or digit, and not {GENERAL:?})"
    )]
    InvalidChannel {
        /// The rejected channel name.
        channel: String,
    },
    /// A direct message cannot be sealed (when writing one).
    #[error(transparent)]
    Seal(#[from] crate::dm::SealError),
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DecodeError> {
    cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| DecodeError::Malformed(e.to_string()))
}

impl Entry {
    /// Signs `draft` with `key`, producing the entry's one canonical encoding.
    pub fn sign(key: &SigningKey, draft: Draft) -> Result<Self, DecodeError> {
        draft.body.check_limits()?;
        let mut payload = Vec::with_capacity(200);
        cbor::write_array(&mut payload, 8);
        cbor::write_uint(&mut payload, FORMAT_VERSION.into());
        cbor::write_bytes(&mut payload, draft.room.as_bytes());
        cbor::write_bytes(&mut payload, Author::of(key).as_bytes());
        cbor::write_uint(&mut payload, draft.seq);
        match draft.prev {
            Some(prev) => cbor::write_bytes(&mut payload, prev.as_bytes()),
            None => payload.push(cbor::NULL),
        }
        cbor::write_uint(&mut payload, draft.timestamp);
        cbor::write_uint(&mut payload, draft.clock);
        draft.body.write(&mut payload)?;
        Self::sign_payload(key, &payload)
    }

    /// The envelope of `payload` signed by `key`, decoded.
    fn sign_payload(key: &SigningKey, payload: &[u8]) -> Result<Self, DecodeError> {
        let signature = key.sign(&signed_message(payload)).to_bytes();
        let mut envelope = Vec::with_capacity(payload.len() + 72);
        cbor::write_array(&mut envelope, 2);
        cbor::write_bytes(&mut envelope, payload);
        cbor::write_bytes(&mut envelope, &signature);
        Self::decode(Bytes::from(envelope))
    }

    /// Decodes an envelope, checking its size, shape, canonical encoding and body limits
    /// (docs/protocol.md, 6.1). The signature is not checked here.
    pub fn decode(envelope: Bytes) -> Result<Self, DecodeError> {
        if envelope.len() > MAX_ENTRY_BYTES {
            return Err(DecodeError::TooLarge {
                len: envelope.len(),
            });
        }
        let mut outer = cbor::Reader::new(&envelope);
        if outer.array()? != 2 {
            return Err(DecodeError::Malformed(
                "the envelope is not a 2-item array".into(),
            ));
        }
        let payload = outer.bytes()?;
        let signature = outer.bytes()?;
        outer.end()?;
        let signature: [u8; 64] = signature
            .try_into()
            .map_err(|_| DecodeError::InvalidSignatureLength)?;

        let mut fields = cbor::Reader::new(payload);
        let items = fields.array()?;
        let format = match u8::try_from(fields.uint()?) {
            Ok(format @ (FORMAT_VERSION | FORMAT_BEFORE_ROOMS)) => format,
            Ok(other) => return Err(DecodeError::UnsupportedVersion(other)),
            Err(_) => return Err(DecodeError::Malformed("format version out of range".into())),
        };
        let expected = if format == FORMAT_VERSION { 8 } else { 7 };
        if items != expected {
            return Err(DecodeError::Malformed(format!(
                "the payload of format {format} is not a {expected}-item array"
            )));
        }
        let room = if format == FORMAT_VERSION {
            Some(RoomId::from_bytes(read_32(&mut fields, "room")?))
        } else {
            None
        };
        let author = Author::from_bytes(read_32(&mut fields, "author")?);
        let seq = fields.uint()?;
        let prev = if fields.null() {
            None
        } else {
            Some(Hash::from_bytes(read_32(&mut fields, "prev")?))
        };
        let timestamp = fields.uint()?;
        let clock = fields.uint()?;
        let body = Body::read(fields.rest())?;
        Ok(Self {
            hash: OnceLock::new(),
            format,
            room,
            payload: envelope.slice_ref(payload),
            envelope,
            signature,
            author,
            seq,
            prev,
            timestamp,
            clock,
            body,
        })
    }

    /// Checks that the signature is the author's, over [`DOMAIN_TAG`] and this payload, by the
    /// strict rule of docs/protocol.md, section 3: the author's key passes
    /// [`Author::check_key`], and the signature passes `verify_strict` (`S` below the group
    /// order, `R` canonical and not of small order, `[S]B = R + [k]A` without the cofactor).
    pub fn verify(&self) -> Result<(), VerifyError> {
        let key = self.author.check_key().map_err(VerifyError::Key)?;
        key.verify_strict(
            &signed_message(&self.payload),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| VerifyError::Signature)
    }

    /// Whether [`Entry::verify`] passes.
    pub fn signature_is_valid(&self) -> bool {
        self.verify().is_ok()
    }

    /// The envelope bytes: what is stored and sent.
    pub fn envelope(&self) -> &Bytes {
        &self.envelope
    }
    /// BLAKE3 of the envelope.
    pub fn hash(&self) -> Hash {
        *self.hash.get_or_init(|| Hash::of(&self.envelope))
    }
    /// The payload format: [`FORMAT_VERSION`], or [`FORMAT_BEFORE_ROOMS`] for an entry
    /// written before rooms.
    pub fn format(&self) -> u8 {
        self.format
    }
    /// The room the entry belongs to; `None` for a format 1 entry (written before rooms).
    pub fn room(&self) -> Option<RoomId> {
        self.room
    }
    /// The signing author.
    pub fn author(&self) -> Author {
        self.author
    }
    /// Position in the author's log, from 1.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Hash of the previous entry in the author's log.
    pub fn prev(&self) -> Option<Hash> {
        self.prev
    }
    /// Wall-clock milliseconds since the Unix epoch, as claimed by the author.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }
    /// The clock, for merged ordering across authors: a hybrid logical clock
    /// ([`crate::clock`]) for format 2, the lamport clock for format 1.
    pub fn clock(&self) -> u64 {
        self.clock
    }
    /// What the entry says.
    pub fn body(&self) -> &Body {
        &self.body
    }
}

/// A 32-byte string field (`author`, `prev`).
fn read_32(reader: &mut cbor::Reader<'_>, field: &str) -> Result<[u8; 32], DecodeError> {
    reader
        .bytes()?
        .try_into()
        .map_err(|_| DecodeError::Malformed(format!("{field} is not 32 bytes")))
}

/// Signs a format 1 entry (`[1, author, seq, prev, timestamp, lamport, body]`), as the release
/// before rooms wrote them: for tests of the rules that still accept them.
#[cfg(test)]
pub(crate) fn sign_format_1(
    key: &SigningKey,
    seq: u64,
    prev: Option<Hash>,
    lamport: u64,
    body: &Body,
) -> Entry {
    let mut payload = Vec::new();
    cbor::write_array(&mut payload, 7);
    cbor::write_uint(&mut payload, FORMAT_BEFORE_ROOMS.into());
    cbor::write_bytes(&mut payload, Author::of(key).as_bytes());
    cbor::write_uint(&mut payload, seq);
    match prev {
        Some(prev) => cbor::write_bytes(&mut payload, prev.as_bytes()),
        None => payload.push(cbor::NULL),
    }
    cbor::write_uint(&mut payload, 1_700_000_000_000);
    cbor::write_uint(&mut payload, lamport);
    body.write(&mut payload).expect("a known body kind");
    Entry::sign_payload(key, &payload).expect("a well-formed format 1 entry")
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN_TAG.len() + payload.len());
    message.extend_from_slice(DOMAIN_TAG);
    message.extend_from_slice(payload);
    message
}

#[cfg(test)]
mod strict_tests;

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn room() -> RoomId {
        RoomId::from_bytes([0xee; 32])
    }

    fn text(seq: u64, prev: Option<Hash>, text: &str) -> Draft {
        Draft {
            room: room(),
            seq,
            prev,
            timestamp: 1_700_000_000_000,
            clock: seq,
            body: Body::Text { text: text.into() },
        }
    }

    #[test]
    fn sign_decode_verify_round_trip() {
        let entry = Entry::sign(&key(1), text(1, None, "hello")).unwrap();
        let decoded = Entry::decode(entry.envelope().clone()).unwrap();
        assert_eq!(decoded, entry);
        assert_eq!(decoded.author(), Author::of(&key(1)));
        assert_eq!(
            decoded.body(),
            &Body::Text {
                text: "hello".into()
            }
        );
        assert!(decoded.signature_is_valid());
        assert_eq!(decoded.format(), FORMAT_VERSION);
        assert_eq!(decoded.room(), Some(room()));
    }

    #[test]
    fn format_2_names_its_room_first_in_the_payload() {
        let draft = Draft {
            clock: 1_764_000_000_000 << 16,
            ..text(3, Some(Hash::from_bytes([0x11; 32])), "hi")
        };
        let entry = Entry::sign(&key(1), draft).unwrap();
        let mut expected = vec![0x88, 0x02, 0x58, 0x20];
        expected.extend_from_slice(room().as_bytes());
        expected.extend_from_slice(&[0x58, 0x20]);
        expected.extend_from_slice(Author::of(&key(1)).as_bytes());
        expected.extend_from_slice(&[0x03, 0x58, 0x20]);
        expected.extend_from_slice(&[0x11; 32]);
        expected.push(0x1b);
        expected.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
        expected.push(0x1b);
        expected.extend_from_slice(&(1_764_000_000_000u64 << 16).to_be_bytes());
        expected.extend_from_slice(&[0x82, 0x64, b't', b'e', b'x', b't', 0x62, b'h', b'i']);
        assert_eq!(&entry.payload[..], &expected[..]);
        assert_eq!(entry.clock(), 1_764_000_000_000 << 16);
        assert_eq!(entry.timestamp(), 1_700_000_000_000);
    }

    #[test]
    fn format_1_entries_still_decode_and_verify() {
        let body = Body::Profile {
            name: "alice".into(),
        };
        let old = sign_format_1(&key(1), 1, None, 1, &body);
        let decoded = Entry::decode(old.envelope().clone()).unwrap();
        assert_eq!(decoded.format(), FORMAT_BEFORE_ROOMS);
        assert_eq!(decoded.room(), None);
        assert_eq!((decoded.seq(), decoded.clock()), (1, 1));
        assert_eq!(decoded.body(), &body);
        assert!(decoded.signature_is_valid());
    }

    #[test]
    fn a_payload_whose_length_is_not_its_formats_is_malformed() {
        let format_2 = Entry::sign(&key(1), text(1, None, "hi")).unwrap();
        // A format 2 payload claiming 7 items, and a format 1 payload claiming 8.
        let mut short = format_2.payload.to_vec();
        short[0] = 0x87;
        let old = sign_format_1(&key(1), 1, None, 1, &Body::Text { text: "hi".into() });
        let mut long = old.payload.to_vec();
        long[0] = 0x88;
        long.push(0x00);
        for payload in [short, long] {
            assert!(matches!(
                Entry::decode(Bytes::from(signed_envelope(&payload))),
                Err(DecodeError::Malformed(_))
            ));
        }
    }

    #[test]
    fn a_format_2_room_that_is_not_32_bytes_is_malformed() {
        let entry = Entry::sign(&key(1), text(1, None, "hi")).unwrap();
        let payload = entry.payload.to_vec();
        // 0x88 0x02, then the room as 0x58 0x20 + 32 bytes: make it 31 bytes.
        let mut short = payload[..2].to_vec();
        short.extend_from_slice(&[0x58, 0x1f]);
        short.extend_from_slice(&payload[4..35]);
        short.extend_from_slice(&payload[36..]);
        assert!(matches!(
            Entry::decode(Bytes::from(signed_envelope(&short))),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn authors_print_as_lowercase_hex() {
        let author = Author::from_bytes([0xab; 32]);
        assert_eq!(author.to_string(), "ab".repeat(32));
        assert_eq!(Author::from_bytes([0x0f; 32]).fingerprint(), "0f0f0f");
    }

    #[test]
    fn tampered_payload_fails_verification() {
        let entry = Entry::sign(&key(1), text(1, None, "hello")).unwrap();
        let mut bytes = entry.envelope().to_vec();
        let at = bytes.windows(5).position(|w| w == b"hello").unwrap();
        bytes[at] = b'j';
        let tampered = Entry::decode(Bytes::from(bytes)).unwrap();
        assert!(!tampered.signature_is_valid());
    }

    #[test]
    fn signature_without_domain_tag_is_rejected() {
        let entry = Entry::sign(&key(1), text(1, None, "hello")).unwrap();
        let untagged = key(1).sign(&entry.payload).to_bytes();
        let mut forged = entry.clone();
        forged.signature = untagged;
        assert!(!forged.signature_is_valid());
    }

    #[test]
    fn oversized_text_is_refused_when_signing() {
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        let err = Entry::sign(&key(1), text(1, None, &long)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TextTooLong {
                len: MAX_TEXT_BYTES + 1
            }
        );
    }

    #[test]
    fn oversized_envelope_is_rejected_before_decoding() {
        let err = Entry::decode(Bytes::from(vec![0u8; MAX_ENTRY_BYTES + 1])).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                len: MAX_ENTRY_BYTES + 1
            }
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", " bob", "a\u{1b}[2J", &"n".repeat(MAX_NAME_BYTES + 1)] {
            let draft = Draft {
                body: Body::Profile { name: name.into() },
                ..text(1, None, "")
            };
            assert!(matches!(
                Entry::sign(&key(1), draft),
                Err(DecodeError::InvalidName { .. })
            ));
        }
    }

    #[test]
    fn non_canonical_integer_is_rejected() {
        // The payload with seq = 1 written as a two-byte integer (0x18 0x01) instead of 0x01.
        let entry = Entry::sign(&key(1), text(1, None, "hi")).unwrap();
        let payload = entry.payload.to_vec();
        // payload = 0x88 (array 8), 0x02 (version), 0x58 0x20 + 32 room bytes, 0x58 0x20 + 32
        // key bytes, then seq.
        assert_eq!(payload[70], 0x01);
        let mut stretched = payload[..70].to_vec();
        stretched.extend_from_slice(&[0x18, 0x01]);
        stretched.extend_from_slice(&payload[71..]);
        let envelope = signed_envelope(&stretched);
        assert_eq!(
            Entry::decode(Bytes::from(envelope)),
            Err(DecodeError::NonCanonical)
        );
        // The version written as 0x18 0x02.
        let mut version = vec![0x88, 0x18, 0x02];
        version.extend_from_slice(&payload[2..]);
        assert_eq!(
            Entry::decode(Bytes::from(signed_envelope(&version))),
            Err(DecodeError::NonCanonical)
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let entry = Entry::sign(&key(1), text(1, None, "hi")).unwrap();
        let mut bytes = entry.envelope().to_vec();
        bytes.push(0);
        assert!(Entry::decode(Bytes::from(bytes)).is_err());
    }

    #[test]
    fn truncated_bytes_are_rejected() {
        let entry = Entry::sign(&key(1), text(1, None, "hi")).unwrap();
        let bytes = entry.envelope().slice(..entry.envelope().len() - 3);
        assert!(matches!(
            Entry::decode(bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    /// An envelope around `payload`, signed by `key(1)`.
    fn signed_envelope(payload: &[u8]) -> Vec<u8> {
        let signature = key(1).sign(&signed_message(payload)).to_bytes();
        let mut envelope = Vec::new();
        cbor::write_array(&mut envelope, 2);
        cbor::write_bytes(&mut envelope, payload);
        cbor::write_bytes(&mut envelope, &signature);
        envelope
    }

    /// A payload `[1, key(1), 2, hash, 5, 2, body]` around the encoded `body`.
    fn payload_with_body(body: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        cbor::write_array(&mut payload, 7);
        cbor::write_uint(&mut payload, 1);
        cbor::write_bytes(&mut payload, Author::of(&key(1)).as_bytes());
        cbor::write_uint(&mut payload, 2);
        cbor::write_bytes(&mut payload, Hash::of(b"x").as_bytes());
        cbor::write_uint(&mut payload, 5);
        cbor::write_uint(&mut payload, 2);
        payload.extend_from_slice(body);
        payload
    }

    #[test]
    fn unknown_body_kinds_survive_decoding() {
        // ["reaction", 7]
        let body = [&[0x82, 0x68][..], b"reaction", &[0x07]].concat();
        let envelope = signed_envelope(&payload_with_body(&body));
        let entry = Entry::decode(Bytes::from(envelope)).unwrap();
        assert_eq!(
            entry.body(),
            &Body::Unknown {
                kind: "reaction".into()
            }
        );
        assert!(entry.signature_is_valid());
    }

    #[test]
    fn bodies_off_the_fast_path_follow_the_same_rules() {
        let text =
            |bytes: &[u8]| Entry::decode(Bytes::from(signed_envelope(&payload_with_body(bytes))));
        // ["text", "hi"] with the array head stretched: not canonical.
        assert_eq!(
            text(&[0x98, 0x02, 0x64, b't', b'e', b'x', b't', 0x62, b'h', b'i']),
            Err(DecodeError::NonCanonical)
        );
        // ["text", 7] and ["text"]: a known kind of the wrong shape.
        assert_eq!(
            text(&[0x82, 0x64, b't', b'e', b'x', b't', 0x07]),
            Err(DecodeError::InvalidBody)
        );
        assert_eq!(
            text(&[0x81, 0x64, b't', b'e', b'x', b't']),
            Err(DecodeError::InvalidBody)
        );
        // 7: not an array.
        assert_eq!(text(&[0x07]), Err(DecodeError::InvalidBody));
        // ["profile", " bob"]: the fast path still checks limits.
        let mut profile = vec![0x82, 0x67];
        profile.extend_from_slice(b"profile");
        profile.extend_from_slice(&[0x64, b' ', b'b', b'o', b'b']);
        assert!(matches!(
            text(&profile),
            Err(DecodeError::InvalidName { .. })
        ));
    }

    #[test]
    fn a_future_format_version_is_named_as_such() {
        let mut payload = payload_with_body(&[0x82, 0x64, b't', b'e', b'x', b't', 0x60]);
        payload[1] = 0x03;
        assert_eq!(
            Entry::decode(Bytes::from(signed_envelope(&payload))),
            Err(DecodeError::UnsupportedVersion(3))
        );
    }

    fn sealed() -> crate::dm::Sealed {
        crate::dm::Sealed {
            to: Author::of(&key(2)),
            to_key: crate::dm::EncKey::from_bytes([0x77; 32]),
            from_key: crate::dm::EncKey::from_bytes([0xf4; 32]),
            nonce: [0xe1; 24],
            ciphertext: vec![0xcc; 20],
        }
    }

    /// A body's encoding as `Entry::sign` writes it, read back from a signed entry.
    fn written(body: Body) -> Vec<u8> {
        let entry = Entry::sign(
            &key(1),
            Draft {
                body,
                ..text(1, None, "")
            },
        )
        .unwrap();
        let decoded = Entry::decode(entry.envelope().clone()).unwrap();
        assert_eq!(decoded.body(), entry.body());
        // The body is the tail of the payload, after the clock (`01` at clock 1).
        let at = entry.payload.len() - body_len(entry.body());
        entry.payload[at..].to_vec()
    }

    fn body_len(body: &Body) -> usize {
        let mut out = Vec::new();
        body.write(&mut out).unwrap();
        out.len()
    }

    #[test]
    fn new_kinds_round_trip_in_their_canonical_encoding() {
        let post = Body::Post {
            channel: "ops".into(),
            text: "hi".into(),
        };
        let expected = [&[0x83, 0x64][..], b"post", &[0x63], b"ops", &[0x62], b"hi"].concat();
        assert_eq!(written(post), expected);

        let enc_key = Body::EncKey {
            key: crate::dm::EncKey::from_bytes([0x42; 32]),
        };
        let expected = [&[0x82, 0x66][..], b"enckey", &[0x58, 0x20], &[0x42; 32]].concat();
        assert_eq!(written(enc_key), expected);

        let expected = [
            &[0x86, 0x62][..],
            b"dm",
            &[0x58, 0x20],
            Author::of(&key(2)).as_bytes(),
            &[0x58, 0x20],
            &[0x77; 32],
            &[0x58, 0x20],
            &[0xf4; 32],
            &[0x58, 0x18],
            &[0xe1; 24],
            &[0x54],
            &[0xcc; 20],
        ]
        .concat();
        assert_eq!(written(Body::Direct(sealed())), expected);
    }

    fn decode_body(body: &[u8]) -> Result<Body, DecodeError> {
        Entry::decode(Bytes::from(signed_envelope(&payload_with_body(body))))
            .map(|entry| entry.body().clone())
    }

    /// `[kind, items…]` as canonical CBOR, through the generic encoder.
    fn generic(kind: &str, items: Vec<Value>) -> Vec<u8> {
        let mut all = vec![Value::Text(kind.into())];
        all.extend(items);
        encode(&Value::Array(all)).unwrap()
    }

    #[test]
    fn new_kinds_of_the_wrong_shape_are_invalid() {
        let text = |t: &str| Value::Text(t.into());
        let bytes = |n: usize| Value::Bytes(vec![0x11; n]);
        let dm = |sizes: [usize; 5]| sizes.map(bytes).to_vec();
        let wrong = [
            generic("post", vec![text("ops")]),
            generic("post", vec![text("ops"), text("hi"), text("again")]),
            generic("post", vec![text("ops"), bytes(2)]),
            generic("post", vec![bytes(3), text("hi")]),
            generic("enckey", vec![]),
            generic("enckey", vec![bytes(31)]),
            generic("enckey", vec![bytes(33)]),
            generic("enckey", vec![text("key")]),
            generic("enckey", vec![bytes(32), bytes(32)]),
            generic("dm", dm([32, 32, 32, 24, 16])[..4].to_vec()),
            generic("dm", [dm([32, 32, 32, 24, 16]), vec![bytes(1)]].concat()),
            generic("dm", dm([31, 32, 32, 24, 16])),
            generic("dm", dm([33, 32, 32, 24, 16])),
            generic("dm", dm([32, 31, 32, 24, 16])),
            generic("dm", dm([32, 33, 32, 24, 16])),
            generic("dm", dm([32, 32, 31, 24, 16])),
            generic("dm", dm([32, 32, 33, 24, 16])),
            generic("dm", dm([32, 32, 32, 23, 16])),
            generic("dm", dm([32, 32, 32, 25, 16])),
            generic("dm", dm([32, 32, 32, 12, 16])),
            generic("dm", dm([32, 32, 32, 24, 15])),
            generic("dm", dm([32, 32, 32, 24, MAX_TEXT_BYTES + 17])),
            generic(
                "dm",
                [vec![text("to")], dm([32, 32, 24, 16, 0])[..4].to_vec()].concat(),
            ),
        ];
        for body in wrong {
            assert_eq!(
                decode_body(&body),
                Err(DecodeError::InvalidBody),
                "{body:02x?}"
            );
        }
        // The same sizes at the edges are fine.
        for len in [16, MAX_TEXT_BYTES + 16] {
            let body = generic("dm", dm([32, 32, 32, 24, len]));
            assert!(matches!(decode_body(&body), Ok(Body::Direct(_))));
        }
        // And a post's text has the text limit.
        let long = generic(
            "post",
            vec![text("ops"), text(&"x".repeat(MAX_TEXT_BYTES + 1))],
        );
        assert_eq!(
            decode_body(&long),
            Err(DecodeError::TextTooLong {
                len: MAX_TEXT_BYTES + 1
            })
        );
    }

    #[test]
    fn new_kinds_written_non_canonically_are_refused() {
        // ["post", "ops", "hi"] with the text's length head stretched (0x78 0x02).
        let body = [
            &[0x83, 0x64][..],
            b"post",
            &[0x63],
            b"ops",
            &[0x78, 0x02],
            b"hi",
        ]
        .concat();
        assert_eq!(decode_body(&body), Err(DecodeError::NonCanonical));
        // ["enckey", key] with the key's length as 0x59 0x0020.
        let body = [
            &[0x82, 0x66][..],
            b"enckey",
            &[0x59, 0x00, 0x20],
            &[0x42; 32],
        ]
        .concat();
        assert_eq!(decode_body(&body), Err(DecodeError::NonCanonical));
    }

    #[test]
    fn the_channel_rule() {
        let longest = "c".repeat(MAX_CHANNEL_BYTES);
        for good in ["ops", "a", "0day", "a-b_c.d", "generals", longest.as_str()] {
            assert_eq!(check_channel(good), Ok(()), "{good:?}");
            let body = generic(
                "post",
                vec![Value::Text(good.into()), Value::Text("x".into())],
            );
            assert!(matches!(decode_body(&body), Ok(Body::Post { .. })));
        }
        let too_long = "c".repeat(MAX_CHANNEL_BYTES + 1);
        for bad in [
            "",
            "general",
            "Ops",
            "-ops",
            ".ops",
            "_ops",
            "ops!",
            "o ps",
            "café",
            "#ops",
            too_long.as_str(),
        ] {
            let refused = DecodeError::InvalidChannel {
                channel: bad.to_owned(),
            };
            assert_eq!(check_channel(bad), Err(refused.clone()), "{bad:?}");
            let body = generic(
                "post",
                vec![Value::Text(bad.into()), Value::Text("x".into())],
            );
            assert_eq!(decode_body(&body), Err(refused.clone()), "{bad:?}");
            let draft = Draft {
                body: Body::Post {
                    channel: bad.into(),
                    text: "x".into(),
                },
                ..text(1, None, "")
            };
            assert_eq!(Entry::sign(&key(1), draft).unwrap_err(), refused);
        }
    }

    #[test]
    fn an_outgoing_letter_is_sealed_at_its_place() {
        use crate::dm::{DmSecret, Letter, SealError};
        let (alice, bob) = (Author::of(&key(1)), Author::of(&key(2)));
        let letter = Letter {
            to: bob,
            pair: DmSecret::derive(&key(1))
                .agree(&DmSecret::derive(&key(2)).public())
                .unwrap(),
            text: "psst".into(),
            nonce: [9; 24],
        };
        let body = Outgoing::Letter(letter.clone())
            .into_body(&room(), &alice, 7)
            .unwrap();
        let Body::Direct(sealed) = &body else {
            panic!("a letter becomes a dm: {body:?}");
        };
        let bob_secret = DmSecret::derive(&key(2));
        assert_eq!(
            sealed
                .open(&bob_secret, &bob, &room(), &alice, 7)
                .as_deref(),
            Ok("psst")
        );
        assert!(sealed.open(&bob_secret, &bob, &room(), &alice, 8).is_err());

        let plain = Body::Text { text: "hi".into() };
        assert_eq!(
            Outgoing::from(plain.clone()).into_body(&room(), &alice, 7),
            Ok(plain)
        );

        let long = Letter {
            text: "x".repeat(MAX_TEXT_BYTES + 1),
            ..letter
        };
        assert_eq!(
            Outgoing::Letter(long).into_body(&room(), &alice, 7),
            Err(DecodeError::Seal(SealError::TooLong {
                len: MAX_TEXT_BYTES + 1
            }))
        );
    }
}
