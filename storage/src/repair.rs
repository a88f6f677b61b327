//! Finding damage before fjall opens a store, and rebuilding a damaged store from what still
//! verifies.
//!
//! fjall cuts a damaged journal at open and refuses one with a checksum error, so the store
//! looks first ([`open`]): each journal is scanned ([`crate::journal`]), and after opening,
//! the heads are compared with the **heads record** (`store/p2pchat.heads`): the heads known
//! to be on disk, rewritten after each sync. Heads below the record mean entries were lost. A
//! store with a damaged journal, a missing journal, a missing head entry, a table error at
//! open, or a repair mark (`store/p2pchat.repair`, left by a run that hit a table checksum
//! error) is **rebuilt** ([`rebuild`]): moved aside to `store.damaged-<time>/`, then every log
//! is read back from its tables and journals, entry by entry from seq 1, and kept up to its
//! first entry that does not link (`check_link`) or whose signature fails. What is lost is
//! fetched again from peers by normal replication (the heads are lower, so peers send).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use p2pchat_protocol::validate::{check_link, check_next};
use p2pchat_protocol::{Author, Entry, Heads, RoomId};

use crate::journal::{self, Finding};
use crate::tables::Table;
use crate::{Store, StoreError, author_from, entry_key, u64_from};

/// The heads record's file name, inside the store directory.
pub(crate) const RECORD: &str = "p2pchat.heads";
/// Left in the store directory when damage is found while running: the next open rebuilds.
pub(crate) const REPAIR_MARK: &str = "p2pchat.repair";
const RECORD_MAGIC: &[u8; 8] = b"p2phead1";
/// fjall's format marker (`store/version`), rewritten if it goes missing.
const VERSION_MARKER: &[u8] = b"FJL\x03";
/// Entries handed to one validated insert while rebuilding.
const REBUILD_CHUNK: usize = 1024;

/// What opening a store found damaged, and what it did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Damage {
    /// What was wrong, in words (`journal 3.jnl is corrupt (checksum mismatch at byte 512)`).
    pub found: Vec<String>,
    /// The logs that hold fewer entries than before, with counts.
    pub logs: Vec<LogLoss>,
    /// Entries kept, over every log.
    pub kept: u64,
    /// Where the damaged files were moved, if the store was rebuilt.
    pub moved_to: Option<PathBuf>,
}

/// One log that lost entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLoss {
    /// Whose log.
    pub author: Author,
    /// Entries it held before the damage (as far as the store knows).
    pub before: u64,
    /// Entries it holds now.
    pub now: u64,
}

impl Damage {
    /// Entries lost, over every log.
    pub fn lost(&self) -> u64 {
        self.logs.iter().map(|log| log.before - log.now).sum()
    }
}

impl Damage {
    /// Whether anything was found wrong or lost (a forced rebuild of a healthy store finds
    /// nothing).
    pub fn is_damage(&self) -> bool {
        !self.found.is_empty() || self.lost() > 0
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_damage() {
            return write!(
                f,
                "store ok: no damage found ({} entries)",
                thousands(self.kept)
            );
        }
        if self.found.is_empty() {
            write!(f, "store damaged: entries are missing")?;
        } else {
            write!(f, "store damaged: {}", self.found.join("; "))?;
        }
        let lost = self.lost();
        if lost > 0 {
            write!(
                f,
                ", {} entries lost in {} logs ({} kept); refetching from peers",
                thousands(lost),
                self.logs.len(),
                thousands(self.kept)
            )?;
        } else {
            write!(f, ", no entries lost ({} kept)", thousands(self.kept))?;
        }
        if let Some(moved) = &self.moved_to {
            write!(f, "; the damaged files were moved to {}", moved.display())?;
        }
        Ok(())
    }
}

/// `2653` as `2,653`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The internal ids of the keyspaces salvage reads from journals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyspaceIds {
    pub entries: u64,
    pub forks: u64,
    pub pins: u64,
}

/// The heads record: heads known to be on disk, the keyspace ids journals refer to, and,
/// after a clean close, each journal file as it was left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub keyspaces: KeyspaceIds,
    pub heads: Heads,
    pub closed: Vec<Stamp>,
}

/// A journal file as a clean close left it: if it is unchanged at the next open, the walk
/// through it is skipped (fjall still checks its checksums, and the heads are still compared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    id: u64,
    len: u64,
    inode: u64,
    mtime_ns: i64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let id = path
            .file_name()?
            .to_str()?
            .strip_suffix(".jnl")?
            .parse()
            .ok()?;
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            id,
            len: meta.len(),
            inode: meta.ino(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
        })
    }

    /// The stamps of the journals in `dir` now.
    pub fn all(dir: &Path) -> Vec<Stamp> {
        journals(dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|path| Stamp::of(path))
            .collect()
    }
}

impl Record {
    /// Writes the record (a new file renamed over the old, so a crash leaves one or the
    /// other). Not synced: it is written after the data it describes was, so it is never
    /// ahead of the disk, and an older one only undercounts a loss.
    pub fn write(&self, dir: &Path) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(40 + self.heads.len() * 40);
        bytes.extend_from_slice(RECORD_MAGIC);
        for id in [
            self.keyspaces.entries,
            self.keyspaces.forks,
            self.keyspaces.pins,
        ] {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        bytes.extend_from_slice(&(self.closed.len() as u64).to_le_bytes());
        for stamp in &self.closed {
            for n in [stamp.id, stamp.len, stamp.inode, stamp.mtime_ns as u64] {
                bytes.extend_from_slice(&n.to_le_bytes());
            }
        }
        for (author, seq) in &self.heads {
            bytes.extend_from_slice(author.as_bytes());
            bytes.extend_from_slice(&seq.to_le_bytes());
        }
        let checksum = xxhash_rust::xxh3::xxh3_64(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        let path = dir.join(RECORD);
        let new = dir.join(format!("{RECORD}.new"));
        std::fs::write(&new, &bytes)
            .and_then(|()| std::fs::rename(&new, &path))
            .map_err(|e| StoreError::from_io(&path, e))
    }

    /// The record in `dir`, if there is a whole one.
    pub fn read(dir: &Path) -> Option<Record> {
        let bytes = std::fs::read(dir.join(RECORD)).ok()?;
        let (body, checksum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
        if xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() != checksum {
            return None;
        }
        let rest = body.strip_prefix(RECORD_MAGIC)?;
        let id = |i: usize| {
            Some(u64::from_le_bytes(
                rest.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let keyspaces = KeyspaceIds {
            entries: id(0)?,
            forks: id(1)?,
            pins: id(2)?,
        };
        let stamps = usize::try_from(id(3)?).ok()?;
        let closed = (0..stamps)
            .map(|i| {
                let n = |j: usize| id(4 + i * 4 + j);
                Some(Stamp {
                    id: n(0)?,
                    len: n(1)?,
                    inode: n(2)?,
                    mtime_ns: n(3)? as i64,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let rows = rest.get((4 + stamps * 4) * 8..)?;
        if !rows.len().is_multiple_of(40) {
            return None;
        }
        let heads = rows
            .chunks_exact(40)
            .map(|row| {
                let author = author_from(&row[..32])?;
                Some((author, u64::from_le_bytes(row[32..].try_into().ok()?)))
            })
            .collect::<Option<Heads>>()?;
        Some(Record {
            keyspaces,
            heads,
            closed,
        })
    }
}

/// Marks the store in `dir` for a rebuild at its next open (best effort: if even this cannot
/// be written, the damage is found again when read).
pub(crate) fn mark_for_repair(dir: &Path) {
    if let Err(e) = std::fs::write(dir.join(REPAIR_MARK), b"a read failed its checksum\n") {
        tracing::warn!("cannot mark {} for repair: {e}", dir.display());
    }
}

/// The journal files in `dir`, oldest first.
fn journals(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut found = Vec::new();
    for dirent in std::fs::read_dir(dir).map_err(|e| StoreError::from_io(dir, e))? {
        let path = dirent.map_err(|e| StoreError::from_io(dir, e))?.path();
        let id = path
            .file_name()
            .and_then(|name| name.to_str()?.strip_suffix(".jnl")?.parse::<u64>().ok());
        if let Some(id) = id {
            found.push((id, path));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// The active (newest) journal in `dir`, if any.
pub(crate) fn active_journal(dir: &Path) -> Option<PathBuf> {
    journals(dir).ok()?.pop()
}

/// The bytes written to the journal at `path` (fjall starts a journal file as 64 MiB of
/// zeros); 0 if it cannot be read.
pub(crate) fn written_len(path: &Path) -> u64 {
    journal::written_len(path).unwrap_or(0)
}

/// Empties the journal at `path`, once fjall has closed the store in `dir` (its lock is
/// free); only for a journal that holds nothing the tables do not.
pub(crate) fn empty_journal(dir: &Path, path: &Path) -> std::io::Result<()> {
    let lock = std::fs::File::open(dir.join("lock"))?;
    lock.try_lock().map_err(std::io::Error::other)?;
    let journal = std::fs::OpenOptions::new().write(true).open(path)?;
    journal.set_len(0)?;
    journal.sync_all()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
}

/// Fails with [`StoreError::InUse`] if another process holds the store's lock.
fn check_not_in_use(dir: &Path) -> Result<(), StoreError> {
    let Ok(file) = std::fs::File::open(dir.join("lock")) else {
        return Ok(());
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::from_io(dir, e)),
    }
}

/// Opens the store in `dir`, first looking for damage; see the module docs. With `force`, the
/// store is rebuilt whatever is found.
pub(crate) fn open(dir: &Path, force: bool, room: RoomId) -> Result<Store, StoreError> {
    let started = std::time::Instant::now();
    let mut found = Vec::new();
    let mut rebuild_needed = false;
    let record = Record::read(dir);
    if dir.join("keyspaces").is_dir() {
        check_not_in_use(dir)?;
        let version = dir.join("version");
        if !version.exists() {
            std::fs::write(&version, VERSION_MARKER)
                .map_err(|e| StoreError::from_io(&version, e))?;
            found.push(format!("{} was missing (restored)", version.display()));
        }
        if dir.join(REPAIR_MARK).exists() {
            found.push("a table file failed its checksum in the last run".into());
            rebuild_needed = true;
        }
        let journals = journals(dir)?;
        if journals.is_empty() {
            found.push("its journal is missing".into());
            rebuild_needed = true;
        }
        // Journals left as a clean close wrote them need no walk.
        let closed_cleanly = record
            .as_ref()
            .is_some_and(|r| !r.closed.is_empty() && r.closed == Stamp::all(dir));
        for path in journals.iter().filter(|_| !closed_cleanly) {
            let finding = journal::scan(path).map_err(|e| StoreError::from_io(path, e))?;
            if let Some(what) = describe(path, &finding) {
                found.push(what);
                rebuild_needed = true;
            }
        }
    }
    tracing::debug!(elapsed = ?started.elapsed(), "looked for damage");
    if rebuild_needed || (force && dir.is_dir()) {
        return rebuild(dir, found, room);
    }
    let mut store = match Store::open_engine(dir, true, room) {
        Ok(store) => store,
        Err(StoreError::Damaged { what, .. }) => {
            found.push(what);
            return rebuild(dir, found, room);
        }
        Err(e) => return Err(e),
    };
    let logs = losses(record.as_ref().map(|r| &r.heads), &store.heads());
    if !logs.is_empty() {
        found.push("its journal ends early (truncated)".into());
    }
    if !found.is_empty() {
        store.damage = Some(Damage {
            found,
            logs,
            kept: store.heads().values().sum(),
            moved_to: None,
        });
    }
    store.write_record(store.heads())?;
    Ok(store)
}

/// A journal finding in words, `None` if clean.
fn describe(path: &Path, finding: &Finding) -> Option<String> {
    let name = file_name(path);
    match finding {
        Finding::Clean => None,
        Finding::Checksum { at } => Some(format!(
            "journal {name} is corrupt (checksum mismatch at byte {})",
            thousands(*at)
        )),
        Finding::Unreadable { at, resumes } => Some(format!(
            "journal {name} is damaged (unreadable from byte {} to {})",
            thousands(*at),
            thousands(*resumes)
        )),
    }
}

/// The logs of `before` that `now` holds fewer entries of.
fn losses(before: Option<&Heads>, now: &Heads) -> Vec<LogLoss> {
    before
        .into_iter()
        .flatten()
        .filter_map(|(author, &before)| {
            let now = now.get(author).copied().unwrap_or(0);
            (now < before).then_some(LogLoss {
                author: *author,
                before,
                now,
            })
        })
        .collect()
}

/// What a damaged store still holds: candidate envelopes per log and seq, fork proofs, pins,
/// and the heads it claimed.
#[derive(Default)]
struct Salvage {
    entries: BTreeMap<Author, BTreeMap<u64, Vec<Bytes>>>,
    pins: Vec<(String, Author)>,
    heads: Heads,
}

impl Salvage {
    fn add_entry(&mut self, key: &[u8], value: &[u8]) {
        let (Some(author), Some(seq)) = (
            key.get(..32).and_then(author_from),
            key.get(32..).and_then(u64_from),
        ) else {
            return;
        };
        let found = self
            .entries
            .entry(author)
            .or_default()
            .entry(seq)
            .or_default();
        if !found.iter().any(|known| known[..] == *value) {
            found.push(Bytes::copy_from_slice(value));
        }
    }

    fn add_pin(&mut self, key: &[u8], value: &[u8]) {
        if let (Ok(name), Some(author)) = (std::str::from_utf8(key), author_from(value)) {
            self.pins.push((name.to_owned(), author));
        }
    }

    /// The items of the journals in `dir`; returns what was wrong with them, in words.
    fn read_journals(&mut self, dir: &Path, ids: Option<KeyspaceIds>) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(paths) = journals(dir) else {
            return found;
        };
        for path in paths {
            let (items, finding) = match journal::items(&path) {
                Ok(read) => read,
                Err(e) => {
                    found.push(format!("journal {} is unreadable ({e})", file_name(&path)));
                    continue;
                }
            };
            found.extend(describe(&path, &finding));
            for item in items {
                match ids {
                    Some(ids) if item.keyspace == ids.pins => self.add_pin(&item.key, &item.value),
                    Some(ids) if item.keyspace != ids.entries && item.keyspace != ids.forks => {}
                    // Without a record, entry rows are told by their shape: the key is the
                    // envelope's author and seq (checked when the entry is verified).
                    _ if item.key.len() == 40 => self.add_entry(&item.key, &item.value),
                    _ => {}
                }
            }
        }
        found
    }

    /// The rows of the store's tables in `copy` (a copy without journals, opened by fjall),
    /// as far as they read; returns what was wrong, in words.
    fn read_tables(&mut self, copy: &Path, room: RoomId) -> Vec<String> {
        let store = match Store::open_engine(copy, false, room) {
            Ok(store) => store,
            Err(e) => return vec![format!("its tables do not open ({})", describe_error(&e))],
        };
        let mut damaged = false;
        for row in store.tables.rows(Table::Heads, ..) {
            match row {
                Ok((author, seq)) => {
                    if let (Some(author), Some(seq)) = (author_from(&author), u64_from(&seq)) {
                        self.heads.insert(author, seq);
                    }
                }
                Err(_) => damaged = true,
            }
        }
        for row in store.tables.rows(Table::Pins, ..) {
            match row {
                Ok((name, author)) => self.add_pin(&name, &author),
                Err(_) => damaged = true,
            }
        }
        for table in [Table::Entries, Table::Forks] {
            // Read log by log, so a bad block costs only the rest of its log.
            let mut from = fjall::Slice::default();
            loop {
                let mut rows = store.tables.rows(table, from.clone()..);
                let author = match rows.next() {
                    None => break,
                    Some(Ok((key, value))) => {
                        self.add_entry(&key, &value);
                        key.get(..32).and_then(author_from)
                    }
                    Some(Err(_)) => {
                        damaged = true;
                        None
                    }
                };
                let Some(author) = author else { break };
                for row in rows {
                    match row {
                        Ok((key, value)) if key.starts_with(author.as_bytes()) => {
                            self.add_entry(&key, &value)
                        }
                        Ok(_) => break,
                        Err(_) => {
                            damaged = true;
                            break;
                        }
                    }
                }
                // On to the next author's first key.
                let mut after = entry_key(&author, u64::MAX).to_vec();
                after.push(0);
                from = after.into();
            }
        }
        if damaged {
            vec!["a table file is damaged".into()]
        } else {
            Vec::new()
        }
    }
}

fn describe_error(e: &StoreError) -> String {
    match e {
        StoreError::Damaged { what, .. } => what.clone(),
        e => e.to_string(),
    }
}

/// Copies the store in `from` to `to` without its journals and records.
fn copy_tables(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    std::fs::File::create(to.join("lock"))?;
    for dirent in std::fs::read_dir(from)? {
        let dirent = dirent?;
        let name = dirent.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".jnl") || ["lock", RECORD, REPAIR_MARK].contains(&&*name) {
            continue;
        }
        if dirent.file_type()?.is_dir() {
            copy_dir(&dirent.path(), &to.join(&*name))?;
        } else {
            std::fs::copy(dirent.path(), to.join(&*name))?;
        }
    }
    Ok(())
}

/// Copies the directory tree `from` to `to`.
pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for dirent in std::fs::read_dir(from)? {
        let dirent = dirent?;
        let target = to.join(dirent.file_name());
        if dirent.file_type()?.is_dir() {
            copy_dir(&dirent.path(), &target)?;
        } else {
            std::fs::copy(dirent.path(), target)?;
        }
    }
    Ok(())
}

/// A sibling of the store directory `dir`: `store` + `suffix`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir.file_name().map_or_else(
        || "store".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    dir.with_file_name(format!("{name}{suffix}"))
}

/// Moves the store in `dir` aside and rebuilds it from what verifies; `found` says why.
pub(crate) fn rebuild(
    dir: &Path,
    mut found: Vec<String>,
    room: RoomId,
) -> Result<Store, StoreError> {
    if !dir.is_dir() {
        return Store::open_engine(dir, true, room);
    }
    check_not_in_use(dir)?;
    let record = Record::read(dir);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut moved_to = sibling(dir, &format!(".damaged-{stamp}"));
    for n in 1.. {
        if !moved_to.exists() {
            break;
        }
        moved_to = sibling(dir, &format!(".damaged-{stamp}-{n}"));
    }
    std::fs::rename(dir, &moved_to).map_err(|e| StoreError::from_io(dir, e))?;

    let mut salvage = Salvage::default();
    let scratch = sibling(dir, ".salvage");
    let _ = std::fs::remove_dir_all(&scratch);
    match copy_tables(&moved_to, &scratch) {
        Ok(()) => found.extend(salvage.read_tables(&scratch, room)),
        Err(e) => found.push(format!("its tables cannot be copied ({e})")),
    }
    let _ = std::fs::remove_dir_all(&scratch);
    found.extend(salvage.read_journals(&moved_to, record.as_ref().map(|r| r.keyspaces)));
    found.dedup();

    let mut store = Store::open_engine(dir, true, room)?;
    for (name, author) in &salvage.pins {
        store.pin(name, *author)?;
    }
    for (author, candidates) in &salvage.entries {
        restore_log(&store, *author, candidates)?;
    }
    store.sync()?;

    // Before: the most any source said the log held.
    let mut before = record.map(|r| r.heads).unwrap_or_default();
    for (author, seq) in salvage.heads {
        let known = before.entry(author).or_default();
        *known = (*known).max(seq);
    }
    let now = store.heads();
    store.damage = Some(Damage {
        found,
        logs: losses(Some(&before), &now),
        kept: now.values().sum(),
        moved_to: Some(moved_to),
    });
    Ok(store)
}

/// Stores `author`'s log from its candidates: from seq 1, each the first candidate that links,
/// through validated inserts (which check the signatures); then the other valid candidates,
/// which are fork proofs.
fn restore_log(
    store: &Store,
    author: Author,
    candidates: &BTreeMap<u64, Vec<Bytes>>,
) -> Result<(), StoreError> {
    let mut chain = Vec::new();
    let mut last: Option<Entry> = None;
    let mut chosen = BTreeSet::new();
    for seq in 1.. {
        let Some(found) = candidates.get(&seq) else {
            break;
        };
        let next = found.iter().find_map(|envelope| {
            let entry = Entry::decode(envelope.clone()).ok()?;
            check_link(store.room(), author, last.as_ref(), &entry).ok()?;
            Some(entry)
        });
        let Some(next) = next else { break };
        chosen.insert(seq);
        chain.push(next.envelope().clone());
        last = Some(next);
        if chain.len() == REBUILD_CHUNK
            && store
                .insert_remote(author, chain.drain(..))?
                .rejected
                .is_some()
        {
            return Ok(());
        }
    }
    if store.insert_remote(author, chain)?.rejected.is_some() {
        return Ok(());
    }
    let head = store.head_seq(&author);
    for (seq, found) in candidates.range(..=head) {
        for envelope in found.iter().skip(usize::from(chosen.contains(seq))) {
            store.insert_remote(author, [envelope.clone()])?;
        }
    }
    Ok(())
}

/// How one log of a store checks out (`p2pchat doctor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCheck {
    /// Whose log.
    pub author: Author,
    /// The author's current name, if a profile is held.
    pub name: Option<String>,
    /// Entries held (the head seq).
    pub entries: u64,
    /// Entries from seq 1 that link and verify, each with its own signature.
    pub verified: u64,
    /// Whether a fork proof is held (the author is frozen), and whether it verifies.
    pub fork: Option<bool>,
}

impl LogCheck {
    /// Whether every entry held verifies, and a fork proof, if any, does too.
    pub fn is_ok(&self) -> bool {
        self.verified == self.entries && self.fork != Some(false)
    }
}

impl Store {
    /// Checks every log in full: every link and every signature, heads against entries, fork
    /// proofs. Slow (a signature check per entry); for `p2pchat doctor`, offline.
    pub fn verify(&self) -> Vec<LogCheck> {
        self.heads()
            .into_iter()
            .map(|(author, head)| {
                let mut verified = 0;
                let mut last: Option<Entry> = None;
                'log: while verified < head {
                    let Ok(chunk) = self.range(&author, verified + 1, REBUILD_CHUNK, usize::MAX)
                    else {
                        break;
                    };
                    if chunk.is_empty() {
                        break;
                    }
                    for entry in chunk {
                        if check_next(self.room(), author, last.as_ref(), &entry).is_err() {
                            break 'log;
                        }
                        verified = entry.seq();
                        last = Some(entry);
                    }
                }
                let fork = self.is_frozen(&author).then(|| self.fork_verifies(&author));
                LogCheck {
                    author,
                    name: self.name(&author),
                    entries: head,
                    verified,
                    fork: fork.map(|ok| ok.unwrap_or(false)),
                }
            })
            .collect()
    }

    /// Whether `author`'s fork proof is a validly signed entry that differs from the one held.
    fn fork_verifies(&self, author: &Author) -> Result<bool, StoreError> {
        let first = fjall::Slice::from(entry_key(author, 0));
        let last = fjall::Slice::from(entry_key(author, u64::MAX));
        let Some(row) = self.tables.rows(Table::Forks, first..=last).next() else {
            return Ok(false);
        };
        let (key, value) = self.engine(row)?;
        let seq = key
            .get(32..)
            .and_then(u64_from)
            .ok_or_else(|| self.bad_row())?;
        let Ok(proof) = Entry::decode(Bytes::copy_from_slice(&value)) else {
            return Ok(false);
        };
        let held = self.get(author, seq)?;
        Ok(proof.author() == *author
            && proof.seq() == seq
            && proof.signature_is_valid()
            && held.is_some_and(|held| held.hash() != proof.hash()))
    }
}
