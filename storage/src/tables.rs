//! The six tables of a store (the crate docs list them), on fjall or in memory: the few
//! operations the store makes of them (get, ordered reads of a key range, atomic batches), so
//! the store's logic has one code path for both.

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Bound, RangeBounds};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KvPair, PersistMode, Slice};

/// One table of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Entries,
    Heads,
    Names,
    Forks,
    Pins,
    EncKeys,
}

impl Table {
    /// The name of the table's fjall keyspace.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Entries => "entries",
            Table::Heads => "heads",
            Table::Names => "names",
            Table::Forks => "forks",
            Table::Pins => "pins",
            Table::EncKeys => "enckeys",
        }
    }

    /// The table's place in [`Tables`]' arrays: the order of the variants.
    fn index(self) -> usize {
        self as usize
    }
}

/// How long entries may sit in the memtables of a store that writes slowly before they are
/// sealed and flushed to tables: a chat node that stores a line now and then would otherwise
/// hold every line in memory until a memtable fills (4 MiB, an hour or more of a busy room),
/// and its memory would grow all that time. A fast writer fills them long before.
const SEAL_AFTER: Duration = Duration::from_secs(60);
/// Memtable bytes below which nothing is sealed at [`SEAL_AFTER`] (one small table per
/// keyspace for a few lines is not worth it).
pub(crate) const SEAL_FROM: u64 = 64 << 10;

/// An ordered map from key bytes to value bytes, per table.
type Maps = [BTreeMap<Slice, Slice>; 6];

/// Where a store's tables live.
pub(crate) enum Tables {
    /// fjall keyspaces of one database on disk, in the order of [`Table`]'s variants.
    Fjall {
        db: Database,
        keyspaces: [Keyspace; 6],
        /// When the memtables were last looked at for [`SEAL_AFTER`].
        sealed_at: Mutex<Instant>,
    },
    /// Ordered maps in memory, behind one lock, so a batch is seen whole or not at all.
    Memory(RwLock<Maps>),
}

impl Tables {
    /// The tables in `keyspaces` of `db`, in the order of [`Table`]'s variants.
    pub(crate) fn fjall(db: Database, keyspaces: [Keyspace; 6]) -> Self {
        Tables::Fjall {
            db,
            keyspaces,
            sealed_at: Mutex::new(Instant::now()),
        }
    }

    /// Empty tables in memory.
    pub(crate) fn memory() -> Self {
        Tables::Memory(RwLock::default())
    }

    /// The fjall keyspace of `table`, for a store on disk.
    pub(crate) fn keyspace(&self, table: Table) -> Option<&Keyspace> {
        match self {
            Tables::Fjall { keyspaces, .. } => Some(&keyspaces[table.index()]),
            Tables::Memory(_) => None,
        }
    }

    /// The value at `key` in `table`.
    pub(crate) fn get(&self, table: Table, key: &[u8]) -> fjall::Result<Option<Slice>> {
        match self {
            Tables::Fjall { keyspaces, .. } => keyspaces[table.index()].get(key),
            Tables::Memory(maps) => Ok(read(maps)[table.index()].get(key).cloned()),
        }
    }

    /// The rows of `table` whose keys are in `range`, in key order.
    pub(crate) fn rows(&self, table: Table, range: impl RangeBounds<Slice>) -> Rows<'_> {
        let (from, to) = (range.start_bound().cloned(), range.end_bound().cloned());
        match self {
            Tables::Fjall { keyspaces, .. } => {
                Rows::Fjall(keyspaces[table.index()].range((from, to)))
            }
            Tables::Memory(maps) => Rows::Memory {
                maps,
                table,
                from,
                to,
                ahead: VecDeque::new(),
            },
        }
    }

    /// The row of `table` with the largest key in `range`.
    pub(crate) fn last(
        &self,
        table: Table,
        range: impl RangeBounds<Slice>,
    ) -> fjall::Result<Option<KvPair>> {
        let (from, to) = (range.start_bound().cloned(), range.end_bound().cloned());
        match self {
            Tables::Fjall { keyspaces, .. } => keyspaces[table.index()]
                .range((from, to))
                .next_back()
                .map(fjall::Guard::into_inner)
                .transpose(),
            Tables::Memory(_) if is_empty(&from, &to) => Ok(None),
            Tables::Memory(maps) => Ok(read(maps)[table.index()]
                .range::<Slice, _>((from, to))
                .next_back()
                .map(|(key, value)| (key.clone(), value.clone()))),
        }
    }

    /// A batch of writes, made durable on commit as `durability` says (on disk).
    pub(crate) fn batch(&self, durability: PersistMode) -> Batch<'_> {
        Batch {
            tables: self,
            durability,
            rows: Vec::new(),
        }
    }

    /// Makes everything written so far durable as `mode` says (nothing to do in memory).
    pub(crate) fn persist(&self, mode: PersistMode) -> fjall::Result<()> {
        match self {
            Tables::Fjall { db, .. } => db.persist(mode),
            Tables::Memory(_) => Ok(()),
        }
    }

    /// Seals every memtable (fjall then flushes them to tables in the background) if
    /// [`SEAL_AFTER`] has passed since they were last looked at and they hold at least
    /// [`SEAL_FROM`] bytes.
    fn seal_when_due(&self) -> fjall::Result<()> {
        let Tables::Fjall {
            db,
            keyspaces,
            sealed_at,
        } = self
        else {
            return Ok(());
        };
        {
            let mut at = sealed_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if at.elapsed() < SEAL_AFTER {
                return Ok(());
            }
            *at = Instant::now();
        }
        if db.write_buffer_size() >= SEAL_FROM {
            for keyspace in keyspaces {
                keyspace.rotate_memtable()?;
            }
        }
        Ok(())
    }

    /// Makes the memtables look last looked at [`SEAL_AFTER`] ago (tests do not wait a minute).
    #[cfg(test)]
    pub(crate) fn seal_due_now(&self) {
        if let Tables::Fjall { sealed_at, .. } = self {
            let mut at = sealed_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *at = at.checked_sub(SEAL_AFTER).unwrap_or(*at);
        }
    }

    /// What the memtables hold (sealed ones waiting for their flush included).
    #[cfg(test)]
    pub(crate) fn memtable_bytes(&self) -> u64 {
        match self {
            Tables::Fjall { db, .. } => db.write_buffer_size(),
            Tables::Memory(_) => 0,
        }
    }

    /// Waits, up to `patience`, while the memtables hold more than `limit` bytes: a writer
    /// faster than the flushes would otherwise grow them to several times `limit` (fjall
    /// only halts writes at four sealed memtables a keyspace). Nothing to wait for in memory.
    pub(crate) fn wait_for_flushes(&self, limit: u64, patience: Duration) {
        let Tables::Fjall { db, .. } = self else {
            return;
        };
        let deadline = Instant::now() + patience;
        while db.write_buffer_size() > limit && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Writes every keyspace's memtable into its tables and waits, up to `patience`, until
    /// that is done: `true` if then no memtable holds anything (the journals hold nothing that
    /// is not in a table); `false` if the flushes did not end in time (a full disk fails them
    /// again and again), and in memory. fjall's own `rotate_memtable_and_wait` waits without
    /// a bound, so only the rotation is asked of it.
    pub(crate) fn flush_memtables(&self, patience: Duration) -> fjall::Result<bool> {
        match self {
            Tables::Fjall { db, keyspaces, .. } => {
                for keyspace in keyspaces {
                    keyspace.rotate_memtable()?;
                }
                self.wait_for_flushes(0, patience);
                Ok(db.write_buffer_size() == 0)
            }
            Tables::Memory(_) => Ok(false),
        }
    }
}

/// The rows of a key range of one table, in key order.
pub(crate) enum Rows<'t> {
    Fjall(fjall::Iter),
    /// Read [`READ_AHEAD`] rows at a time, each time from the first key after the last one
    /// read, so no lock is held between reads.
    Memory {
        maps: &'t RwLock<Maps>,
        table: Table,
        /// Where the next read starts.
        from: Bound<Slice>,
        to: Bound<Slice>,
        ahead: VecDeque<KvPair>,
    },
}

impl Iterator for Rows<'_> {
    type Item = fjall::Result<KvPair>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Rows::Fjall(rows) => rows.next().map(fjall::Guard::into_inner),
            Rows::Memory {
                maps,
                table,
                from,
                to,
                ahead,
            } => {
                if ahead.is_empty() && !is_empty(from, to) {
                    let maps = read(maps);
                    let rows = maps[table.index()].range::<Slice, _>((from.clone(), to.clone()));
                    ahead.extend(
                        rows.take(READ_AHEAD)
                            .map(|(key, value)| (key.clone(), value.clone())),
                    );
                    if let Some((last, _)) = ahead.back() {
                        *from = Bound::Excluded(last.clone());
                    }
                }
                ahead.pop_front().map(Ok)
            }
        }
    }
}

/// Rows a memory read takes at a time (clones of shared bytes: cheap to read ahead).
const READ_AHEAD: usize = 64;

fn read(maps: &RwLock<Maps>) -> std::sync::RwLockReadGuard<'_, Maps> {
    // Nothing that holds the write lock can panic half-way through a batch.
    maps.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether no key lies between `from` and `to` (where `BTreeMap::range` would panic).
fn is_empty(from: &Bound<Slice>, to: &Bound<Slice>) -> bool {
    match (from, to) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(from), Bound::Included(to)) => from > to,
        (
            Bound::Included(from) | Bound::Excluded(from),
            Bound::Included(to) | Bound::Excluded(to),
        ) => from >= to,
    }
}

/// Writes to several tables that are committed atomically: all of them or none.
pub(crate) struct Batch<'t> {
    tables: &'t Tables,
    durability: PersistMode,
    rows: Vec<(Table, Slice, Slice)>,
}

impl Batch<'_> {
    /// Sets `key` to `value` in `table`.
    pub(crate) fn insert(&mut self, table: Table, key: impl Into<Slice>, value: impl Into<Slice>) {
        self.rows.push((table, key.into(), value.into()));
    }

    /// Writes the batch.
    pub(crate) fn commit(self) -> fjall::Result<()> {
        match self.tables {
            Tables::Fjall { db, keyspaces, .. } => {
                let mut batch = db.batch().durability(Some(self.durability));
                for (table, key, value) in self.rows {
                    batch.insert(&keyspaces[table.index()], key, value);
                }
                batch.commit()?;
                // Housekeeping, not part of the write: a failed seal must not report a
                // written batch as failed (fjall's next write meets the same error anyway).
                if let Err(e) = self.tables.seal_when_due() {
                    tracing::debug!("cannot seal the memtables: {e}");
                }
                Ok(())
            }
            Tables::Memory(maps) => {
                let mut maps = maps
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (table, key, value) in self.rows {
                    maps[table.index()].insert(key, value);
                }
                Ok(())
            }
        }
    }
}
