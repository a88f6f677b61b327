//! Where each room's store lives in a data directory: the room registry.
//!
//! A data directory holds `identity.key`, `store/` and, once a room is located in it, the
//! registry file `rooms.txt` (not `rooms`: that is the directory of the other rooms' stores):
//! one line per room, `<room id, 64 hex digits> <directory relative to
//! the data directory>`. The first room ever located in a data directory takes `store/` (the
//! store of the release before rooms, whose logs name no room: they go to that room and only to
//! it); every other room gets `rooms/<first 16 hex digits of its id>/`. A room is recorded
//! durably (a new file written, synced and renamed over the old, then the directory synced)
//! before its directory is handed out, so `store/` is claimed once, ever. A registry that
//! cannot be read or parsed is an error, never a reason to claim `store/` again.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use p2pchat_protocol::RoomId;

use crate::StoreError;

/// The registry file, in the data directory.
pub const REGISTRY: &str = "rooms.txt";
/// The store directory of the first room (and of the release before rooms).
const FIRST: &str = "store";
/// Where every other room's store directory is.
const OTHERS: &str = "rooms";

/// Where [`locate`] found a room's store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The store directory, to give [`crate::Store::open`].
    pub dir: PathBuf,
    /// Whether this call claimed `store/` for the room: logs stored before rooms (if any) now
    /// belong to it. True once per data directory, ever.
    pub claimed: bool,
}

/// The store directory of `room` in `data_dir` (which must exist), recording it in the
/// registry first if the room is new there. See the module docs for the rules.
///
/// The data directory is locked while the registry is read and written, so two processes
/// locating rooms at once cannot both claim `store/`.
pub fn locate(data_dir: &Path, room: &RoomId) -> Result<Located, StoreError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e| StoreError::from_io(&path, e)
    };
    let lock = File::open(data_dir).map_err(io(data_dir))?;
    lock.lock().map_err(io(data_dir))?;
    let path = data_dir.join(REGISTRY);
    let mut rooms = read(data_dir)?;
    if let Some((_, dir)) = rooms.iter().find(|(id, _)| id == room) {
        return Ok(Located {
            dir: data_dir.join(dir),
            claimed: false,
        });
    }
    let claimed = rooms.iter().all(|(_, dir)| dir != FIRST);
    let dir = if claimed {
        FIRST.to_owned()
    } else {
        let hex = room.to_string();
        let short = format!("{OTHERS}/{}", &hex[..16]);
        // Two rooms whose ids share 64 bits: the second one gets its whole id.
        if rooms.iter().any(|(_, dir)| *dir == short) {
            format!("{OTHERS}/{hex}")
        } else {
            short
        }
    };
    rooms.push((*room, dir.clone()));
    write(data_dir, &path, &rooms)?;
    // Made once recorded: a `rooms/` directory without a registry means the registry was lost.
    if !claimed {
        let made = data_dir.join(&dir);
        std::fs::create_dir_all(&made).map_err(io(&made))?;
    }
    Ok(Located {
        dir: data_dir.join(dir),
        claimed,
    })
}

/// Where `room`'s store is in `data_dir`, if the registry records one. Nothing is written: for
/// tools that only read (`export`, `doctor`), which must not decide where the logs stored
/// before rooms go.
pub fn find(data_dir: &Path, room: &RoomId) -> Result<Option<PathBuf>, StoreError> {
    Ok(read(data_dir)?
        .into_iter()
        .find(|(id, _)| id == room)
        .map(|(_, dir)| data_dir.join(dir)))
}

/// Whether `store/` in `data_dir` belongs to a room yet (see [`locate`]).
pub fn store_claimed(data_dir: &Path) -> Result<bool, StoreError> {
    Ok(read(data_dir)?.iter().any(|(_, dir)| dir == FIRST))
}

/// The registry of `data_dir` (empty if there is none yet).
fn read(data_dir: &Path) -> Result<Vec<(RoomId, String)>, StoreError> {
    let path = data_dir.join(REGISTRY);
    match std::fs::read(&path) {
        Ok(bytes) => parse(&path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let others = data_dir.join(OTHERS);
            if others.exists() {
                return Err(registry_error(
                    &path,
                    format!(
                        "is missing while {} exists, so which room the logs in store/ belong \
                         to is unknown",
                        others.display()
                    ),
                ));
            }
            Ok(Vec::new())
        }
        Err(e) => Err(StoreError::from_io(&path, e)),
    }
}

/// The registry's lines: each room and its directory (relative to the data directory).
fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<(RoomId, String)>, StoreError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| registry_error(path, "is not text (damaged)".into()))?;
    let mut rooms: Vec<(RoomId, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |what: &str| registry_error(path, format!("line {}: {what}", n + 1));
        let (hex, dir) = line
            .split_once(' ')
            .ok_or_else(|| bad("is not `<room id> <directory>`"))?;
        let id = room_id(hex).ok_or_else(|| bad("the room id is not 64 hex digits"))?;
        let valid_dir = dir == FIRST
            || dir
                .strip_prefix(OTHERS)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|name| {
                    matches!(name.len(), 16 | 64) && hex.starts_with(name) && is_hex(name)
                });
        if !valid_dir {
            return Err(bad(&format!("{dir:?} is not a room's store directory")));
        }
        if rooms.iter().any(|(other, _)| *other == id) {
            return Err(bad("the room is listed twice"));
        }
        if rooms.iter().any(|(_, other)| other == dir) {
            return Err(bad(&format!("{dir} is given to two rooms")));
        }
        rooms.push((id, dir.to_owned()));
    }
    Ok(rooms)
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn room_id(hex: &str) -> Option<RoomId> {
    if hex.len() != 64 || !is_hex(hex) {
        return None;
    }
    let mut bytes = [0; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(RoomId::from_bytes(bytes))
}

/// Writes the registry durably: a new file, synced, renamed over the old one, and the data
/// directory synced (so the rename survives a power loss).
fn write(data_dir: &Path, path: &Path, rooms: &[(RoomId, String)]) -> Result<(), StoreError> {
    let mut text = String::new();
    for (id, dir) in rooms {
        let _ = writeln!(text, "{id} {dir}");
    }
    let new = data_dir.join(format!("{REGISTRY}.new"));
    let io = |at: &Path| {
        let at = at.to_owned();
        move |e| StoreError::from_io(&at, e)
    };
    let mut file = File::create(&new).map_err(io(&new))?;
    file.write_all(text.as_bytes()).map_err(io(&new))?;
    file.sync_all().map_err(io(&new))?;
    std::fs::rename(&new, path).map_err(io(path))?;
    File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io(data_dir))
}

fn registry_error(path: &Path, what: String) -> StoreError {
    StoreError::Registry {
        path: path.to_owned(),
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(byte: u8) -> RoomId {
        RoomId::from_bytes([byte; 32])
    }

    #[test]
    fn the_first_room_takes_store_and_every_other_its_own_directory() {
        let data = tempfile::tempdir().unwrap();
        let first = locate(data.path(), &room(0xab)).unwrap();
        assert_eq!(first.dir, data.path().join("store"));
        assert!(first.claimed);
        let second = locate(data.path(), &room(0x12)).unwrap();
        assert_eq!(second.dir, data.path().join("rooms/1212121212121212"));
        assert!(!second.claimed);
        let registry = std::fs::read_to_string(data.path().join(REGISTRY)).unwrap();
        assert_eq!(
            registry,
            format!(
                "{} store\n{} rooms/1212121212121212\n",
                "ab".repeat(32),
                "12".repeat(32)
            )
        );
        assert!(!data.path().join("rooms.txt.new").exists());
    }

    #[test]
    fn a_room_located_again_gets_the_same_directory_and_store_is_claimed_once() {
        let data = tempfile::tempdir().unwrap();
        let first = locate(data.path(), &room(1)).unwrap();
        let second = locate(data.path(), &room(2)).unwrap();
        for _ in 0..2 {
            let again = locate(data.path(), &room(1)).unwrap();
            assert_eq!(again.dir, first.dir);
            assert!(!again.claimed, "store/ is claimed once, ever");
            assert_eq!(locate(data.path(), &room(2)).unwrap(), second);
        }
        // A third room never gets store/.
        let third = locate(data.path(), &room(3)).unwrap();
        assert_eq!(
            (third.dir.ends_with("store"), third.claimed),
            (false, false)
        );
    }

    #[test]
    fn rooms_sharing_a_prefix_get_apart_directories() {
        let data = tempfile::tempdir().unwrap();
        let mut a = [7; 32];
        let mut b = [7; 32];
        locate(data.path(), &room(1)).unwrap();
        a[31] = 1;
        b[31] = 2;
        let one = locate(data.path(), &RoomId::from_bytes(a)).unwrap();
        let two = locate(data.path(), &RoomId::from_bytes(b)).unwrap();
        assert_ne!(one.dir, two.dir);
        assert!(two.dir.ends_with(RoomId::from_bytes(b).to_string()));
        assert_eq!(locate(data.path(), &RoomId::from_bytes(b)).unwrap(), two);
    }

    #[test]
    fn a_damaged_registry_is_an_error_naming_it_never_a_new_claim() {
        let data = tempfile::tempdir().unwrap();
        let path = data.path().join(REGISTRY);
        let good = format!("{} store\n", "ab".repeat(32));
        for damaged in [
            "garbage".to_owned(),
            format!("{} store", "ab".repeat(31)),
            format!("{} ../elsewhere", "ab".repeat(32)),
            format!("{} rooms/cdcdcdcdcdcdcdcd", "ab".repeat(32)),
            format!("{good}{} store\n", "cd".repeat(32)),
            format!("{good}{good}"),
        ] {
            std::fs::write(&path, &damaged).unwrap();
            let error = locate(data.path(), &room(0xab)).unwrap_err().to_string();
            assert!(error.contains(&path.display().to_string()), "{error}");
            assert!(error.contains("line"), "{error}");
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                damaged,
                "left as found"
            );
        }
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            locate(data.path(), &room(1)),
            Err(StoreError::Registry { .. })
        ));
    }

    #[test]
    fn a_lost_registry_beside_other_rooms_is_an_error() {
        let data = tempfile::tempdir().unwrap();
        locate(data.path(), &room(1)).unwrap();
        locate(data.path(), &room(2)).unwrap();
        assert!(data.path().join("rooms/0202020202020202").is_dir());
        std::fs::remove_file(data.path().join(REGISTRY)).unwrap();
        let error = locate(data.path(), &room(2)).unwrap_err();
        assert!(matches!(error, StoreError::Registry { .. }), "{error}");
        assert!(error.to_string().contains("unknown"), "{error}");
    }

    #[test]
    fn an_unreadable_or_missing_data_dir_is_an_error_naming_it() {
        let data = tempfile::tempdir().unwrap();
        let missing = data.path().join("nowhere");
        let error = locate(&missing, &room(1)).unwrap_err().to_string();
        assert!(error.contains(&missing.display().to_string()), "{error}");
    }
}
