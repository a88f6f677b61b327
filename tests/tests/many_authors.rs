//! Rooms with many authors: a node holding 5,000 logs (generated offline, `generate.rs`) is
//! synced by a fresh peer over real swarms on 127.0.0.1 (mDNS off), and the two stay
//! connected. Before wire v2 a hello carried every head and was refused beyond 4,096, so such
//! a node was refused by every peer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use p2pchat_node::{Event, Node};
use p2pchat_tests::generate::{self, generate};
use p2pchat_tests::{address_of, start_node, verify_store};
use tokio::sync::broadcast::error::RecvError;

/// Logs the first node holds: more than the 4,096 heads a v1 hello could carry.
const AUTHORS: usize = 5_000;
/// Entries of each generated log: its profile and three texts.
const ENTRIES: u64 = 4;
/// How long the catch-up may take (a debug build on a shared machine).
const SYNC_LIMIT: Duration = Duration::from_secs(120);
/// How long the two must then stay connected without a word of trouble.
const QUIET: Duration = Duration::from_secs(4);

#[test]
fn a_generated_store_holds_valid_chains_and_starts_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let generated = generate(dir.path(), 3, 5)?;
    assert_eq!(generated.entries(), 15);
    let verified = verify_store(dir.path())?;
    assert_eq!(verified.heads, generated.heads, "the own log is empty");
    assert_eq!(verified.texts.len(), 3 * 4);
    assert!(verified.forked.is_empty());
    assert!(
        verified
            .texts
            .iter()
            .any(|(_, text)| *text == generate::text(2, 5))
    );
    // The node starts on it as on a first run: its profile and encryption key first, no
    // warning.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let node = start_node("alice", dir.path(), &[]).await?;
        let mut events = node.events();
        let own = node.author();
        ensure!(own == generated.own);
        ensure!(node.heads().get(&own) == Some(&2), "{:?}", node.heads());
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(event) = events.try_recv() {
            ensure!(
                !matches!(event, Event::Warning { .. } | Event::Error { .. }),
                "{event:?}"
            );
        }
        node.shutdown().await;
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_peer_syncs_five_thousand_logs_and_stays_connected() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (a_dir, b_dir) = (dirs.0.path().to_owned(), dirs.1.path().to_owned());
    let generated =
        tokio::task::spawn_blocking(move || generate(&a_dir, AUTHORS, ENTRIES)).await??;
    let alice = start_node("alice", dirs.0.path(), &[]).await?;
    let alice_trouble = watch_trouble(&alice);
    let bob = start_node("bob", &b_dir, &[address_of(&alice)]).await?;
    let bob_trouble = watch_trouble(&bob);

    let deadline = tokio::time::Instant::now() + SYNC_LIMIT;
    loop {
        let heads = bob.heads();
        let held = generated
            .heads
            .iter()
            .filter(|(author, head)| heads.get(author) >= Some(head))
            .count();
        if held == AUTHORS {
            break;
        }
        if tokio::time::Instant::now() > deadline
            || !bob_trouble.seen().is_empty()
            || !alice_trouble.seen().is_empty()
        {
            anyhow::bail!(
                "bob holds {held} of {AUTHORS} logs in full (limit {SYNC_LIMIT:?}); \
                 trouble at bob: {:?}; at alice: {:?}",
                bob_trouble.seen(),
                alice_trouble.seen()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(QUIET).await;
    ensure!(
        bob_trouble.seen().is_empty() && alice_trouble.seen().is_empty(),
        "trouble at bob: {:?}; at alice: {:?}",
        bob_trouble.seen(),
        alice_trouble.seen()
    );
    ensure!(
        bob.connected_peers()
            .iter()
            .any(|(peer, _)| *peer == alice.peer_id()),
        "bob is no longer connected to alice"
    );
    ensure!(
        alice
            .connected_peers()
            .iter()
            .any(|(peer, _)| *peer == bob.peer_id()),
        "alice is no longer connected to bob"
    );
    bob.shutdown().await;
    alice.shutdown().await;

    // Every entry is stored at bob, as valid chains.
    let verified = tokio::task::spawn_blocking(move || verify_store(&b_dir)).await??;
    for (author, head) in &generated.heads {
        ensure!(
            verified.heads.get(author) == Some(head),
            "bob holds {:?} of {author}'s {head} entries",
            verified.heads.get(author)
        );
    }
    let generated_texts = verified
        .texts
        .iter()
        .filter(|(author, _)| generated.heads.contains_key(author))
        .count() as u64;
    ensure!(generated_texts == AUTHORS as u64 * (ENTRIES - 1));
    Ok(())
}

/// What a node said that an in-sync, connected pair should never say: disconnections,
/// warnings, errors, failed connections (the first [`TROUBLE_KEPT`], and how many in all).
struct Trouble(Arc<Mutex<(Vec<String>, usize)>>);

/// Troubles kept word for word, for the failure message.
const TROUBLE_KEPT: usize = 5;

impl Trouble {
    fn seen(&self) -> Vec<String> {
        let seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (kept, count) = &*seen;
        let mut out = kept.clone();
        if *count > kept.len() {
            out.push(format!("… {} in all", count));
        }
        out
    }
}

/// Follows `node`'s events from its start on a task of their own (so that the catch-up's
/// many progress events never overflow the subscription unread), keeping the troubles.
fn watch_trouble(node: &Node) -> Trouble {
    let mut events = node.events();
    let seen = Arc::new(Mutex::new((Vec::new(), 0)));
    let keep = seen.clone();
    tokio::spawn(async move {
        loop {
            let trouble = match events.recv().await {
                Ok(
                    event @ (Event::Disconnected { .. }
                    | Event::Warning { .. }
                    | Event::Error { .. }
                    | Event::ConnectionFailed { .. }),
                ) => format!("{event:?}"),
                Ok(_) => continue,
                // Unread events were dropped: one of them may have been trouble.
                Err(RecvError::Lagged(missed)) => format!("{missed} events missed unread"),
                Err(RecvError::Closed) => return,
            };
            let mut seen = keep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.1 += 1;
            if seen.0.len() < TROUBLE_KEPT {
                seen.0.push(trouble);
            }
        }
    });
    Trouble(seen)
}
