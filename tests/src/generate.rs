//! Data directories holding many logs, written fast and offline: for tests and benchmarks of
//! rooms with many authors, where filling a store through the network or `p2pchat import`
//! (one author per data directory) would take minutes.
//!
//! [`generate`] gives a node its own identity (its log still empty: the node writes its
//! profile when it starts, as on a first run) and a store holding `authors` other logs of
//! `entries` each, every one a valid chain signed by a fresh ed25519 key: a profile at seq 1,
//! then texts. The logs go in through [`Store::insert_remote`], the path a peer's batch takes,
//! so they are validated as if received, and the store is synced once at the end.
//!
//! [`generate_mixed`] writes one log whose lines are spread over channels, with direct
//! messages among them sealed to a real recipient: the store of the `catchup_mixed` benchmark.

use std::path::Path;

use anyhow::{Context, bail};
use p2pchat_protocol::dm::{DmSecret, EncKey, Letter, NONCE_BYTES};
use p2pchat_protocol::{Author, Body, Draft, Entry, Heads, Outgoing, SigningKey};
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
    if entries == 0 {
        bail!("a generated log holds at least its profile entry (entries ≥ 1)");
    }
    let (own, store) = data_dir(dir)?;
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

/// The channels of [`generate_mixed`]'s lines besides `general`: five channels in all.
pub const CHANNELS: [&str; 4] = ["ops", "lunch", "dev", "random"];

/// Writes the data directory `dir` (as [`generate`] does) of a node whose store holds one
/// other author's log of `entries` entries: its profile, its encryption key, then lines of
/// which every tenth is a direct message to `to` (sealed to `to_key`, as that author would
/// write it) and the others go round the five channels (`general` and [`CHANNELS`]). The
/// direct messages' texts, once opened, are generated texts like the others.
pub fn generate_mixed(
    dir: &Path,
    entries: u64,
    to: Author,
    to_key: EncKey,
) -> anyhow::Result<Generated> {
    if entries < 2 {
        bail!("a mixed log holds at least its profile and its encryption key (entries ≥ 2)");
    }
    let (own, store) = data_dir(dir)?;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let secret = DmSecret::derive(&key);
    let from_key = secret.public();
    let pair = secret
        .agree(&to_key)
        .map_err(|e| anyhow::anyhow!("direct messages to {}: {e}", to.fingerprint()))?;
    let mut lines = 0;
    let bodies = (1..=entries).map(|seq| match seq {
        1 => Outgoing::Body(Body::Profile { name: name(0) }),
        2 => Outgoing::Body(Body::EncKey { key: from_key }),
        seq if seq % 10 == 0 => {
            let mut nonce = [0; NONCE_BYTES];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
            Outgoing::Letter(Letter {
                to,
                pair: pair.clone(),
                text: text(0, seq),
                nonce,
            })
        }
        seq => {
            let text = text(0, seq);
            lines += 1;
            Outgoing::Body(match lines % 5 {
                0 => Body::Text { text },
                channel => Body::Post {
                    channel: CHANNELS[channel - 1].to_owned(),
                    text,
                },
            })
        }
    });
    let (author, log) = signed(&key, bodies, now_ms())?;
    let inserted = store.insert_remote(author, log)?;
    if let Some(why) = inserted.rejected {
        bail!("the store refused the generated mixed log: {why}");
    }
    store.sync()?;
    Ok(Generated {
        own,
        heads: Heads::from([(author, entries)]),
    })
}

/// Creates the data directory `dir` (0700) with a new identity, and opens its LAN store.
fn data_dir(dir: &Path) -> anyhow::Result<(Author, Store)> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let own = Author::of(&p2pchat_node::identity::load_or_create(dir)?);
    let store = Store::open(&dir.join("store"), p2pchat_protocol::Room::lan().id())?;
    Ok((own, store))
}

/// The envelopes of a new author's log: the profile of generated author `index`, then texts
/// up to seq `entries`.
fn signed_log(
    index: usize,
    entries: u64,
    timestamp: u64,
) -> anyhow::Result<(Author, Vec<bytes::Bytes>)> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let bodies = (1..=entries).map(|seq| {
        Outgoing::Body(if seq == 1 {
            Body::Profile { name: name(index) }
        } else {
            Body::Text {
                text: text(index, seq),
            }
        })
    });
    signed(&key, bodies, timestamp)
}

/// The envelopes of `key`'s log in the LAN room, one entry per body from seq 1 (a letter
/// sealed at its seq).
fn signed(
    key: &SigningKey,
    bodies: impl Iterator<Item = Outgoing>,
    timestamp: u64,
) -> anyhow::Result<(Author, Vec<bytes::Bytes>)> {
    let (room, author) = (p2pchat_protocol::Room::lan().id(), Author::of(key));
    let mut log = Vec::new();
    let mut prev = None;
    for (seq, body) in (1..).zip(bodies) {
        let draft = Draft {
            room,
            seq,
            prev,
            timestamp,
            clock: seq,
            body: body.into_body(&room, &author, seq)?,
        };
        let entry = Entry::sign(key, draft)?;
        prev = Some(entry.hash());
        log.push(entry.envelope().clone());
    }
    Ok((author, log))
}

/// Now, in milliseconds since the Unix epoch (the entries' timestamp).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
