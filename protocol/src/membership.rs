//! Proving membership of rooms without naming them (docs/protocol.md, section 9.1).
//!
//! After the transport's handshake (which authenticates both peer ids), each side sends a
//! [`Greet`] with a fresh random nonce, then, once it has the other's, one [`Tag`] per room it
//! is in: BLAKE3 in keyed mode, keyed by the room's proof key, over a transcript of both keys
//! and both nonces. A receiver recomputes the tag of each of its own rooms for that transcript;
//! the rooms whose tags match are the rooms the two share. A stranger sees only tags that are
//! new on every connection, so it learns no stable room identifier, and a tag copied from
//! another connection does not match (the nonces differ).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;

use crate::entry::Author;
use crate::room::{Room, RoomId};

/// The most rooms a node proves membership of (and the most tags a [`crate::message::Frame::Proof`] may hold).
pub const MAX_ROOMS: usize = 16;
/// Starts the transcript of every membership tag.
const TRANSCRIPT_TAG: &[u8] = b"p2pchat/membership/v1";
/// Context of the key of a node's padding tags, derived from all its rooms' proof keys.
const PADDING_KEY_CONTEXT: &str = "p2pchat 2026-12 membership padding key";

/// A connection's first frame: the sender's protocol version and its fresh nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greet {
    /// Must equal [`crate::message::PROTOCOL_VERSION`].
    pub version: u32,
    /// 32 random bytes, drawn anew for each connection.
    pub nonce: Nonce,
}

/// 32 random bytes that make a connection's transcript unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nonce(pub ByteArray<32>);

impl Nonce {
    /// A nonce from 32 (random) bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(ByteArray::new(bytes))
    }
}

/// One room's membership proof on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tag(pub ByteArray<32>);

/// Both ends of a connection, as one side sees them: what every tag on it is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// Our key (our peer id).
    pub us: Author,
    /// The peer's key (its peer id, authenticated by the transport).
    pub them: Author,
    /// The nonce we sent.
    pub our_nonce: Nonce,
    /// The nonce the peer sent.
    pub their_nonce: Nonce,
}

impl Transcript {
    /// The tag `prover` sends to show it is in `room`.
    fn tag(
        room: &Room,
        prover: &Author,
        verifier: &Author,
        prover_nonce: &Nonce,
        verifier_nonce: &Nonce,
    ) -> Tag {
        let mut hasher = blake3::Hasher::new_keyed(&room.proof_key());
        hasher.update(TRANSCRIPT_TAG);
        hasher.update(prover.as_bytes());
        hasher.update(verifier.as_bytes());
        hasher.update(&prover_nonce.0[..]);
        hasher.update(&verifier_nonce.0[..]);
        Tag(ByteArray::new(*hasher.finalize().as_bytes()))
    }

    /// The tags we send for `rooms` (at most [`MAX_ROOMS`]): one per room, padded to
    /// [`MAX_ROOMS`] tags, sorted, so neither their number nor their order tells how many
    /// rooms we are in. A padding tag is BLAKE3 keyed by a key derived from every room's proof
    /// key, over the transcript and its index: a peer that lacks one of our rooms' secrets
    /// cannot tell it from a room's tag.
    pub fn our_tags(&self, rooms: &[Room]) -> Vec<Tag> {
        let mut tags: Vec<Tag> = rooms
            .iter()
            .map(|room| {
                Self::tag(
                    room,
                    &self.us,
                    &self.them,
                    &self.our_nonce,
                    &self.their_nonce,
                )
            })
            .collect();
        let mut keys = Vec::with_capacity(32 * rooms.len());
        for room in rooms {
            keys.extend_from_slice(&room.proof_key());
        }
        let padding_key = blake3::derive_key(PADDING_KEY_CONTEXT, &keys);
        for index in rooms.len()..MAX_ROOMS {
            let mut hasher = blake3::Hasher::new_keyed(&padding_key);
            hasher.update(TRANSCRIPT_TAG);
            hasher.update(self.us.as_bytes());
            hasher.update(self.them.as_bytes());
            hasher.update(&self.our_nonce.0[..]);
            hasher.update(&self.their_nonce.0[..]);
            hasher.update(&[index as u8]);
            tags.push(Tag(ByteArray::new(*hasher.finalize().as_bytes())));
        }
        tags.sort_unstable();
        tags
    }

    /// Which of `rooms` the peer proved with `tags`: their indices, in the order of the rooms'
    /// ids (the order both sides number the shared rooms in).
    pub fn shared(&self, rooms: &[Room], tags: &[Tag]) -> Vec<usize> {
        let mut shared: Vec<(RoomId, usize)> = rooms
            .iter()
            .enumerate()
            .filter(|(_, room)| {
                let expected = blake3::Hash::from_bytes(
                    Self::tag(
                        room,
                        &self.them,
                        &self.us,
                        &self.their_nonce,
                        &self.our_nonce,
                    )
                    .0
                    .into_array(),
                );
                // blake3::Hash compares in constant time.
                tags.iter()
                    .any(|tag| expected == blake3::Hash::from_bytes(tag.0.into_array()))
            })
            .map(|(index, room)| (room.id(), index))
            .collect();
        shared.sort_unstable();
        shared.into_iter().map(|(_, index)| index).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sides(a: u8, b: u8) -> (Transcript, Transcript) {
        let (alice, bob) = (Author::from_bytes([1; 32]), Author::from_bytes([2; 32]));
        let (na, nb) = (Nonce::new([a; 32]), Nonce::new([b; 32]));
        (
            Transcript {
                us: alice,
                them: bob,
                our_nonce: na,
                their_nonce: nb,
            },
            Transcript {
                us: bob,
                them: alice,
                our_nonce: nb,
                their_nonce: na,
            },
        )
    }

    #[test]
    fn peers_find_exactly_the_rooms_they_share() {
        let team = Room::private(&[7; 32], "team");
        let other = Room::private(&[8; 32], "other");
        let lan = Room::lan();
        let (alice, bob) = sides(10, 20);
        let alice_rooms = [team.clone(), lan.clone()];
        let bob_rooms = [other, lan, team];
        let to_bob = alice.our_tags(&alice_rooms);
        let to_alice = bob.our_tags(&bob_rooms);
        let at_bob = bob.shared(&bob_rooms, &to_bob);
        let at_alice = alice.shared(&alice_rooms, &to_alice);
        let ids = |rooms: &[Room], found: &[usize]| {
            found.iter().map(|&i| rooms[i].id()).collect::<Vec<_>>()
        };
        assert_eq!(at_bob.len(), 2);
        assert_eq!(
            ids(&bob_rooms, &at_bob),
            ids(&alice_rooms, &at_alice),
            "both number them alike"
        );
    }

    #[test]
    fn a_tag_from_another_connection_or_direction_proves_nothing() {
        let team = [Room::private(&[7; 32], "team")];
        let (alice, bob) = sides(10, 20);
        assert_eq!(bob.shared(&team, &alice.our_tags(&team)), vec![0]);
        let (replayed, _) = sides(10, 21);
        assert!(
            bob.shared(&team, &replayed.our_tags(&team)).is_empty(),
            "another nonce"
        );
        assert!(
            alice.shared(&team, &alice.our_tags(&team)).is_empty(),
            "reflected back"
        );
        assert_eq!(alice.our_tags(&team).len(), MAX_ROOMS, "padded");
        let lan = [Room::lan()];
        assert_ne!(
            alice.our_tags(&lan),
            alice.our_tags(&team),
            "padding depends on the rooms"
        );
        assert!(bob.shared(&lan, &alice.our_tags(&team)).is_empty());
        let wrong = [Room::private(&[9; 32], "team")];
        assert!(
            bob.shared(&team, &alice.our_tags(&wrong)).is_empty(),
            "another key"
        );
    }
}
