//! Channels and end-to-end encrypted direct messages with the `p2pchat` binary (issue 14), on
//! 127.0.0.1 with mDNS off: three users in a line alice — carol — bob, where carol relays
//! alice's direct message to bob without being able to read it (not on screen, not in any file
//! of her data directory); bob reads it again after a restart, an impostor `bob` (another key)
//! never does, and alice's next `/msg bob` still goes to the key she first knew; a relay that flips a byte of the ciphertext gets the entry refused by its
//! signature, and nothing garbled is shown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use p2pchat_protocol::limits::{BATCH_BYTE_BUDGET, MAX_BATCH_ENTRIES};
use p2pchat_protocol::message::Lane;
use p2pchat_protocol::{Author, Body, Entry, Room};
use p2pchat_tests::adversary::Adversary;
use p2pchat_tests::{Chat, Scratch, export};

/// How long a node must stay silent to count as having printed nothing more.
const QUIET: Duration = Duration::from_secs(2);

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push((path.clone(), std::fs::read(&path)?));
            }
        }
    }
    Ok(found)
}

/// The files under `dir` whose bytes hold `text`.
fn holding(dir: &Path, text: &str) -> anyhow::Result<Vec<PathBuf>> {
    Ok(files(dir)?
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(text.len()).any(|w| w == text.as_bytes()))
        .map(|(path, _)| path)
        .collect())
}

/// Reads `chat`'s stdout until a line ends with `suffix`, returning it.
async fn line_ending(chat: &mut Chat, suffix: &str) -> anyhow::Result<String> {
    loop {
        let line = chat.next_line().await?;
        if line.ends_with(suffix) {
            return Ok(line);
        }
    }
}

/// Starts `name` (data in `dir`) dialing `peers`, and waits until it listens.
async fn start(name: &str, dir: &str, peers: &[&str]) -> anyhow::Result<(Chat, String)> {
    let mut chat = Chat::start_user(name, dir, peers, &[])?;
    let address = chat.listen_addr().await?;
    Ok((chat, address))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_direct_messages_through_a_relay_that_cannot_read_them() -> anyhow::Result<()>
{
    let scratch = Scratch::new()?;
    let (alice_dir, bob_dir, carol_dir) = (
        scratch.arg("alice"),
        scratch.arg("bob"),
        scratch.arg("carol"),
    );
    let (mut carol, carol_addr) = start("carol", &carol_dir, &[]).await?;
    let (mut alice, _) = start("alice", &alice_dir, &[&carol_addr]).await?;
    let (mut bob, _) = start("bob", &bob_dir, &[&carol_addr]).await?;
    // bob's log (his encryption key first, then this line) reaches alice through carol.
    bob.say("bob here").await?;
    alice.wait_line("bob> bob here").await?;

    alice.say("/join #Ops").await?;
    alice
        .wait_stderr("info> channels: #general, #ops (current)")
        .await?;
    alice.say("bob, deploy at 5").await?;
    alice.wait_line("#ops alice> bob, deploy at 5").await?;
    bob.wait_line("#ops alice> bob, deploy at 5").await?;
    carol.wait_line("#ops alice> bob, deploy at 5").await?;

    let secret = "the vault code is 7414";
    alice.say(&format!("/msg bob {secret}")).await?;
    alice.wait_line(&format!("@bob alice> {secret}")).await?;
    bob.wait_line(&format!("@alice alice> {secret}")).await?;
    // Back in #general; nothing carol printed meanwhile.
    alice.say("/part").await?;
    alice.say("after").await?;
    let before = carol.wait_line("alice> after").await?;
    assert!(
        before.is_empty(),
        "carol relayed the direct message and showed nothing of it: {before:?}"
    );
    bob.wait_line("alice> after").await?;
    // What bob has not seen where it was said: #ops (naming him) and alice's message.
    bob.say("/channels").await?;
    bob.wait_stderr("info> channels: #general (current), #ops (1 unread!), @alice (1 unread)")
        .await?;
    bob.say("/join ops").await?;
    bob.wait_stderr("info> channels: #general, #ops (current), @alice (1 unread)")
        .await?;

    // Nowhere in carol's data, which holds alice's log through "after" (a log is a chain):
    // while the line of #ops, which is not encrypted, is.
    assert!(carol.interrupt().await?, "carol exits cleanly");
    let carol_path = scratch.path("carol");
    assert!(
        !holding(&carol_path, "deploy at 5")?.is_empty(),
        "the check finds plaintext in carol's files"
    );
    assert_eq!(
        holding(&carol_path, secret)?,
        Vec::<PathBuf>::new(),
        "the direct message is readable in carol's files"
    );

    // bob reads it again after a restart.
    assert!(bob.interrupt().await?, "bob exits cleanly");
    let (mut bob, _) = start("bob", &bob_dir, &[]).await?;
    bob.say("/dm alice").await?;
    bob.wait_stderr_containing("goes to alice #").await?;
    bob.say("/history").await?;
    let shown = bob
        .wait_stderr_containing(&format!("@alice alice> {secret}"))
        .await?;
    assert!(shown.starts_with("info> "), "{shown}");
    bob.say("/history").await?;
    let stderr = bob.drain_stderr(QUIET).await;
    assert!(
        !stderr.iter().any(|line| line.contains("deploy at 5")),
        "the history of the conversation with alice holds only it: {stderr:?}"
    );

    // An impostor called bob, with another key, gets alice's log through carol but cannot
    // read the message.
    let (mut carol, carol_addr) = start("carol", &carol_dir, &[]).await?;
    let (mut impostor, _) = start("bob", &scratch.arg("impostor"), &[&carol_addr]).await?;
    let seen = impostor.wait_line("alice> after").await?;
    assert!(
        !seen
            .iter()
            .any(|line| line.contains(secret) || line.starts_with('@')),
        "the impostor read it: {seen:?}"
    );
    assert_eq!(
        seen.len(),
        2,
        "the line of bob, and alice's of #ops: {seen:?}"
    );
    assert!(seen[0].ends_with("> bob here"), "{seen:?}");
    assert_eq!(seen[1], "#ops alice> bob, deploy at 5");
    impostor.say("/dm alice").await?;
    impostor.say("/history").await?;
    impostor
        .wait_stderr("info> no messages in @alice yet")
        .await?;
    assert!(alice.interrupt().await?, "alice exits cleanly");
    let (mut alice, _) = start("alice", &alice_dir, &[&carol_addr]).await?;
    alice.wait_stderr_containing("connected to carol").await?;
    carol.wait_stderr_containing("connected to alice").await?;
    impostor.say("/part").await?;
    impostor.say("impostor here").await?;
    line_ending(&mut alice, "> impostor here").await?;
    // bob is pinned, for alice, to the key she first saw claim it: the real bob's.
    impostor.say("/peers").await?;
    let own = impostor.wait_stderr_containing(" you, ").await?;
    let impostors = own
        .split_whitespace()
        .find(|word| word.starts_with('#'))
        .expect("a fingerprint")
        .to_owned();
    alice.say("/msg bob are you there?").await?;
    let sent = line_ending(&mut alice, " alice> are you there?").await?;
    assert!(
        sent.starts_with("@bob") && !sent.starts_with(&format!("@bob{impostors}")),
        "to the real bob, not the impostor ({impostors}): {sent}"
    );
    alice.say("sentinel").await?;
    let seen = impostor.wait_line("alice> sentinel").await?;
    assert!(
        !seen.iter().any(|line| line.contains("are you there")),
        "the impostor read it: {seen:?}"
    );
    alice.say("/join #No Way").await?;
    alice
        .wait_stderr("info> error: #No Way cannot be a channel")
        .await?;
    alice.say("/msg nobody hi").await?;
    alice
        .wait_stderr_containing("not sent: nobody called nobody")
        .await?;
    assert!(alice.interrupt().await?, "alice exits cleanly");

    // alice's export shows her own direct message decrypted, marked as on screen, and one
    // channel alone with --channel.
    // (Two keys now claim bob: alice's view may tell them apart as bob#fingerprint.)
    let to_bob =
        |line: &String| line.starts_with("@bob") && line.ends_with(&format!(" alice> {secret}"));
    let all = export("alice", &scratch.path("alice"), &[])?;
    assert_eq!(
        all.iter().filter(|line| to_bob(line)).count(),
        1,
        "{all:#?}"
    );
    assert!(
        all.contains(&"#ops alice> bob, deploy at 5".to_owned()),
        "{all:#?}"
    );
    assert!(all.contains(&"alice> after".to_owned()), "{all:#?}");
    assert_eq!(
        export("alice", &scratch.path("alice"), &["--channel", "#ops"])?,
        ["#ops alice> bob, deploy at 5"]
    );
    let direct = export("alice", &scratch.path("alice"), &["--dm", "bob"])?;
    assert!(
        direct.len() == 2
            && to_bob(&direct[0])
            && direct[1].ends_with(" alice> are you there?")
            && direct
                .iter()
                .all(|line| !line.starts_with(&format!("@bob{impostors}"))),
        "only her two direct messages to the real bob: {direct:#?}"
    );
    Ok(())
}

/// `dir`'s log of `author` in the LAN room, as envelopes from seq 1 (the user's chat stopped).
fn stored_log(dir: &Path, author: &Author) -> anyhow::Result<Vec<Vec<u8>>> {
    let room = Room::lan().id();
    let store = p2pchat_storage::Store::open(&p2pchat_storage::locate(dir, &room)?.dir, room)?;
    let head = store.heads().get(author).copied().unwrap_or(0);
    let mut log = Vec::new();
    while (log.len() as u64) < head {
        let rows = store.range_envelopes(
            author,
            log.len() as u64 + 1,
            MAX_BATCH_ENTRIES,
            BATCH_BYTE_BUDGET,
        )?;
        anyhow::ensure!(!rows.is_empty(), "{author}'s log ends early");
        log.extend(rows.into_iter().map(|(_, envelope)| envelope.to_vec()));
    }
    Ok(log)
}

/// The key of the user whose log in `dir` starts with a profile named `name`.
fn author_named(dir: &Path, name: &str) -> anyhow::Result<Author> {
    let room = Room::lan().id();
    let store = p2pchat_storage::Store::open(&p2pchat_storage::locate(dir, &room)?.dir, room)?;
    for author in store.heads().keys() {
        let first = store.range_envelopes(author, 1, 1, BATCH_BYTE_BUDGET)?;
        if let Some((_, envelope)) = first.first()
            && let Body::Profile { name: named } = Entry::decode(envelope.clone())?.body()
            && named == name
        {
            return Ok(*author);
        }
    }
    anyhow::bail!("no log of {name} in {}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_tampered_with_by_a_relay_is_refused_and_never_shown() -> anyhow::Result<()>
{
    let scratch = Scratch::new()?;
    let (alice_dir, bob_dir) = (scratch.arg("alice"), scratch.arg("bob"));
    // alice learns bob's encryption key, then writes to him while he is away.
    let (mut bob, bob_addr) = start("bob", &bob_dir, &[]).await?;
    let (mut alice, _) = start("alice", &alice_dir, &[&bob_addr]).await?;
    bob.say("bob here").await?;
    alice.wait_line("bob> bob here").await?;
    alice.say("alice here").await?;
    bob.wait_line("alice> alice here").await?;
    assert!(bob.interrupt().await?, "bob exits cleanly");
    let secret = "meet at the north gate";
    alice.say(&format!("/msg bob {secret}")).await?;
    alice.wait_line(&format!("@bob alice> {secret}")).await?;
    assert!(alice.interrupt().await?, "alice exits cleanly");

    let alice_key = author_named(&scratch.path("alice"), "alice")?;
    let log = stored_log(&scratch.path("alice"), &alice_key)?;
    let direct = log.last().expect("alice's log holds her message").clone();
    let Body::Direct(sealed) = Entry::decode(bytes::Bytes::from(direct.clone()))?
        .body()
        .clone()
    else {
        anyhow::bail!("alice's last entry is her direct message");
    };
    let at = direct
        .windows(sealed.ciphertext.len())
        .position(|w| w == sealed.ciphertext.as_slice())
        .expect("the envelope holds the ciphertext");
    let mut tampered = direct.clone();
    tampered[at + sealed.ciphertext.len() / 2] ^= 0x01;

    // A relay hands bob the tampered entry: refused by its signature, nothing shown.
    let (mut bob, bob_addr) = start("bob", &bob_dir, &[]).await?;
    bob.wait_line("alice> alice here").await?; // the stored history
    let mut relay = Adversary::spawn("relay")?;
    relay.connect(&bob_addr.parse()?).await?;
    relay.hello().await?;
    relay
        .send_batch(Lane::Live, alice_key, vec![tampered])
        .await?;
    assert!(
        relay.disconnected_within(p2pchat_tests::DEADLINE).await,
        "the relay is disconnected"
    );
    bob.wait_stderr_containing("invalid signature").await?;
    let shown = bob.lines_until_quiet(QUIET).await?;
    assert!(shown.is_empty(), "bob showed {shown:?}");

    // The same entry untouched, from another relay, is shown: the refusal was the tampering's.
    let mut honest = Adversary::spawn("honest relay")?;
    honest.connect(&bob_addr.parse()?).await?;
    honest.hello().await?;
    honest
        .send_batch(Lane::Live, alice_key, vec![direct])
        .await?;
    bob.wait_line(&format!("@alice alice> {secret}")).await?;
    Ok(())
}
