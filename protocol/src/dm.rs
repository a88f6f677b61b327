//! Direct messages: a line sealed between its sender and its recipient.
//!
//! Every author publishes an X25519 [`EncKey`] in its log of each room (a `["enckey", key]`
//! entry). A direct message is a `["dm", …]` body in the sender's own log, stored and relayed
//! by every member like any entry, and readable only by its two parties. Both get the same
//! [`PairKey`] from one static–static X25519 agreement (the sender with the recipient's key,
//! the recipient with the sender's, as NaCl's `crypto_box`), so a reader does one agreement
//! per correspondent and then, per message, only HKDF-SHA256 and XChaCha20-Poly1305. Each
//! message's key is derived for its place, (room, author, seq), which is also its associated
//! data, and it carries a random 24-byte nonce, so even a forked log (one seq written twice)
//! never reuses a key and nonce. The recipient's author key is in the clear: relays see who
//! writes to whom, when and how much, never what (docs/protocol.md 2.7).
//!
//! Sealing is deterministic given a [`Letter`]'s nonce, so that this crate stays IO-free and
//! the test vectors are exact.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
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
/// The first bytes of the binding: what a ciphertext is bound to.
pub const BINDING_PREFIX: &[u8] = b"p2pchat/dm/v2";
/// The first bytes of the HKDF info of a message key (the binding follows).
pub const KEY_INFO: &[u8] = b"p2pchat/dm/v2";
/// Bytes the AEAD adds to what it encrypts.
pub const TAG_BYTES: usize = 16;
/// Bytes of a message's nonce.
pub const NONCE_BYTES: usize = 24;

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

    /// The key shared with the holder of `other` (one X25519 agreement): the same for both
    /// of them. Refused ([`SealError::WeakKey`]) when `other` is of small order.
    pub fn agree(&self, other: &EncKey) -> Result<PairKey, SealError> {
        let shared = self
            .secret
            .diffie_hellman(&PublicKey::from(*other.as_bytes()));
        if !shared.was_contributory() {
            return Err(SealError::WeakKey);
        }
        Ok(PairKey {
            shared: shared.to_bytes(),
            own: self.public,
            other: *other,
        })
    }
}

impl std::fmt::Debug for DmSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmSecret")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// What two parties share ([`DmSecret::agree`]): the X25519 agreement between one's secret
/// and the other's [`EncKey`], and both keys. Every direct message between them, either way,
/// is sealed and opened with it; a reader keeps one per correspondent.
#[derive(Clone, PartialEq, Eq)]
pub struct PairKey {
    shared: [u8; 32],
    own: EncKey,
    other: EncKey,
}

impl PairKey {
    /// The key of the side that agreed (its own public key).
    pub fn own(&self) -> EncKey {
        self.own
    }

    /// The other party's key.
    pub fn other(&self) -> EncKey {
        self.other
    }
}

impl std::fmt::Debug for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairKey")
            .field("own", &self.own)
            .field("other", &self.other)
            .finish_non_exhaustive()
    }
}

/// A sealed direct message, as carried in a `["dm", to, to_key, from_key, nonce, ciphertext]`
/// body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The recipient's author key (in the clear).
    pub to: Author,
    /// The recipient's encryption key the message is sealed to.
    pub to_key: EncKey,
    /// The sender's own encryption key.
    pub from_key: EncKey,
    /// The message's random nonce.
    pub nonce: [u8; NONCE_BYTES],
    /// The text, encrypted; 16 bytes longer than the text.
    pub ciphertext: Vec<u8>,
}

/// A direct message before it is sealed: it is sealed once its place in the sender's log is
/// known ([`Letter::seal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter {
    /// The recipient.
    pub to: Author,
    /// The key the sender shares with the recipient: the sender's secret agreed with the
    /// recipient's published encryption key.
    pub pair: PairKey,
    /// The line (at most [`crate::limits::MAX_TEXT_BYTES`]).
    pub text: String,
    /// Fresh random bytes: the nonce.
    pub nonce: [u8; NONCE_BYTES],
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
    #[error("the encryption key is unusable (of small order): no secret can be agreed with it")]
    WeakKey,
}

/// Why a sealed message cannot be read.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The reader is neither its sender nor its recipient.
    #[error("this direct message is not for us")]
    NotOurs,
    /// It is sealed to a key we do not hold, or does not authenticate (another key, or
    /// altered bytes).
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
        let (from_key, to_key) = (self.pair.own, self.pair.other);
        let binding = binding(room, author, seq);
        let key = message_key(&self.pair.shared, &from_key, &to_key, &binding);
        let ciphertext = XChaCha20Poly1305::new(&key.into())
            .encrypt(
                XNonce::from_slice(&self.nonce),
                Payload {
                    msg: self.text.as_bytes(),
                    aad: &binding,
                },
            )
            .map_err(|_| too_long)?;
        Ok(Sealed {
            to: self.to,
            to_key,
            from_key,
            nonce: self.nonce,
            ciphertext,
        })
    }
}

impl Sealed {
    /// The key of the party `reader` shares this message with, where `author` wrote it: the
    /// sender's for the recipient, the recipient's for the sender; [`OpenError::NotOurs`] for
    /// anybody else. The [`PairKey`] to open it with is the reader's agreement with that key.
    pub fn other_key(&self, reader: &Author, author: &Author) -> Result<EncKey, OpenError> {
        Ok(self.keys(reader, author)?.1)
    }

    /// The reader's own key in the body, and the other party's.
    fn keys(&self, reader: &Author, author: &Author) -> Result<(EncKey, EncKey), OpenError> {
        if *reader == self.to {
            Ok((self.to_key, self.from_key))
        } else if reader == author {
            Ok((self.from_key, self.to_key))
        } else {
            Err(OpenError::NotOurs)
        }
    }

    /// The text, for `reader` (the sender or the recipient) holding `secret`, of the message
    /// at (`room`, `author`, `seq`): one X25519 agreement, then [`Sealed::open_with`].
    pub fn open(
        &self,
        secret: &DmSecret,
        reader: &Author,
        room: &RoomId,
        author: &Author,
        seq: u64,
    ) -> Result<String, OpenError> {
        let pair = secret
            .agree(&self.other_key(reader, author)?)
            .map_err(|_| OpenError::Undecryptable)?;
        self.open_with(&pair, reader, room, author, seq)
    }

    /// The text, for `reader` (the sender or the recipient), of the message at (`room`,
    /// `author`, `seq`), with the [`PairKey`] the reader agreed with the other party's key
    /// ([`Sealed::other_key`]). A message sealed to another key of the reader's, or a pair
    /// agreed with another party, is [`OpenError::Undecryptable`].
    pub fn open_with(
        &self,
        pair: &PairKey,
        reader: &Author,
        room: &RoomId,
        author: &Author,
        seq: u64,
    ) -> Result<String, OpenError> {
        let (own, other) = self.keys(reader, author)?;
        if own != pair.own || other != pair.other {
            return Err(OpenError::Undecryptable);
        }
        let binding = binding(room, author, seq);
        let key = message_key(&pair.shared, &self.from_key, &self.to_key, &binding);
        let text = XChaCha20Poly1305::new(&key.into())
            .decrypt(
                XNonce::from_slice(&self.nonce),
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
/// (`"p2pchat/dm/v2" ‖ room ‖ author ‖ seq as u64 big-endian`).
pub fn binding(room: &RoomId, author: &Author, seq: u64) -> Vec<u8> {
    let mut binding = Vec::with_capacity(BINDING_PREFIX.len() + 72);
    binding.extend_from_slice(BINDING_PREFIX);
    binding.extend_from_slice(room.as_bytes());
    binding.extend_from_slice(author.as_bytes());
    binding.extend_from_slice(&seq.to_be_bytes());
    binding
}

/// The key of one message: HKDF-SHA256 with salt `from_key ‖ to_key`, the parties' X25519
/// agreement as input key material, and info `"p2pchat/dm/v2" ‖ binding`.
fn message_key(shared: &[u8; 32], from_key: &EncKey, to_key: &EncKey, binding: &[u8]) -> [u8; 32] {
    let mut salt = [0; 64];
    salt[..32].copy_from_slice(from_key.as_bytes());
    salt[32..].copy_from_slice(to_key.as_bytes());
    let mut key = [0; 32];
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand_multi_info(&[KEY_INFO, binding], &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn secret(seed: u8) -> DmSecret {
        DmSecret::derive(&identity(seed))
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
            pair: secret(1).agree(&secret(2).public()).unwrap(),
            text: text.into(),
            nonce: std::array::from_fn(|i| i as u8),
        }
    }

    fn pair() -> Pair {
        let alice = Author::of(&identity(1));
        let sealed = letter("meet at noon").seal(&room(), &alice, 5).unwrap();
        Pair {
            alice,
            bob: Author::of(&identity(2)),
            alice_secret: secret(1),
            bob_secret: secret(2),
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
        let once = secret(1).public();
        assert_eq!(once, secret(1).public());
        assert_ne!(once, secret(2).public());
        let raw = StaticSecret::from(blake3::derive_key(SECRET_CONTEXT, &[1; 32]));
        assert_eq!(once.as_bytes(), PublicKey::from(&raw).as_bytes());
    }

    #[test]
    fn both_parties_agree_on_the_same_pair_key() {
        let (alice, bob, carol) = (secret(1), secret(2), secret(3));
        let from_alice = alice.agree(&bob.public()).unwrap();
        let from_bob = bob.agree(&alice.public()).unwrap();
        assert_eq!(from_alice.shared, from_bob.shared);
        assert_eq!(
            (from_alice.own(), from_alice.other()),
            (alice.public(), bob.public())
        );
        assert_eq!(
            (from_bob.own(), from_bob.other()),
            (bob.public(), alice.public())
        );
        assert_ne!(
            from_alice.shared,
            alice.agree(&carol.public()).unwrap().shared
        );
        assert!(!format!("{from_alice:?}").contains(&format!("{:?}", from_alice.shared)));
    }

    #[test]
    fn recipient_and_sender_both_read_it() {
        let pair = pair();
        assert_eq!(pair.open_as_bob(&pair.sealed).unwrap(), "meet at noon");
        assert_eq!(pair.open_as_alice(&pair.sealed).unwrap(), "meet at noon");
        assert_eq!(pair.sealed.to, pair.bob);
        assert_eq!(pair.sealed.to_key, pair.bob_secret.public());
        assert_eq!(pair.sealed.from_key, pair.alice_secret.public());
        assert_eq!(
            pair.sealed.ciphertext.len(),
            "meet at noon".len() + TAG_BYTES
        );
    }

    #[test]
    fn a_pair_key_kept_opens_every_message_of_its_correspondent() {
        let pair = pair();
        let alice = pair.alice;
        let bob_side = pair.bob_secret.agree(&pair.alice_secret.public()).unwrap();
        let alice_side = pair.alice_secret.agree(&pair.bob_secret.public()).unwrap();
        assert_eq!(
            pair.sealed.other_key(&pair.bob, &alice),
            Ok(pair.alice_secret.public())
        );
        assert_eq!(
            pair.sealed.other_key(&alice, &alice),
            Ok(pair.bob_secret.public())
        );
        for seq in [1, 5, 9] {
            let text = format!("line {seq}");
            let sealed = letter(&text).seal(&room(), &alice, seq).unwrap();
            let open = |pair_key, reader| sealed.open_with(pair_key, reader, &room(), &alice, seq);
            assert_eq!(open(&bob_side, &pair.bob).as_deref(), Ok(text.as_str()));
            assert_eq!(open(&alice_side, &alice).as_deref(), Ok(text.as_str()));
            // Each side's key is its own: the other side's does not open it.
            assert_eq!(open(&alice_side, &pair.bob), Err(OpenError::Undecryptable));
            assert_eq!(open(&bob_side, &alice), Err(OpenError::Undecryptable));
        }
        // A pair agreed with somebody else does not open it either.
        let with_carol = pair.bob_secret.agree(&secret(3).public()).unwrap();
        assert_eq!(
            pair.sealed
                .open_with(&with_carol, &pair.bob, &room(), &alice, 5),
            Err(OpenError::Undecryptable)
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
        assert_eq!(
            pair.sealed
                .open(&secret(3), &carol, &room(), &pair.alice, 5),
            Err(OpenError::NotOurs)
        );
        assert_eq!(
            pair.sealed.other_key(&carol, &pair.alice),
            Err(OpenError::NotOurs)
        );
    }

    #[test]
    fn another_key_under_the_recipients_name_cannot_read_it() {
        let pair = pair();
        let impostor = secret(3);
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
    fn a_message_sealed_to_a_key_we_do_not_hold_is_refused() {
        // Alice seals to carol's key but names bob as the recipient: bob's key is not the one
        // sealed to, so bob refuses it (even holding the pair of alice's key).
        let pair = pair();
        let to_carols_key = Letter {
            pair: pair.alice_secret.agree(&secret(3).public()).unwrap(),
            ..letter("hi")
        }
        .seal(&room(), &pair.alice, 5)
        .unwrap();
        assert_eq!(
            pair.open_as_bob(&to_carols_key),
            Err(OpenError::Undecryptable)
        );
        // Bob's key with its top bit set is another key on the wire, but X25519 ignores that
        // bit: the agreement is the same, and only the check of the key sealed to refuses it.
        let mut other_spelling = *pair.bob_secret.public().as_bytes();
        other_spelling[31] ^= 0x80;
        let other_spelling = EncKey::from_bytes(other_spelling);
        let to_other_spelling = Letter {
            pair: pair.alice_secret.agree(&other_spelling).unwrap(),
            ..letter("hi")
        };
        assert_eq!(
            to_other_spelling.pair.shared,
            pair.alice_secret
                .agree(&pair.bob_secret.public())
                .unwrap()
                .shared
        );
        let sealed = to_other_spelling.seal(&room(), &pair.alice, 5).unwrap();
        assert_eq!(pair.open_as_bob(&sealed), Err(OpenError::Undecryptable));
        // And a sender whose key is no longer the one in the body does not read it back.
        let old_key = Sealed {
            from_key: secret(4).public(),
            ..pair.sealed.clone()
        };
        assert_eq!(pair.open_as_alice(&old_key), Err(OpenError::Undecryptable));
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let pair = pair();
        let sealed = &pair.sealed;
        let mut changed = Vec::new();
        for at in 0..32 {
            let mut copy = sealed.clone();
            copy.to_key = EncKey::from_bytes(flip(*copy.to_key.as_bytes(), at));
            changed.push(copy);
            let mut copy = sealed.clone();
            copy.from_key = EncKey::from_bytes(flip(*copy.from_key.as_bytes(), at));
            changed.push(copy);
        }
        for at in 0..NONCE_BYTES {
            let mut copy = sealed.clone();
            copy.nonce[at] ^= 0x80;
            changed.push(copy);
        }
        for at in 0..sealed.ciphertext.len() {
            let mut copy = sealed.clone();
            copy.ciphertext[at] ^= 0x01;
            changed.push(copy);
        }
        assert_eq!(changed.len(), 64 + NONCE_BYTES + sealed.ciphertext.len());
        for copy in &changed {
            assert_eq!(pair.open_as_bob(copy), Err(OpenError::Undecryptable));
            assert_eq!(pair.open_as_alice(copy), Err(OpenError::Undecryptable));
        }
    }

    fn flip(mut bytes: [u8; 32], at: usize) -> [u8; 32] {
        bytes[at] ^= 0x01;
        bytes
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

    #[test]
    fn a_seq_written_twice_never_reuses_a_key_and_nonce() {
        // A forked log (the same seq written again, with other text) gets a fresh nonce: the
        // two ciphertexts share no keystream, and each opens.
        let pair = pair();
        let again = Letter {
            nonce: [0xa5; NONCE_BYTES],
            ..letter("meet at one")
        }
        .seal(&room(), &pair.alice, 5)
        .unwrap();
        assert_ne!(again.nonce, pair.sealed.nonce);
        let keystream = |sealed: &Sealed, text: &str| -> Vec<u8> {
            sealed
                .ciphertext
                .iter()
                .zip(text.bytes())
                .map(|(c, t)| c ^ t)
                .collect()
        };
        assert_ne!(
            keystream(&again, "meet at one"),
            keystream(&pair.sealed, "meet at noon")
        );
        assert_eq!(pair.open_as_bob(&again).as_deref(), Ok("meet at one"));
        assert_eq!(
            pair.open_as_bob(&pair.sealed).as_deref(),
            Ok("meet at noon")
        );
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
        let pair = pair();
        for point in small_order_points() {
            let weak = EncKey::from_bytes(point);
            assert_eq!(secret(1).agree(&weak), Err(SealError::WeakKey));
            // A body naming a weak key as the other party's is not read by either side.
            let weak_sender = Sealed {
                from_key: weak,
                ..pair.sealed.clone()
            };
            assert_eq!(
                pair.open_as_bob(&weak_sender),
                Err(OpenError::Undecryptable)
            );
            let weak_recipient = Sealed {
                to_key: weak,
                ..pair.sealed.clone()
            };
            assert_eq!(
                pair.open_as_alice(&weak_recipient),
                Err(OpenError::Undecryptable)
            );
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
        let binding = binding(&room(), &pair.alice, 5);
        let letter = letter("");
        let key = message_key(
            &letter.pair.shared,
            &pair.alice_secret.public(),
            &pair.bob_secret.public(),
            &binding,
        );
        let ciphertext = XChaCha20Poly1305::new(&key.into())
            .encrypt(
                XNonce::from_slice(&letter.nonce),
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
        assert_eq!(pair.open_as_alice(&sealed), Err(OpenError::NotText));
    }
}
