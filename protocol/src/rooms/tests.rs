//! The multi-room core's rules, driven by a tiny synchronous network of cores over memory
//! stores (one per room), every frame through the codec.

use std::collections::VecDeque;
use std::time::Duration;

use super::*;
use crate::entry::{Body, SigningKey};
use crate::message::Message;
use crate::room::RoomId;
use crate::store::MemoryStore;

struct Node {
    core: Rooms<usize>,
    stores: Vec<MemoryStore>,
    key: SigningKey,
}

#[derive(Default)]
struct Log {
    events: Vec<(usize, RoomsEvent<usize>)>,
    disconnects: Vec<(usize, usize, Disconnect)>,
    /// (from, to, frame) in the order sent.
    sent: Vec<(usize, usize, Frame)>,
}

struct Net {
    now: Instant,
    nodes: Vec<Node>,
    /// Frames in flight, encoded, in the order sent (`None`: the sender closed).
    wire: VecDeque<(usize, usize, Option<Vec<u8>>)>,
    inputs: VecDeque<(usize, RoomsInput<usize>)>,
    log: Log,
    next_nonce: u8,
}

fn key(n: usize) -> SigningKey {
    SigningKey::from_bytes(&[n as u8 + 1; 32])
}

fn team() -> Room {
    Room::private(&[7; 32], "team")
}

fn ops() -> Room {
    Room::private(&[8; 32], "ops")
}

/// The text a node writes in `room`: its own line there, recognisable in any store.
fn line(n: usize, room: &Room) -> String {
    format!("n{n} in {}", room.label())
}

impl Net {
    /// Nodes in the rooms given, each with a profile and one line in each of its rooms.
    fn new(rooms: &[Vec<Room>]) -> Self {
        let nodes = rooms
            .iter()
            .enumerate()
            .map(|(n, rooms)| {
                let key = key(n);
                let mut stores = Vec::new();
                let mut config = Vec::new();
                for room in rooms {
                    let mut store = MemoryStore::new(room.id());
                    let profile = Body::Profile {
                        name: format!("n{n}"),
                    };
                    store.append(&key, profile, 1_000).unwrap();
                    let text = Body::Text {
                        text: line(n, room),
                    };
                    store.append(&key, text, 1_001).unwrap();
                    config.push((room.clone(), format!("n{n}"), store.heads()));
                    stores.push(store);
                }
                Node {
                    core: Rooms::new(Author::of(&key), config),
                    stores,
                    key,
                }
            })
            .collect();
        Self {
            now: Instant::now(),
            nodes,
            wire: VecDeque::new(),
            inputs: VecDeque::new(),
            log: Log::default(),
            next_nonce: 1,
        }
    }

    fn author(&self, n: usize) -> Author {
        Author::of(&self.nodes[n].key)
    }

    fn nonce(&mut self) -> Nonce {
        self.next_nonce += 1;
        Nonce::new([self.next_nonce; 32])
    }

    fn give(&mut self, n: usize, input: RoomsInput<usize>) {
        let node = &mut self.nodes[n];
        node.core.handle(self.now, input, &node.stores);
        while let Some(output) = self.nodes[n].core.poll() {
            match output {
                RoomsOutput::Send { peer, frame, .. } => {
                    self.wire.push_back((n, peer, Some(frame.encode())));
                    self.log.sent.push((n, peer, frame));
                }
                RoomsOutput::Store { room, peer, batch } => {
                    let entries = batch
                        .entries
                        .iter()
                        .map(|e| bytes::Bytes::copy_from_slice(e));
                    let outcome = self.nodes[n].stores[room].insert(batch.author, entries);
                    let stored = RoomsInput::Stored {
                        room,
                        peer,
                        author: batch.author,
                        outcome: Ok(outcome),
                    };
                    self.inputs.push_back((n, stored));
                }
                RoomsOutput::Disconnect { peer, reason } => {
                    self.log.disconnects.push((n, peer, reason));
                    // A graceful close: what it wrote before still arrives, then the close;
                    // it reads nothing more.
                    self.inputs.push_back((n, RoomsInput::Closed { peer }));
                    self.wire.retain(|(from, to, _)| (*from, *to) != (peer, n));
                    self.wire.push_back((n, peer, None));
                }
                RoomsOutput::Event(event) => {
                    if let RoomsEvent::Room {
                        room,
                        event: Event::Hello { peer, .. },
                    } = &event
                    {
                        let accept = RoomsInput::Accept {
                            room: *room,
                            peer: *peer,
                        };
                        self.inputs.push_back((n, accept));
                    }
                    self.log.events.push((n, event));
                }
            }
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        for (n, peer) in [(a, b), (b, a)] {
            let (author, nonce) = (self.author(peer), self.nonce());
            let connected = RoomsInput::Connected {
                peer,
                author,
                nonce,
            };
            self.give(n, connected);
        }
    }

    /// Delivers everything until nothing moves; frames to a peer outside the net (a test's
    /// hand-driven peer) stay in `log.sent`.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if let Some((n, input)) = self.inputs.pop_front() {
                self.give(n, input);
            } else if let Some((from, to, bytes)) = self.wire.pop_front() {
                if to >= self.nodes.len() {
                    continue;
                }
                let input = match bytes.map(|bytes| Frame::decode(&bytes)) {
                    Some(Ok(frame)) => RoomsInput::Received { peer: from, frame },
                    Some(Err(error)) => RoomsInput::Malformed { peer: from, error },
                    None => RoomsInput::Closed { peer: from },
                };
                self.give(to, input);
            } else {
                return;
            }
        }
        panic!("the network did not settle");
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        for n in 0..self.nodes.len() {
            self.give(n, RoomsInput::Tick);
        }
    }

    /// The lines (texts) node `n` holds in its room `room`, sorted.
    fn lines(&self, n: usize, room: usize) -> Vec<String> {
        let store = &self.nodes[n].stores[room];
        let mut lines: Vec<String> = store
            .heads()
            .iter()
            .flat_map(|head| store.entries_of(&head.author))
            .filter_map(|entry| match entry.body() {
                Body::Text { text } => Some(text.clone()),
                _ => None,
            })
            .collect();
        lines.sort();
        lines
    }

    fn joined(&self, n: usize, peer: usize) -> Option<Vec<usize>> {
        self.log.events.iter().find_map(|(at, event)| match event {
            RoomsEvent::Joined { peer: p, rooms } if *at == n && *p == peer => Some(rooms.clone()),
            _ => None,
        })
    }

    fn disconnect_of(&self, n: usize, peer: usize) -> Option<&Disconnect> {
        self.log
            .disconnects
            .iter()
            .find(|(at, p, _)| *at == n && *p == peer)
            .map(|(_, _, reason)| reason)
    }

    /// Whether a room's message went between `a` and `b` (either way).
    fn room_frames_between(&self, a: usize, b: usize) -> usize {
        self.log
            .sent
            .iter()
            .filter(|(from, to, frame)| {
                ((*from, *to) == (a, b) || (*from, *to) == (b, a))
                    && matches!(frame, Frame::Room(..))
            })
            .count()
    }
}

#[test]
fn peers_in_one_room_greet_prove_and_sync() {
    let mut net = Net::new(&[vec![Room::lan()], vec![Room::lan()]]);
    net.connect(0, 1);
    net.settle();
    assert_eq!(net.joined(0, 1), Some(vec![0]));
    assert_eq!(net.joined(1, 0), Some(vec![0]));
    assert!(net.log.disconnects.is_empty(), "{:?}", net.log.disconnects);
    let both = vec![line(0, &Room::lan()), line(1, &Room::lan())];
    assert_eq!(net.lines(0, 0), both);
    assert_eq!(net.lines(1, 0), both);
    // On the wire: a greet, then a proof, then only room frames, from each side.
    for n in [0, 1] {
        let mine: Vec<&Frame> = net
            .log
            .sent
            .iter()
            .filter(|(from, _, _)| *from == n)
            .map(|(_, _, frame)| frame)
            .collect();
        assert!(matches!(mine[0], Frame::Greet(_)));
        assert!(matches!(mine[1], Frame::Proof(tags) if tags.len() == MAX_ROOMS));
        assert!(mine[2..].iter().all(|f| matches!(f, Frame::Room(0, _))));
        assert!(matches!(mine[2], Frame::Room(0, Message::Hello(_))));
    }
    assert!(net.nodes[0].core.replica(0).is_accepted(&1));
    assert_eq!(net.nodes[0].core.shared_rooms(&1), &[0]);
}

#[test]
fn three_rooms_with_overlapping_members_exchange_only_what_they_share() {
    let lan = Room::lan();
    // n0: all three; n1: team and lan; n2: ops and lan; n3: ops only.
    let mut net = Net::new(&[
        vec![team(), ops(), lan.clone()],
        vec![lan.clone(), team()],
        vec![ops(), lan.clone()],
        vec![ops()],
    ]);
    for (a, b) in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)] {
        net.connect(a, b);
    }
    net.settle();
    let ids = |n: usize, rooms: &[usize]| -> Vec<RoomId> {
        rooms
            .iter()
            .map(|&r| net.nodes[n].core.rooms()[r].id())
            .collect()
    };
    // Both sides of each pair see the same rooms, in the same (slot) order.
    for (a, b, count) in [(0, 1, 2), (0, 2, 2), (0, 3, 1), (1, 2, 1), (2, 3, 1)] {
        let (at_a, at_b) = (net.joined(a, b).unwrap(), net.joined(b, a).unwrap());
        assert_eq!(at_a.len(), count, "n{a} and n{b}");
        assert_eq!(ids(a, &at_a), ids(b, &at_b), "n{a} and n{b} number alike");
    }
    assert_eq!(net.joined(1, 3), Some(vec![]));
    assert_eq!(net.disconnect_of(1, 3), Some(&Disconnect::NoSharedRoom));
    assert_eq!(net.disconnect_of(3, 1), Some(&Disconnect::NoSharedRoom));
    assert_eq!(net.room_frames_between(1, 3), 0);
    // Each room's store holds exactly its members' lines.
    let members = |room: &Room| -> Vec<String> {
        let mut lines: Vec<String> = match room.label() {
            "team" => vec![0, 1],
            "ops" => vec![0, 2, 3],
            _ => vec![0, 1, 2],
        }
        .into_iter()
        .map(|n| line(n, room))
        .collect();
        lines.sort();
        lines
    };
    for n in 0..net.nodes.len() {
        for (r, room) in net.nodes[n].core.rooms().to_vec().iter().enumerate() {
            assert_eq!(net.lines(n, r), members(room), "n{n} in {}", room.label());
        }
    }
    // Every entry held is of the room it is held in.
    for node in &net.nodes {
        for (store, room) in node.stores.iter().zip(node.core.rooms()) {
            for head in store.heads() {
                for entry in store.entries_of(&head.author) {
                    assert_eq!(entry.room(), Some(room.id()));
                }
            }
        }
    }
    // No frame names a slot past what the two share.
    for (from, to, frame) in &net.log.sent {
        if let Frame::Room(slot, _) = frame {
            let shared = net.joined(*from, *to).unwrap();
            assert!(usize::from(*slot) < shared.len());
        }
    }
    assert!(
        net.log
            .disconnects
            .iter()
            .all(|(_, _, reason)| *reason == Disconnect::NoSharedRoom),
        "{:?}",
        net.log.disconnects
    );
}

#[test]
fn a_wrong_key_shares_no_room_on_both_sides() {
    let wrong = Room::private(&[9; 32], "team");
    let mut net = Net::new(&[vec![team()], vec![wrong]]);
    net.connect(0, 1);
    net.settle();
    assert_eq!(net.joined(0, 1), Some(vec![]));
    assert_eq!(net.joined(1, 0), Some(vec![]));
    assert_eq!(net.disconnect_of(0, 1), Some(&Disconnect::NoSharedRoom));
    assert_eq!(net.disconnect_of(1, 0), Some(&Disconnect::NoSharedRoom));
    assert_eq!(net.room_frames_between(0, 1), 0);
    assert_eq!(net.lines(0, 0), vec![line(0, &team())]);
    // Sharing no room is no misbehaviour: the two may meet again.
    net.log.disconnects.clear();
    net.connect(0, 1);
    net.settle();
    assert_eq!(net.disconnect_of(0, 1), Some(&Disconnect::NoSharedRoom));
}

/// A hand-driven peer (id 9) with `author`'s identity, connected to node 0.
fn intruder(net: &mut Net, author: Author) -> usize {
    let nonce = net.nonce();
    let connected = RoomsInput::Connected {
        peer: 9,
        author,
        nonce,
    };
    net.give(0, connected);
    9
}

fn from(net: &mut Net, peer: usize, frame: Frame) {
    net.give(0, RoomsInput::Received { peer, frame });
}

fn greet(byte: u8) -> Frame {
    Frame::Greet(Greet {
        version: PROTOCOL_VERSION,
        nonce: Nonce::new([byte; 32]),
    })
}

#[test]
fn a_proof_replayed_from_another_connection_gets_nothing() {
    let mut net = Net::new(&[vec![team()], vec![team()]]);
    net.connect(0, 1);
    net.settle();
    assert_eq!(net.joined(0, 1), Some(vec![0]));
    // What n1 sent n0 on that connection, replayed on a new one with n1's identity.
    let sent_by_1 = |want_greet: bool| {
        net.log.sent.iter().find_map(|(f, t, frame)| match frame {
            Frame::Greet(_) if want_greet && (*f, *t) == (1, 0) => Some(frame.clone()),
            Frame::Proof(_) if !want_greet && (*f, *t) == (1, 0) => Some(frame.clone()),
            _ => None,
        })
    };
    let (old_greet, old_proof) = (sent_by_1(true).unwrap(), sent_by_1(false).unwrap());
    let author = net.author(1);
    let peer = intruder(&mut net, author);
    from(&mut net, peer, old_greet);
    from(&mut net, peer, old_proof);
    assert_eq!(net.joined(0, peer), Some(vec![]));
    assert_eq!(net.disconnect_of(0, peer), Some(&Disconnect::NoSharedRoom));
    assert_eq!(net.room_frames_between(0, peer), 0);
    assert!(!net.nodes[0].core.replica(0).is_accepted(&peer));
}

/// The penalty node 0 gives a peer that sends `frames` after connecting.
fn penalty_for(frames: Vec<Frame>) -> Option<Disconnect> {
    let mut net = Net::new(&[vec![team()], vec![team()]]);
    let author = net.author(1);
    let peer = intruder(&mut net, author);
    for frame in frames {
        from(&mut net, peer, frame);
    }
    net.disconnect_of(0, peer).cloned()
}

/// Node 1's proof for node 0 on a connection where n0 sent `net`'s last nonce and n1 `byte`.
fn proof_of_1(net: &Net, byte: u8) -> Frame {
    let transcript = Transcript {
        us: net.author(1),
        them: net.author(0),
        our_nonce: Nonce::new([byte; 32]),
        their_nonce: Nonce::new([net.next_nonce; 32]),
    };
    Frame::Proof(transcript.our_tags(&[team()]))
}

#[test]
fn frames_out_of_the_handshake_order_are_penalised() {
    let hello = Frame::Room(0, Message::Ping);
    let penalised = |p| Some(Disconnect::Penalised(p));
    assert_eq!(
        penalty_for(vec![hello.clone()]),
        penalised(Penalty::BeforeGreet)
    );
    assert_eq!(
        penalty_for(vec![Frame::Proof(vec![])]),
        penalised(Penalty::BeforeGreet)
    );
    assert_eq!(
        penalty_for(vec![greet(5), greet(5)]),
        penalised(Penalty::SecondGreet)
    );
    assert_eq!(
        penalty_for(vec![greet(5), hello]),
        penalised(Penalty::BeforeProof)
    );
    let old = Frame::Greet(Greet {
        version: 2,
        nonce: Nonce::new([5; 32]),
    });
    assert_eq!(
        penalty_for(vec![old]),
        penalised(Penalty::BadMessage(MessageError::Version(2)))
    );
}

#[test]
fn after_the_proof_a_second_one_a_greet_or_an_unknown_slot_is_penalised() {
    for (last, penalty) in [
        (Frame::Proof(vec![]), Penalty::SecondProof),
        (greet(6), Penalty::SecondGreet),
        (Frame::Room(1, Message::Ping), Penalty::UnknownRoom(1)),
    ] {
        let mut net = Net::new(&[vec![team()], vec![team()]]);
        let author = net.author(1);
        let peer = intruder(&mut net, author);
        from(&mut net, peer, greet(5));
        let proof = proof_of_1(&net, 5);
        from(&mut net, peer, proof);
        assert_eq!(net.joined(0, peer), Some(vec![0]), "the proof is good");
        assert!(net.disconnect_of(0, peer).is_none());
        from(&mut net, peer, last);
        assert_eq!(
            net.disconnect_of(0, peer),
            Some(&Disconnect::Penalised(penalty))
        );
        assert!(!net.nodes[0].core.replica(0).is_accepted(&peer));
        // Kept out for a while.
        net.log.disconnects.clear();
        net.give(0, RoomsInput::Closed { peer });
        intruder(&mut net, author);
        assert_eq!(net.disconnect_of(0, peer), Some(&Disconnect::Banned));
        assert!(
            !net.log
                .sent
                .iter()
                .any(|(f, t, frame)| (*f, *t) == (0, peer) && matches!(frame, Frame::Greet(g) if g.nonce == Nonce::new([net.next_nonce; 32]))),
            "a banned peer is not greeted"
        );
    }
}

#[test]
fn malformed_bytes_are_penalised() {
    let mut net = Net::new(&[vec![team()], vec![team()]]);
    let author = net.author(1);
    let peer = intruder(&mut net, author);
    let error = Frame::decode(&[0xff, 0x00]).unwrap_err();
    net.give(
        0,
        RoomsInput::Malformed {
            peer,
            error: error.clone(),
        },
    );
    assert_eq!(
        net.disconnect_of(0, peer),
        Some(&Disconnect::Penalised(Penalty::BadMessage(error)))
    );
}

#[test]
fn no_greet_or_no_proof_in_time_is_no_hello() {
    for frames in [vec![], vec![greet(5)]] {
        let mut net = Net::new(&[vec![team()], vec![team()]]);
        let author = net.author(1);
        let peer = intruder(&mut net, author);
        for frame in frames {
            from(&mut net, peer, frame);
        }
        net.tick(HELLO_TIMEOUT / 2);
        assert!(net.disconnect_of(0, peer).is_none());
        net.tick(HELLO_TIMEOUT / 2 + Duration::from_millis(200));
        assert_eq!(net.disconnect_of(0, peer), Some(&Disconnect::NoHello));
    }
}

#[test]
fn one_room_misbehaving_closes_the_peer_in_every_room() {
    let mut net = Net::new(&[vec![team(), ops()], vec![ops(), team()]]);
    net.connect(0, 1);
    net.settle();
    let shared = net.joined(0, 1).unwrap();
    assert_eq!(shared.len(), 2);
    for &room in &shared {
        assert!(net.nodes[0].core.replica(room).is_accepted(&1));
    }
    // An unasked reply in the second slot is that room's replica's business.
    let reply = Frame::Room(1, Message::Reply(vec![]));
    net.give(
        0,
        RoomsInput::Received {
            peer: 1,
            frame: reply,
        },
    );
    let disconnects: Vec<_> = net
        .log
        .disconnects
        .iter()
        .filter(|(at, p, _)| (*at, *p) == (0, 1))
        .collect();
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    assert_eq!(
        disconnects[0].2,
        Disconnect::Penalised(Penalty::UnaskedReply)
    );
    for &room in &shared {
        assert!(
            !net.nodes[0].core.replica(room).is_accepted(&1),
            "closed in room {room} too"
        );
    }
    // Nothing more goes to it, in any room.
    let before = net.log.sent.len();
    net.tick(Duration::from_secs(1));
    assert!(
        net.log.sent[before..]
            .iter()
            .all(|(f, t, _)| (*f, *t) != (0, 1))
    );
    // And it is kept out: its next connection is refused at once, before any greet.
    net.give(0, RoomsInput::Closed { peer: 1 });
    net.connect(0, 1);
    let last = net
        .log
        .disconnects
        .iter()
        .rfind(|(at, p, _)| (*at, *p) == (0, 1));
    assert_eq!(last.map(|(_, _, reason)| reason), Some(&Disconnect::Banned));
}

#[test]
fn a_closed_peer_leaves_every_room_it_was_in() {
    let mut net = Net::new(&[vec![team(), ops(), Room::lan()], vec![ops(), team()]]);
    net.connect(0, 1);
    net.settle();
    let shared = net.joined(0, 1).unwrap();
    for &room in &shared {
        assert!(net.nodes[0].core.replica(room).is_accepted(&1));
    }
    net.give(0, RoomsInput::Closed { peer: 1 });
    for room in 0..3 {
        assert!(!net.nodes[0].core.replica(room).is_accepted(&1));
    }
    assert!(net.nodes[0].core.shared_rooms(&1).is_empty());
    // A new line in a room goes nowhere, and reconnecting syncs it.
    let node = &mut net.nodes[0];
    let text = Body::Text {
        text: "after".into(),
    };
    let entry = node.stores[0].append(&node.key, text, 2_000).unwrap();
    let appended = RoomsInput::Appended {
        room: 0,
        entries: vec![entry],
    };
    net.give(0, appended);
    net.settle();
    net.connect(0, 1);
    net.settle();
    let team_at_1 = net.nodes[1]
        .core
        .rooms()
        .iter()
        .position(|r| r.id() == team().id())
        .unwrap();
    assert!(net.lines(1, team_at_1).contains(&"after".to_owned()));
    assert!(!net.lines(1, team_at_1).contains(&line(0, &ops())));
}

/// Five rooms to pick memberships from.
fn pool() -> Vec<Room> {
    let mut rooms = vec![Room::lan(), Room::open("ops").unwrap()];
    rooms.extend((1..=3).map(|k| Room::private(&[k; 32], format!("p{k}"))));
    rooms
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Whatever rooms each node is in (and in whatever order), a full mesh ends with every
    /// room's store holding exactly its members' lines, and only peers sharing nothing closed.
    #[test]
    fn any_memberships_exchange_exactly_the_shared_rooms(
        masks in proptest::collection::vec(1u8..32, 2..=4),
        reversed in proptest::collection::vec(proptest::bool::ANY, 4),
    ) {
        let pool = pool();
        let rooms: Vec<Vec<Room>> = masks
            .iter()
            .zip(&reversed)
            .map(|(mask, &reversed)| {
                let mut rooms: Vec<Room> = (0..5)
                    .filter(|r| mask & (1 << r) != 0)
                    .map(|r| pool[r].clone())
                    .collect();
                if reversed {
                    rooms.reverse();
                }
                rooms
            })
            .collect();
        let mut net = Net::new(&rooms);
        for a in 0..rooms.len() {
            for b in a + 1..rooms.len() {
                net.connect(a, b);
            }
        }
        net.settle();
        let shares = |a: usize, b: usize| masks[a] & masks[b] != 0;
        for (at, peer, reason) in &net.log.disconnects {
            proptest::prop_assert_eq!(reason, &Disconnect::NoSharedRoom);
            proptest::prop_assert!(!shares(*at, *peer));
        }
        for (n, node_rooms) in rooms.iter().enumerate() {
            for (r, room) in node_rooms.iter().enumerate() {
                let mut expected: Vec<String> = (0..rooms.len())
                    .filter(|&m| rooms[m].contains(room))
                    .map(|m| line(m, room))
                    .collect();
                expected.sort();
                proptest::prop_assert_eq!(net.lines(n, r), expected);
            }
        }
    }
}
