//! Hostile peers against a real node, on protocol 3 (the adversary in
//! `p2pchat_tests::adversary`): forged entries, entries filed under another log, bad frames,
//! frames out of the membership handshake's order, messages out of turn, replies that do not
//! answer, floods of batches and notes, absurd claims, stalled handshakes and silent peers. The
//! node disconnects the offender, stores nothing invalid, and honest peers keep chatting.

use std::time::Duration;

use anyhow::Context;
use p2pchat_node::{Event, Node, PenaltyReason};
use p2pchat_protocol::limits::{
    MAX_BATCH_ENTRIES, MAX_FRAME_BYTES, MAX_MESSAGE_NOTES, MAX_QUERY_RANGES,
};
use p2pchat_protocol::membership::{Greet, Nonce};
use p2pchat_protocol::message::{
    AuthorRange, Fingerprint, Frame, HeadInfo, HeadNote, Hello, Lane, Message, PROTOCOL_VERSION,
    Part, Summary,
};
use p2pchat_protocol::replica::{MAX_UNACKED_BATCHES, SILENCE_LIMIT};
use p2pchat_protocol::{Author, Hash, Room, SigningKey};
use p2pchat_tests::adversary::{
    Adversary, SMALL_ORDER_KEY, Seen, batch, envelopes, forge_signature, frame, room_frame,
    signed_log, small_order_log,
};
use p2pchat_tests::{DEADLINE, address_of, start_node, take, texts};
use tokio::io::AsyncReadExt;

/// Waits for a warning whose text contains `needle`.
async fn warned(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    needle: &str,
) -> anyhow::Result<String> {
    warned_within(events, needle, DEADLINE).await
}

/// Waits at most `within` for a warning whose text contains `needle`.
async fn warned_within(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    needle: &str,
    within: Duration,
) -> anyhow::Result<String> {
    tokio::time::timeout(within, async {
        loop {
            if let Event::Warning { message } = events.recv().await?
                && message.contains(needle)
            {
                return Ok(message);
            }
        }
    })
    .await
    .with_context(|| format!("no warning with {needle:?} in time"))?
}

/// Waits for the typed event that `pick` picks (the ones a program reads, beside warnings).
async fn typed<T>(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    what: &str,
    pick: impl Fn(Event) -> Option<T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(found) = pick(events.recv().await?) {
                return Ok(found);
            }
        }
    })
    .await
    .with_context(|| format!("no {what} event in time"))?
}

/// alice (listening) and bob (connected to her), the honest pair every test checks on.
async fn honest_pair(
    dirs: &(tempfile::TempDir, tempfile::TempDir),
) -> anyhow::Result<(Node, Node)> {
    let alice = start_node("alice", dirs.0.path(), &[]).await?;
    let bob = start_node("bob", dirs.1.path(), &[address_of(&alice)]).await?;
    let mut feed = alice.messages();
    bob.send("bob is here")?;
    assert_eq!(texts(&take(&mut feed, 1).await?), ["bob> bob is here"]);
    Ok((alice, bob))
}

/// bob's line `text` reaches alice: the honest pair is unaffected.
async fn still_chatting(alice: &Node, bob: &Node, text: &str) -> anyhow::Result<()> {
    let mut feed = alice.messages();
    let before = texts(&take(&mut feed, alice_history_len(alice).await?).await?);
    bob.send(text)?;
    let after = texts(&take(&mut feed, 1).await?);
    assert_eq!(after, [format!("bob> {text}")], "after {before:?}");
    Ok(())
}

async fn alice_history_len(alice: &Node) -> anyhow::Result<usize> {
    Ok(alice.history(usize::MAX).await?.len())
}

/// An adversary named `name`, connected to `node` with its lanes open, that said its hello
/// and was accepted.
async fn joined(name: &str, node: &Node) -> anyhow::Result<Adversary> {
    let mut adversary = Adversary::spawn(name)?;
    adversary.connect(&address_of(node)).await?;
    adversary.hello().await?;
    adversary.accepted().await?;
    Ok(adversary)
}

/// Waits until `node` holds `author`'s log through `seq`.
async fn holds(node: &Node, author: Author, seq: u64, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while node.heads().get(&author) != Some(&seq) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: holds {:?}, not {seq}",
            node.heads().get(&author)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The adversary's next connection to `node` is closed at once: it is banned.
async fn banned(adversary: &mut Adversary, node: &Node) -> anyhow::Result<bool> {
    adversary.dial(&address_of(node)).await?;
    Ok(adversary.next_seen(DEADLINE).await? == Seen::Disconnected(node.peer_id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_gets_the_sender_disconnected_and_its_valid_prefix_kept()
-> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut events = alice.events();
    let mut penalties = alice.events();
    let mut mallory = joined("mallory", &alice).await?;
    let log = mallory.log("mallory", &["one", "two"]);
    let mut batch = envelopes(&log[..2]);
    batch.push(forge_signature(log[2].envelope()));
    mallory
        .send_batch(Lane::Bulk, mallory.author(), batch)
        .await?;

    assert!(
        mallory.disconnected_within(DEADLINE).await,
        "the forger is disconnected"
    );
    let warning = warned(&mut events, "disconnecting").await?;
    assert!(warning.contains("invalid signature"), "{warning}");
    let (peer, reason) = typed(&mut penalties, "peer penalised", |event| match event {
        Event::PeerPenalised { peer, reason } => Some((peer, reason)),
        _ => None,
    })
    .await?;
    assert_eq!(peer, p2pchat_node::identity::peer_id_of(&mallory.author()));
    assert_eq!(
        reason,
        PenaltyReason::InvalidEntry {
            author: mallory.author()
        }
    );
    assert_eq!(
        alice.heads().get(&mallory.author()),
        Some(&2),
        "the valid prefix is kept, the forgery is not"
    );
    assert!(
        banned(&mut mallory, &alice).await?,
        "banned for a while: a new connection is closed at once"
    );
    still_chatting(&alice, &bob, "unaffected").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_filed_under_another_log_get_the_sender_disconnected() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut mallory = joined("mallory", &alice).await?;
    // Validly signed by mallory, but sent as a batch of bob's log.
    let log = mallory.log("mallory", &["not bob's"]);
    let bob_author = bob.author();
    mallory
        .send_batch(Lane::Live, bob_author, envelopes(&log))
        .await?;
    assert!(
        mallory.disconnected_within(DEADLINE).await,
        "the sender is disconnected"
    );
    assert!(banned(&mut mallory, &alice).await?, "and banned");
    assert!(
        !alice.heads().contains_key(&mallory.author()),
        "nothing of it stored"
    );
    assert_eq!(
        alice.heads().get(&bob_author),
        Some(&3),
        "bob's log untouched"
    );
    still_chatting(&alice, &bob, "unaffected").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_another_room_replayed_into_the_open_room_gets_the_sender_disconnected()
-> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut events = alice.events();
    // dave's log of a private room, validly signed: what a member of that room holds.
    let team = Room::private(&[7; 32], "team");
    let dave = SigningKey::generate(&mut rand::rngs::OsRng);
    let log = signed_log(
        &dave,
        team.id(),
        "dave",
        &["private line"],
        1_700_000_000_000,
    );
    let mut mallory = joined("mallory", &alice).await?;
    mallory
        .send_batch(Lane::Live, Author::of(&dave), envelopes(&log))
        .await?;
    assert!(
        mallory.disconnected_within(DEADLINE).await,
        "the sender is disconnected"
    );
    let warning = warned(&mut events, "disconnecting").await?;
    assert!(warning.contains("another room"), "{warning}");
    assert!(banned(&mut mallory, &alice).await?, "and banned");
    assert!(
        !alice.heads().contains_key(&Author::of(&dave)),
        "nothing of it stored"
    );
    still_chatting(&alice, &bob, "unaffected").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// Frames no honest peer sends (of `author`'s log, where they hold entries), by what is wrong.
fn bad_frames(author: Author) -> Vec<(&'static str, Vec<u8>)> {
    let note = HeadNote {
        author: Author::from_bytes([7; 32]),
        seq: 1,
    };
    vec![
        (
            "an oversized length prefix",
            ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec(),
        ),
        ("garbage", frame(&[0xff, 0x00, 0x13, 0x37])),
        ("truncated CBOR", frame(&[0xa1, 0x65, b'B', b'a', b't'])),
        (
            "too many entries",
            room_frame(&batch(author, vec![vec![0x80]; MAX_BATCH_ENTRIES + 1])),
        ),
        (
            "an undecodable entry",
            room_frame(&batch(author, vec![vec![0x82, 0x41, 0x00]])),
        ),
        (
            "too many notes",
            room_frame(&Message::Have(vec![note; MAX_MESSAGE_NOTES + 1])),
        ),
        (
            "too many ranges",
            room_frame(&Message::Query(vec![
                AuthorRange::ALL;
                MAX_QUERY_RANGES + 1
            ])),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_the_sender_disconnected_and_nothing_stored() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut case = 0;
    for index in 0..bad_frames(Author::MIN).len() {
        // Each on both lanes: the receiver treats them alike.
        for lane in [Lane::Live, Lane::Bulk] {
            case += 1;
            let mut mallory = joined("mallory", &alice).await?;
            let (what, bytes) = bad_frames(mallory.author()).swap_remove(index);
            mallory.send_raw(lane, bytes).await?;
            assert!(
                mallory.disconnected_within(DEADLINE).await,
                "{what} on {lane:?}: the sender is disconnected"
            );
            assert!(
                banned(&mut mallory, &alice).await?,
                "{what} on {lane:?}: and banned"
            );
            assert!(
                !alice.heads().contains_key(&mallory.author()),
                "{what} on {lane:?}: nothing stored"
            );
        }
    }
    still_chatting(&alice, &bob, &format!("after {case} bad frames")).await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellos_of_another_version_or_a_bad_name_are_refused() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let empty = Summary {
        count: 0,
        fingerprint: Fingerprint::default(),
    };
    let hellos = [
        ("version 2", 2, "mallory"),
        ("version 4", 4, "mallory"),
        ("an empty name", PROTOCOL_VERSION, ""),
        ("a name with a line break", PROTOCOL_VERSION, "mal\nlory"),
    ];
    for (what, version, name) in hellos {
        let mut mallory = Adversary::spawn("mallory")?;
        mallory.connect(&address_of(&alice)).await?;
        let hello = Message::Hello(Hello {
            version,
            name: name.to_owned(),
            heads: empty,
        });
        mallory.send(Lane::Live, &hello).await?;
        assert!(
            mallory.disconnected_within(DEADLINE).await,
            "a hello with {what} is refused"
        );
        // Banned, so not merely dropped for saying no hello in time.
        assert!(
            banned(&mut mallory, &alice).await?,
            "a hello with {what}: banned"
        );
    }
    still_chatting(&alice, &bob, "after bad hellos").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_before_the_hello_or_a_second_hello_gets_the_sender_disconnected()
-> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    // Out of turn: a ping or a batch on either lane before the hello.
    for (lane, before_hello) in [
        ("ping", Lane::Live),
        ("batch", Lane::Live),
        ("batch", Lane::Bulk),
    ]
    .map(|(what, lane)| (lane, what))
    {
        let mut mallory = Adversary::spawn("mallory")?;
        mallory.connect(&address_of(&alice)).await?;
        let log = mallory.log("mallory", &["too early"]);
        let message = match before_hello {
            "ping" => Message::Ping,
            _ => batch(mallory.author(), envelopes(&log)),
        };
        mallory.send(lane, &message).await?;
        assert!(
            mallory.disconnected_within(DEADLINE).await,
            "a {before_hello} on {lane:?} before the hello: disconnected"
        );
        // Banned, so not merely dropped for saying no hello in time.
        assert!(
            banned(&mut mallory, &alice).await?,
            "a {before_hello} on {lane:?} before the hello: banned"
        );
        assert!(
            !alice.heads().contains_key(&mallory.author()),
            "nothing stored from before the hello"
        );
    }
    // A second hello in one session.
    let mut mallory = joined("mallory", &alice).await?;
    mallory.send(Lane::Live, &mallory.hello_message()).await?;
    assert!(
        mallory.disconnected_within(DEADLINE).await,
        "a second hello: disconnected"
    );
    assert!(
        banned(&mut mallory, &alice).await?,
        "a second hello: banned"
    );
    still_chatting(&alice, &bob, "after messages out of turn").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_out_of_the_membership_handshake_get_the_sender_disconnected() -> anyhow::Result<()>
{
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    // Each case, and what the node says it sent.
    let cases = [
        (
            "a room's message before the greet",
            "a frame before its greet",
        ),
        ("a greet of protocol 2", "protocol version 2"),
        (
            "a room's batch before the proof",
            "before its membership proof",
        ),
        ("a second greet", "a second greet"),
        ("a second proof", "a second membership proof"),
        ("a message for a room slot not shared", "room slot 1"),
    ];
    for (case, said) in cases {
        let mut events = alice.events();
        let mut mallory = Adversary::spawn("mallory")?;
        let log = mallory.log("mallory", &["too early"]);
        let early = batch(mallory.author(), envelopes(&log));
        let greet = |version| {
            Frame::Greet(Greet {
                version,
                nonce: Nonce::new([7; 32]),
            })
        };
        match case {
            "a room's message before the greet" => {
                let peer = mallory.dial(&address_of(&alice)).await?;
                mallory.open_lanes(peer).await?;
                mallory.send(Lane::Live, &Message::Ping).await?;
            }
            "a greet of protocol 2" => {
                let peer = mallory.dial(&address_of(&alice)).await?;
                mallory.open_lanes(peer).await?;
                mallory.send_frame(Lane::Live, &greet(2)).await?;
            }
            "a room's batch before the proof" => {
                mallory.connect_unproven(&address_of(&alice)).await?;
                assert_eq!(mallory.shared(), Some(vec![0]), "alice proved the LAN room");
                mallory.send(Lane::Bulk, &early).await?;
            }
            "a second greet" => {
                mallory.connect(&address_of(&alice)).await?;
                mallory
                    .send_frame(Lane::Live, &greet(PROTOCOL_VERSION))
                    .await?;
            }
            "a second proof" => {
                mallory.connect(&address_of(&alice)).await?;
                mallory
                    .send_frame(Lane::Live, &Frame::Proof(vec![]))
                    .await?;
            }
            _ => {
                mallory.connect(&address_of(&alice)).await?;
                mallory.hello().await?;
                mallory.accepted().await?;
                mallory
                    .send_frame(Lane::Live, &Frame::Room(1, Message::Ping))
                    .await?;
            }
        }
        assert!(
            mallory.disconnected_within(DEADLINE).await,
            "{case}: disconnected"
        );
        // For that, not merely dropped for proving nothing in time.
        let warning = warned(&mut events, said).await?;
        assert!(
            warning.contains(&mallory.peer_id.to_string()),
            "{case}: {warning}"
        );
        assert!(banned(&mut mallory, &alice).await?, "{case}: banned");
        assert!(
            !alice.heads().contains_key(&mallory.author()),
            "{case}: nothing stored"
        );
    }
    // A stranger that proves no room of the node gets nothing and is told so.
    let mut events = alice.events();
    let mut stranger = Adversary::spawn_in("stranger", vec![])?;
    stranger.connect(&address_of(&alice)).await?;
    assert_eq!(stranger.shared(), Some(vec![]), "alice's proof came");
    assert!(stranger.disconnected_within(DEADLINE).await);
    let warning = warned(&mut events, &stranger.peer_id.to_string()).await?;
    assert!(warning.contains("shares no room"), "{warning}");
    assert!(
        stranger.never_sent(Duration::ZERO, |_| true).await,
        "no room's message came"
    );
    still_chatting(&alice, &bob, "after frames out of the handshake").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// A head of a log nobody else holds, so that the node has something to ask about.
fn made_up_head(seed: u8) -> HeadInfo {
    HeadInfo {
        author: Author::from_bytes([seed; 32]),
        seq: 1,
        hash: Hash::of(&[seed]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_does_not_answer_or_that_nobody_asked_for_gets_the_sender_disconnected()
-> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let other_range = AuthorRange {
        start: Author::from_bytes([0x80; 32]),
        end: None,
    };
    for case in ["no parts", "another range", "asked once, answered twice"] {
        let mut mallory = Adversary::spawn("mallory")?;
        mallory.claim(made_up_head(9));
        mallory.answer_queries(false);
        mallory.connect(&address_of(&alice)).await?;
        mallory.hello().await?;
        let Message::Query(ranges) = mallory
            .wait_message(DEADLINE, |m| matches!(m, Message::Query(_)))
            .await?
        else {
            unreachable!("waited for a query");
        };
        let replies = match case {
            "no parts" => vec![Message::Reply(vec![])],
            "another range" => vec![Message::Reply(
                ranges
                    .iter()
                    .map(|_| Part::Heads {
                        range: other_range,
                        heads: vec![],
                    })
                    .collect(),
            )],
            _ => vec![mallory.reply_to(&ranges), mallory.reply_to(&ranges)],
        };
        for reply in &replies {
            mallory.send(Lane::Live, reply).await?;
        }
        assert!(
            mallory.disconnected_within(DEADLINE).await,
            "{case}: disconnected"
        );
        assert!(banned(&mut mallory, &alice).await?, "{case}: banned");
    }
    // The honest answer keeps the peer: what it claims is a hint, not misbehaviour.
    let mut honest = Adversary::spawn("honest")?;
    honest.claim(made_up_head(9));
    honest.connect(&address_of(&alice)).await?;
    honest.hello().await?;
    honest
        .wait_message(DEADLINE, |m| matches!(m, Message::Query(_)))
        .await?;
    assert!(
        !honest.disconnected_within(Duration::from_secs(1)).await,
        "an honest reply is taken"
    );
    still_chatting(&alice, &bob, "after bad replies").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_within_the_window_are_taken_and_a_flood_without_acks_is_not() -> anyhow::Result<()>
{
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let window = MAX_UNACKED_BATCHES;
    let lines: Vec<String> = (1..2 * window).map(|i| format!("line {i}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();

    // A full window, then (once acked) another: a peer that waits for acks is fine.
    let mut paced = joined("paced", &alice).await?;
    let log = paced.log("paced", &lines);
    for window_of_batches in log.chunks(window) {
        let before = paced.acks();
        let burst: Vec<u8> = window_of_batches
            .iter()
            .flat_map(|entry| {
                room_frame(&batch(
                    paced.author(),
                    envelopes(std::slice::from_ref(entry)),
                ))
            })
            .collect();
        paced.send_raw(Lane::Bulk, burst).await?;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while paced.acks() < before + window_of_batches.len() as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "acked {} of {}",
                paced.acks(),
                log.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    holds(&alice, paced.author(), log.len() as u64, "the paced log").await?;
    assert!(
        !paced.disconnected_within(Duration::from_millis(300)).await,
        "a peer that keeps to its window stays"
    );

    // Twelve windows at once, never waiting for an ack: a flood.
    let mut mallory = joined("mallory", &alice).await?;
    let mut events = alice.events();
    let entry = mallory.log("mallory", &[]);
    let one = room_frame(&batch(mallory.author(), envelopes(&entry)));
    mallory
        .send_raw(Lane::Bulk, one.repeat(12 * window))
        .await?;
    assert!(
        mallory.disconnected_within(DEADLINE).await,
        "a flood of batches without acks: disconnected"
    );
    assert!(banned(&mut mallory, &alice).await?, "a flood: banned");
    let warning = warned(&mut events, &mallory.peer_id.to_string()).await?;
    assert!(warning.contains("without waiting for an ack"), "{warning}");
    still_chatting(&alice, &bob, "after a flood of batches").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_claims_are_taken_as_hints() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let head = |seed: u8| HeadInfo {
        author: Author::from_bytes([seed; 32]),
        seq: u64::MAX,
        hash: Hash::of(&[seed]),
    };
    // Heads at u64::MAX (whose sum overflows), its own log among them: hints, not facts. The
    // liar stays connected, and its own log is stored when it sends it.
    let mut liar = Adversary::spawn("liar")?;
    let log = liar.log("liar", &["a", "b", "c"]);
    for seed in [1, 2] {
        liar.claim(head(seed));
    }
    liar.claim(HeadInfo {
        author: liar.author(),
        seq: u64::MAX,
        hash: Hash::of(b"x"),
    });
    liar.connect(&address_of(&alice)).await?;
    liar.hello().await?;
    liar.wait_message(DEADLINE, |m| matches!(m, Message::Query(_)))
        .await?;
    // Seq 3 and 4 on live, ahead of their prefix: held until seq 1 and 2 come on bulk.
    liar.send_batch(Lane::Live, liar.author(), envelopes(&log[2..]))
        .await?;
    liar.send_batch(Lane::Bulk, liar.author(), envelopes(&log[..2]))
        .await?;
    holds(&alice, liar.author(), 4, "the liar's valid entries").await?;
    assert!(
        !liar.disconnected_within(Duration::from_millis(500)).await,
        "lying heads are not misbehaviour"
    );
    still_chatting(&alice, &bob, "after absurd claims").await?;
    assert!(
        liar.never_sent(Duration::from_millis(300), |m| matches!(
            m,
            Message::Want(_)
        ))
        .await,
        "nothing more is wanted of logs it never sent"
    );
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_and_silent_peers_are_dropped_while_honest_peers_chat()
-> anyhow::Result<()> {
    let dirs = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let alice = start_node("alice", dirs.0.path(), &[]).await?;
    let bob = start_node("bob", dirs.1.path(), &[address_of(&alice)]).await?;
    let port = address_of(&alice)
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a tcp port");

    // A flood: 10 libp2p peers with their own ids that open their lanes and never say hello,
    // then 40 TCP connections that never speak (more than the 32 pending slots: new
    // connections are refused until the stalled ones time out).
    let mut silent = Vec::new();
    for _ in 0..10 {
        let mut peer = Adversary::spawn("silent")?;
        peer.connect(&address_of(&alice)).await?;
        silent.push(peer);
    }
    let mut stalled = Vec::new();
    for _ in 0..40 {
        stalled.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await?);
    }
    // Honest peers chat through it.
    let mut alice_feed = alice.messages();
    bob.send("through the flood")?;
    assert_eq!(
        texts(&take(&mut alice_feed, 1).await?),
        ["bob> through the flood"]
    );

    // Every silent peer is dropped (hello timeout), every stalled handshake too (setup timeout).
    for peer in &mut silent {
        assert!(
            peer.disconnected_within(DEADLINE).await,
            "a peer that never says hello is dropped"
        );
    }
    for mut socket in stalled {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(DEADLINE, async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue, // the node's side of the handshake
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a stalled handshake is dropped");
    }
    // And a newcomer gets in and catches up.
    let carol = start_node("carol", dirs.2.path(), &[address_of(&alice)]).await?;
    let mut carol_feed = carol.messages();
    assert_eq!(
        texts(&take(&mut carol_feed, 1).await?),
        ["bob> through the flood"]
    );
    for node in [alice, bob, carol] {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_falls_silent_after_its_hello_is_dropped_and_one_that_pings_is_kept()
-> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut quiet = joined("quiet", &alice).await?;
    let mut pinging = joined("pinging", &alice).await?;
    quiet.keep_alive(false);
    // The limit plus a generous margin for a loaded machine; the hello timeout (10 s) is over.
    assert!(
        quiet
            .disconnected_within(SILENCE_LIMIT + Duration::from_secs(5))
            .await,
        "a peer that says nothing for {SILENCE_LIMIT:?} is dropped"
    );
    assert!(
        !pinging.disconnected_within(Duration::from_secs(2)).await,
        "a peer that pings stays"
    );
    // Silence is not misbehaviour: it may come back at once.
    quiet.connect(&address_of(&alice)).await?;
    quiet.hello().await?;
    let log = quiet.log("quiet", &["back"]);
    quiet
        .send_batch(Lane::Live, quiet.author(), envelopes(&log))
        .await?;
    holds(&alice, quiet.author(), 2, "the returning peer's log").await?;
    still_chatting(&alice, &bob, "after silence").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_from_a_clock_in_the_future_are_kept_and_flagged_once_with_a_count()
-> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut events = alice.events();
    let mut dana = joined("dana", &alice).await?;
    let next_year = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        + 365 * 86_400_000;
    // 14 entries dated a year ahead, each in a batch of its own (as typed live).
    let texts: Vec<String> = (1..14).map(|i| format!("from the future {i}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let log = dana.log_dated("dana", &texts, next_year);
    for entry in &log {
        dana.send_batch(
            Lane::Live,
            dana.author(),
            envelopes(std::slice::from_ref(entry)),
        )
        .await?;
    }
    holds(&alice, dana.author(), 14, "all 14 are kept").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut clock_warnings = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Warning { message } = event
            && message.contains("ahead of your clock")
        {
            clock_warnings.push(message);
        }
    }
    assert_eq!(
        clock_warnings.len(),
        1,
        "one warning, not 14: {clock_warnings:#?}"
    );
    assert!(
        clock_warnings[0].starts_with(
            "dana's entries are 364 days ahead of your clock: one of the two clocks is wrong"
        ) || clock_warnings[0].starts_with(
            "dana's entries are 365 days ahead of your clock: one of the two clocks is wrong"
        ),
        "{}",
        clock_warnings[0]
    );
    // The rest are counted and summed up when the window ends.
    let summary = warned_within(
        &mut events,
        "more entries dated ahead of your clock from dana",
        Duration::from_secs(40),
    )
    .await?;
    assert!(summary.starts_with("… 13 more"), "{summary}");
    assert!(
        !dana.disconnected_within(Duration::from_millis(300)).await,
        "a wrong clock is not misbehaviour"
    );
    still_chatting(&alice, &bob, "after the future").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_order_key_log_is_refused_pushed_or_sent_again_when_wanted() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut events = alice.events();
    let weak = Author::from_bytes(SMALL_ORDER_KEY);
    let forged = small_order_log("carol", &["one", "two", "3", "4", "5", "6", "7", "8", "9"]);

    // Pushed: the sender is disconnected and kept out; nothing is stored.
    let mut mallory = joined("mallory", &alice).await?;
    mallory
        .send_batch(Lane::Bulk, weak, envelopes(&forged))
        .await?;
    assert!(
        mallory.disconnected_within(DEADLINE).await,
        "the sender is disconnected"
    );
    let pushed = warned(&mut events, "small order").await?;
    assert!(!alice.heads().contains_key(&weak), "nothing stored");
    assert!(
        banned(&mut mallory, &alice).await?,
        "and banned: a new connection is closed at once"
    );

    // Sent again when wanted: seq 2 to 10, each alone on live, are ahead of their prefix; alice
    // holds 8 of them (the most she holds for a peer), wants the log from seq 1 for the ninth,
    // and gets the forgery.
    let mut relay = Adversary::spawn("relay")?;
    relay.serve(weak, envelopes(&forged));
    relay.connect(&address_of(&alice)).await?;
    relay.hello().await?;
    for entry in &forged[1..] {
        relay
            .send_batch(Lane::Live, weak, envelopes(std::slice::from_ref(entry)))
            .await?;
    }
    assert!(
        relay.disconnected_within(DEADLINE).await,
        "the relay is disconnected"
    );
    assert!(banned(&mut relay, &alice).await?, "the relay is banned");
    assert_eq!(
        relay.wants(),
        [HeadNote {
            author: weak,
            seq: 1
        }],
        "wanted from the gap"
    );
    let relayed = warned(&mut events, "small order").await?;
    assert!(!alice.heads().contains_key(&weak), "nothing stored");
    still_chatting(&alice, &bob, "unaffected").await?;
    assert!(!bob.heads().contains_key(&weak), "nothing relayed");
    // Each warning names the peer and the log it sent.
    assert_eq!(
        pushed,
        format!(
            "peer {} sent entries of #010000, a key that is of small order (anyone can sign for \
             it): no honest peer relays them (older p2pchat versions accepted them; if it runs \
             one, it should be updated); disconnecting it for 60 s",
            mallory.peer_id
        )
    );
    assert!(
        relayed.starts_with(&format!("peer {} sent entries of #010000", relay.peer_id)),
        "{relayed}"
    );
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_order_key_log_on_disk_is_neither_shown_nor_relayed() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let weak = Author::from_bytes(SMALL_ORDER_KEY);
    let forged = small_order_log("carol", &["forged one", "forged two"]);
    write_unchecked(&dirs.0.path().join("store"), &forged)?;

    let alice = start_node("alice", dirs.0.path(), &[]).await?;
    let mut events = alice.events();
    let warning = warned(&mut events, "ignoring the 3 entries of #010000").await?;
    assert!(warning.contains("is of small order"), "{warning}");
    let bob = start_node("bob", dirs.1.path(), &[address_of(&alice)]).await?;
    let mut feed = alice.messages();
    bob.send("bob is here")?;
    assert_eq!(
        texts(&take(&mut feed, 1).await?),
        ["bob> bob is here"],
        "not shown"
    );
    assert!(!alice.heads().contains_key(&weak));

    // Not listed in a reply, not counted in a hello, not sent when wanted, not relayed to bob.
    let mut mallory = joined("mallory", &alice).await?;
    // The feed can show bob's line a moment before the replica counts his log: ask until both
    // logs are listed.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let listed = loop {
        mallory
            .send(Lane::Live, &Message::Query(vec![AuthorRange::ALL]))
            .await?;
        let Message::Reply(parts) = mallory
            .wait_message(DEADLINE, |m| matches!(m, Message::Reply(_)))
            .await?
        else {
            unreachable!("waited for a reply");
        };
        let [Part::Heads { heads, .. }] = &parts[..] else {
            anyhow::bail!("at most three heads are listed, not split: {parts:?}");
        };
        assert!(heads.iter().all(|head| head.author != weak), "{heads:?}");
        if heads.len() == 2 {
            break heads.clone();
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "bob's log is not listed: {heads:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut listed_set = p2pchat_protocol::reconcile::HeadSet::new();
    for head in listed {
        listed_set.insert(head);
    }
    let later = joined("later", &alice).await?;
    let hello = later.node_hello().context("alice's hello")?;
    assert_eq!(
        hello.heads,
        listed_set.summary(&AuthorRange::ALL),
        "the hello sums up alice's and bob's logs only"
    );
    mallory
        .send(
            Lane::Live,
            &Message::Want(HeadNote {
                author: weak,
                seq: 1,
            }),
        )
        .await?;
    assert!(
        mallory
            .never_sent(Duration::from_secs(1), |m| matches!(
                m,
                Message::Batch(batch) if batch.author == weak
            ))
            .await,
        "not sent"
    );
    still_chatting(&alice, &bob, "still fine").await?;
    assert!(!bob.heads().contains_key(&weak), "not relayed");
    alice.shutdown().await;
    bob.shutdown().await;

    // Nor exported.
    let archive = p2pchat_node::Archive::open(dirs.0.path(), &p2pchat_protocol::Room::lan())?;
    assert_eq!(archive.warnings().len(), 1);
    let exported: Vec<String> = archive
        .messages()
        .map(|m| m.map(|m| m.text))
        .collect::<Result<_, _>>()?;
    assert_eq!(exported, ["bob is here", "still fine"]);
    Ok(())
}

/// Writes `log` into the store at `dir` as a version that did not check keys would have (the
/// rows `Store::insert_remote` writes), bypassing validation.
fn write_unchecked(dir: &std::path::Path, log: &[p2pchat_protocol::Entry]) -> anyhow::Result<()> {
    let db = fjall::Database::builder(dir).open()?;
    let keyspace = |name: &str| db.keyspace(name, fjall::KeyspaceCreateOptions::default);
    let (entries, heads, names) = (keyspace("entries")?, keyspace("heads")?, keyspace("names")?);
    let mut batch = db.batch();
    for entry in log {
        let key = [&entry.author().as_bytes()[..], &entry.seq().to_be_bytes()].concat();
        batch.insert(&entries, key, &entry.envelope()[..]);
        if let p2pchat_protocol::Body::Profile { name } = entry.body() {
            batch.insert(&names, &entry.author().as_bytes()[..], name.as_bytes());
        }
    }
    let last = log.last().context("an empty log")?;
    batch.insert(
        &heads,
        &last.author().as_bytes()[..],
        last.seq().to_be_bytes(),
    );
    batch.commit()?;
    db.persist(fjall::PersistMode::SyncData)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_freezes_its_author_and_everyone_else_syncs_on() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut events = alice.events();
    let mut forks = alice.events();
    let mut frank = joined("frank", &alice).await?;
    // Two valid logs that share seq 1 and differ from seq 2 on.
    let first = frank.log("frank", &["one", "then"]);
    let second = frank.log("frank", &["uno", "luego"]);
    frank
        .send_batch(Lane::Live, frank.author(), envelopes(&first[..2]))
        .await?;
    frank
        .send_batch(Lane::Live, frank.author(), envelopes(&second[1..2]))
        .await?;
    let warning = warned(&mut events, "forked").await?;
    assert!(
        warning.contains("frank") && warning.contains("seq 2"),
        "{warning}"
    );
    let fork = typed(&mut forks, "fork detected", |event| match event {
        Event::ForkDetected { room, author, seq } => Some((room, author, seq)),
        _ => None,
    })
    .await?;
    assert_eq!(fork, ("lan".to_owned(), frank.author(), 2));
    // Frozen: the first entry stays, and nothing more is taken, not even from the first branch.
    frank
        .send_batch(Lane::Live, frank.author(), envelopes(&first[2..]))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alice.heads().get(&frank.author()), Some(&2));
    let mut feed = alice.messages();
    let shown = texts(&take(&mut feed, 2).await?);
    assert!(
        shown.contains(&"frank> one".to_owned()) && !shown.iter().any(|line| line.contains("uno")),
        "{shown:?}"
    );
    // A fork is the author's doing, not the relay's: the connection stays, and bob syncs on.
    assert!(!frank.disconnected_within(Duration::from_millis(300)).await);
    still_chatting(&alice, &bob, "after the fork").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stalls_mid_frame_keeps_its_other_lane_and_is_dropped_when_silent()
-> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut slow = joined("slow", &alice).await?;
    let log = slow.log("slow", &["on live", "after the stall"]);
    // On bulk, a frame announced as 256 bytes, of which one arrives; live goes on (and pings).
    slow.send_raw(Lane::Bulk, vec![0, 0, 1, 0, 0xa1]).await?;
    slow.send_batch(Lane::Live, slow.author(), envelopes(&log[..2]))
        .await?;
    holds(&alice, slow.author(), 2, "the live lane is read").await?;
    still_chatting(&alice, &bob, "while slow stalls").await?;
    assert!(
        !slow.disconnected_within(SILENCE_LIMIT * 2).await,
        "a peer whose live lane speaks is alive"
    );
    // On live, half a frame and then nothing: that is silence.
    slow.keep_alive(false);
    slow.send_raw(Lane::Live, vec![0, 0, 1, 0, 0xa1]).await?;
    assert!(
        slow.disconnected_within(SILENCE_LIMIT + Duration::from_secs(5))
            .await,
        "a peer stalled mid-frame on live is dropped as silent"
    );
    // A stall is not misbehaviour: it may come back at once.
    slow.connect(&address_of(&alice)).await?;
    slow.hello().await?;
    slow.send_batch(Lane::Live, slow.author(), envelopes(&log))
        .await?;
    holds(&alice, slow.author(), 3, "the returning peer's log").await?;
    let mut feed = alice.messages();
    assert!(
        texts(&take(&mut feed, alice_history_len(&alice).await?).await?)
            .contains(&"slow> after the stall".to_owned())
    );
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_lane_streams_keeps_one_reader_and_the_node_responsive() -> anyhow::Result<()> {
    use futures::AsyncReadExt;
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut gus = Adversary::spawn("gus")?;
    let peer = gus.connect(&address_of(&alice)).await?;
    let mut streams = Vec::new();
    for _ in 0..40 {
        streams.push(gus.open_stream(peer, Lane::Live).await?);
    }
    // A flood of lanes is not followed: the node refuses all of it but the one it reads
    // (each refused or replaced lane is closed). Waited for, so that the pause below runs
    // from when the node is done with the flood, however late it works through it on a
    // loaded machine.
    let mut open: Vec<usize> = (0..streams.len()).collect();
    let flooded = tokio::time::Instant::now();
    while open.len() > 1 {
        anyhow::ensure!(
            flooded.elapsed() < DEADLINE,
            "{} streams of the flood are still open",
            open.len()
        );
        let mut still = Vec::new();
        for i in open {
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(10), streams[i].read(&mut buf));
            if !matches!(read.await, Ok(Ok(0) | Err(_))) {
                still.push(i);
            }
        }
        open = still;
    }
    // A lane opened past the node's 200 ms window for a reopen starts a session, and it is
    // read: its hello goes at once, and a ping after each check below, so the session is
    // never silent for long while the checks run on a loaded machine.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let newest = gus.open_stream(peer, Lane::Live).await?;
    gus.use_live_stream(newest);
    gus.greet().await?;
    gus.proven().await?;
    gus.hello().await?;
    // The node keeps no stream of the flood open: the one it read was replaced.
    for i in open {
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(DEADLINE, streams[i].read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "stream {i} is still open: {closed:?}"
        );
        gus.send(Lane::Live, &Message::Ping).await?;
    }
    let log = gus.log("gus", &["on the newest stream"]);
    gus.send_batch(Lane::Live, gus.author(), envelopes(&log))
        .await?;
    holds(&alice, gus.author(), 2, "the newest stream is read").await?;
    still_chatting(&alice, &bob, "after a stream flood").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_fake_notes_do_not_push_real_logs_off_the_routing() -> anyhow::Result<()> {
    let dirs = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let alice = start_node("alice", dirs.0.path(), &[]).await?;
    let bob = start_node("bob", dirs.1.path(), &[address_of(&alice)]).await?;
    let carol = start_node("carol", dirs.2.path(), &[address_of(&alice)]).await?;
    let (mut bob_feed, mut carol_feed) = (bob.messages(), carol.messages());
    bob.send("bob first")?;
    carol.send("carol first")?;
    assert!(texts(&take(&mut carol_feed, 2).await?).contains(&"bob> bob first".to_owned()));
    assert!(texts(&take(&mut bob_feed, 2).await?).contains(&"carol> carol first".to_owned()));

    // 5,000 notes of logs nobody has, far ahead, and of bob's and carol's logs far ahead of
    // what they wrote, said again before every round: alice asked mallory to skip the two real
    // logs (their authors are her sources), so a note on them is what an honest relay would say.
    let mut mallory = joined("mallory", &alice).await?;
    let real = [bob.author(), carol.author()];
    let fake = (0..5_000u32).map(|i| {
        let mut bytes = [0x5a; 32];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        Author::from_bytes(bytes)
    });
    let notes: Vec<HeadNote> = real
        .into_iter()
        .chain(fake)
        .map(|author| HeadNote {
            author,
            seq: u64::MAX,
        })
        .collect();
    // Lines still go from bob to carol and back through alice, round after round, past the
    // stall timeout (1 s) after which a noting peer may become a log's source.
    for round in 0..3 {
        for chunk in notes.chunks(MAX_MESSAGE_NOTES) {
            mallory
                .send(Lane::Live, &Message::Have(chunk.to_vec()))
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        bob.send(&format!("bob {round}"))?;
        carol.send(&format!("carol {round}"))?;
        assert_eq!(
            texts(&take(&mut carol_feed, 2).await?)
                .iter()
                .filter(|line| line.starts_with("bob> "))
                .count(),
            1,
            "round {round}: bob's line reaches carol"
        );
        assert_eq!(
            texts(&take(&mut bob_feed, 2).await?)
                .iter()
                .filter(|line| line.starts_with("carol> "))
                .count(),
            1,
            "round {round}: carol's line reaches bob"
        );
    }
    // Nor did the notes move a log whose author is there in person to mallory: alice never
    // took bob's or carol's log off mallory's skip list (making her its source, and asking the
    // author to skip their own log).
    let mut routes = Vec::new();
    while let Ok(message) = mallory.next_message(Duration::from_millis(300)).await {
        if let Message::Route { skip, unskip } = message {
            routes.push((skip, unskip));
        }
    }
    assert!(
        routes
            .iter()
            .all(|(_, unskip)| real.iter().all(|author| !unskip.contains(author))),
        "a real log moved to the noting peer: {routes:?}"
    );
    assert!(
        !mallory
            .disconnected_within(Duration::from_millis(300))
            .await,
        "notes are hints, not misbehaviour"
    );
    assert_eq!(
        mallory.wants(),
        [],
        "nothing is wanted of a peer that only noted"
    );
    for node in [alice, bob, carol] {
        node.shutdown().await;
    }
    Ok(())
}

/// A connection on which every lane the node opens is dropped unread (the other side stuck
/// closing it, say) never heals by reopening the lanes: after a few sessions in a row that
/// broke before a frame was read, the node closes the connection, so that a fresh one is made.
#[tokio::test]
async fn a_connection_refusing_every_lane_is_closed_after_a_few_tries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = start_node("alice", dir.path(), &[]).await?;
    let mut mallory = Adversary::spawn("mallory")?;
    mallory.refuse_lanes(true);
    mallory.dial(&address_of(&alice)).await?;
    assert!(
        mallory.disconnected_within(DEADLINE).await,
        "the node keeps a connection whose lanes all break"
    );
    Ok(())
}
