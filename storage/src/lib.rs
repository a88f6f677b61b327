//! The fjall-backed store of append-only logs.
//!
//! One [`Store`] per data directory holds every log the node knows. Keyspaces:
//!
//! | keyspace  | key                              | value                          |
//! |-----------|----------------------------------|--------------------------------|
//! | `entries` | author (32) ‖ seq (u64 BE)       | envelope bytes                 |
//! | `heads`   | author (32)                      | last seq (u64 BE)              |
//! | `names`   | author (32)                      | latest profile name (UTF-8)    |
//! | `forks`   | author (32) ‖ seq (u64 BE)       | the second, conflicting entry  |
//! | `pins`    | name (UTF-8)                     | author (32) first seen with it |
//!
//! Every write is one atomic batch: entries and their log's head move together. Heads, names
//! and pins are cached in memory, so start-up reads a few rows per author, never the logs
//! themselves. The merged history is read by merging the logs ([`history`]), not from an index.
//! A log on disk whose author's key cannot sign (written before keys were checked) is ignored
//! from open on ([`Store::refused_logs`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use p2pchat_protocol::limits::LAMPORT_FOLLOW_LIMIT;
use p2pchat_protocol::validate::{check_known, check_link, newest_vouches_for_run};
use p2pchat_protocol::wire::HeadInfo;
use p2pchat_protocol::{
    Author, Body, DecodeError, Draft, Entry, Heads, KeyError, SigningKey, ValidationError,
};

mod history;
pub use history::{HistoryKey, HistoryPos};

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has this data directory open.
    #[error("the data directory {} is in use by another p2pchat process", path.display())]
    InUse {
        /// The data directory.
        path: PathBuf,
    },
    /// The store could not be opened (a read-only disk, a file where its directory should be).
    #[error("cannot open the store in {}: {}", path.display(), in_words(source))]
    Open {
        /// The store's directory.
        path: PathBuf,
        /// What the storage engine said.
        source: fjall::Error,
    },
    /// The storage engine failed (disk full, I/O error, …). Writes stop after one.
    #[error("storage failed: {}", in_words(.0))]
    Engine(#[from] fjall::Error),
    /// Bytes on disk are not what this version wrote.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// An own entry could not be made (for example, text over the size limit).
    #[error(transparent)]
    Invalid(#[from] DecodeError),
}

/// A storage engine error as a person reads it: the operating system's words for an I/O error
/// (fjall's own text is its `Debug` form), else fjall's text.
fn in_words(error: &fjall::Error) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.to_string();
        }
        cause = e.source();
    }
    error.to_string()
}

/// The result of offering a batch of remote entries to [`Store::insert_remote`].
#[derive(Debug, Default)]
pub struct Inserted {
    /// Entries newly stored, oldest first.
    pub stored: Vec<Entry>,
    /// Entries skipped because the store already held them.
    pub duplicates: usize,
    /// The highest seq of the batch that the store now holds (stored or duplicate); 0 if none.
    pub held_through: u64,
    /// Why the batch stopped early, if it did; everything before it was stored.
    pub rejected: Option<ValidationError>,
}

/// A log found on disk whose author's key cannot sign (docs/protocol.md, section 3): written
/// by a version that did not check keys, or by hand. It is ignored: not shown, announced,
/// served or relayed, and no entry of it is accepted again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedLog {
    /// The log's author.
    pub author: Author,
    /// How many entries the store holds of it (its head seq).
    pub entries: u64,
    /// Why the key cannot sign.
    pub reason: KeyError,
}

#[derive(Default)]
struct Cache {
    heads: Heads,
    refused: BTreeMap<Author, RefusedLog>,
    max_lamport: u64,
    frozen: BTreeSet<Author>,
    names: BTreeMap<Author, String>,
    pins: BTreeMap<String, Author>,
}

/// The outcome of [`Store::pin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// The name was free and is now pinned to the author.
    New,
    /// The name was already pinned to this author.
    Same,
    /// The name is pinned to another author, who keeps it.
    Conflict(Author),
}

/// Pins that a write batch is about to add (so a batch with two claims pins the first).
type NewPins = BTreeMap<String, Author>;

/// A data directory's logs. Cheap to share behind an `Arc`; reads run concurrently, writes one
/// at a time.
pub struct Store {
    db: Database,
    entries: Keyspace,
    heads: Keyspace,
    names: Keyspace,
    forks: Keyspace,
    pins: Keyspace,
    cache: RwLock<Cache>,
    writer: Mutex<()>,
}

/// Block cache size. Reads are mostly sequential (ranges), so a small cache serves.
const CACHE_BYTES: u64 = 4 << 20;
/// Journal kept on disk before memtables are flushed: what a start-up after a crash replays.
const JOURNAL_BYTES: u64 = 64 << 20;
/// Memory one keyspace's memtable may hold before it is flushed.
const MEMTABLE_BYTES: u64 = 8 << 20;

fn entry_key(author: &Author, seq: u64) -> [u8; 40] {
    let mut key = [0; 40];
    key[..32].copy_from_slice(author.as_bytes());
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn author_from(bytes: &[u8]) -> Result<Author, StoreError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("bad author key".into()))?;
    Ok(Author::from_bytes(bytes))
}

fn u64_from(bytes: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("bad integer".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the store half-written (batches are atomic).
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Fails with [`StoreError::InUse`] if
    /// another process has it open.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_engine(dir).map_err(|e| match e {
            StoreError::Engine(source) => StoreError::Open {
                path: dir.to_owned(),
                source,
            },
            e => e,
        })
    }

    fn open_engine(dir: &Path) -> Result<Self, StoreError> {
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES)
            // Uncompressed, a journal replays at start-up in half the time per megabyte, and
            // received batches are written without compressing them first.
            .journal_compression(fjall::CompressionType::None)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => StoreError::InUse {
                    path: dir.to_owned(),
                },
                e => StoreError::Engine(e),
            })?;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        if db.keyspace_exists("order") {
            // Stores written before the history was merged on read kept an index: drop it.
            db.delete_keyspace(db.keyspace("order", options)?)?;
        }
        let keyspace = |name: &str| db.keyspace(name, options);
        let store = Self {
            entries: keyspace("entries")?,
            heads: keyspace("heads")?,
            names: keyspace("names")?,
            forks: keyspace("forks")?,
            pins: keyspace("pins")?,
            db,
            cache: RwLock::default(),
            writer: Mutex::new(()),
        };
        store.load_cache()?;
        Ok(store)
    }

    fn load_cache(&self) -> Result<(), StoreError> {
        let mut cache = Cache::default();
        for row in self.heads.iter() {
            let (author, seq) = row.into_inner()?;
            let (author, entries) = (author_from(&author)?, u64_from(&seq)?);
            match author.check_key() {
                Ok(_) => {
                    cache.heads.insert(author, entries);
                }
                Err(reason) => {
                    let log = RefusedLog {
                        author,
                        entries,
                        reason,
                    };
                    cache.refused.insert(author, log);
                }
            }
        }
        // A log's clocks grow with its seq: the largest clock is on one of the heads.
        for (author, seq) in &cache.heads {
            let head = self.head_entry(author, *seq)?;
            cache.max_lamport = cache.max_lamport.max(head.lamport());
        }
        for row in self.forks.iter() {
            let key = row.key()?;
            let author = author_from(key.get(..32).unwrap_or_default())?;
            if !cache.refused.contains_key(&author) {
                cache.frozen.insert(author);
            }
        }
        for row in self.names.iter() {
            let (author, name) = row.into_inner()?;
            let author = author_from(&author)?;
            if !cache.refused.contains_key(&author) {
                let name = String::from_utf8_lossy(&name).into_owned();
                cache.names.insert(author, name);
            }
        }
        // A name pinned to a refused key is free again.
        for row in self.pins.iter() {
            let (name, author) = row.into_inner()?;
            let author = author_from(&author)?;
            if !cache.refused.contains_key(&author) {
                let name = String::from_utf8_lossy(&name).into_owned();
                cache.pins.insert(name, author);
            }
        }
        *self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cache;
        Ok(())
    }

    fn cache(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update_cache(&self, author: Author, stored: &[Entry], frozen: bool, new_pins: NewPins) {
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for entry in stored {
            if let Body::Profile { name } = entry.body() {
                cache.names.insert(author, name.clone());
            }
        }
        cache.pins.extend(new_pins);
        if let Some(last) = stored.last() {
            cache.heads.insert(author, last.seq());
        }
        let max = stored.iter().map(Entry::lamport).max().unwrap_or(0);
        cache.max_lamport = cache.max_lamport.max(max);
        if frozen {
            cache.frozen.insert(author);
        }
    }

    /// For each author, the highest seq stored.
    pub fn heads(&self) -> Heads {
        self.cache().heads.clone()
    }

    /// The highest seq stored for `author` (0 when none).
    pub fn head_seq(&self, author: &Author) -> u64 {
        self.cache().heads.get(author).copied().unwrap_or(0)
    }

    /// The largest lamport clock of any stored entry.
    pub fn max_lamport(&self) -> u64 {
        self.cache().max_lamport
    }

    /// Logs on disk whose author's key cannot sign, found at open; they are ignored.
    pub fn refused_logs(&self) -> Vec<RefusedLog> {
        self.cache().refused.values().copied().collect()
    }

    fn is_refused(&self, author: &Author) -> bool {
        self.cache().refused.contains_key(author)
    }

    /// Whether `author` forked and is no longer accepted.
    pub fn is_frozen(&self, author: &Author) -> bool {
        self.cache().frozen.contains(author)
    }

    /// Heads with the hash of each log's last entry, as announced in a hello.
    pub fn head_infos(&self) -> Result<Vec<HeadInfo>, StoreError> {
        self.heads()
            .into_iter()
            .map(|(author, seq)| {
                let entry = self.head_entry(&author, seq)?;
                Ok(HeadInfo {
                    author,
                    seq,
                    hash: entry.hash(),
                })
            })
            .collect()
    }

    /// The entry at `author`'s head `seq`, which must be stored.
    fn head_entry(&self, author: &Author, seq: u64) -> Result<Entry, StoreError> {
        self.get(author, seq)?
            .ok_or_else(|| StoreError::Corrupt(format!("head {seq} of {author:?} is missing")))
    }

    /// The entry at `seq` of `author`'s log.
    pub fn get(&self, author: &Author, seq: u64) -> Result<Option<Entry>, StoreError> {
        if self.is_refused(author) {
            return Ok(None);
        }
        self.entries
            .get(entry_key(author, seq))?
            .map(|bytes| decode_stored(Bytes::copy_from_slice(&bytes)))
            .transpose()
    }

    /// Entries `from, from + 1, …` of `author`'s log: at most `max_entries`, and stopping
    /// before their envelopes pass `max_bytes` in total (at least one is returned if any exists).
    pub fn range(
        &self,
        author: &Author,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.range_envelopes(author, from, max_entries, max_bytes)?
            .into_iter()
            .map(|(_, envelope)| decode_stored(envelope))
            .collect()
    }

    /// The author's current name: the one in their latest profile entry.
    pub fn name(&self, author: &Author) -> Option<String> {
        self.cache().names.get(author).cloned()
    }

    /// Every author whose current name is `name`.
    pub fn authors_named(&self, name: &str) -> Vec<Author> {
        self.cache()
            .names
            .iter()
            .filter(|(_, n)| *n == name)
            .map(|(author, _)| *author)
            .collect()
    }

    /// The author a name is pinned to: the first key seen claiming it (trust on first use).
    pub fn pinned(&self, name: &str) -> Option<Author> {
        self.cache().pins.get(name).copied()
    }

    /// Pins `name` to `author` unless it is pinned already.
    pub fn pin(&self, name: &str, author: Author) -> Result<Pin, StoreError> {
        let _writing = lock(&self.writer);
        if let Some(owner) = self.pinned(name) {
            return Ok(if owner == author {
                Pin::Same
            } else {
                Pin::Conflict(owner)
            });
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(
            &self.pins,
            name.as_bytes().to_vec(),
            author.as_bytes().to_vec(),
        );
        batch.commit()?;
        self.update_cache(
            author,
            &[],
            false,
            NewPins::from([(name.to_owned(), author)]),
        );
        Ok(Pin::New)
    }

    /// Signs `body` as the next entry of `key`'s own log and stores it durably (fsynced)
    /// before returning it.
    pub fn append_own(
        &self,
        key: &SigningKey,
        body: Body,
        timestamp: u64,
    ) -> Result<Entry, StoreError> {
        let mut entries = self.append_own_many(key, [body], timestamp)?;
        entries
            .pop()
            .ok_or_else(|| StoreError::Corrupt("append stored nothing".into()))
    }

    /// Signs `bodies` as the next entries of `key`'s own log and stores them all in one atomic,
    /// fsynced batch (group commit): one disk sync however many entries. A body that breaks a
    /// limit fails the whole call and nothing is stored.
    pub fn append_own_many(
        &self,
        key: &SigningKey,
        bodies: impl IntoIterator<Item = Body>,
        timestamp: u64,
    ) -> Result<Vec<Entry>, StoreError> {
        let _writing = lock(&self.writer);
        let author = Author::of(key);
        let seq = self.head_seq(&author);
        let mut last = match seq {
            0 => None,
            seq => Some(self.head_entry(&author, seq)?),
        };
        let seen = self.max_lamport().min(LAMPORT_FOLLOW_LIMIT);
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut new_pins = NewPins::new();
        let mut entries = Vec::new();
        for body in bodies {
            let lamport = last.as_ref().map_or(0, Entry::lamport).max(seen) + 1;
            let seq = last.as_ref().map_or(0, Entry::seq) + 1;
            let draft = Draft {
                seq,
                prev: last.as_ref().map(Entry::hash),
                timestamp,
                lamport,
                body,
            };
            let entry = Entry::sign(key, draft)?;
            self.put(&mut batch, &entry, &mut new_pins);
            last = Some(entry.clone());
            entries.push(entry);
        }
        let Some(last) = last.filter(|_| !entries.is_empty()) else {
            return Ok(entries);
        };
        batch.insert(
            &self.heads,
            author.as_bytes().to_vec(),
            last.seq().to_be_bytes().to_vec(),
        );
        batch.commit()?;
        self.update_cache(author, &entries, false, new_pins);
        Ok(entries)
    }

    /// Adds `entry` to `batch`: the entry, and for a profile the author's name
    /// (and a pin, if the name is still free).
    fn put(&self, batch: &mut fjall::OwnedWriteBatch, entry: &Entry, new_pins: &mut NewPins) {
        let key = entry_key(&entry.author(), entry.seq());
        batch.insert(&self.entries, &key[..], &entry.envelope()[..]);
        if let Body::Profile { name } = entry.body() {
            batch.insert(
                &self.names,
                entry.author().as_bytes().to_vec(),
                name.as_bytes().to_vec(),
            );
            if self.pinned(name).is_none() && !new_pins.contains_key(name) {
                batch.insert(
                    &self.pins,
                    name.as_bytes().to_vec(),
                    entry.author().as_bytes().to_vec(),
                );
                new_pins.insert(name.clone(), entry.author());
            }
        }
    }

    /// Validates consecutive entries of `author`'s log received from a peer, and stores the
    /// valid prefix as one atomic batch. Entries already held are skipped; a different valid
    /// entry at a held seq is a fork: it is kept as proof and the author is frozen. The new
    /// entries are checked link by link and their signatures through the newest one (see
    /// [`newest_vouches_for_run`]).
    ///
    /// The batch is written to the operating system, so it survives a crash of this process
    /// and is visible at once, but not yet synced to disk: call [`Store::sync`] before
    /// counting it durable. (Received entries can be fetched again; own ones are synced before
    /// [`Store::append_own_many`] returns.)
    pub fn insert_remote(
        &self,
        author: Author,
        envelopes: impl IntoIterator<Item = Bytes>,
    ) -> Result<Inserted, StoreError> {
        let _writing = lock(&self.writer);
        let mut result = Inserted::default();
        if self.is_frozen(&author) {
            result.rejected = Some(ValidationError::AuthorFrozen);
            return Ok(result);
        }
        let head = self.head_seq(&author);
        let mut last = if head == 0 {
            None
        } else {
            self.get(&author, head)?
        };
        let mut fork = None;
        let mut run: Vec<Entry> = Vec::new();
        for envelope in envelopes {
            let entry = match Entry::decode(envelope) {
                Ok(entry) => entry,
                Err(e) => {
                    result.rejected = Some(e.into());
                    break;
                }
            };
            let last_seq = last.as_ref().map_or(0, Entry::seq);
            if entry.seq() != 0 && entry.seq() <= last_seq && entry.author() == author {
                if !run.is_empty() {
                    // An old entry after new ones: the run is over; stop here.
                    result.rejected = Some(ValidationError::Gap {
                        expected: last_seq + 1,
                        found: entry.seq(),
                    });
                    break;
                }
                let known = self
                    .get(&author, entry.seq())?
                    .ok_or_else(|| StoreError::Corrupt(format!("entry {} missing", entry.seq())))?;
                match check_known(&known, &entry) {
                    Ok(()) => {
                        result.duplicates += 1;
                        result.held_through = result.held_through.max(entry.seq());
                        continue;
                    }
                    Err(e) => {
                        if matches!(e, ValidationError::Fork { .. }) {
                            fork = Some(entry);
                        }
                        result.rejected = Some(e);
                        break;
                    }
                }
            }
            if let Err(e) = check_link(author, last.as_ref(), &entry) {
                result.rejected = Some(e);
                break;
            }
            last = Some(entry.clone());
            run.push(entry);
        }
        let (valid, bad_signature) = newest_vouches_for_run(&run);
        run.truncate(valid);
        if bad_signature.is_some() {
            result.rejected = bad_signature;
        }

        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        let mut new_pins = NewPins::new();
        for entry in &run {
            self.put(&mut batch, entry, &mut new_pins);
        }
        if let Some(newest) = run.last() {
            result.held_through = newest.seq();
            batch.insert(
                &self.heads,
                author.as_bytes().to_vec(),
                newest.seq().to_be_bytes().to_vec(),
            );
        }
        if let Some(fork) = &fork {
            batch.insert(
                &self.forks,
                entry_key(&author, fork.seq()).to_vec(),
                fork.envelope().to_vec(),
            );
        }
        batch.commit()?;
        self.update_cache(author, &run, fork.is_some(), new_pins);
        result.stored = run;
        Ok(result)
    }

    /// Syncs everything written so far to disk (one `fdatasync` of the journal).
    pub fn sync(&self) -> Result<(), StoreError> {
        Ok(self.db.persist(PersistMode::SyncData)?)
    }

    /// Like [`Store::range`], but the raw envelopes, unchecked: for sending on, where the
    /// receiver validates anyway.
    pub fn range_envelopes(
        &self,
        author: &Author,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        let mut out = Vec::new();
        if self.is_refused(author) {
            return Ok(out);
        }
        let mut bytes = 0;
        let rows = self
            .entries
            .range(entry_key(author, from)..=entry_key(author, u64::MAX));
        for row in rows.take(max_entries) {
            let (key, value) = row.into_inner()?;
            bytes += value.len();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push((
                u64_from(key.get(32..40).unwrap_or_default())?,
                Bytes::copy_from_slice(&value),
            ));
        }
        Ok(out)
    }
}

fn decode_stored(bytes: Bytes) -> Result<Entry, StoreError> {
    Entry::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests;
