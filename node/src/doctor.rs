//! `p2pchat doctor`: a store checked offline, log by log, and repaired on request.

use std::path::Path;

use p2pchat_protocol::Author;
use p2pchat_protocol::room::Room;
use p2pchat_storage::{Damage, Store};

use crate::NodeError;
use crate::roster::recorded_store;

/// What [`doctor`] found.
#[derive(Debug)]
pub struct Checkup {
    /// What was found wrong and what it cost; [`Damage::is_damage`] is false for a healthy
    /// store.
    pub damage: Damage,
    /// Each log, as it checks out (after salvage).
    pub logs: Vec<LogReport>,
    /// Whether the store in the data directory was repaired (`--repair`), or only a copy read.
    pub repaired: bool,
}

/// One log in a [`Checkup`].
#[derive(Debug)]
pub struct LogReport {
    /// Whose log.
    pub author: Author,
    /// The author's name, if a profile is held.
    pub name: Option<String>,
    /// Entries that verify (every link and signature), from seq 1.
    pub entries: u64,
    /// Entries the store held before the damage, as far as it knows.
    pub before: u64,
    /// Whether the author forked (a fork proof is held and verifies).
    pub forked: bool,
}

impl LogReport {
    /// Whether every entry the log held is still there and verifies.
    pub fn is_ok(&self) -> bool {
        self.entries == self.before
    }
}

impl Checkup {
    /// Whether anything is damaged or lost.
    pub fn is_damaged(&self) -> bool {
        self.damage.is_damage() || self.logs.iter().any(|log| !log.is_ok())
    }
}

/// Checks `room`'s store in the data directory `dir` offline: every journal, every chain and
/// signature, heads against entries, fork proofs, and what was lost since the heads were last
/// recorded. Without `repair` a copy is checked (in a temporary directory) and the data
/// directory is not changed; with it, the store is rebuilt from what verifies, the damaged
/// files moved aside, as a start would.
pub fn doctor(dir: &Path, room: &Room, repair: bool) -> Result<Checkup, NodeError> {
    crate::node::check_not_a_file(dir)?;
    if !dir.is_dir() {
        return Err(NodeError::NoData(dir.to_owned()));
    }
    let path = match recorded_store(dir, room) {
        // The logs stored before rooms are checked as they are, without giving them to a room.
        Err(NodeError::BeforeRooms(_)) => dir.join("store"),
        found => found?,
    };
    if !path.is_dir() {
        return Err(NodeError::NoData(dir.to_owned()));
    }
    let scratch;
    let store = if repair {
        Store::repair(&path, room.id())?
    } else {
        scratch = tempfile::tempdir().map_err(|source| NodeError::DataDir {
            path: std::env::temp_dir(),
            source,
        })?;
        Store::open_copy(&path, scratch.path(), true, room.id())?
    };
    let damage = store.damage().cloned().unwrap_or_default();
    let mut logs: Vec<LogReport> = store
        .verify()
        .into_iter()
        .map(|check| LogReport {
            author: check.author,
            name: check.name,
            entries: check.verified,
            before: check.entries,
            forked: check.fork == Some(true),
        })
        .collect();
    for loss in &damage.logs {
        match logs.iter_mut().find(|log| log.author == loss.author) {
            Some(log) => log.before = log.before.max(loss.before),
            None => logs.push(LogReport {
                author: loss.author,
                name: None,
                entries: 0,
                before: loss.before,
                forked: false,
            }),
        }
    }
    Ok(Checkup {
        damage,
        logs,
        repaired: repair,
    })
}
