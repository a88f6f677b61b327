//! Direct messages: a line sealed to its recipient and to its sender.
//!
//! Every author publishes an X25519 [`EncKey`] in its log of each room (a `["enckey", key]`
//! entry). A direct message is a `["dm", …]` body in the sender's own log, stored and relayed
//! by every member like any entry, and readable only by its two parties: a fresh 32-byte
//! content key encrypts the text (ChaCha20-Poly1305), and is wrapped twice, for the recipient
//! and for the sender, each under a key derived (HKDF-SHA256) from an X25519 agreement between
//! one ephemeral key and that party's [`EncKey`]. Ciphertext and wraps are bound to the entry's
//! place, (room, author, seq), as associated data. The recipient's author key is in the clear:
//! relays see who writes to whom, when and how much, never what (docs/protocol.md 2.7).
//!
//! Sealing is deterministic given a [`Letter`]'s randomness, so that this crate stays IO-free
//! and the test vectors are exact.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;

use crate::entry::{Author, SigningKey};
use crate::room::RoomId;

/// Bytes of a wrapped content key: 32 bytes of key and a 16-byte tag.
pub const WRAP_BYTES: usize = 48;

/// An X25519 public key an author publishes so others can seal direct messages to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EncKey(ByteArray<32>);

impl EncKey {
    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(ByteArray::new(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The secret half of an author's [`EncKey`], derived from its identity key.
pub struct DmSecret {
    _todo: (),
}

impl DmSecret {
    /// The encryption secret of `identity`: always the same for the same identity key, so
    /// nothing new has to be kept on disk (derivation in docs/protocol.md 2.7).
    pub fn derive(identity: &SigningKey) -> Self {
        let _ = identity;
        todo!("dm: derive")
    }

    /// The public key to publish.
    pub fn public(&self) -> EncKey {
        todo!("dm: public")
    }
}

/// A sealed direct message, as carried in a `["dm", to, ephemeral, to_wrap, from_wrap,
/// ciphertext]` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The recipient's author key (in the clear).
    pub to: Author,
    /// The ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The content key, wrapped for the recipient.
    pub to_wrap: [u8; WRAP_BYTES],
    /// The content key, wrapped for the sender.
    pub from_wrap: [u8; WRAP_BYTES],
    /// The text, encrypted; 16 bytes longer than the text.
    pub ciphertext: Vec<u8>,
}

/// A direct message before it is sealed: it is sealed once its place in the sender's log is
/// known ([`Letter::seal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter {
    /// The recipient.
    pub to: Author,
    /// The recipient's published encryption key.
    pub to_key: EncKey,
    /// The sender's own encryption key.
    pub from_key: EncKey,
    /// The line (at most [`crate::limits::MAX_TEXT_BYTES`]).
    pub text: String,
    /// Fresh random bytes: the ephemeral secret (first 32) and the content key (last 32).
    pub randomness: [u8; 64],
}

/// Why a letter cannot be sealed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The text is over the size limit.
    #[error("the message is {len} bytes, over the {max}-byte limit", max = crate::limits::MAX_TEXT_BYTES)]
    TooLong {
        /// The text's length.
        len: usize,
    },
    /// A key is of small order: no secret can be agreed with it.
    #[error("the recipient's encryption key is unusable (of small order)")]
    WeakKey,
}

/// Why a sealed message cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// The reader is neither its sender nor its recipient.
    #[error("this direct message is not for us")]
    NotOurs,
    /// The wrap or the ciphertext does not authenticate (another key, or altered bytes).
    #[error("this direct message does not decrypt with our key")]
    Undecryptable,
    /// It decrypts, but not to UTF-8 text.
    #[error("this direct message decrypts to bytes that are not text")]
    NotText,
}

impl Letter {
    /// Seals the letter as entry `seq` of `author`'s log in `room`.
    pub fn seal(&self, room: &RoomId, author: &Author, seq: u64) -> Result<Sealed, SealError> {
        let _ = (room, author, seq);
        todo!("dm: seal")
    }
}

impl Sealed {
    /// The text, for `reader` (the sender or the recipient) holding `secret`, of the message
    /// at (`room`, `author`, `seq`).
    pub fn open(
        &self,
        secret: &DmSecret,
        reader: &Author,
        room: &RoomId,
        author: &Author,
        seq: u64,
    ) -> Result<String, OpenError> {
        let _ = (secret, reader, room, author, seq);
        todo!("dm: open")
    }
}
