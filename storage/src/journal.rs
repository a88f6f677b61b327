//! fjall 3's journal files (`store/N.jnl`), read by us before fjall opens them.
//!
//! fjall's recovery cuts a journal at its first unreadable byte and carries on, so a zeroed
//! block in the middle silently drops every batch after it. [`scan`] walks a journal the way
//! fjall will and tells whether what follows the cut is a crash's unfinished tail (nothing, or
//! zeros, or one incomplete batch) or damage: a batch whose checksum fails, or complete batches
//! beyond an unreadable stretch. [`items`] reads back every item of every batch that can still
//! be parsed, for salvage.
//!
//! The format (fjall 3.1, `src/journal/entry.rs`), little-endian: a batch is a start marker
//! `[1][count u32][seqno u64]`, `count` items `[2][value type u8][compression u8][keyspace
//! u64][key len u16][value len u32][stored len u32][key][value]` (or clears `[4][keyspace
//! u64]`), and an end marker `[3][xxh3 of the items u64]FJL\x03`. A unit test writes a journal
//! with fjall and reads it back, so a format change in fjall fails the tests.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const START: u8 = 1;
const ITEM: u8 = 2;
const END: u8 = 3;
const CLEAR: u8 = 4;
const TRAILER: &[u8] = b"FJL\x03";
/// lsm-tree's `ValueType::Value` (the others are deletions and blob pointers).
const VALUE: u8 = 0;
/// `CompressionType::None`: the store's journals are written uncompressed.
const UNCOMPRESSED: u8 = 0;

/// What was found in one journal file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Finding {
    /// Readable up to its end, or up to a crash's unfinished tail.
    Clean,
    /// A complete batch whose checksum fails, starting at byte `at`.
    Checksum { at: u64 },
    /// Unreadable from byte `at`, with complete batches again from `resumes`.
    Unreadable { at: u64, resumes: u64 },
}

/// A key-value item of a journal batch.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    pub keyspace: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// How fjall will find the journal at `path`: clean, or the first damage in it.
pub(crate) fn scan(path: &Path) -> std::io::Result<Finding> {
    let data = read_written(path)?;
    Ok(walk(&data))
}

/// Every value item of every batch in the journal at `path` that still parses, checksum or
/// not (the caller verifies what they hold), and the first damage.
pub(crate) fn items(path: &Path) -> std::io::Result<(Vec<Item>, Finding)> {
    let data = read_written(path)?;
    let mut items = Vec::new();
    let mut finding = Finding::Clean;
    let mut pos = 0;
    while pos < data.len() {
        match batch_at(&data, pos, Some(&mut items), true) {
            Ok(end) => pos = end,
            Err(Broken::Checksum { end }) => {
                if finding == Finding::Clean {
                    finding = Finding::Checksum { at: pos as u64 };
                }
                pos = end;
            }
            Err(Broken::Structure) => match resync(&data, pos + 1) {
                Some(next) => {
                    if finding == Finding::Clean {
                        finding = Finding::Unreadable {
                            at: pos as u64,
                            resumes: next as u64,
                        };
                    }
                    pos = next;
                }
                None => break,
            },
        }
    }
    Ok((items, finding))
}

/// About how many bytes were written to the journal at `path`: its allocated blocks (fjall
/// sets a new journal's length to 64 MiB without writing it, so the rest is a hole).
pub(crate) fn written_len(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    Ok(meta.len().min(meta.blocks().saturating_mul(512)))
}

/// The file's bytes up to where data was written. Journals are preallocated with a hole of
/// zeros after what was written; the hole is not read.
fn read_written(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let allocated = meta.blocks().saturating_mul(512);
    let len = meta.len().min(allocated.max(64 << 10));
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len).read_to_end(&mut data)?;
    Ok(data)
}

/// Walks the batches of `data` from the start, as fjall's recovery will, to the first damage.
/// Checksums are not computed on the way (fjall checks them and refuses a store with a bad
/// one, without cutting anything), only after an unreadable stretch.
fn walk(data: &[u8]) -> Finding {
    let mut pos = 0;
    while pos < data.len() {
        match batch_at(data, pos, None, false) {
            Ok(end) => pos = end,
            Err(Broken::Checksum { .. }) => return Finding::Checksum { at: pos as u64 },
            Err(Broken::Structure) => {
                return match resync(data, pos + 1) {
                    Some(next) => Finding::Unreadable {
                        at: pos as u64,
                        resumes: next as u64,
                    },
                    None => Finding::Clean,
                };
            }
        }
    }
    Finding::Clean
}

/// The first position at or after `from` where a complete batch with a good checksum starts.
fn resync(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len()).find(|&pos| data[pos] == START && batch_at(data, pos, None, true).is_ok())
}

enum Broken {
    /// Not a complete batch: a crash's unfinished tail, or damage.
    Structure,
    /// A complete batch, ending at `end`, whose checksum fails.
    Checksum { end: usize },
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Broken> {
        let bytes = self
            .data
            .get(self.pos..self.pos.checked_add(n).ok_or(Broken::Structure)?)
            .ok_or(Broken::Structure)?;
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, Broken> {
        Ok(self.take(1)?[0])
    }

    fn uint<const N: usize>(&mut self) -> Result<u64, Broken> {
        let mut bytes = [0; 8];
        bytes[..N].copy_from_slice(self.take(N)?);
        Ok(u64::from_le_bytes(bytes))
    }
}

/// Parses the batch starting at `pos` and returns where it ends; with `verify`, checks its
/// checksum. Its value items are added to `collect`, also when its checksum fails.
fn batch_at(
    data: &[u8],
    pos: usize,
    collect: Option<&mut Vec<Item>>,
    verify: bool,
) -> Result<usize, Broken> {
    let mut r = Reader { data, pos };
    if r.u8()? != START {
        return Err(Broken::Structure);
    }
    let count = r.uint::<4>()?;
    let _seqno = r.uint::<8>()?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut items = Vec::new();
    for _ in 0..count {
        let begin = r.pos;
        match r.u8()? {
            ITEM => {
                let value_type = r.u8()?;
                if r.u8()? != UNCOMPRESSED {
                    return Err(Broken::Structure);
                }
                let keyspace = r.uint::<8>()?;
                let key_len = r.uint::<2>()? as usize;
                let value_len = r.uint::<4>()? as usize;
                if r.uint::<4>()? as usize != value_len {
                    return Err(Broken::Structure);
                }
                let key = r.take(key_len)?;
                let value = r.take(value_len)?;
                if value_type == VALUE && collect.is_some() {
                    items.push(Item {
                        keyspace,
                        key: key.to_vec(),
                        value: value.to_vec(),
                    });
                }
            }
            CLEAR => {
                r.uint::<8>()?;
            }
            _ => return Err(Broken::Structure),
        }
        if verify {
            hasher.update(&data[begin..r.pos]);
        }
    }
    if r.u8()? != END {
        return Err(Broken::Structure);
    }
    let checksum = r.uint::<8>()?;
    if r.take(TRAILER.len())? != TRAILER {
        return Err(Broken::Structure);
    }
    if let Some(collect) = collect {
        collect.append(&mut items);
    }
    if verify && hasher.digest() != checksum {
        return Err(Broken::Checksum { end: r.pos });
    }
    Ok(r.pos)
}
