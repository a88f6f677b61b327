//! Private rooms: a pre-shared key that every member holds in a file.
//!
//! A node given a room key wraps every TCP connection in libp2p's private network layer (pnet:
//! XSalsa20 keyed by the pre-shared key, before Noise). A peer without the same key cannot
//! complete a connection, so it can neither read nor send anything. The file uses the format of
//! IPFS's `swarm.key` (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libp2p::pnet::PreSharedKey;

/// A private room's pre-shared key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomKey(PreSharedKey);

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
        Self(PreSharedKey::new(rand::random()))
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, RoomKeyError> {
        let text = fs::read_to_string(path).map_err(|source| RoomKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        text.parse::<PreSharedKey>()
            .map(Self)
            .map_err(|e| RoomKeyError::Invalid {
                path: path.to_owned(),
                reason: e.to_string(),
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
        file.write_all(key.0.to_key_file().as_bytes())
            .map_err(write)?;
        file.sync_all().map_err(write)?;
        Ok(key)
    }

    /// A short, public fingerprint of the key (32 hex digits), to compare keys without showing
    /// them.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint().to_string()
    }

    pub(crate) fn psk(&self) -> PreSharedKey {
        self.0
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
        let missing = RoomKey::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, RoomKeyError::Read { .. }));
    }
}
