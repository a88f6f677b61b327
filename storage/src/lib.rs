//! The store of append-only logs, on disk (fjall) or in memory.
//!
//! One [`Store`] per room holds that room's logs ([`locate`] says where each room's store is
//! in a data directory); it takes no entry of another room. [`Store::in_memory`] is the same
//! store with its tables in ordered maps instead of fjall keyspaces: one code path, so the same
//! rules and answers, and no disk. Tables (fjall keyspaces on disk):
//!
//! | table     | key                              | value                          |
//! |-----------|----------------------------------|--------------------------------|
//! | `entries` | author (32) ‖ seq (u64 BE)       | envelope bytes                 |
//! | `heads`   | author (32)                      | last seq (u64 BE)              |
//! | `names`   | author (32)                      | latest profile name (UTF-8)    |
//! | `forks`   | author (32) ‖ seq (u64 BE)       | the second, conflicting entry  |
//! | `pins`    | name (UTF-8)                     | author (32) first seen with it |
//! | `enckeys` | author (32) ‖ seq (u64 BE)       | the X25519 key of an `enckey` entry (32) |
//!
//! Every write is one atomic batch: entries and their log's head move together. Heads, names
//! and pins are cached in memory, so start-up reads a few rows per author, never the logs
//! themselves. The merged history is read by merging the logs (`history.rs`), not from an index.
//! A log on disk whose author's key cannot sign (written before keys were checked) is ignored
//! from open on ([`Store::refused_logs`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::Bytes;
use fjall::{Database, KeyspaceCreateOptions, PersistMode, Slice};
use p2pchat_protocol::clock;
use p2pchat_protocol::message::HeadInfo;
use p2pchat_protocol::store::{Logs, PlanError, plan_insert};
use p2pchat_protocol::{
    Author, Body, DecodeError, Draft, Entry, Heads, KeyError, Outgoing, RoomId, SigningKey,
};

mod history;
mod journal;
mod locate;
mod repair;
mod tables;
pub use history::{HistoryKey, HistoryWalk};
pub use locate::{Located, REGISTRY, find, locate, store_claimed};
pub use p2pchat_protocol::store::Inserted;
pub use repair::{Damage, LogCheck, LogLoss};
use tables::{Table, Tables};

/// What can go wrong with the store. Each says which path, what happened and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has this data directory open.
    #[error(
        "the store {} is in use by another p2pchat process; stop that one first (one process \
         per data directory)",
        path.display()
    )]
    InUse {
        /// The store directory.
        path: PathBuf,
    },
    /// The store cannot be written: the file system is read-only, or permission is denied.
    #[error(
        "cannot write to the store {}: {source}; a failing disk is often remounted read-only \
         (check `dmesg`); `p2pchat export` can still read it, or copy the data directory to a \
         good disk and start p2pchat with --data-dir pointing there",
        path.display()
    )]
    ReadOnly {
        /// The store directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Reading or writing a file failed (disk full, I/O error, …). Writes stop after one.
    #[error("the store {} failed: {what}; {hint}", path.display())]
    Io {
        /// The store directory, or the file in it.
        path: PathBuf,
        /// What happened, in words.
        what: String,
        /// What to do.
        hint: &'static str,
    },
    /// Bytes on disk fail their checksum or are not what p2pchat wrote.
    #[error(
        "the store {} is damaged: {what}; p2pchat repairs it at its next start, keeping every \
         entry that still verifies and fetching the rest from peers (or run `p2pchat doctor \
         --repair`)",
        path.display()
    )]
    Damaged {
        /// The store directory.
        path: PathBuf,
        /// What is wrong, in words.
        what: String,
    },
    /// The room registry of a data directory ([`locate`]) cannot be read or is damaged.
    #[error(
        "the room registry {} {what}; p2pchat does not guess which room the logs in store/ \
         belong to: restore the file from a backup (one line per room: its id in hex, a space, \
         its store directory)",
        path.display()
    )]
    Registry {
        /// The registry file.
        path: PathBuf,
        /// What is wrong, in words.
        what: String,
    },
    /// An own entry could not be made (for example, text over the size limit).
    #[error(transparent)]
    Invalid(#[from] DecodeError),
}

impl StoreError {
    /// Whether this is damage on disk (a checksum error, say): the node keeps serving what it
    /// can read, and the store is repaired at the next start.
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Damaged { .. })
    }

    /// The store error that a fjall error at `path` stands for, in words.
    fn from_engine(path: &Path, e: fjall::Error) -> Self {
        use fjall::Error as F;
        let damaged = |what: &str| StoreError::Damaged {
            path: path.to_owned(),
            what: what.to_owned(),
        };
        match e {
            F::Locked => StoreError::InUse {
                path: path.to_owned(),
            },
            F::Io(e) | F::Storage(fjall::LsmError::Io(e)) => StoreError::from_io(path, e),
            F::JournalRecovery(_) | F::InvalidTrailer | F::InvalidTag(_) | F::Decompress(_) => {
                damaged("its journal is corrupt")
            }
            F::Storage(fjall::LsmError::ChecksumMismatch { .. }) => {
                damaged("a table file failed its checksum")
            }
            F::Storage(_) | F::Unrecoverable => damaged("a table file is unreadable"),
            F::InvalidVersion(_) => StoreError::Io {
                path: path.to_owned(),
                what: "it was written in a storage format this version cannot read".into(),
                hint: "use the p2pchat version that wrote it",
            },
            // fjall's flush or compaction thread failed a write and poisoned the store; what
            // failed is not kept, but a disk with almost nothing left is what it was.
            F::Poisoned => match nearly_full(path) {
                Some(left) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!(
                            "a write failed with {} KiB left: No space left on device",
                            left >> 10
                        ),
                    );
                    StoreError::from_io(path, e)
                }
                None => StoreError::Io {
                    path: path.to_owned(),
                    what: "an earlier write to the disk failed".into(),
                    hint: "check the disk (free space, `dmesg`) and start p2pchat again",
                },
            },
            other => StoreError::Io {
                path: path.to_owned(),
                what: format!("the storage engine failed ({other:?})"),
                hint: "check the disk (free space, `dmesg`) and start p2pchat again",
            },
        }
    }

    /// The store error for an I/O error at `path`.
    pub(crate) fn from_io(path: &Path, e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ReadOnlyFilesystem | K::PermissionDenied => StoreError::ReadOnly {
                path: path.to_owned(),
                source: e,
            },
            K::StorageFull | K::QuotaExceeded => StoreError::Io {
                path: path.to_owned(),
                what: format!("the disk is full ({e})"),
                hint: "free some space and start p2pchat again; nothing written before is lost",
            },
            _ => StoreError::Io {
                path: path.to_owned(),
                what: e.to_string(),
                hint: "check the disk (`dmesg`) and start p2pchat again",
            },
        }
    }
}

/// Space left on a disk below which a failed write in fjall's background is taken for a full
/// disk: less than two memtables' worth, what a flush writes.
const NEARLY_FULL: u64 = 2 * MEMTABLE_BYTES;

/// The bytes an unprivileged writer may still use on the file system holding `path`, if
/// they are fewer than [`NEARLY_FULL`].
fn nearly_full(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize)).filter(|left| *left < NEARLY_FULL)
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
    /// Where the newest stored entry sits in the merged history (its clock is the largest).
    newest: Option<HistoryKey>,
    frozen: BTreeSet<Author>,
    names: BTreeMap<Author, String>,
    /// `names` turned around: the authors whose latest name is each name (so showing a name
    /// with or without a fingerprint costs a lookup, not a pass over every author).
    named: BTreeMap<String, BTreeSet<Author>>,
    pins: BTreeMap<String, Author>,
    /// Bumped on every write that moves a head: the cache's version.
    version: u64,
    /// The logs by the version at which their head last moved (one row per log), so a
    /// follower asks what moved since it last looked instead of going over every head.
    moved: BTreeMap<u64, Author>,
    /// For each log, its row in `moved`.
    moved_at: BTreeMap<Author, u64>,
}

impl Cache {
    /// Records that `author`'s head moved.
    fn head_moved(&mut self, author: Author) {
        self.version += 1;
        if let Some(old) = self.moved_at.insert(author, self.version) {
            self.moved.remove(&old);
        }
        self.moved.insert(self.version, author);
    }

    /// Records `name` as `author`'s latest name.
    fn set_name(&mut self, author: Author, name: String) {
        if let Some(old) = self.names.insert(author, name.clone())
            && let Some(authors) = self.named.get_mut(&old)
        {
            authors.remove(&author);
            if authors.is_empty() {
                self.named.remove(&old);
            }
        }
        self.named.entry(name).or_default().insert(author);
    }
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

/// One room's logs. Cheap to share behind an `Arc`; reads run concurrently, writes one at a
/// time.
pub struct Store {
    /// The store directory; `None` in memory.
    dir: Option<PathBuf>,
    room: RoomId,
    tables: Tables,
    cache: RwLock<Cache>,
    writer: Mutex<()>,
    /// Serialises writes of the heads record.
    record: Mutex<()>,
    /// The heads an own append made durable, not recorded yet ([`Store::record_appended`]).
    unrecorded: Mutex<Option<Heads>>,
    /// What the open found damaged and repaired, if anything.
    damage: Option<Damage>,
    /// Set once damage was found while running (and marked for repair at the next start).
    damaged_while_running: std::sync::atomic::AtomicBool,
}

/// Block cache size. Reads are mostly sequential (ranges), so a small cache serves.
const CACHE_BYTES: u64 = 4 << 20;
/// Journal kept on disk before memtables are flushed: what a start-up after a crash replays.
const JOURNAL_BYTES: u64 = 64 << 20;
/// Journal bytes from which a clean close empties the active journal (after flushing every
/// memtable): replaying it at open costs ~5 ms per MB.
const EMPTY_JOURNAL_AT: u64 = 4 << 20;
/// Memory one keyspace's memtable may hold before it is flushed.
const MEMTABLE_BYTES: u64 = 4 << 20;
/// Memtable bytes (of every keyspace, sealed ones waiting for their flush included) past
/// which a received batch waits for the flushes: what bounds a catch-up's memory.
const WRITE_BUFFER_BYTES: u64 = 4 * MEMTABLE_BYTES;
/// The longest a received batch waits for the flushes (a disk that stopped flushing must not
/// stop the chat; the batch is then written anyway).
const FLUSH_PATIENCE: Duration = Duration::from_secs(2);

fn entry_key(author: &Author, seq: u64) -> [u8; 40] {
    let mut key = [0; 40];
    key[..32].copy_from_slice(author.as_bytes());
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn author_from(bytes: &[u8]) -> Option<Author> {
    Some(Author::from_bytes(bytes.try_into().ok()?))
}

fn u64_from(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the store half-written (batches are atomic).
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// Opens (creating if needed) the store of `room`'s logs in `dir` ([`locate`] says which
    /// directory). Fails with [`StoreError::InUse`] if another process has it open.
    ///
    /// Damage is looked for first (journals, the heads record, a repair mark left by a run
    /// that hit damage): a damaged store is moved aside and rebuilt from every entry that
    /// still verifies, and [`Store::damage`] says what was lost. A healthy store (also after
    /// a crash) opens without a finding.
    pub fn open(dir: &Path, room: RoomId) -> Result<Self, StoreError> {
        repair::open(dir, false, room)
    }

    /// Looks for damage like [`Store::open`], then moves the store in `dir` aside and rebuilds
    /// it from every entry that still verifies, damaged or not (`p2pchat doctor --repair`).
    /// [`Store::damage`] is then always set; [`Damage::is_damage`] says if anything was wrong.
    pub fn repair(dir: &Path, room: RoomId) -> Result<Self, StoreError> {
        repair::open(dir, true, room)
    }

    /// Copies the store in `dir` into `scratch` (a new or empty directory) and opens the copy
    /// there, with `repair` as [`Store::repair`], else as [`Store::open`]. The original is
    /// only read: for a read-only data directory, and for `p2pchat doctor` without `--repair`.
    pub fn open_copy(
        dir: &Path,
        scratch: &Path,
        repair: bool,
        room: RoomId,
    ) -> Result<Self, StoreError> {
        let copy = scratch.join("store");
        repair::copy_dir(dir, &copy).map_err(|e| StoreError::from_io(dir, e))?;
        repair::open(&copy, repair, room)
    }

    /// The room whose logs this store holds.
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// What the open found damaged, lost and repaired; `None` for a healthy store.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// A store of `room`'s logs in memory, with no disk at all: it behaves as one opened from
    /// a directory (same rules, same answers) except that it is empty when made, [`Store::sync`]
    /// has nothing to do, and its logs are gone when it is dropped. For tests and for nodes
    /// that need not remember.
    pub fn in_memory(room: RoomId) -> Self {
        Self::new(None, room, Tables::memory())
    }

    /// The store directory; `None` for a store [in memory](Store::in_memory).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Where the store is, for errors: its directory, or words for memory.
    fn path(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("(in memory)"))
    }

    fn new(dir: Option<PathBuf>, room: RoomId, tables: Tables) -> Self {
        Self {
            dir,
            room,
            tables,
            cache: RwLock::default(),
            writer: Mutex::new(()),
            record: Mutex::new(()),
            unrecorded: Mutex::new(None),
            damage: None,
            damaged_while_running: Default::default(),
        }
    }

    /// Opens fjall in `dir`, without looking for damage; with `load`, reads the caches (which
    /// fails if a head entry is missing).
    fn open_engine(dir: &Path, load: bool, room: RoomId) -> Result<Self, StoreError> {
        let engine = |e| StoreError::from_engine(dir, e);
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES)
            // Uncompressed, a journal replays at start-up in half the time per megabyte, and
            // received batches are written without compressing them first.
            .journal_compression(fjall::CompressionType::None)
            .open()
            .map_err(engine)?;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        if db.keyspace_exists("order") {
            // Stores written before the history was merged on read kept an index: drop it.
            db.delete_keyspace(db.keyspace("order", options).map_err(engine)?)
                .map_err(engine)?;
        }
        let keyspace = |table: Table| db.keyspace(table.name(), options).map_err(engine);
        let keyspaces = [
            keyspace(Table::Entries)?,
            keyspace(Table::Heads)?,
            keyspace(Table::Names)?,
            keyspace(Table::Forks)?,
            keyspace(Table::Pins)?,
            keyspace(Table::EncKeys)?,
        ];
        let store = Self::new(Some(dir.to_owned()), room, Tables::fjall(db, keyspaces));
        if load {
            store.load_cache()?;
        }
        Ok(store)
    }

    /// A table's result as a store result. Damage found while running is marked, so the next
    /// start repairs the store.
    fn engine<T>(&self, result: fjall::Result<T>) -> Result<T, StoreError> {
        result.map_err(|e| {
            let e = StoreError::from_engine(&self.path(), e);
            if let Some(dir) = &self.dir
                && e.is_damage()
                && !self
                    .damaged_while_running
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                repair::mark_for_repair(dir);
            }
            e
        })
    }

    /// A row that is not what p2pchat writes.
    fn bad_row(&self) -> StoreError {
        StoreError::Damaged {
            path: self.path(),
            what: "a row is not what p2pchat writes".into(),
        }
    }

    fn load_cache(&self) -> Result<(), StoreError> {
        let mut cache = Cache::default();
        for row in self.tables.rows(Table::Heads, ..) {
            let (author, seq) = self.engine(row)?;
            let author = author_from(&author).ok_or_else(|| self.bad_row())?;
            let entries = u64_from(&seq).ok_or_else(|| self.bad_row())?;
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
        // A log's clocks grow with its seq: the newest entry is one of the heads.
        for (author, seq) in &cache.heads {
            let head = HistoryKey::of(&self.head_entry(author, *seq)?);
            cache.newest = cache.newest.max(Some(head));
        }
        for row in self.tables.rows(Table::Forks, ..) {
            let (key, _) = self.engine(row)?;
            let author =
                author_from(key.get(..32).unwrap_or_default()).ok_or_else(|| self.bad_row())?;
            if !cache.refused.contains_key(&author) {
                cache.frozen.insert(author);
            }
        }
        for row in self.tables.rows(Table::Names, ..) {
            let (author, name) = self.engine(row)?;
            let author = author_from(&author).ok_or_else(|| self.bad_row())?;
            if !cache.refused.contains_key(&author) {
                let name = String::from_utf8_lossy(&name).into_owned();
                cache.set_name(author, name);
            }
        }
        // A name pinned to a refused key is free again.
        for row in self.tables.rows(Table::Pins, ..) {
            let (name, author) = self.engine(row)?;
            let author = author_from(&author).ok_or_else(|| self.bad_row())?;
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
                cache.set_name(author, name.clone());
            }
        }
        cache.pins.extend(new_pins);
        if let Some(last) = stored.last() {
            cache.heads.insert(author, last.seq());
            cache.head_moved(author);
        }
        // The last entry stored is its log's newest (clocks grow with seq).
        cache.newest = cache.newest.max(stored.last().map(HistoryKey::of));
        if frozen {
            cache.frozen.insert(author);
        }
    }

    /// For each author, the highest seq stored.
    pub fn heads(&self) -> Heads {
        self.cache().heads.clone()
    }

    /// The heads, and the version they are at (see [`Store::heads_moved_since`]).
    pub fn heads_with_version(&self) -> (Heads, u64) {
        let cache = self.cache();
        (cache.heads.clone(), cache.version)
    }

    /// The heads of the logs whose head moved after `version` (0: every log), with the
    /// version to ask from next time. A follower of new entries (the message feed) reads only
    /// these, however many logs the store holds.
    pub fn heads_moved_since(&self, version: u64) -> (Vec<(Author, u64)>, u64) {
        let cache = self.cache();
        let moved = cache
            .moved
            .range(version + 1..)
            .filter_map(|(_, author)| Some((*author, *cache.heads.get(author)?)))
            .collect();
        (moved, cache.version)
    }

    /// The highest seq stored for `author` (0 when none).
    pub fn head_seq(&self, author: &Author) -> u64 {
        self.cache().heads.get(author).copied().unwrap_or(0)
    }

    /// The largest clock of any stored entry.
    pub fn max_clock(&self) -> u64 {
        self.cache().newest.map_or(0, |newest| newest.clock())
    }

    /// Where the newest stored entry sits in the merged history (`None` when the store is
    /// empty): whatever comes before it in [`HistoryKey`] order was stored before it.
    pub fn newest(&self) -> Option<HistoryKey> {
        self.cache().newest
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
        self.get(author, seq)?.ok_or_else(|| StoreError::Damaged {
            path: self.path(),
            what: format!("the newest entry of a log ({author:?}, seq {seq}) is missing"),
        })
    }

    /// The entry at `seq` of `author`'s log.
    pub fn get(&self, author: &Author, seq: u64) -> Result<Option<Entry>, StoreError> {
        if self.is_refused(author) {
            return Ok(None);
        }
        self.engine(self.tables.get(Table::Entries, &entry_key(author, seq)))?
            .map(|bytes| self.decode_stored(Bytes::copy_from_slice(&bytes)))
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
            .map(|(_, envelope)| self.decode_stored(envelope))
            .collect()
    }

    /// The author's current name: the one in their latest profile entry.
    pub fn name(&self, author: &Author) -> Option<String> {
        self.cache().names.get(author).cloned()
    }

    /// Every author whose current name is `name`.
    pub fn authors_named(&self, name: &str) -> Vec<Author> {
        self.cache()
            .named
            .get(name)
            .map(|authors| authors.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether `author` alone claims `name`: no other key is pinned to it, and no other
    /// author's current name is it (one lookup each, nothing copied: a user interface asks
    /// this for every name it shows).
    pub fn alone_named(&self, name: &str, author: &Author) -> bool {
        let cache = self.cache();
        let pinned_elsewhere = cache.pins.get(name).is_some_and(|owner| owner != author);
        let shared = cache
            .named
            .get(name)
            .is_some_and(|authors| authors.iter().any(|other| other != author));
        !pinned_elsewhere && !shared
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
        let mut batch = self.tables.batch(PersistMode::SyncData);
        batch.insert(Table::Pins, name.as_bytes(), author.as_bytes());
        self.engine(batch.commit())?;
        self.update_cache(
            author,
            &[],
            false,
            NewPins::from([(name.to_owned(), author)]),
        );
        Ok(Pin::New)
    }

    /// Signs `body` as the next entry of `key`'s own log in the store's room, written at wall
    /// time `timestamp` (ms since the Unix epoch), and stores it durably (fsynced) before
    /// returning it. Its clock is [`clock::next`] of that time, the log's last clock and the
    /// largest clock stored.
    pub fn append_own(
        &self,
        key: &SigningKey,
        body: Body,
        timestamp: u64,
    ) -> Result<Entry, StoreError> {
        let mut entries = self.append_own_many(key, [body], timestamp)?;
        entries.pop().ok_or_else(|| StoreError::Damaged {
            path: self.path(),
            what: "an append stored nothing".into(),
        })
    }

    /// The encryption key `author` published last in this room (a `["enckey", …]` entry),
    /// if any; kept in a table updated as entries are stored, so it costs one lookup.
    pub fn enc_key(
        &self,
        author: &Author,
    ) -> Result<Option<p2pchat_protocol::dm::EncKey>, StoreError> {
        if self.cache().refused.contains_key(author) {
            return Ok(None);
        }
        let (first, last) = (entry_key(author, 0), entry_key(author, u64::MAX));
        let range = Slice::from(&first[..])..=Slice::from(&last[..]);
        let Some((_, key)) = self.engine(self.tables.last(Table::EncKeys, range))? else {
            return Ok(None);
        };
        let key = <[u8; 32]>::try_from(&key[..]).map_err(|_| self.bad_row())?;
        Ok(Some(p2pchat_protocol::dm::EncKey::from_bytes(key)))
    }

    /// Signs `bodies` as the next entries of `key`'s own log and stores them all in one atomic,
    /// fsynced batch (group commit): one disk sync however many entries. A body that breaks a
    /// limit fails the whole call and nothing is stored. The heads record is not rewritten
    /// here, so that nothing but the sync stands between an own line and its sending: call
    /// [`Store::record_appended`] after (the next [`Store::sync`] and the close record too).
    pub fn append_own_many(
        &self,
        key: &SigningKey,
        bodies: impl IntoIterator<Item = impl Into<Outgoing>>,
        timestamp: u64,
    ) -> Result<Vec<Entry>, StoreError> {
        let _writing = lock(&self.writer);
        let author = Author::of(key);
        let seq = self.head_seq(&author);
        let mut last = match seq {
            0 => None,
            seq => Some(self.head_entry(&author, seq)?),
        };
        let seen = self.max_clock();
        let mut batch = self.tables.batch(PersistMode::SyncData);
        let mut new_pins = NewPins::new();
        let mut entries = Vec::new();
        for body in bodies {
            let last_clock = last.as_ref().map_or(0, Entry::clock);
            let seq = last.as_ref().map_or(0, Entry::seq) + 1;
            let draft = Draft {
                room: self.room,
                seq,
                prev: last.as_ref().map(Entry::hash),
                timestamp,
                clock: clock::next(timestamp, last_clock, seen),
                body: body.into().into_body(&self.room, &author, seq)?,
            };
            let entry = Entry::sign(key, draft)?;
            self.put(&mut batch, &entry, &mut new_pins);
            last = Some(entry.clone());
            entries.push(entry);
        }
        let Some(last) = last.filter(|_| !entries.is_empty()) else {
            return Ok(entries);
        };
        batch.insert(Table::Heads, author.as_bytes(), last.seq().to_be_bytes());
        self.engine(batch.commit())?;
        self.update_cache(author, &entries, false, new_pins);
        // Synced: every head in the cache is on disk now.
        *lock(&self.unrecorded) = Some(self.heads());
        Ok(entries)
    }

    /// Adds `entry` to `batch`: the entry, and for a profile the author's name
    /// (and a pin, if the name is still free).
    fn put(&self, batch: &mut tables::Batch<'_>, entry: &Entry, new_pins: &mut NewPins) {
        let key = entry_key(&entry.author(), entry.seq());
        batch.insert(Table::Entries, key, &entry.envelope()[..]);
        if let Body::EncKey { key: enc_key } = entry.body() {
            batch.insert(Table::EncKeys, key, enc_key.as_bytes());
        }
        if let Body::Profile { name } = entry.body() {
            batch.insert(Table::Names, entry.author().as_bytes(), name.as_bytes());
            if self.pinned(name).is_none() && !new_pins.contains_key(name) {
                batch.insert(Table::Pins, name.as_bytes(), entry.author().as_bytes());
                new_pins.insert(name.clone(), entry.author());
            }
        }
    }

    /// Validates consecutive entries of `author`'s log received from a peer, and stores the
    /// valid prefix as one atomic batch. The rules are [`plan_insert`]'s: entries already held
    /// are skipped; a different valid entry at a held seq is a fork: it is kept as proof and
    /// the author is frozen; the new entries are checked link by link and their signatures
    /// through the newest one.
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
        self.tables
            .wait_for_flushes(WRITE_BUFFER_BYTES, FLUSH_PATIENCE);
        let _writing = lock(&self.writer);
        let plan = plan_insert(self, author, envelopes).map_err(|e| match e {
            PlanError::Read(e) => e,
            PlanError::Missing { seq } => StoreError::Damaged {
                path: self.path(),
                what: format!("entry {seq} of a log ({author:?}) at or below its head is missing"),
            },
        })?;
        let mut batch = self.tables.batch(PersistMode::Buffer);
        let mut new_pins = NewPins::new();
        for entry in plan.run() {
            self.put(&mut batch, entry, &mut new_pins);
        }
        if let Some(newest) = plan.run().last() {
            batch.insert(Table::Heads, author.as_bytes(), newest.seq().to_be_bytes());
        }
        if let Some(fork) = &plan.fork {
            batch.insert(
                Table::Forks,
                entry_key(&author, fork.seq()),
                &fork.envelope()[..],
            );
        }
        self.engine(batch.commit())?;
        self.update_cache(author, plan.run(), plan.fork.is_some(), new_pins);
        Ok(plan.outcome)
    }

    /// Syncs everything written so far to disk (one `fdatasync` of the journal); nothing to
    /// do in memory.
    pub fn sync(&self) -> Result<(), StoreError> {
        // Every head in the cache now was written before the sync below.
        let heads = self.heads();
        self.engine(self.tables.persist(PersistMode::SyncData))?;
        self.write_record(heads)
    }

    /// Records the heads the last own append made durable in the heads record, if they are not
    /// recorded yet. A record that lags behind the disk is safe (it only counts less as lost
    /// after damage); one ahead of it would count entries never written as lost.
    pub fn record_appended(&self) -> Result<(), StoreError> {
        let heads = lock(&self.unrecorded).take();
        heads.map_or(Ok(()), |heads| self.write_record(heads))
    }

    /// Records `heads`, which must be on disk, in the heads record: the next open compares
    /// the store with it to count what damage lost. Nothing to record in memory.
    fn write_record(&self, heads: Heads) -> Result<(), StoreError> {
        let (Some(dir), Some(keyspaces)) = (&self.dir, self.keyspace_ids()) else {
            return Ok(());
        };
        let _writing = lock(&self.record);
        repair::Record {
            keyspaces,
            heads,
            closed: Vec::new(),
        }
        .write(dir)
    }

    /// The ids of the fjall keyspaces the heads record names (`None` in memory).
    fn keyspace_ids(&self) -> Option<repair::KeyspaceIds> {
        let id = |table| self.tables.keyspace(table).map(fjall::Keyspace::id);
        Some(repair::KeyspaceIds {
            entries: id(Table::Entries)?,
            forks: id(Table::Forks)?,
            pins: id(Table::Pins)?,
        })
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
        let rows = self.tables.rows(
            Table::Entries,
            Slice::from(entry_key(author, from))..=Slice::from(entry_key(author, u64::MAX)),
        );
        for row in rows.take(max_entries) {
            let (key, value) = self.engine(row)?;
            bytes += value.len();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push((
                u64_from(key.get(32..40).unwrap_or_default()).ok_or_else(|| self.bad_row())?,
                Bytes::copy_from_slice(&value),
            ));
        }
        Ok(out)
    }
}

/// The reads the replication core and the insert planner make.
impl Logs for Store {
    type Error = StoreError;

    fn room(&self) -> RoomId {
        self.room
    }

    fn head_seq(&self, author: &Author) -> u64 {
        Store::head_seq(self, author)
    }

    fn is_frozen(&self, author: &Author) -> bool {
        Store::is_frozen(self, author)
    }

    fn entry(&self, author: &Author, seq: u64) -> Result<Option<Entry>, StoreError> {
        self.get(author, seq)
    }

    fn envelopes(
        &self,
        author: &Author,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, StoreError> {
        self.range_envelopes(author, from, max_entries, max_bytes)
    }
}

impl Drop for Store {
    /// A clean close: everything synced, and the journals stamped in the heads record, so the
    /// next open need not walk them. An active journal of 4 MB or more is
    /// emptied (once every memtable is flushed it holds nothing the tables do not): fjall
    /// replays it whole at every open, and rotates it only at 64 MB.
    fn drop(&mut self) {
        let (Some(dir), Some(keyspaces)) = (self.dir.clone(), self.keyspace_ids()) else {
            return;
        };
        if self.tables.persist(PersistMode::SyncAll).is_err() {
            return;
        }
        let heads = self.heads();
        let active = repair::active_journal(&dir);
        if let Some(active) = active.filter(|path| repair::written_len(path) >= EMPTY_JOURNAL_AT)
            && matches!(self.tables.flush_memtables(FLUSH_PATIENCE), Ok(true))
        {
            // Closes fjall (its threads are done when the database is dropped).
            drop(std::mem::replace(&mut self.tables, Tables::memory()));
            if let Err(e) = repair::empty_journal(&dir, &active) {
                tracing::debug!("cannot empty {}: {e}", active.display());
            }
        }
        let _writing = lock(&self.record);
        let record = repair::Record {
            keyspaces,
            heads,
            closed: repair::Stamp::all(&dir),
        };
        if let Err(e) = record.write(&dir) {
            tracing::debug!("cannot stamp the journals at close: {e}");
        }
    }
}

impl Store {
    fn decode_stored(&self, bytes: Bytes) -> Result<Entry, StoreError> {
        Entry::decode(bytes).map_err(|e| StoreError::Damaged {
            path: self.path(),
            what: format!("a stored entry does not decode ({e})"),
        })
    }
}

#[cfg(test)]
mod tests;
