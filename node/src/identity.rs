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

/// The own log's mark, beside the identity file. Two slots of [`MARK_SLOT_BYTES`], at offsets
/// 0 and [`MARK_SLOT_OFFSET`]: each holds a seq (8 bytes, big-endian), the hash of the entry at
/// that seq (32 bytes, zeros at seq 0) and a check (the first 8 bytes of the BLAKE3 hash of
/// the 40 before). Writes alternate between the slots, so a write torn by a power cut leaves
/// the other slot, the mark before it, intact; the valid slot with the larger seq counts.
pub const OWN_HEAD_FILE: &str = "own-head";
/// One slot of [`OWN_HEAD_FILE`]: seq, hash, check.
pub const MARK_SLOT_BYTES: usize = 48;
/// Where the second slot of [`OWN_HEAD_FILE`] starts (another disk sector than the first).
pub const MARK_SLOT_OFFSET: u64 = 512;

/// Why the identity could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The identity file or the own log's mark could not be read or written.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The file (`identity.key` or `own-head`).
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
    /// The own log's mark exists but neither of its slots holds a valid mark.
    #[error(
        "the own log's mark {path} is damaged ({len} bytes, no valid slot); if the store is \
         intact, delete the file and start again: the store's head then serves as the mark"
    )]
    CorruptMark {
        /// The mark file.
        path: String,
        /// The file's length.
        len: usize,
    },
    /// A key was given for a data directory that already holds another one.
    #[error(
        "{path} holds another identity than the key given: use that key, or another data directory"
    )]
    OtherKey {
        /// The identity file.
        path: String,
    },
}

/// Reads the own log's mark from `dir` (without writing anything); `None` if there is none
/// (a data directory written by a release that kept no mark).
pub fn read_own_mark(dir: &Path) -> Result<Option<OwnMark>, IdentityError> {
    let path = dir.join(OWN_HEAD_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            parse_mark(&bytes)
                .map(|(mark, _)| Some(mark))
                .ok_or(IdentityError::CorruptMark {
                    path: path.display().to_string(),
                    len: bytes.len(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The valid slot with the larger seq, and which slot it is.
fn parse_mark(bytes: &[u8]) -> Option<(OwnMark, usize)> {
    let slot = |at: usize| {
        let slot = bytes.get(at..at + MARK_SLOT_BYTES)?;
        let (body, check) = slot.split_at(40);
        if Hash::of(body).as_bytes()[..8] != *check {
            return None;
        }
        let seq = u64::from_be_bytes(body[..8].try_into().ok()?);
        let hash: [u8; 32] = body[8..].try_into().ok()?;
        Some(OwnMark {
            seq,
            hash: (seq > 0).then(|| Hash::from_bytes(hash)),
        })
    };
    [slot(0), slot(MARK_SLOT_OFFSET as usize)]
        .into_iter()
        .enumerate()
        .filter_map(|(index, mark)| Some((mark?, index)))
        .max_by_key(|(mark, _)| mark.seq)
}

fn mark_slot(mark: &OwnMark) -> [u8; MARK_SLOT_BYTES] {
    let mut slot = [0; MARK_SLOT_BYTES];
    slot[..8].copy_from_slice(&mark.seq.to_be_bytes());
    if let Some(hash) = mark.hash {
        slot[8..40].copy_from_slice(hash.as_bytes());
    }
    let check = Hash::of(&slot[..40]);
    slot[40..].copy_from_slice(&check.as_bytes()[..8]);
    slot
}

/// The own log's mark file, open for updates.
#[derive(Debug)]
pub struct OwnMarkFile {
    path: std::path::PathBuf,
    file: fs::File,
    /// The slot holding the current mark; the next write goes to the other.
    current: usize,
}

impl OwnMarkFile {
    /// Creates the mark file `path` holding `mark`, replacing any: written to a temporary
    /// file, synced, renamed into place, and the directory synced.
    pub fn create(path: &Path, mark: &OwnMark) -> Result<Self, IdentityError> {
        let path = path.to_owned();
        let mut temp = path.clone().into_os_string();
        temp.push(".tmp");
        let temp = std::path::PathBuf::from(temp);
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut bytes = vec![0; MARK_SLOT_OFFSET as usize + MARK_SLOT_BYTES];
        bytes[..MARK_SLOT_BYTES].copy_from_slice(&mark_slot(mark));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&temp, &path).map_err(io)?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(Self {
            path,
            file,
            current: 0,
        })
    }

    /// Opens the mark file `path` and reads its mark; `None` if there is no file.
    pub fn open(path: &Path) -> Result<Option<(Self, OwnMark)>, IdentityError> {
        let path = path.to_owned();
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = match fs::OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let bytes = fs::read(&path).map_err(io)?;
        let (mark, current) = parse_mark(&bytes).ok_or(IdentityError::CorruptMark {
            path: path.display().to_string(),
            len: bytes.len(),
        })?;
        Ok(Some((
            Self {
                path,
                file,
                current,
            },
            mark,
        )))
    }

    /// Records `mark` durably: written over the older slot in place, then `fdatasync` (one
    /// disk sync, no change to the file's size or the directory).
    pub fn write(&mut self, mark: &OwnMark) -> Result<(), IdentityError> {
        use std::os::unix::fs::FileExt;
        let next = 1 - self.current;
        let offset = if next == 0 { 0 } else { MARK_SLOT_OFFSET };
        self.file
            .write_all_at(&mark_slot(mark), offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| IdentityError::Io {
                path: self.path.display().to_string(),
                source,
            })?;
        self.current = next;
        Ok(())
    }
}

/// Loads the key from `dir`, creating it (mode 0600) on first run.
pub fn load_or_create(dir: &Path) -> Result<SigningKey, IdentityError> {
    load_or_create_with(dir, None)
}

/// Loads the key from `dir`, creating it (mode 0600) on first run: `given`, if there is one,
/// else a fresh one. A `given` key that is not the one `dir` holds is refused
/// ([`IdentityError::OtherKey`]).
pub fn load_or_create_with(
    dir: &Path,
    given: Option<&SigningKey>,
) -> Result<SigningKey, IdentityError> {
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
            let key = SigningKey::from_bytes(&secret);
            match given {
                Some(given) if given.to_bytes() != key.to_bytes() => Err(IdentityError::OtherKey {
                    path: path.display().to_string(),
                }),
                _ => Ok(key),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new key has written nothing: say so before the key exists, so that a key
            // without a mark can only be an older release's (or a hand-deleted mark).
            OwnMarkFile::create(&dir.join(OWN_HEAD_FILE), &OwnMark { seq: 0, hash: None })?;
            let key = match given {
                Some(given) => given.clone(),
                None => SigningKey::generate(&mut rand::rngs::OsRng),
            };
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

/// The peer id of the node whose key is `author`.
///
/// A peer id inlines the protobuf encoding of its ed25519 key as an identity multihash (the
/// libp2p peer-id spec), so it is built from the key's bytes as they are: libp2p's
/// `PublicKey::try_from_bytes` would first decompress the curve point (about 20 µs, which made
/// [`crate::Node::contacts`] take 0.2 s with 10,000 authors stored). Whether the key can sign is
/// the store's check ([`Author::check_key`]); no node can have the peer id of a key that cannot.
pub fn peer_id_of(author: &Author) -> PeerId {
    let mut bytes = [0; ED25519_PEER_ID_PREFIX.len() + 32];
    bytes[..ED25519_PEER_ID_PREFIX.len()].copy_from_slice(&ED25519_PEER_ID_PREFIX);
    bytes[ED25519_PEER_ID_PREFIX.len()..].copy_from_slice(author.as_bytes());
    PeerId::from_bytes(&bytes).expect("an identity multihash of 36 bytes is a peer id")
}

/// How a peer id of an ed25519 key starts: multihash code 0 (identity) and length 36, then the
/// protobuf `PublicKey` message's field 1 (`Type`) = 1 (`Ed25519`) and field 2 (`Data`), 32
/// bytes long.
const ED25519_PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

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
        assert_eq!(peer_id_of(&Author::of(&key)), peer);
        assert_eq!(author_of(&peer), Some(Author::of(&key)));
    }

    #[test]
    fn the_peer_id_built_from_the_key_bytes_is_libp2ps() {
        for seed in 0..64u8 {
            let key = SigningKey::from_bytes(&[seed.wrapping_mul(37); 32]);
            let libp2p = keypair(&key).public().to_peer_id();
            assert_eq!(peer_id_of(&Author::of(&key)), libp2p, "seed {seed}");
            assert_eq!(author_of(&libp2p), Some(Author::of(&key)), "seed {seed}");
        }
    }

    #[test]
    fn the_mark_is_written_with_a_new_key_and_survives_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_own_mark(dir.path()).unwrap(), None);
        load_or_create(dir.path()).unwrap();
        let new = OwnMark { seq: 0, hash: None };
        assert_eq!(read_own_mark(dir.path()).unwrap(), Some(new));
        let mark = |seq: u64| OwnMark {
            seq,
            hash: Some(Hash::from_bytes([seq as u8; 32])),
        };
        let (mut file, read) = OwnMarkFile::open(&dir.path().join(OWN_HEAD_FILE))
            .unwrap()
            .unwrap();
        assert_eq!(read, new);
        for seq in 1..=3 {
            file.write(&mark(seq)).unwrap();
            assert_eq!(read_own_mark(dir.path()).unwrap(), Some(mark(seq)));
        }
        drop(file);
        // A torn write of seq 4 (over the slot of seq 2) leaves seq 3.
        let path = dir.path().join(OWN_HEAD_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let torn = mark_slot(&mark(4));
        bytes[..20].copy_from_slice(&torn[..20]);
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read_own_mark(dir.path()).unwrap(), Some(mark(3)));
        let (mut file, _) = OwnMarkFile::open(&dir.path().join(OWN_HEAD_FILE))
            .unwrap()
            .unwrap();
        file.write(&mark(4)).unwrap();
        file.write(&mark(5)).unwrap();
        assert_eq!(read_own_mark(dir.path()).unwrap(), Some(mark(5)));

        fs::write(&path, b"short").unwrap();
        let err = read_own_mark(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("damaged") && err.contains(OWN_HEAD_FILE),
            "{err}"
        );
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(IDENTITY_FILE), b"short").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
