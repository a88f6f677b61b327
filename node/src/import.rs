//! Filling a user's log from text, without starting the network.

use std::io::BufRead;
use std::path::Path;

use p2pchat_protocol::Body;
use p2pchat_protocol::room::Room;

use crate::NodeError;
use crate::node::{DataDir, open_data_dir};
use crate::own_log::{Appended, behind_warning};
use crate::shared::RoomState;

/// Lines appended per group commit (one fsync each).
pub const IMPORT_CHUNK: usize = 10_000;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Lines appended as messages.
    pub appended: u64,
    /// Lines refused (too long); each is reported through `on_skip`.
    pub skipped: u64,
    /// Empty lines (or only whitespace), not messages.
    pub empty: u64,
    /// The name the lines were appended as: the user's current name (after a `/nick`, not
    /// necessarily the `name` asked for).
    pub name: String,
    /// What opening the store found damaged and repaired, if anything (to tell the user).
    pub damage: Option<p2pchat_storage::Damage>,
}

/// Appends each non-empty line of `lines` as a message of user `name` in `room`, whose data
/// lives in `dir` (created on first use, as for chatting), in group commits of [`IMPORT_CHUNK`]. The
/// node must not be running (the data directory lock makes sure). A line that breaks a limit
/// is skipped and passed to `on_skip` with its 1-based line number and the reason; empty lines
/// are counted; every other line is stored. Refused
/// while the own log is behind what this key wrote before (it can only come back from a peer).
pub fn import(
    name: &str,
    dir: &Path,
    room: Room,
    lines: impl BufRead,
    mut on_skip: impl FnMut(u64, &str),
) -> Result<Imported, NodeError> {
    let DataDir {
        key, rooms, name, ..
    } = open_data_dir(name, dir, vec![room], None)?;
    let Some(RoomState { store, own, .. }) = rooms.into_iter().next() else {
        return Err(NodeError::Rooms("no room to import into".into()));
    };
    let state = own.state(&store, &key, 0)?;
    if let Some(why) = behind_warning(state, store.head_seq(&p2pchat_protocol::Author::of(&key))) {
        let damage = store
            .damage()
            .map(|damage| format!("{damage}; "))
            .unwrap_or_default();
        return Err(NodeError::OwnLogBehind(format!(
            "{damage}cannot import: {why}; start p2pchat with a peer that holds your log first"
        )));
    }
    let append = |chunk: Vec<Body>| -> Result<u64, NodeError> {
        match own.append(&store, &key, chunk, 0)? {
            Appended::Stored(entries) | Appended::Restored { entries, .. } => {
                Ok(entries.len() as u64)
            }
            Appended::Held { .. } => Err(NodeError::OwnLogBehind(
                "cannot import: your own log fell behind during the import".into(),
            )),
        }
    };
    let mut imported = Imported {
        name,
        damage: store.damage().cloned(),
        ..Imported::default()
    };
    let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
    for (number, line) in lines.lines().enumerate() {
        let line = line.map_err(|e| NodeError::Network(format!("reading input: {e}")))?;
        let text = line.trim_end_matches('\r');
        if text.trim().is_empty() {
            imported.empty += 1;
            continue;
        }
        let body = Body::Text {
            text: text.to_owned(),
        };
        if let Err(e) = body.check_limits() {
            on_skip(number as u64 + 1, &e.to_string());
            imported.skipped += 1;
            continue;
        }
        chunk.push(body);
        if chunk.len() == IMPORT_CHUNK {
            imported.appended += append(std::mem::take(&mut chunk))?;
        }
    }
    imported.appended += append(chunk)?;
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_lines_skipping_blank_and_oversized_ones() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(p2pchat_protocol::limits::MAX_TEXT_BYTES + 1);
        let input = format!("one\n\n two \n \t\n{long}\nthree\r\n");
        let mut skipped = Vec::new();
        let imported = import(
            "alice",
            dir.path(),
            Room::lan(),
            input.as_bytes(),
            |n, _| skipped.push(n),
        )
        .unwrap();
        assert_eq!(
            imported,
            Imported {
                appended: 3,
                skipped: 1,
                empty: 2,
                name: "alice".into(),
                damage: None,
            }
        );
        assert_eq!(skipped, [5]);
        let DataDir { key, rooms, .. } =
            open_data_dir("alice", dir.path(), vec![Room::lan()], None).unwrap();
        let store = &rooms[0].store;
        let author = p2pchat_protocol::Author::of(&key);
        assert_eq!(
            store.head_seq(&author),
            5,
            "profile, encryption key, three lines"
        );
        let texts: Vec<_> = store
            .range(&author, 3, 10, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.body().clone())
            .collect();
        assert_eq!(
            texts[1],
            Body::Text {
                text: " two ".into()
            }
        );
    }
}
