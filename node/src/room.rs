//! Private rooms' key files: 32 random bytes that every member holds in a file.
//!
//! A key file makes a private room ([`RoomKey::room`]): its secret, id and membership proofs
//! are derived from the file's 32 bytes ([`p2pchat_protocol::room`]); nothing of the key goes
//! on the wire. The file uses the format of IPFS's `swarm.key` (`/key/swarm/psk/1.0.0/`,
//! `/base16/`, 64 hex digits), so the key files of earlier releases keep working.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use p2pchat_protocol::room::Room;

/// A private room's key, as read from its key file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RoomKey([u8; 32]);

/// Never shows the key.
impl std::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoomKey({})", self.fingerprint())
    }
}

/// Why a room key could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoomKeyError {
    /// The file could not be read.
    #[error("cannot read room key {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not hold a room key.
    #[error("{} is not a room key ({reason}); create one with `p2pchat keygen-room FILE`", path.display())]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be created (it is never overwritten).
    #[error("cannot create room key {}: {source}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl RoomKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, RoomKeyError> {
        let bytes = fs::read(path).map_err(|source| RoomKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse_key_file(&bytes)
            .map(Self)
            .map_err(|reason| RoomKeyError::Invalid {
                path: path.to_owned(),
                reason,
            })
    }

    /// Writes a new random key to `path` (mode 0600), refusing to overwrite an existing file.
    pub fn create(path: &Path) -> Result<Self, RoomKeyError> {
        let key = Self::generate();
        let write = |source| RoomKeyError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write)?;
        file.write_all(key.to_key_file().as_bytes())
            .map_err(write)?;
        file.sync_all().map_err(write)?;
        Ok(key)
    }

    /// The private room of this key, shown as `label`.
    pub fn room(&self, label: impl Into<String>) -> Room {
        Room::private(&self.0, label)
    }

    /// A short, public fingerprint of the key (32 hex digits, the first half of its room's
    /// public id), to compare keys without showing them.
    pub fn fingerprint(&self) -> String {
        self.room("").id().to_string()[..32].to_owned()
    }

    /// The key file's text.
    fn to_key_file(self) -> String {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}\n{}\n{hex}\n", KEY_FILE_HEADER[0], KEY_FILE_HEADER[1])
    }
}

/// The private room of the key file at `path`, labelled with the file's stem
/// (`~/keys/team.key` is room `team`).
pub fn room_of_key_file(path: &Path) -> Result<Room, RoomKeyError> {
    let key = RoomKey::load(path)?;
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok(key.room(stem))
}

/// The first two lines of a key file.
const KEY_FILE_HEADER: [&str; 2] = ["/key/swarm/psk/1.0.0/", "/base16/"];

/// The key in a key file (`swarm.key` format), or what is wrong with the file, in words that
/// never quote the key itself.
fn parse_key_file(bytes: &[u8]) -> Result<[u8; 32], String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not a text file".to_owned())?;
    let mut lines = text.lines().map(str::trim_end);
    for (number, expected) in ["first", "second"].into_iter().zip(KEY_FILE_HEADER) {
        match lines.next() {
            Some(line) if line == expected => {}
            Some(line) => {
                let shown: String = line.chars().take(40).collect();
                return Err(format!(
                    "its {number} line is {shown:?}, expected {expected}"
                ));
            }
            None if text.trim().is_empty() => return Err("it is empty".to_owned()),
            None => return Err(format!("it ends before its {number} line, {expected}")),
        }
    }
    let Some(hex) = lines.next() else {
        return Err("it ends before the key (a third line of 64 hex digits)".to_owned());
    };
    let digits: Option<Vec<u8>> = hex
        .chars()
        .map(|c| c.to_digit(16).map(|d| d as u8))
        .collect();
    match digits {
        Some(digits) if digits.len() == 64 => {
            let mut key = [0; 32];
            for (byte, pair) in key.iter_mut().zip(digits.chunks(2)) {
                *byte = pair[0] << 4 | pair[1];
            }
            Ok(key)
        }
        Some(digits) => Err(format!(
            "its key line has {} hex digits, expected 64",
            digits.len()
        )),
        None => Err("its key line holds characters that are not hex digits (0-9, a-f)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_loads_back_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("room.key");
        let key = RoomKey::create(&path).unwrap();
        assert_eq!(RoomKey::load(&path).unwrap(), key);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            matches!(RoomKey::create(&path), Err(RoomKeyError::Write { .. })),
            "never overwritten"
        );
        assert_ne!(RoomKey::generate(), key);
        let room = room_of_key_file(&path).unwrap();
        assert_eq!(room.label(), "room");
        assert_eq!(room.id(), key.room("other").id());
        let secret: String = key.0.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!format!("{key:?}").contains(&secret[..8]), "never shown");
    }

    #[test]
    fn an_earlier_releases_key_file_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("team.key");
        let hex = "0123456789abcdef".repeat(4);
        fs::write(&path, format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")).unwrap();
        let key = RoomKey::load(&path).unwrap();
        assert_eq!(key.to_key_file(), fs::read_to_string(&path).unwrap());
        assert_eq!(key.0[..2], [0x01, 0x23]);
    }

    #[test]
    fn a_bad_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("room.key");
        fs::write(&path, "not a key").unwrap();
        let error = RoomKey::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("is not a room key") && error.contains("keygen-room"),
            "{error}"
        );
        let secret = "ab".repeat(31);
        for (content, reason) in [
            ("", "it is empty"),
            (
                "not a key",
                "its first line is \"not a key\", expected /key/swarm/psk/1.0.0/",
            ),
            (
                "/key/swarm/psk/1.0.0/\n",
                "it ends before its second line, /base16/",
            ),
            (
                "/key/swarm/psk/1.0.0/\n/base64/\n",
                "its second line is \"/base64/\"",
            ),
            (
                "/key/swarm/psk/1.0.0/\n/base16/\n",
                "it ends before the key",
            ),
            (
                &format!("/key/swarm/psk/1.0.0/\n/base16/\n{secret}\n"),
                "has 62 hex digits, expected 64",
            ),
            (
                &format!("/key/swarm/psk/1.0.0/\n/base16/\n{secret}zz\n"),
                "not hex digits",
            ),
            // 64 bytes, not 64 characters: once a panic in libp2p's parser.
            (
                &format!("/key/swarm/psk/1.0.0/\n/base16/\n{secret}é\n"),
                "not hex digits",
            ),
        ] {
            fs::write(&path, content).unwrap();
            let error = RoomKey::load(&path).unwrap_err().to_string();
            assert!(
                error.contains(reason) && error.contains("room.key") && !error.contains(&secret),
                "{content:?}: {error}"
            );
        }
        fs::write(&path, [0xff, 0xfe, 0]).unwrap();
        let error = RoomKey::load(&path).unwrap_err().to_string();
        assert!(error.contains("it is not a text file"), "{error}");
        let missing = RoomKey::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, RoomKeyError::Read { .. }));
    }
}
