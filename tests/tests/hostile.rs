//! Hostile peers against a real node (the adversary in `p2pchat_tests::adversary`): forged
//! entries, bad frames, absurd hellos, stalled handshakes, silent peers and floods. The node
//! disconnects the offender, stores nothing invalid, and honest peers keep chatting.

use std::time::Duration;

use anyhow::Context;
use p2pchat_node::{Event, Node};
use p2pchat_protocol::limits::{MAX_BATCH_ENTRIES, MAX_FRAME_BYTES, MAX_HELLO_HEADS};
use p2pchat_protocol::wire::{HeadInfo, RangeRequest, Request, Response};
use p2pchat_protocol::{Author, Hash};
use p2pchat_tests::adversary::{
    Adversary, SMALL_ORDER_KEY, Seen, batch_frame, forge_signature, raw_frame, small_order_log,
    write,
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
    .await?
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
    let before = texts(&take(&mut feed, alice_history_len(alice)).await?);
    bob.send(text)?;
    let after = texts(&take(&mut feed, 1).await?);
    assert_eq!(after, [format!("bob> {text}")], "after {before:?}");
    Ok(())
}

fn alice_history_len(alice: &Node) -> usize {
    // Text entries held: every log's length minus its profile.
    alice
        .heads()
        .values()
        .map(|seq| seq.saturating_sub(1) as usize)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_gets_the_sender_disconnected_and_its_valid_prefix_kept()
-> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut events = alice.events();
    let mut mallory = Adversary::spawn("mallory")?;
    let peer = mallory.connect(&address_of(&alice)).await?;
    assert!(matches!(
        mallory.hello(peer, "mallory", vec![]).await?,
        Some(Response::Hello(_))
    ));
    let mut stream = mallory.open_push(peer).await?;
    let log = mallory.log("mallory", &["one", "two"]);
    let envelopes = vec![
        log[0].envelope().to_vec(),
        log[1].envelope().to_vec(),
        forge_signature(log[2].envelope()),
    ];
    write(&mut stream, &batch_frame(mallory.author(), envelopes)).await?;

    assert!(
        mallory.disconnected_within(DEADLINE).await,
        "the forger is disconnected"
    );
    let warning = warned(&mut events, "disconnecting").await?;
    assert!(warning.contains("invalid signature"), "{warning}");
    assert_eq!(
        alice.heads().get(&mallory.author()),
        Some(&2),
        "the valid prefix is kept, the forgery is not"
    );
    // Banned for a while: a new connection is closed at once.
    mallory.connect(&address_of(&alice)).await?;
    assert_eq!(
        mallory.next_seen(DEADLINE).await?,
        Seen::Disconnected(alice.peer_id())
    );
    still_chatting(&alice, &bob, "unaffected").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_the_sender_disconnected_and_nothing_stored() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let oversized = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
    let garbage = raw_frame(&[0xff, 0x00, 0x13, 0x37]);
    let truncated_cbor = raw_frame(&[0xa1, 0x65, b'B', b'a', b't']);
    let too_many = |author: Author| batch_frame(author, vec![vec![0x80]; MAX_BATCH_ENTRIES + 1]);
    let undecodable_entry = |author: Author| batch_frame(author, vec![vec![0x82, 0x41, 0x00]]);
    for case in 0..5 {
        let mut mallory = Adversary::spawn("mallory")?;
        let frame = match case {
            0 => oversized.clone(),
            1 => garbage.clone(),
            2 => truncated_cbor.clone(),
            3 => too_many(mallory.author()),
            _ => undecodable_entry(mallory.author()),
        };
        let peer = mallory.connect(&address_of(&alice)).await?;
        mallory.hello(peer, "mallory", vec![]).await?;
        let mut stream = mallory.open_push(peer).await?;
        write(&mut stream, &frame).await?;
        assert!(
            mallory.disconnected_within(DEADLINE).await,
            "case {case}: the sender is disconnected"
        );
        assert!(
            !alice.heads().contains_key(&mallory.author()),
            "case {case}: nothing stored"
        );
    }
    still_chatting(&alice, &bob, "after five bad frames").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_hellos_are_refused_or_taken_as_hints() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let head = |seed: u8| HeadInfo {
        author: Author::from_bytes([seed; 32]),
        seq: u64::MAX,
        hash: Hash::of(&[seed]),
    };

    // Too many heads: refused, disconnected.
    let mut mallory = Adversary::spawn("mallory")?;
    let peer = mallory.connect(&address_of(&alice)).await?;
    let _ = mallory
        .hello(peer, "mallory", vec![head(1); MAX_HELLO_HEADS + 1])
        .await;
    assert!(
        mallory.disconnected_within(DEADLINE).await,
        "a hello over the heads limit is refused"
    );

    // A request over the codec's size limit (8,000 heads, about 760 KB) is refused by length.
    let mut bulky = Adversary::spawn("bulky")?;
    let peer = bulky.connect(&address_of(&alice)).await?;
    assert_eq!(
        bulky.hello(peer, "bulky", vec![head(3); 8_000]).await?,
        None,
        "no answer to an oversized request"
    );

    // Heads at u64::MAX (whose sum overflows): hints, not facts. The liar stays connected, its
    // own log is stored when it sends it, and it is asked for the rest only once.
    let mut liar = Adversary::spawn("liar")?;
    let peer = liar.connect(&address_of(&alice)).await?;
    let mut heads = vec![head(1), head(2)];
    heads.push(HeadInfo {
        author: liar.author(),
        seq: u64::MAX,
        hash: Hash::of(b"x"),
    });
    assert!(matches!(
        liar.hello(peer, "liar", heads).await?,
        Some(Response::Hello(_))
    ));
    let mut stream = liar.open_push(peer).await?;
    let log = liar.log("liar", &["a", "b", "c"]);
    // Seq 3 and 4 only: a gap, so alice asks for seq 1; the liar answers with no entries, which
    // ends the fetch (before, alice asked again and again: the liar claims far more).
    write(
        &mut stream,
        &batch_frame(
            liar.author(),
            vec![log[2].envelope().to_vec(), log[3].envelope().to_vec()],
        ),
    )
    .await?;
    write(
        &mut stream,
        &batch_frame(
            liar.author(),
            vec![log[0].envelope().to_vec(), log[1].envelope().to_vec()],
        ),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while alice.heads().get(&liar.author()) != Some(&2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the liar's valid entries were not stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !liar.disconnected_within(Duration::from_millis(500)).await,
        "lying heads are not misbehaviour"
    );
    assert_eq!(
        liar.ranges_asked(),
        1,
        "an answer that brings nothing ends the fetch"
    );
    still_chatting(&alice, &bob, "after absurd hellos").await?;
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

    // A flood: 10 libp2p peers with their own ids that connect and never say hello, then 40 TCP
    // connections that never speak (more than the 32 pending slots: new connections are refused
    // until the stalled ones time out).
    let mut silent = Vec::new();
    for _ in 0..10 {
        let mut peer = Adversary::silent()?;
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
async fn entries_from_a_clock_in_the_future_are_kept_and_flagged_once_with_a_count()
-> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut events = alice.events();
    let mut dana = Adversary::spawn("dana")?;
    let peer = dana.connect(&address_of(&alice)).await?;
    dana.hello(peer, "dana", vec![]).await?;
    let mut stream = dana.open_push(peer).await?;
    let next_year = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        + 365 * 86_400_000;
    // 14 entries dated a year ahead, each in a frame of its own (as typed live).
    let texts: Vec<String> = (1..14).map(|i| format!("from the future {i}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let log = dana.log_dated("dana", &texts, next_year);
    for entry in &log {
        write(
            &mut stream,
            &batch_frame(dana.author(), vec![entry.envelope().to_vec()]),
        )
        .await?;
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while alice.heads().get(&dana.author()) != Some(&14) {
        assert!(tokio::time::Instant::now() < deadline, "all 14 are kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
async fn a_small_order_key_log_is_refused_pushed_or_in_a_range_answer() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut events = alice.events();
    let weak = Author::from_bytes(SMALL_ORDER_KEY);
    let forged = small_order_log("carol", &["one", "two"]);
    let envelopes = |from: usize| -> Vec<Vec<u8>> {
        forged[from..]
            .iter()
            .map(|e| e.envelope().to_vec())
            .collect()
    };

    // Pushed: the sender is disconnected and kept out; nothing is stored.
    let mut mallory = Adversary::spawn("mallory")?;
    let peer = mallory.connect(&address_of(&alice)).await?;
    mallory.hello(peer, "mallory", vec![]).await?;
    let mut stream = mallory.open_push(peer).await?;
    write(&mut stream, &batch_frame(weak, envelopes(0))).await?;
    assert!(
        mallory.disconnected_within(DEADLINE).await,
        "the sender is disconnected"
    );
    let warning = warned(&mut events, "small order").await?;
    assert_eq!(
        warning,
        format!(
            "peer {} sent entries of #010000, a key that is of small order (anyone can sign for \
             it): no honest peer relays them (older p2pchat versions accepted them; if it runs \
             one, it should be updated); disconnecting it for 60 s",
            mallory.peer_id
        )
    );
    assert!(!alice.heads().contains_key(&weak), "nothing stored");
    mallory.connect(&address_of(&alice)).await?;
    assert_eq!(
        mallory.next_seen(DEADLINE).await?,
        Seen::Disconnected(alice.peer_id()),
        "and banned: a new connection is closed at once"
    );

    // In a range answer: seq 2 and 3 leave a gap, alice asks for seq 1 on, and gets the forgery.
    let mut relay = Adversary::spawn("relay")?;
    relay.serve(weak, envelopes(0));
    let peer = relay.connect(&address_of(&alice)).await?;
    relay.hello(peer, "relay", vec![]).await?;
    let mut stream = relay.open_push(peer).await?;
    write(&mut stream, &batch_frame(weak, envelopes(1))).await?;
    assert!(
        relay.disconnected_within(DEADLINE).await,
        "the relay is disconnected"
    );
    assert_eq!(relay.ranges_asked(), 1, "for the gap");
    let warning = warned(&mut events, "small order").await?;
    assert!(
        warning.starts_with(&format!("peer {} sent entries of #010000", relay.peer_id)),
        "{warning}"
    );
    assert!(!alice.heads().contains_key(&weak), "nothing stored");
    still_chatting(&alice, &bob, "unaffected").await?;
    assert!(!bob.heads().contains_key(&weak), "nothing relayed");
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

    // Not announced in a hello, not served in a range answer, not relayed to bob.
    let mallory = Adversary::spawn("mallory")?;
    let mut mallory = mallory;
    let peer = mallory.connect(&address_of(&alice)).await?;
    let Some(Response::Hello(hello)) = mallory.hello(peer, "mallory", vec![]).await? else {
        anyhow::bail!("no hello from alice");
    };
    assert!(
        hello.heads.iter().all(|head| head.author != weak),
        "{hello:?}"
    );
    let range = RangeRequest {
        author: weak,
        from: 1,
        limit: 1024,
    };
    let Some(Response::Entries(batch)) = mallory.request(peer, Request::Range(range)).await? else {
        anyhow::bail!("no range answer");
    };
    assert!(batch.entries.is_empty(), "not served");
    still_chatting(&alice, &bob, "still fine").await?;
    assert!(!bob.heads().contains_key(&weak), "not relayed");
    alice.shutdown().await;
    bob.shutdown().await;

    // Nor exported.
    let archive = p2pchat_node::Archive::open(dirs.0.path())?;
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
    let mut frank = Adversary::spawn("frank")?;
    let peer = frank.connect(&address_of(&alice)).await?;
    frank.hello(peer, "frank", vec![]).await?;
    let mut stream = frank.open_push(peer).await?;
    // Two valid logs that share seq 1 and differ from seq 2 on.
    let first = frank.log("frank", &["one", "then"]);
    let second = frank.log("frank", &["uno", "luego"]);
    let envelopes = |log: &[p2pchat_protocol::Entry]| {
        log.iter()
            .map(|e| e.envelope().to_vec())
            .collect::<Vec<_>>()
    };
    write(
        &mut stream,
        &batch_frame(frank.author(), envelopes(&first[..2])),
    )
    .await?;
    write(
        &mut stream,
        &batch_frame(frank.author(), envelopes(&second[1..2])),
    )
    .await?;
    let warning = warned(&mut events, "forked").await?;
    assert!(
        warning.contains("frank") && warning.contains("seq 2"),
        "{warning}"
    );
    // Frozen: the first entry stays, and nothing more is taken, not even from the first branch.
    write(
        &mut stream,
        &batch_frame(frank.author(), envelopes(&first[2..])),
    )
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
async fn a_peer_that_stalls_mid_frame_loses_its_stream_while_others_sync_on() -> anyhow::Result<()>
{
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut events = alice.events();
    let mut slow = Adversary::spawn("slow")?;
    let peer = slow.connect(&address_of(&alice)).await?;
    slow.hello(peer, "slow", vec![]).await?;
    let mut stream = slow.open_push(peer).await?;
    // A frame announced as 256 bytes, of which one arrives.
    write(&mut stream, &[0, 0, 1, 0, 0xa1]).await?;
    still_chatting(&alice, &bob, "while slow stalls").await?;
    let warning = warned_within(&mut events, "stalled", Duration::from_secs(45)).await?;
    assert!(warning.contains(&slow.peer_id.to_string()), "{warning}");
    // A stall is not misbehaviour: the connection stays, and a new stream is read.
    let mut stream = slow.open_push(peer).await?;
    let log = slow.log("slow", &["finally"]);
    write(
        &mut stream,
        &batch_frame(
            slow.author(),
            log.iter().map(|e| e.envelope().to_vec()).collect(),
        ),
    )
    .await?;
    let mut feed = alice.messages();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while alice.heads().get(&slow.author()) != Some(&2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new stream was not read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        texts(&take(&mut feed, alice_history_len(&alice)).await?)
            .contains(&"slow> finally".to_owned())
    );
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_push_streams_keeps_one_reader_and_the_node_responsive() -> anyhow::Result<()> {
    use futures::AsyncReadExt;
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (alice, bob) = honest_pair(&dirs).await?;
    let mut gus = Adversary::spawn("gus")?;
    let peer = gus.connect(&address_of(&alice)).await?;
    gus.hello(peer, "gus", vec![]).await?;
    let mut streams = Vec::new();
    for _ in 0..40 {
        streams.push(gus.open_push(peer).await?);
    }
    // Only the newest is read: the node has closed every older one.
    for (i, stream) in streams.iter_mut().take(39).enumerate() {
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "stream {i} is still open: {closed:?}"
        );
    }
    let newest = streams.last_mut().expect("40 streams");
    let log = gus.log("gus", &["on the newest stream"]);
    write(
        newest,
        &batch_frame(
            gus.author(),
            log.iter().map(|e| e.envelope().to_vec()).collect(),
        ),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while alice.heads().get(&gus.author()) != Some(&2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the newest stream was not read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_chatting(&alice, &bob, "after a stream flood").await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}
