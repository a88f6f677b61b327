//! Channels and direct messages as the node's user sees them: one entry read by each party
//! and by others, and nodes in one process posting, resolving names and sending direct
//! messages through a relay.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use p2pchat_protocol::dm::{DmSecret, Letter, OpenError};
use p2pchat_protocol::room::Room;
use p2pchat_protocol::{Author, Body, Draft, Entry, RoomId, SigningKey};

use super::*;
use crate::{Archive, Event, MessageFeed, Node, NodeError, PeerSpec};

const DEADLINE: Duration = Duration::from_secs(60);

fn key(byte: u8) -> SigningKey {
    SigningKey::from_bytes(&[byte; 32])
}

/// Entry `seq` of `key`'s log in `room` saying `body` (the links are not checked here).
fn entry(key: &SigningKey, room: RoomId, seq: u64, body: Body) -> Entry {
    let draft = Draft {
        room,
        seq,
        prev: None,
        timestamp: 1_000,
        clock: 1_000 << 16,
        body,
    };
    Entry::sign(key, draft).expect("a valid entry")
}

/// A letter from `from` to `to`, with a fixed nonce.
fn letter(from: &SigningKey, to: &SigningKey, text: &str) -> Letter {
    Letter {
        to: Author::of(to),
        pair: DmSecret::derive(from)
            .agree(&DmSecret::derive(to).public())
            .expect("a usable key"),
        text: text.to_owned(),
        nonce: [9; 24],
    }
}

fn name_of(author: &Author) -> String {
    format!("#{}", author.fingerprint())
}

#[test]
fn a_direct_message_shows_to_its_two_parties_only_and_lines_in_their_channel() {
    let room = Room::lan().id();
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let sealed = letter(&alice, &bob, "just us")
        .seal(&room, &Author::of(&alice), 3)
        .unwrap();
    let dm = entry(&alice, room, 3, Body::Direct(sealed));
    let read = |reader: Option<&Reader>| Message::of(&dm, &room, "lan", reader, name_of);

    let as_alice = read(Some(&Reader::new(&alice))).expect("the sender reads it");
    assert_eq!(as_alice.text, "just us");
    let with_bob = Place::Direct {
        with: Author::of(&bob),
        with_name: name_of(&Author::of(&bob)),
    };
    assert_eq!(as_alice.place, with_bob, "the other party is the recipient");
    let as_bob = read(Some(&Reader::new(&bob))).expect("the recipient reads it");
    assert_eq!(as_bob.text, "just us");
    assert_eq!(
        as_bob.place,
        Place::Direct {
            with: Author::of(&alice),
            with_name: name_of(&Author::of(&alice)),
        },
        "the other party is the sender"
    );
    assert_eq!(as_bob.name, name_of(&Author::of(&alice)));
    assert_eq!(read(Some(&Reader::new(&carol))), None, "not ours");
    assert_eq!(read(None), None, "no reader, no direct messages");

    let post = Body::Post {
        channel: "ops".into(),
        text: "deploy".into(),
    };
    let post = entry(&carol, room, 2, post);
    let line = entry(&carol, room, 1, Body::Text { text: "hi".into() });
    for (entry, place) in [
        (&post, Place::Channel("ops".into())),
        (&line, Place::general()),
    ] {
        let message = Message::of(entry, &room, "lan", None, name_of).unwrap();
        assert_eq!(message.place, place);
    }
    let profile = entry(&carol, room, 1, Body::Profile { name: "c".into() });
    assert_eq!(Message::of(&profile, &room, "lan", None, name_of), None);
}

#[test]
fn a_reader_agrees_once_per_correspondent_and_keeps_a_bounded_number() {
    let room = Room::lan().id();
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let reader = Reader::new(&bob);
    let mut shown = Vec::new();
    // Three lines from alice, one from carol, one of bob's own to alice.
    let said = [
        (&alice, &bob, "one"),
        (&alice, &bob, "two"),
        (&carol, &bob, "three"),
        (&alice, &bob, "four"),
        (&bob, &alice, "five"),
    ];
    for (seq, (from, to, text)) in (3..).zip(said) {
        let sealed = letter(from, to, text)
            .seal(&room, &Author::of(from), seq)
            .unwrap();
        let dm = entry(from, room, seq, Body::Direct(sealed));
        let message = Message::of(&dm, &room, "lan", Some(&reader), name_of);
        shown.push(message.expect("bob reads it").text);
    }
    assert_eq!(shown, ["one", "two", "three", "four", "five"]);
    let kept = reader.kept_pairs();
    assert_eq!(kept.len(), 2, "alice's key and carol's: {kept:?}");
    let alice_key = DmSecret::derive(&alice).public();
    assert_eq!(kept[&alice_key].other(), alice_key);
    drop(kept);

    // Past the bound it starts again, and what it agrees is still right.
    for seed in 0..=MAX_PAIRS {
        let mut identity = [7; 32];
        identity[..8].copy_from_slice(&(seed as u64).to_le_bytes());
        let other = DmSecret::derive(&SigningKey::from_bytes(&identity));
        reader.pair(&other.public()).unwrap();
        assert!(reader.kept_pairs().len() <= MAX_PAIRS);
    }
    let again = reader.pair(&alice_key).unwrap();
    assert_eq!(again, DmSecret::derive(&bob).agree(&alice_key).unwrap());
}

#[test]
fn a_direct_message_signed_at_another_place_than_it_was_sealed_for_is_not_shown() {
    let room = Room::lan().id();
    let (alice, bob) = (key(1), key(2));
    let sealed = letter(&alice, &bob, "moved")
        .seal(&room, &Author::of(&alice), 3)
        .unwrap();
    let sealed_here = sealed.clone();
    let moved = entry(&alice, room, 4, Body::Direct(sealed));
    for reader in [&alice, &bob] {
        let reader = Reader::new(reader);
        assert_eq!(
            Message::of(&moved, &room, "lan", Some(&reader), name_of),
            None
        );
    }
    let other_room = Room::open("elsewhere").unwrap().id();
    assert_eq!(
        sealed_here.open(
            &DmSecret::derive(&bob),
            &Author::of(&bob),
            &other_room,
            &Author::of(&alice),
            3
        ),
        Err(OpenError::Undecryptable),
        "bound to its room too"
    );
}

/// The next message of `feed` that `wanted` picks, within [`DEADLINE`].
async fn next_where(
    feed: &mut MessageFeed,
    wanted: impl Fn(&Message) -> bool,
) -> anyhow::Result<Message> {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let message = feed.next().await.context("the feed ended")?;
            if wanted(&message) {
                return Ok(message);
            }
        }
    })
    .await
    .context("no such message in time")?
}

/// Every message `feed` gives until it is quiet for a second.
async fn drain(feed: &mut MessageFeed) -> Vec<Message> {
    let mut got = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(1), feed.next()).await {
        got.push(message);
    }
    got
}

fn texts(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

fn direct_with(author: Author) -> Place {
    Place::Direct {
        with: author,
        with_name: String::new(), // history_at knows a conversation by its other party
    }
}

/// Two keys with the same fingerprint (6 hex digits: found among a few thousand).
fn twins() -> (SigningKey, SigningKey) {
    let mut seen = std::collections::HashMap::new();
    for n in 0u64.. {
        let mut bytes = [0; 32];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        let key = SigningKey::from_bytes(&bytes);
        if let Some(twin) = seen.insert(Author::of(&key).fingerprint(), key.clone()) {
            return (twin, key);
        }
    }
    unreachable!("u64 runs out")
}

#[tokio::test]
async fn unknown_ambiguous_keyless_and_own_names_are_refused_in_words() -> anyhow::Result<()> {
    let node = Node::builder()
        .name("alice")
        .in_memory()
        .mdns(false)
        .spawn()
        .await?;
    let store = &node.shared.rooms[0].store;
    let room = store.room();
    // Two authors of an older p2pchat (no encryption key) whose keys share a fingerprint.
    let (first, second) = twins();
    for key in [&first, &second] {
        let profile = entry(
            key,
            room,
            1,
            Body::Profile {
                name: "twin".into(),
            },
        );
        store.insert_remote(Author::of(key), [profile.envelope().clone()])?;
    }
    let fingerprint = Author::of(&first).fingerprint();
    let shown = format!("twin#{fingerprint}");
    match node.resolve("lan", &shown) {
        Err(NodeError::AmbiguousName { candidates, .. }) => {
            assert_eq!(candidates, [shown.clone(), shown.clone()])
        }
        other => bail!("{shown} resolved to {other:?}"),
    }
    let error = node.resolve("lan", &shown).unwrap_err().to_string();
    assert!(
        error.contains("ambiguous") && error.contains(&shown),
        "{error}"
    );
    assert_eq!(
        node.resolve("lan", "twin")?.author,
        Author::of(&first),
        "the name is pinned to the first key seen with it"
    );
    let keyless = node.send_direct("lan", Author::of(&first), "hello?");
    assert!(
        matches!(keyless, Err(NodeError::NoEncryptionKey { .. })),
        "{keyless:?}"
    );

    let unknown = node.resolve("lan", "nobody");
    assert!(
        matches!(unknown, Err(NodeError::UnknownName { .. })),
        "{unknown:?}"
    );
    assert!(matches!(
        node.resolve("elsewhere", "twin"),
        Err(NodeError::NoSuchRoom(_))
    ));
    let me = node.resolve("lan", "alice")?;
    assert!(me.is_self);
    let to_self = node.send_direct("lan", me.author, "note to self");
    assert!(
        matches!(to_self, Err(NodeError::DirectToSelf)),
        "{to_self:?}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_held_while_the_own_log_is_behind_is_sealed_where_it_lands()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let alice_key = key(21);
    let start_alice = || {
        Node::builder()
            .name("alice")
            .data_dir(dir.path())
            .keypair(alice_key.clone())
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .mdns(false)
            .spawn()
    };
    let alice = start_alice().await?;
    let bob = Node::builder()
        .name("bob")
        .in_memory()
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .mdns(false)
        .peer(PeerSpec::Addr(alice.listen_addrs()[0].clone()))
        .spawn()
        .await?;
    alice.wait_synced(&bob, DEADLINE).await?;
    bob.wait_synced(&alice, DEADLINE).await?;
    let before = alice.heads().get(&alice.author()).copied().unwrap_or(0);
    alice.shutdown().await;

    // alice's store is lost (her key and its mark are not); she still knows bob's log.
    std::fs::remove_dir_all(dir.path().join("store"))?;
    let bob_log = bob.shared.rooms[0]
        .store
        .range_envelopes(&bob.author(), 1, 100, usize::MAX)?
        .into_iter()
        .map(|(_, envelope)| envelope);
    p2pchat_storage::Store::open(&dir.path().join("store"), Room::lan().id())?
        .insert_remote(bob.author(), bob_log)?;
    let alice = start_alice().await?;
    let mut events = alice.events();
    let held = alice.send_direct("lan", bob.author(), "sealed later")?;
    assert!(held.is_none(), "held while the own log is behind: {held:?}");
    let mut bob_feed = bob.messages();
    alice.dial(bob.listen_addrs()[0].clone()).await?;
    tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await? {
                Event::OwnLogRestored { .. } => return anyhow::Ok(()),
                _ => continue,
            }
        }
    })
    .await
    .context("the own log never came back")??;

    let at_bob = next_where(&mut bob_feed, |m| m.text == "sealed later").await?;
    assert_eq!(
        at_bob.seq,
        before + 1,
        "on top of the restored log, its key not repeated"
    );
    assert_eq!(
        at_bob.place,
        Place::Direct {
            with: alice.author(),
            with_name: "alice".into()
        }
    );
    let own = alice
        .history_at("lan", &direct_with(bob.author()), 10)
        .await?;
    assert_eq!(texts(&own), ["sealed later"]);
    ensure!(alice.held() == 0, "nothing left held");
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}

/// Nodes of a [`Cluster`](crate::testing::Cluster) (the `testing` feature).
#[cfg(feature = "testing")]
mod in_a_cluster {
    use super::*;
    use crate::testing::Cluster;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_post_arrives_in_its_channel_and_history_keeps_channels_apart() -> anyhow::Result<()>
    {
        let mut cluster = Cluster::builder()
            .nodes(2)
            .memory()
            .seed(11)
            .spawn()
            .await?;
        cluster.line().await?;
        let (alice, bob) = (cluster.node(0), cluster.node(1));
        let mut feed = bob.messages();
        let sent = alice
            .post("lan", "ops", "deploy at noon")?
            .context("held")?;
        assert_eq!(sent.place, Place::Channel("ops".into()));
        let general = alice.post("lan", "general", "hello")?.context("held")?;
        assert_eq!(general.place, Place::general());
        let stored = alice.shared.rooms[0]
            .store
            .get(&alice.author(), general.seq)?;
        assert!(
            matches!(stored.as_ref().map(Entry::body), Some(Body::Text { .. })),
            "general is a text entry, as before channels"
        );
        for bad in ["Ops", "", "-ops", "a b"] {
            let refused = alice.post("lan", bad, "x");
            assert!(
                matches!(refused, Err(NodeError::Invalid(_))),
                "{bad:?}: {refused:?}"
            );
        }
        assert!(matches!(
            alice.post("nowhere", "ops", "x"),
            Err(NodeError::NoSuchRoom(_))
        ));

        let got = next_where(&mut feed, |m| m.text == "deploy at noon").await?;
        assert_eq!(
            (got.place, got.name.as_str()),
            (Place::Channel("ops".into()), "node0")
        );
        cluster.wait_converged(DEADLINE).await?;
        let ops = bob
            .history_at("lan", &Place::Channel("ops".into()), 10)
            .await?;
        assert_eq!(texts(&ops), ["deploy at noon"]);
        let general = bob.history_at("lan", &Place::general(), 10).await?;
        assert_eq!(texts(&general), ["hello"]);
        assert!(
            bob.history_at("lan", &Place::Channel("lunch".into()), 10)
                .await?
                .is_empty()
        );
        cluster.shutdown().await;
        Ok(())
    }

    /// Whether any file under `dir` holds `needle`.
    fn any_file_holds(dir: &std::path::Path, needle: &[u8]) -> anyhow::Result<bool> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let found = match path.is_dir() {
                true => any_file_holds(&path, needle)?,
                false => std::fs::read(&path)?
                    .windows(needle.len())
                    .any(|window| window == needle),
            };
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_direct_message_through_a_relay_reaches_both_parties_and_the_relay_reads_nothing()
    -> anyhow::Result<()> {
        const SECRET: &str = "the door code is 4711, tell nobody";
        const PUBLIC: &str = "a line everybody may read";
        // alice (0) — carol (2) — bob (1): alice and bob never meet.
        let mut cluster = Cluster::builder().nodes(3).seed(12).spawn().await?;
        cluster.connect(0, 2).await?;
        cluster.connect(2, 1).await?;
        cluster.wait_converged(DEADLINE).await?;
        let (alice, bob, carol) = (cluster.node(0), cluster.node(1), cluster.node(2));
        let (alice_key, bob_key) = (alice.author(), bob.author());

        let resolved = alice.resolve("lan", "node1")?;
        assert_eq!((resolved.author, resolved.connected), (bob_key, false));
        let mut bob_feed = bob.messages();
        let mut carol_feed = carol.messages();
        let sent = alice
            .send_direct("lan", resolved.author, SECRET)?
            .context("held")?;
        assert_eq!(
            (sent.place.clone(), sent.text.as_str()),
            (
                Place::Direct {
                    with: bob_key,
                    with_name: "node1".into()
                },
                SECRET
            )
        );
        alice.send(PUBLIC)?;

        let got = next_where(&mut bob_feed, |m| m.text == SECRET).await?;
        assert_eq!(
            (got.place, got.name.as_str(), got.author),
            (
                Place::Direct {
                    with: alice_key,
                    with_name: "node0".into()
                },
                "node0",
                alice_key
            )
        );
        cluster.wait_converged(DEADLINE).await?;
        let carol = cluster.node(2);
        assert_eq!(
            carol.heads().get(&alice_key),
            Some(&(sent.seq + 1)),
            "the relay holds the direct message (and the line after it)"
        );
        let seen = drain(&mut carol_feed).await;
        assert_eq!(
            texts(&seen),
            [PUBLIC],
            "the relay is shown only the public line"
        );
        let history = carol.history_in("lan", 100).await?;
        assert!(history.iter().all(|m| matches!(m.place, Place::Channel(_))));
        cluster.stop(2).await;
        let relay_dir = cluster.data_dir(2).context("a data dir")?;
        assert!(
            any_file_holds(relay_dir, PUBLIC.as_bytes())?,
            "the search finds a line stored in the clear"
        );
        assert!(
            !any_file_holds(relay_dir, SECRET.as_bytes())?,
            "the relay's data dir holds the direct message's plaintext"
        );

        // After a restart, the sender still reads what it sent (sealed to itself too).
        cluster.start(0).await?;
        let again = cluster
            .node(0)
            .history_at("lan", &direct_with(bob_key), 10)
            .await?;
        assert_eq!(texts(&again), [SECRET]);
        // And the recipient's export shows it decrypted.
        cluster.stop(1).await;
        let archive = Archive::open(cluster.data_dir(1).context("a data dir")?, &Room::lan())?;
        let exported: Vec<Message> = archive.messages().collect::<Result<_, _>>()?;
        let dm = exported
            .iter()
            .find(|m| m.text == SECRET)
            .context("the export holds the direct message")?;
        assert_eq!(
            dm.place,
            Place::Direct {
                with: alice_key,
                with_name: "node0".into()
            }
        );
        cluster.shutdown().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_impostor_reads_nothing_and_a_name_resolves_to_its_pinned_key() -> anyhow::Result<()>
    {
        let mut cluster = Cluster::builder()
            .nodes(3)
            .memory()
            .seed(13)
            .spawn()
            .await?;
        // node2 takes bob's name (its store never saw bob's), and meets alice after bob.
        cluster.node(2).rename("node1")?;
        cluster.connect(0, 1).await?;
        let (alice, bob) = (cluster.node(0), cluster.node(1));
        alice.wait_synced(bob, DEADLINE).await?;
        cluster.connect(0, 2).await?;
        cluster.wait_converged(DEADLINE).await?;
        let (alice, bob, impostor) = (cluster.node(0), cluster.node(1), cluster.node(2));
        assert_eq!(
            alice.resolve("lan", "node1")?.author,
            bob.author(),
            "the pinned key"
        );
        let qualified = format!("node1#{}", impostor.author().fingerprint());
        let other = alice.resolve("lan", &qualified)?;
        assert_eq!((other.author, other.name), (impostor.author(), qualified));

        let mut impostor_feed = impostor.messages();
        let sent = alice
            .send_direct("lan", bob.author(), "for the real bob")?
            .context("held")?;
        cluster.wait_converged(DEADLINE).await?;
        let seen = drain(&mut impostor_feed).await;
        assert!(
            seen.iter()
                .all(|m| !matches!(m.place, Place::Direct { .. })),
            "{seen:?}"
        );
        // Even claiming to be bob, its secret opens nothing.
        let held = impostor.shared.rooms[0]
            .store
            .get(&alice.author(), sent.seq)?;
        let Some(Body::Direct(sealed)) = held.as_ref().map(Entry::body) else {
            bail!("the impostor relays the direct message: {held:?}")
        };
        let opened = sealed.open(
            &DmSecret::derive(&impostor.shared.key),
            &bob.author(),
            &Room::lan().id(),
            &alice.author(),
            sent.seq,
        );
        assert_eq!(opened, Err(OpenError::Undecryptable));
        cluster.shutdown().await;
        Ok(())
    }
}
