//! The core's rules, driven by a tiny synchronous network of replicas over memory stores (the
//! simulator in `tests/src/sim` covers links, loss and scale).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::*;
use crate::entry::{Body, SigningKey};
use crate::message::MessageError;
use crate::route::STALL_TIMEOUT;
use crate::store::MemoryStore;

struct Node {
    replica: Replica<usize>,
    store: MemoryStore,
    key: SigningKey,
}

#[derive(Default)]
struct Log {
    events: Vec<(usize, Event<usize>)>,
    disconnects: Vec<(usize, usize, Disconnect)>,
    /// (from, to, lane, message) in the order sent.
    sent: Vec<(usize, usize, Lane, Message)>,
}

struct Net {
    now: Instant,
    nodes: Vec<Node>,
    /// Messages in flight, in the order sent (each link stays in order).
    wire: VecDeque<(usize, usize, Message)>,
    /// Inputs waiting to be given, per node.
    inputs: VecDeque<(usize, Input<usize>)>,
    log: Log,
    /// Nodes whose stores answer only when [`Net::finish_stores`] is called (the others at
    /// once).
    late_stores: Vec<usize>,
    stored_later: Vec<(usize, Input<usize>)>,
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n + 1; 32])
}

impl Net {
    fn new(count: usize) -> Self {
        let nodes = (0..count)
            .map(|i| {
                let key = key(i as u8);
                let mut store = MemoryStore::new(crate::Room::lan().id());
                let profile = Body::Profile {
                    name: format!("n{i}"),
                };
                store.append(&key, profile, 1_000).unwrap();
                let replica = Replica::new(Author::of(&key), format!("n{i}"), store.heads());
                Node {
                    replica,
                    store,
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
            late_stores: Vec::new(),
            stored_later: Vec::new(),
        }
    }

    fn author(&self, n: usize) -> Author {
        Author::of(&self.nodes[n].key)
    }

    fn give(&mut self, n: usize, input: Input<usize>) {
        let node = &mut self.nodes[n];
        node.replica.handle(self.now, input, &node.store);
        self.drain(n);
    }

    fn drain(&mut self, n: usize) {
        while let Some(output) = self.nodes[n].replica.poll() {
            match output {
                Output::Send {
                    peer,
                    lane,
                    message,
                } => {
                    self.log.sent.push((n, peer, lane, message.clone()));
                    self.wire.push_back((n, peer, message));
                }
                Output::Store { peer, batch } => {
                    let entries = batch
                        .entries
                        .iter()
                        .map(|e| bytes::Bytes::copy_from_slice(e));
                    let outcome = self.nodes[n].store.insert(batch.author, entries);
                    let stored = Input::Stored {
                        peer,
                        author: batch.author,
                        outcome: Ok(outcome),
                    };
                    if self.late_stores.contains(&n) {
                        self.stored_later.push((n, stored));
                    } else {
                        self.inputs.push_back((n, stored));
                    }
                }
                Output::Disconnect { peer, reason } => {
                    self.log.disconnects.push((n, peer, reason));
                    self.inputs.push_back((n, Input::Closed { peer }));
                    self.inputs.push_back((peer, Input::Closed { peer: n }));
                    self.wire.retain(|(from, to, _)| {
                        !(*from == n && *to == peer || *from == peer && *to == n)
                    });
                }
                Output::Event(event) => {
                    if let Event::Hello { peer, .. } = &event {
                        self.inputs.push_back((n, Input::Accept { peer: *peer }));
                    }
                    self.log.events.push((n, event));
                }
            }
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        let (author_a, author_b) = (self.author(a), self.author(b));
        self.give(
            a,
            Input::Connected {
                peer: b,
                author: author_b,
            },
        );
        self.give(
            b,
            Input::Connected {
                peer: a,
                author: author_a,
            },
        );
    }

    /// Delivers everything until nothing moves (messages go through the codec).
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if let Some((n, input)) = self.inputs.pop_front() {
                self.give(n, input);
            } else if let Some((from, to, message)) = self.wire.pop_front() {
                let message = Message::decode(&message.encode()).unwrap();
                self.give(
                    to,
                    Input::Received {
                        peer: from,
                        message,
                    },
                );
            } else {
                return;
            }
        }
        panic!("the network did not settle");
    }

    fn finish_stores(&mut self) {
        for (n, input) in std::mem::take(&mut self.stored_later) {
            self.inputs.push_back((n, input));
        }
    }

    fn say(&mut self, n: usize, text: &str) {
        let node = &mut self.nodes[n];
        let entry = node
            .store
            .append(&node.key, Body::Text { text: text.into() }, 2_000)
            .unwrap();
        self.give(
            n,
            Input::Appended {
                entries: vec![entry],
            },
        );
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        for n in 0..self.nodes.len() {
            self.give(n, Input::Tick);
        }
    }

    fn same_heads(&self) -> bool {
        let first = self.nodes[0].store.heads();
        self.nodes.iter().all(|node| node.store.heads() == first)
    }
}

#[test]
fn two_nodes_exchange_their_logs_and_stay_live() {
    let mut net = Net::new(2);
    net.say(0, "before");
    net.connect(0, 1);
    net.settle();
    assert!(net.same_heads());
    assert!(net.log.disconnects.is_empty(), "{:?}", net.log.disconnects);
    net.say(1, "live");
    net.settle();
    assert!(net.same_heads());
    let live = net
        .log
        .sent
        .iter()
        .rev()
        .find(|(from, _, _, m)| *from == 1 && matches!(m, Message::Batch(_)));
    assert_eq!(live.map(|s| s.2), Some(Lane::Live), "a new line goes live");
    let complete = |n| {
        net.log
            .events
            .iter()
            .any(|(at, e)| *at == n && matches!(e, Event::SyncComplete { .. }))
    };
    assert!(complete(0) && complete(1));
}

#[test]
fn a_catch_up_goes_on_the_bulk_lane_and_its_progress_is_told() {
    let mut net = Net::new(2);
    for i in 0..200 {
        net.say(0, &format!("line {i}"));
    }
    net.connect(0, 1);
    net.settle();
    assert!(net.same_heads());
    let bulk = net
        .log
        .sent
        .iter()
        .filter(|(from, _, lane, m)| {
            *from == 0 && *lane == Lane::Bulk && matches!(m, Message::Batch(_))
        })
        .count();
    assert!(bulk >= 1);
    let done = net.log.events.iter().find_map(|(at, e)| match e {
        Event::SyncComplete { received, .. } if *at == 1 => Some(*received),
        _ => None,
    });
    assert_eq!(done, Some(201), "the profile and 200 lines");
}

#[test]
fn logs_travel_through_a_relay() {
    let mut net = Net::new(3);
    net.say(0, "from the first");
    net.connect(0, 1);
    net.connect(1, 2);
    net.settle();
    assert!(net.same_heads());
    net.say(2, "from the last");
    net.settle();
    assert!(net.same_heads());
}

#[test]
fn reconnecting_with_nothing_new_costs_two_hellos_and_pings() {
    let mut net = Net::new(2);
    for i in 0..50 {
        net.say(0, &format!("line {i}"));
    }
    net.connect(0, 1);
    net.settle();
    net.give(0, Input::Closed { peer: 1 });
    net.give(1, Input::Closed { peer: 0 });
    net.settle();
    let before = net.log.sent.len();
    net.connect(0, 1);
    net.settle();
    let kinds: Vec<&Message> = net.log.sent[before..].iter().map(|s| &s.3).collect();
    assert!(
        kinds
            .iter()
            .all(|m| matches!(m, Message::Hello(_) | Message::Route { .. })),
        "{kinds:?}"
    );
}

#[test]
fn anything_before_the_hello_is_penalised() {
    let mut net = Net::new(2);
    let author = net.author(1);
    net.give(0, Input::Connected { peer: 1, author });
    net.give(
        0,
        Input::Received {
            peer: 1,
            message: Message::Ping,
        },
    );
    assert!(matches!(
        net.log.disconnects.as_slice(),
        [(0, 1, Disconnect::Penalised(Penalty::BeforeHello))]
    ));
}

#[test]
fn a_malformed_message_is_penalised() {
    let mut net = Net::new(2);
    net.connect(0, 1);
    net.settle();
    net.give(
        0,
        Input::Malformed {
            peer: 1,
            error: MessageError::Malformed("junk".into()),
        },
    );
    assert!(matches!(
        net.log.disconnects.as_slice(),
        [(0, 1, Disconnect::Penalised(Penalty::BadMessage(_)))]
    ));
}

#[test]
fn a_silent_peer_is_dropped_and_a_quiet_one_is_pinged() {
    let mut net = Net::new(2);
    net.connect(0, 1);
    net.settle();
    // Both sides tick: each pings, so neither is silent.
    for _ in 0..40 {
        net.tick(TICK);
        net.settle();
    }
    assert!(net.log.disconnects.is_empty(), "{:?}", net.log.disconnects);
    // Node 1 freezes: node 0 alone ticks.
    let start = net.now;
    while net.log.disconnects.is_empty() {
        net.now += TICK;
        net.give(0, Input::Tick);
        net.wire.clear();
        assert!(net.now - start < Duration::from_secs(5));
    }
    assert!(net.now - start <= SILENCE_LIMIT + TICK);
    assert!(matches!(
        net.log.disconnects[0],
        (0, 1, Disconnect::Silent(_))
    ));
}

#[test]
fn batches_beyond_the_window_are_a_flood() {
    let mut net = Net::new(2);
    for i in 0..3 {
        net.say(0, &format!("line {i}"));
    }
    net.connect(0, 1);
    net.settle();
    // Node 1 replays one of node 0's batches far more often than any window allows, while its
    // store takes its time.
    net.late_stores.push(1);
    let batch = net
        .log
        .sent
        .iter()
        .find_map(|(_, _, _, m)| match m {
            Message::Batch(b) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    for _ in 0..=MAX_UNACKED_BATCHES {
        net.give(
            1,
            Input::Received {
                peer: 0,
                message: Message::Batch(batch.clone()),
            },
        );
    }
    assert!(matches!(
        net.log.disconnects.last(),
        Some((1, 0, Disconnect::Penalised(Penalty::Flooded)))
    ));
    net.finish_stores();
    net.settle();
}

#[test]
fn notes_on_unknown_logs_make_bounded_state() {
    let mut net = Net::new(2);
    net.connect(0, 1);
    net.settle();
    let fake = |from: u32| -> Message {
        let notes = (from..from + 4096)
            .map(|i| {
                let mut bytes = [7u8; 32];
                bytes[..4].copy_from_slice(&i.to_be_bytes());
                HeadNote {
                    author: Author::from_bytes(bytes),
                    seq: 5,
                }
            })
            .collect();
        Message::Have(notes)
    };
    net.give(
        0,
        Input::Received {
            peer: 1,
            message: fake(0),
        },
    );
    let after_one = net.nodes[0].replica.footprint();
    for round in 1..4 {
        net.give(
            0,
            Input::Received {
                peer: 1,
                message: fake(round * 4096),
            },
        );
    }
    assert_eq!(net.nodes[0].replica.footprint(), after_one);
    assert!(after_one <= 3 * MAX_UNKNOWN_NOTES + 16, "{after_one}");
}

#[test]
fn in_a_mesh_each_entry_arrives_about_once() {
    let mut net = Net::new(4);
    for a in 0..4 {
        for b in a + 1..4 {
            net.connect(a, b);
        }
    }
    net.settle();
    let batches_before = net.log.sent.len();
    for i in 0..20 {
        net.say(i % 4, &format!("line {i}"));
        net.settle();
    }
    assert!(net.same_heads());
    let entries: usize = net.log.sent[batches_before..]
        .iter()
        .map(|(_, _, _, m)| match m {
            Message::Batch(b) => b.entries.len(),
            _ => 0,
        })
        .sum();
    // 20 lines, each needed by 3 nodes.
    println!("{entries} entries sent for 60 needed");
    assert!(
        entries <= 60 * 13 / 10,
        "{entries} entries sent for 60 needed"
    );
}

#[test]
fn a_peer_asked_to_stop_skipping_a_log_hears_first_how_far_we_hold_it() {
    let mut net = Net::new(3);
    net.connect(0, 1);
    net.connect(0, 2);
    net.connect(1, 2);
    net.settle();
    for i in 0..5 {
        net.say(0, &format!("line {i}"));
        net.settle();
    }
    // Node 1 gets node 0's log from node 0 in person, and node 2 skips it. Node 0 leaves
    // node 1: node 2 becomes the source, and pushes from what it believes node 1 holds.
    let before = net.log.sent.len();
    net.give(0, Input::Closed { peer: 1 });
    net.give(1, Input::Closed { peer: 0 });
    net.settle();
    let zero = net.author(0);
    let held = net.nodes[1].store.head_seq(&zero);
    let to_2: Vec<&Message> = net.log.sent[before..]
        .iter()
        .filter(|(from, to, _, _)| (*from, *to) == (1, 2))
        .map(|(_, _, _, message)| message)
        .collect();
    let unskip = to_2
        .iter()
        .position(|m| matches!(m, Message::Route { unskip, .. } if unskip.contains(&zero)));
    let note = to_2.iter().position(|m| {
        matches!(m, Message::Have(notes) if notes.contains(&HeadNote { author: zero, seq: held }))
    });
    let (Some(note), Some(unskip)) = (note, unskip) else {
        panic!("node 2 is asked for node 0's log, after a note of node 1's head: {to_2:?}");
    };
    assert!(note < unskip, "the note comes first: {to_2:?}");
    net.say(0, "after");
    net.settle();
    assert!(net.same_heads());
    let batches_to_1 = net.log.sent[before..]
        .iter()
        .filter(|(_, to, _, m)| *to == 1 && matches!(m, Message::Batch(_)))
        .count();
    assert_eq!(batches_to_1, 1, "only the new line reaches node 1");
}

#[test]
fn a_source_whose_entries_wait_for_the_store_has_not_stalled() {
    let mut net = Net::new(4);
    // Node 3's log reaches node 2 through node 1 (its source) and node 0 (skipped).
    net.connect(3, 1);
    net.connect(3, 0);
    net.settle();
    net.connect(1, 2);
    net.settle();
    net.connect(0, 2);
    net.settle();
    let three = net.author(3);
    assert_eq!(net.nodes[2].replica.source_of(&three), Some(1));
    // Node 2's store is slow: node 1's batch waits in it while node 0 notes being ahead.
    net.late_stores.push(2);
    net.say(3, "new");
    net.settle();
    net.tick(STALL_TIMEOUT + Duration::from_millis(100));
    net.settle();
    assert_eq!(
        net.nodes[2].replica.source_of(&three),
        Some(1),
        "what the store was given is coming: the source did not stall"
    );
    net.finish_stores();
    net.settle();
    assert!(net.same_heads());
}

#[test]
fn thousands_of_logs_sync_and_a_reconnect_costs_only_the_hellos() {
    let mut net = Net::new(2);
    for i in 0..5_000u32 {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        seed[31] = 0xee;
        let author_key = SigningKey::from_bytes(&seed);
        let mut scratch = MemoryStore::new(crate::Room::lan().id());
        let profile = Body::Profile {
            name: format!("a{i}"),
        };
        let entry = scratch.append(&author_key, profile, 500).unwrap();
        let inserted = net.nodes[0]
            .store
            .insert(entry.author(), [entry.envelope().clone()]);
        assert_eq!(inserted.stored.len(), 1);
    }
    let heads = net.nodes[0].store.heads();
    net.nodes[0].replica = Replica::new(net.author(0), "n0".into(), heads);
    net.connect(0, 1);
    net.settle();
    assert!(net.same_heads());
    assert_eq!(net.nodes[1].store.heads().len(), 5_002);
    assert!(net.log.disconnects.is_empty(), "{:?}", net.log.disconnects);
    net.give(0, Input::Closed { peer: 1 });
    net.give(1, Input::Closed { peer: 0 });
    let before = net.log.sent.len();
    net.connect(0, 1);
    net.settle();
    let bytes: usize = net.log.sent[before..]
        .iter()
        .map(|(_, _, _, m)| m.encode().len() + 4)
        .sum();
    assert!(
        bytes < 1_000,
        "a reconnect with nothing new cost {bytes} bytes"
    );
}

#[test]
fn a_live_batch_ahead_of_its_prefix_waits_for_it() {
    let mut net = Net::new(2);
    net.connect(0, 1);
    net.settle();
    // Node 0 wrote two lines; node 1 gets the second before the first.
    net.say(0, "first");
    net.say(0, "second");
    let mut batches: Vec<(usize, usize, Message)> = Vec::new();
    net.wire.retain(|item| {
        let batch = matches!(item.2, Message::Batch(_));
        if batch {
            batches.push(item.clone());
        }
        !batch
    });
    assert_eq!(batches.len(), 2);
    batches.reverse();
    net.wire.extend(batches);
    net.settle();
    assert!(net.same_heads());
    assert!(net.log.disconnects.is_empty());
}

#[test]
fn a_frozen_log_is_not_announced_so_peers_do_not_wait_for_it() {
    let mut net = Net::new(2);
    // Node 0 holds two entries of x's log, then a second entry at seq 1: x is frozen.
    let x = key(9);
    let (mut one, mut other) = (
        MemoryStore::new(crate::Room::lan().id()),
        MemoryStore::new(crate::Room::lan().id()),
    );
    one.append(&x, Body::Profile { name: "x".into() }, 1_000)
        .unwrap();
    one.append(&x, Body::Text { text: "a".into() }, 1_001)
        .unwrap();
    let twin = other
        .append(&x, Body::Profile { name: "y".into() }, 1_000)
        .unwrap();
    let author = Author::of(&x);
    let envelopes = |entries: &[crate::entry::Entry]| {
        entries
            .iter()
            .map(|e| e.envelope().clone())
            .collect::<Vec<_>>()
    };
    let store = &mut net.nodes[0].store;
    store.insert(author, envelopes(one.entries_of(&author)));
    store.insert(author, envelopes(&[twin]));
    assert!(store.is_frozen(&author));
    let heads = store.heads();
    assert_eq!(heads.len(), 2, "the store still lists its head");
    net.nodes[0].replica = Replica::new(net.author(0), "n0".into(), heads);
    net.connect(0, 1);
    net.settle();
    let hello = net.log.sent.iter().find_map(|(from, _, _, m)| match m {
        Message::Hello(hello) if *from == 0 => Some(hello.heads.count),
        _ => None,
    });
    assert_eq!(hello, Some(1), "its own log only");
    let complete = net
        .log
        .events
        .iter()
        .any(|(at, e)| *at == 1 && matches!(e, Event::SyncComplete { .. }));
    assert!(complete, "node 1 does not wait for the frozen log");
    assert_eq!(net.nodes[1].store.head_seq(&author), 0);
}

#[test]
fn an_entry_of_another_room_is_penalised() {
    let mut net = Net::new(2);
    // Node 1 serves its log from a store of another room: its entries name that room.
    let key = net.nodes[1].key.clone();
    let mut store = MemoryStore::new(crate::RoomId::from_bytes([9; 32]));
    let profile = Body::Profile { name: "n1".into() };
    store.append(&key, profile, 1_000).unwrap();
    net.nodes[1].replica = Replica::new(Author::of(&key), "n1".into(), store.heads());
    net.nodes[1].store = store;
    net.connect(0, 1);
    net.settle();
    assert!(
        // Whichever side gets the other's entry first closes the connection.
        net.log.disconnects.iter().any(|(_, _, reason)| {
            matches!(
                reason,
                Disconnect::Penalised(Penalty::InvalidEntry {
                    error: ValidationError::WrongRoom { seq: 1 },
                    ..
                })
            )
        }),
        "{:?}",
        net.log.disconnects
    );
    assert_eq!(net.nodes[0].store.head_seq(&net.author(1)), 0);
    assert_eq!(net.nodes[1].store.head_seq(&net.author(0)), 0);
}
