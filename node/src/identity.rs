//! The node's identity: an ed25519 key kept in the data directory, readable only by its owner.
//!
//! The same key signs the user's log entries (as their [`Author`]) and identifies the node on
//! the network (as its libp2p [`PeerId`]), so a peer id and an author are two views of one key.
//!
//! Beside the key lives the own log's mark ([`OWN_HEAD_FILE`]): how far this key's log went
//! (its last seq and hash). It is kept outside `store/` so that it survives losing the store,
//! which is what it is for: a node whose store is behind its mark must not append, or it would
//! sign a second entry at a seq it already signed (see [`p2pchat_protocol::own`]).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use p2pchat_protocol::own::OwnMark;
use p2pchat_protocol::{Author, Hash, SigningKey};

/// The identity file's name inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// The own log's mark, beside the identity file: 8 bytes of seq (big-endian) and 32 of the
/// hash of the entry at that seq (zeros at seq 0).
pub const OWN_HEAD_FILE: &str = "own-head";

/// Why the identity could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file could not be read or created.
    #[error("cannot use identity file {path}: {source}")]
    Io {
        /// The identity file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file exists but does not hold a key.
    #[error("identity file {path} is corrupt (expected 32 bytes, found {len})")]
    Corrupt {
        /// The identity file.
        path: String,
        /// The file's length.
        len: usize,
    },
    /// The own log's mark exists but is not 40 bytes.
    #[error(
        "the own log's mark {path} is damaged (expected 40 bytes, found {len}); if the store is \
         intact, delete the file and start again: the store's head then serves as the mark"
    )]
    CorruptMark {
        /// The mark file.
        path: String,
        /// The file's length.
        len: usize,
    },
}

/// Reads the own log's mark from `dir`; `None` if there is none (a data directory written by
/// a release that kept no mark).
pub fn read_own_mark(dir: &Path) -> Result<Option<OwnMark>, IdentityError> {
    let path = dir.join(OWN_HEAD_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IdentityError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let corrupt = || IdentityError::CorruptMark {
        path: path.display().to_string(),
        len: bytes.len(),
    };
    let (seq, hash) = bytes.split_at_checked(8).ok_or_else(corrupt)?;
    let seq = u64::from_be_bytes(seq.try_into().map_err(|_| corrupt())?);
    let hash: [u8; 32] = hash.try_into().map_err(|_| corrupt())?;
    Ok(Some(OwnMark {
        seq,
        hash: (seq > 0).then(|| Hash::from_bytes(hash)),
    }))
}

/// Records the own log's mark in `dir` durably: a temporary file, synced, renamed over the
/// old one, and the directory synced, so a crash leaves the old mark or the new one.
pub fn write_own_mark(dir: &Path, mark: &OwnMark) -> Result<(), IdentityError> {
    let path = dir.join(OWN_HEAD_FILE);
    let temp = dir.join(format!("{OWN_HEAD_FILE}.tmp"));
    let io = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = [0; 40];
    bytes[..8].copy_from_slice(&mark.seq.to_be_bytes());
    if let Some(hash) = mark.hash {
        bytes[8..].copy_from_slice(hash.as_bytes());
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_data().map_err(io)?;
    fs::rename(&temp, &path).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Loads the key from `dir`, creating it (mode 0600) on first run.
pub fn load_or_create(dir: &Path) -> Result<SigningKey, IdentityError> {
    let path = dir.join(IDENTITY_FILE);
    let io = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let secret: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| IdentityError::Corrupt {
                        path: path.display().to_string(),
                        len: bytes.len(),
                    })?;
            let mode = fs::metadata(&path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io)?;
            }
            Ok(SigningKey::from_bytes(&secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new key has written nothing: say so before the key exists, so that a key
            // without a mark can only be an older release's (or a hand-deleted mark).
            write_own_mark(dir, &OwnMark { seq: 0, hash: None })?;
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            file.write_all(key.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// The libp2p keypair for the same key.
pub fn keypair(key: &SigningKey) -> Keypair {
    // 32 bytes always form a valid ed25519 secret key.
    Keypair::ed25519_from_bytes(key.to_bytes()).expect("32-byte ed25519 secret")
}

/// The peer id of the node whose key is `author`, if the author is a valid ed25519 key.
pub fn peer_id_of(author: &Author) -> Option<PeerId> {
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(author.as_bytes()).ok()?;
    Some(PeerId::from_public_key(&public.into()))
}

/// The author whose key is `peer`'s identity, if the peer uses an ed25519 key.
pub fn author_of(peer: &PeerId) -> Option<Author> {
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return None; // not an identity multihash: the key is not inlined
    }
    let public = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(Author::from_bytes(
        public.try_into_ed25519().ok()?.to_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(IDENTITY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(dir.path()).unwrap();
        assert_eq!(first.to_bytes(), second.to_bytes());
    }

    #[test]
    fn author_and_peer_id_are_the_same_key() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let peer = keypair(&key).public().to_peer_id();
        assert_eq!(peer_id_of(&Author::of(&key)), Some(peer));
        assert_eq!(author_of(&peer), Some(Author::of(&key)));
    }

    #[test]
    fn the_mark_is_written_with_a_new_key_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_own_mark(dir.path()).unwrap(), None);
        load_or_create(dir.path()).unwrap();
        let new = OwnMark { seq: 0, hash: None };
        assert_eq!(read_own_mark(dir.path()).unwrap(), Some(new));
        let mark = OwnMark {
            seq: 31,
            hash: Some(Hash::from_bytes([9; 32])),
        };
        write_own_mark(dir.path(), &mark).unwrap();
        assert_eq!(read_own_mark(dir.path()).unwrap(), Some(mark));
        fs::write(dir.path().join(OWN_HEAD_FILE), b"short").unwrap();
        let err = read_own_mark(dir.path()).unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains(OWN_HEAD_FILE), "{err}");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(IDENTITY_FILE), b"short").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
