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

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::entry::{Author, SigningKey};
use crate::limits::MAX_TEXT_BYTES;
use crate::room::RoomId;

/// The BLAKE3 context that derives an author's [`DmSecret`] from its identity key.
pub const SECRET_CONTEXT: &str = "p2pchat 2026-12-01 dm secret";
/// The first bytes of the binding: what a ciphertext and its wraps are bound to.
pub const BINDING_PREFIX: &[u8] = b"p2pchat/dm/v1";
/// The first bytes of the HKDF info of a wrap key (the binding follows).
pub const WRAP_INFO: &[u8] = b"p2pchat/dm/wrap/v1";
/// Bytes the AEAD adds to what it encrypts.
pub const TAG_BYTES: usize = 16;

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
#[derive(Clone)]
pub struct DmSecret {
    secret: StaticSecret,
    public: EncKey,
}

impl DmSecret {
    /// The encryption secret of `identity`: always the same for the same identity key, so
    /// nothing new has to be kept on disk (derivation in docs/protocol.md 2.7).
    pub fn derive(identity: &SigningKey) -> Self {
        let secret = StaticSecret::from(blake3::derive_key(SECRET_CONTEXT, &identity.to_bytes()));
        let public = EncKey::from_bytes(PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// The public key to publish.
    pub fn public(&self) -> EncKey {
        self.public
    }
}

impl std::fmt::Debug for DmSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmSecret")
            .field("public", &self.public)
            .finish_non_exhaustive()
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
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
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
        let too_long = SealError::TooLong {
            len: self.text.len(),
        };
        if self.text.len() > MAX_TEXT_BYTES {
            return Err(too_long);
        }
        let binding = binding(room, author, seq);
        let (ephemeral_secret, content_key) = self.randomness.split_at(32);
        let ephemeral_secret = StaticSecret::from(to_array::<32>(ephemeral_secret));
        let ephemeral = PublicKey::from(&ephemeral_secret).to_bytes();
        let content_key = to_array::<32>(content_key);
        let ciphertext = aead(&content_key)
            .encrypt(
                &Nonce::default(),
                Payload {
                    msg: self.text.as_bytes(),
                    aad: &binding,
                },
            )
            .map_err(|_| too_long)?;
        let wrap_for = |party: &EncKey| {
            let shared = ephemeral_secret.diffie_hellman(&PublicKey::from(*party.as_bytes()));
            if !shared.was_contributory() {
                return Err(SealError::WeakKey);
            }
            let key = wrap_key(shared.as_bytes(), &ephemeral, party, &binding);
            let mut wrap = [0; WRAP_BYTES];
            wrap[..32].copy_from_slice(&content_key);
            let tag = aead(&key)
                .encrypt_in_place_detached(&Nonce::default(), &binding, &mut wrap[..32])
                .expect("32 bytes are far below the cipher's message limit");
            wrap[32..].copy_from_slice(&tag);
            Ok(wrap)
        };
        Ok(Sealed {
            to: self.to,
            ephemeral,
            to_wrap: wrap_for(&self.to_key)?,
            from_wrap: wrap_for(&self.from_key)?,
            ciphertext,
        })
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
        let wrap = if *reader == self.to {
            &self.to_wrap
        } else if reader == author {
            &self.from_wrap
        } else {
            return Err(OpenError::NotOurs);
        };
        let binding = binding(room, author, seq);
        let shared = secret
            .secret
            .diffie_hellman(&PublicKey::from(self.ephemeral));
        if !shared.was_contributory() {
            return Err(OpenError::Undecryptable);
        }
        let key = wrap_key(shared.as_bytes(), &self.ephemeral, &secret.public, &binding);
        let mut content_key = to_array::<32>(&wrap[..32]);
        aead(&key)
            .decrypt_in_place_detached(
                &Nonce::default(),
                &binding,
                &mut content_key,
                Tag::from_slice(&wrap[32..]),
            )
            .map_err(|_| OpenError::Undecryptable)?;
        let text = aead(&content_key)
            .decrypt(
                &Nonce::default(),
                Payload {
                    msg: &self.ciphertext,
                    aad: &binding,
                },
            )
            .map_err(|_| OpenError::Undecryptable)?;
        String::from_utf8(text).map_err(|_| OpenError::NotText)
    }
}

/// What a direct message is bound to: its place, entry `seq` of `author`'s log in `room`
/// (`"p2pchat/dm/v1" ‖ room ‖ author ‖ seq as u64 big-endian`).
pub fn binding(room: &RoomId, author: &Author, seq: u64) -> Vec<u8> {
    let mut binding = Vec::with_capacity(BINDING_PREFIX.len() + 72);
    binding.extend_from_slice(BINDING_PREFIX);
    binding.extend_from_slice(room.as_bytes());
    binding.extend_from_slice(author.as_bytes());
    binding.extend_from_slice(&seq.to_be_bytes());
    binding
}

/// The key that wraps the content key for `party`: HKDF-SHA256 with salt `ephemeral ‖ party`,
/// the X25519 agreement as input key material, and info `"p2pchat/dm/wrap/v1" ‖ binding`.
fn wrap_key(shared: &[u8; 32], ephemeral: &[u8; 32], party: &EncKey, binding: &[u8]) -> [u8; 32] {
    let mut salt = [0; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(party.as_bytes());
    let mut key = [0; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand_multi_info(&[WRAP_INFO, binding], &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

/// ChaCha20-Poly1305 under `key`; every key is used for one message only, with the zero nonce.
fn aead(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(key.into())
}

fn to_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0; N];
    array.copy_from_slice(bytes);
    array
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn room() -> RoomId {
        RoomId::from_bytes([0xee; 32])
    }

    /// Alice (identity 1) writes to bob (identity 2), as entry 5 of her log.
    struct Pair {
        alice: Author,
        bob: Author,
        alice_secret: DmSecret,
        bob_secret: DmSecret,
        sealed: Sealed,
    }

    fn letter(text: &str) -> Letter {
        Letter {
            to: Author::of(&identity(2)),
            to_key: DmSecret::derive(&identity(2)).public(),
            from_key: DmSecret::derive(&identity(1)).public(),
            text: text.into(),
            randomness: std::array::from_fn(|i| i as u8),
        }
    }

    fn pair() -> Pair {
        let alice = Author::of(&identity(1));
        let sealed = letter("meet at noon").seal(&room(), &alice, 5).unwrap();
        Pair {
            alice,
            bob: Author::of(&identity(2)),
            alice_secret: DmSecret::derive(&identity(1)),
            bob_secret: DmSecret::derive(&identity(2)),
            sealed,
        }
    }

    impl Pair {
        fn open_as_bob(&self, sealed: &Sealed) -> Result<String, OpenError> {
            sealed.open(&self.bob_secret, &self.bob, &room(), &self.alice, 5)
        }

        fn open_as_alice(&self, sealed: &Sealed) -> Result<String, OpenError> {
            sealed.open(&self.alice_secret, &self.alice, &room(), &self.alice, 5)
        }
    }

    #[test]
    fn the_secret_is_derived_from_the_identity_alone() {
        let once = DmSecret::derive(&identity(1)).public();
        assert_eq!(once, DmSecret::derive(&identity(1)).public());
        assert_ne!(once, DmSecret::derive(&identity(2)).public());
        let secret = StaticSecret::from(blake3::derive_key(SECRET_CONTEXT, &[1; 32]));
        assert_eq!(once.as_bytes(), PublicKey::from(&secret).as_bytes());
    }

    #[test]
    fn recipient_and_sender_both_read_it() {
        let pair = pair();
        assert_eq!(pair.open_as_bob(&pair.sealed).unwrap(), "meet at noon");
        assert_eq!(pair.open_as_alice(&pair.sealed).unwrap(), "meet at noon");
        assert_eq!(pair.sealed.to, pair.bob);
        assert_eq!(
            pair.sealed.ciphertext.len(),
            "meet at noon".len() + TAG_BYTES
        );
    }

    #[test]
    fn an_empty_line_seals_too() {
        let pair = pair();
        let sealed = letter("").seal(&room(), &pair.alice, 5).unwrap();
        assert_eq!(sealed.ciphertext.len(), TAG_BYTES);
        assert_eq!(pair.open_as_bob(&sealed).unwrap(), "");
    }

    #[test]
    fn a_third_party_is_told_it_is_not_theirs() {
        let pair = pair();
        let carol = Author::of(&identity(3));
        let carol_secret = DmSecret::derive(&identity(3));
        assert_eq!(
            pair.sealed
                .open(&carol_secret, &carol, &room(), &pair.alice, 5),
            Err(OpenError::NotOurs)
        );
    }

    #[test]
    fn another_key_under_the_recipients_name_cannot_read_it() {
        let pair = pair();
        let impostor = DmSecret::derive(&identity(3));
        assert_eq!(
            pair.sealed
                .open(&impostor, &pair.bob, &room(), &pair.alice, 5),
            Err(OpenError::Undecryptable)
        );
        assert_eq!(
            pair.sealed
                .open(&impostor, &pair.alice, &room(), &pair.alice, 5),
            Err(OpenError::Undecryptable)
        );
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let pair = pair();
        let sealed = &pair.sealed;
        let mut changed = Vec::new();
        for at in 0..32 {
            let mut copy = sealed.clone();
            copy.ephemeral[at] ^= 0x01;
            changed.push(copy);
        }
        for at in 0..WRAP_BYTES {
            let mut copy = sealed.clone();
            copy.to_wrap[at] ^= 0x80;
            changed.push(copy);
            let mut copy = sealed.clone();
            copy.from_wrap[at] ^= 0x80;
            changed.push(copy);
        }
        for at in 0..sealed.ciphertext.len() {
            let mut copy = sealed.clone();
            copy.ciphertext[at] ^= 0x01;
            changed.push(copy);
        }
        for copy in &changed {
            // A changed wrap is only read by its party; the other one still reads the line.
            let for_bob = copy.to_wrap != sealed.to_wrap || copy.from_wrap == sealed.from_wrap;
            let for_alice = copy.from_wrap != sealed.from_wrap || copy.to_wrap == sealed.to_wrap;
            if for_bob {
                assert_eq!(pair.open_as_bob(copy), Err(OpenError::Undecryptable));
            }
            if for_alice {
                assert_eq!(pair.open_as_alice(copy), Err(OpenError::Undecryptable));
            }
        }
    }

    #[test]
    fn it_opens_only_at_its_own_place() {
        let pair = pair();
        let other_room = RoomId::from_bytes([0xdd; 32]);
        let mallory = Author::of(&identity(4));
        let sealed = &pair.sealed;
        let bob = |room: &RoomId, author: &Author, seq| {
            sealed.open(&pair.bob_secret, &pair.bob, room, author, seq)
        };
        assert_eq!(bob(&room(), &pair.alice, 6), Err(OpenError::Undecryptable));
        assert_eq!(
            bob(&other_room, &pair.alice, 5),
            Err(OpenError::Undecryptable)
        );
        assert_eq!(bob(&room(), &mallory, 5), Err(OpenError::Undecryptable));
        let alice = sealed.open(&pair.alice_secret, &pair.alice, &room(), &pair.alice, 4);
        assert_eq!(alice, Err(OpenError::Undecryptable));
    }

    /// The points of small order on Curve25519 (as Montgomery u-coordinates).
    fn small_order_points() -> Vec<[u8; 32]> {
        let mut one = [0; 32];
        one[0] = 1;
        let order_8 = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ];
        vec![[0; 32], one, order_8]
    }

    #[test]
    fn a_key_of_small_order_is_refused() {
        let alice = Author::of(&identity(1));
        for point in small_order_points() {
            let weak = Letter {
                to_key: EncKey::from_bytes(point),
                ..letter("hi")
            };
            assert_eq!(weak.seal(&room(), &alice, 5), Err(SealError::WeakKey));
            let weak_self = Letter {
                from_key: EncKey::from_bytes(point),
                ..letter("hi")
            };
            assert_eq!(weak_self.seal(&room(), &alice, 5), Err(SealError::WeakKey));
            // And an ephemeral key of small order is not read.
            let pair = pair();
            let sealed = Sealed {
                ephemeral: point,
                ..pair.sealed.clone()
            };
            assert_eq!(pair.open_as_bob(&sealed), Err(OpenError::Undecryptable));
        }
    }

    #[test]
    fn a_line_over_the_limit_is_not_sealed() {
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        let alice = Author::of(&identity(1));
        assert_eq!(
            letter(&long).seal(&room(), &alice, 5),
            Err(SealError::TooLong {
                len: MAX_TEXT_BYTES + 1
            })
        );
        assert!(
            letter(&"x".repeat(MAX_TEXT_BYTES))
                .seal(&room(), &alice, 5)
                .is_ok()
        );
    }

    #[test]
    fn bytes_that_are_not_text_are_named_so() {
        let pair = pair();
        let content_key = to_array::<32>(&letter("").randomness[32..]);
        let binding = binding(&room(), &pair.alice, 5);
        let ciphertext = aead(&content_key)
            .encrypt(
                &Nonce::default(),
                Payload {
                    msg: &[0xff, 0xfe],
                    aad: &binding,
                },
            )
            .unwrap();
        let sealed = Sealed {
            ciphertext,
            ..pair.sealed.clone()
        };
        assert_eq!(pair.open_as_bob(&sealed), Err(OpenError::NotText));
    }
}
