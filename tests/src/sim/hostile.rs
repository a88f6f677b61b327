//! A hostile node: no core, a script. It greets, proves membership of the LAN room (the
//! simulator's room 0; slot 0 with every target in it), says a valid hello there, then tries
//! one attack per connection, keeps the connection alive with pings, and answers queries (with
//! nothing, or wrongly).

use p2pchat_protocol::membership::{Greet, Nonce};
use p2pchat_protocol::message::{
    AuthorRange, Batch, Frame, HeadNote, Hello, Lane, Message, PROTOCOL_VERSION, Part, Summary,
};
use p2pchat_protocol::{Author, Body, Draft, Entry, Room, RoomId, SigningKey};
use rand::Rng;
use serde_bytes::ByteBuf;

/// Frames of one [`Attack::Flood`]: well over the window of unacked batches.
pub const FLOOD_BATCHES: usize = 3 * p2pchat_protocol::replica::MAX_UNACKED_BATCHES;
/// [`Message::Have`]s of one [`Attack::FakeHaves`], each full.
pub const FAKE_HAVE_MESSAGES: usize = 4;

/// One way to misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attack {
    /// Bytes that are no message.
    Garbage,
    /// Its own entry with a broken signature.
    ForgedEntry,
    /// An entry it signed, filed under an honest author's log.
    ForeignEntry,
    /// Its own valid entry of another room (a private room it is not in), in the LAN room.
    OtherRoomEntry,
    /// A reply nobody asked for, and replies that do not answer the query.
    BadReply,
    /// Many more batches than the window allows, without waiting for acks.
    Flood,
    /// Floods of notes claiming logs nobody has, and honest logs far beyond their heads.
    FakeHaves,
}

impl Attack {
    /// Every attack, in the order a hostile node tries them.
    pub const ALL: [Attack; 7] = [
        Attack::Garbage,
        Attack::ForgedEntry,
        Attack::ForeignEntry,
        Attack::OtherRoomEntry,
        Attack::BadReply,
        Attack::Flood,
        Attack::FakeHaves,
    ];

    /// Whether an honest node must disconnect a peer that does this.
    pub fn is_penalised(self) -> bool {
        !matches!(self, Attack::FakeHaves)
    }
}

/// What a hostile node knows and does.
pub struct Hostile {
    /// Its key (its peer identity).
    pub key: SigningKey,
    /// Its author.
    pub author: Author,
    attacks: Vec<Attack>,
    tried: usize,
    /// Honest authors it has heard of.
    honest: Vec<Author>,
    /// A valid entry of an honest log, to send again and again.
    sample: Entry,
}

impl Hostile {
    /// A hostile node trying `attacks` in turn; `honest` are the authors it can name, `sample`
    /// a valid entry of one of them.
    pub fn new(key: SigningKey, attacks: Vec<Attack>, honest: Vec<Author>, sample: Entry) -> Self {
        Self {
            author: Author::of(&key),
            key,
            attacks,
            tried: 0,
            honest,
            sample,
        }
    }

    /// The attack for its next connection.
    pub fn next_attack(&mut self) -> Attack {
        let attack = self.attacks[self.tried % self.attacks.len()];
        self.tried += 1;
        attack
    }

    /// Its greet on a connection.
    pub fn greet(nonce: Nonce) -> Frame {
        Frame::Greet(Greet {
            version: PROTOCOL_VERSION,
            nonce,
        })
    }

    /// Its hello in the room of slot 0: a valid one, claiming to hold nothing.
    pub fn hello() -> Frame {
        Frame::Room(
            0,
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                name: "mallory".into(),
                heads: Summary {
                    count: 0,
                    fingerprint: Default::default(),
                },
            }),
        )
    }

    /// The frames of `attack` (each a frame's body), with their lanes.
    pub fn attack(&self, attack: Attack, rng: &mut impl Rng) -> Vec<(Lane, Vec<u8>)> {
        let live = |message: Message| (Lane::Live, Frame::Room(0, message).encode());
        match attack {
            Attack::Garbage => vec![(Lane::Live, vec![0xff, 0x00, 0x13, 0x37])],
            Attack::ForgedEntry => {
                let mut envelope = self.own_profile().envelope().to_vec();
                if let Some(last) = envelope.last_mut() {
                    *last ^= 1;
                }
                vec![live(batch(self.author, envelope))]
            }
            Attack::ForeignEntry => {
                let victim = self.honest.first().copied().unwrap_or(self.author);
                vec![live(batch(victim, self.own_profile().envelope().to_vec()))]
            }
            Attack::OtherRoomEntry => {
                let elsewhere = self.profile_in(Room::private(&[0xee; 32], "elsewhere").id());
                vec![live(batch(self.author, elsewhere.envelope().to_vec()))]
            }
            Attack::BadReply => vec![live(Message::Reply(vec![Part::Heads {
                range: AuthorRange::ALL,
                heads: Vec::new(),
            }]))],
            Attack::Flood => {
                let message = batch(self.sample.author(), self.sample.envelope().to_vec());
                let frame = Frame::Room(0, message).encode();
                vec![(Lane::Bulk, frame); FLOOD_BATCHES]
            }
            Attack::FakeHaves => (0..FAKE_HAVE_MESSAGES)
                .map(|_| live(Message::Have(self.fake_notes(rng))))
                .collect(),
        }
    }

    /// Its answer to `message`, if any: queries are answered with "nothing here", or, in
    /// [`Attack::BadReply`], with a reply of the wrong shape.
    pub fn answer(&self, attack: Attack, message: &Message) -> Option<Vec<u8>> {
        let Message::Query(ranges) = message else {
            return None;
        };
        let parts = if attack == Attack::BadReply {
            Vec::new()
        } else {
            ranges
                .iter()
                .map(|&range| Part::Heads {
                    range,
                    heads: Vec::new(),
                })
                .collect()
        };
        Some(Frame::Room(0, Message::Reply(parts)).encode())
    }

    fn own_profile(&self) -> Entry {
        self.profile_in(Room::lan().id())
    }

    fn profile_in(&self, room: RoomId) -> Entry {
        let draft = Draft {
            room,
            seq: 1,
            prev: None,
            timestamp: super::BASE_UNIX_MS,
            clock: 1,
            body: Body::Profile {
                name: "mallory".into(),
            },
        };
        match Entry::sign(&self.key, draft) {
            Ok(entry) => entry,
            Err(e) => unreachable!("a fixed valid profile does not sign: {e}"),
        }
    }

    fn fake_notes(&self, rng: &mut impl Rng) -> Vec<HeadNote> {
        (0..p2pchat_protocol::limits::MAX_MESSAGE_NOTES)
            .map(|i| match self.honest.get(i / 2).filter(|_| i % 2 == 0) {
                Some(&author) => HeadNote {
                    author,
                    seq: 1_000_000,
                },
                None => HeadNote {
                    author: Author::from_bytes(rng.r#gen()),
                    seq: rng.gen_range(1..1_000_000),
                },
            })
            .collect()
    }
}

fn batch(author: Author, envelope: Vec<u8>) -> Message {
    Message::Batch(Batch {
        author,
        entries: vec![ByteBuf::from(envelope)],
    })
}
