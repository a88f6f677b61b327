//! Data directories holding many logs, written fast and offline: for tests and benchmarks of
//! rooms with many authors, where filling a store through the network or `p2pchat import`
//! (one author per data directory) would take minutes.
//!
//! [`generate`] gives a node its own identity (its log still empty: the node writes its
//! profile when it starts, as on a first run) and a store holding `authors` other logs of
//! `entries` each, every one a valid chain signed by a fresh ed25519 key: a profile at seq 1,
//! then texts. The logs go in through [`Store::insert_remote`], the path a peer's batch takes,
//! so they are validated as if received, and the store is synced once at the end.

use std::path::Path;

use anyhow::{Context, bail};
use p2pchat_protocol::{Author, Body, Draft, Entry, Heads, SigningKey};
use p2pchat_storage::Store;

/// What [`generate`] wrote.
#[derive(Debug)]
pub struct Generated {
    /// The data directory's own author (its log is empty until the node starts).
    pub own: Author,
    /// Each generated log's head: every author holds `entries` entries.
    pub heads: Heads,
}

impl Generated {
    /// Entries in the generated logs, all authors together.
    pub fn entries(&self) -> u64 {
        self.heads.values().sum()
    }
}

/// How every generated text starts.
pub const TEXT_PREFIX: &str = "generated author ";

/// The text of entry `seq` (from 2) of the generated author `index`, about sixty bytes.
pub fn text(index: usize, seq: u64) -> String {
    format!("{TEXT_PREFIX}{index:06} says line {seq:07}, about sixty bytes.")
}

/// The name in the profile of the generated author `index`.
pub fn name(index: usize) -> String {
    format!("gen{index:06}")
}

/// Writes the data directory `dir` (created 0700 if missing) of a node whose store holds
/// `authors` logs of `entries` entries each (at least 1: the profile; then texts), and whose
/// identity file is new. Signing runs on every core; the store is synced once.
pub fn generate(dir: &Path, authors: usize, entries: u64) -> anyhow::Result<Generated> {
    use std::os::unix::fs::DirBuilderExt;
    if entries == 0 {
        bail!("a generated log holds at least its profile entry (entries ≥ 1)");
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let own = Author::of(&p2pchat_node::identity::load_or_create(dir)?);
    let store = Store::open(&dir.join("store"), p2pchat_protocol::Room::lan().id())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let timestamp = now_ms();
    let heads = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let store = &store;
                scope.spawn(move || -> anyhow::Result<Heads> {
                    let mut heads = Heads::new();
                    for index in (worker..authors).step_by(threads) {
                        let (author, log) = signed_log(index, entries, timestamp)?;
                        let inserted = store.insert_remote(author, log)?;
                        if let Some(why) = inserted.rejected {
                            bail!("the store refused generated log {index}: {why}");
                        }
                        heads.insert(author, entries);
                    }
                    Ok(heads)
                })
            })
            .collect();
        let mut heads = Heads::new();
        for worker in workers {
            let part = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
            heads.extend(part);
        }
        anyhow::Ok(heads)
    })?;
    store.sync()?;
    Ok(Generated { own, heads })
}

/// The envelopes of a new author's log: the profile of generated author `index`, then texts
/// up to seq `entries`.
fn signed_log(
    index: usize,
    entries: u64,
    timestamp: u64,
) -> anyhow::Result<(Author, Vec<bytes::Bytes>)> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut log = Vec::with_capacity(entries as usize);
    let mut prev = None;
    for seq in 1..=entries {
        let body = if seq == 1 {
            Body::Profile { name: name(index) }
        } else {
            Body::Text {
                text: text(index, seq),
            }
        };
        let draft = Draft {
            room: p2pchat_protocol::Room::lan().id(),
            seq,
            prev,
            timestamp,
            clock: seq,
            body,
        };
        let entry = Entry::sign(&key, draft)?;
        prev = Some(entry.hash());
        log.push(entry.envelope().clone());
    }
    Ok((Author::of(&key), log))
}

/// Now, in milliseconds since the Unix epoch (the entries' timestamp).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
