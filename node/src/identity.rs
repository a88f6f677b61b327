//! The node's identity: an ed25519 key kept in the data directory, readable only by its owner.
//!
//! The same key signs the user's log entries (as their [`Author`]) and identifies the node on
//! the network (as its libp2p [`PeerId`]), so a peer id and an author are two views of one key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use p2pchat_protocol::{Author, SigningKey};

/// The identity file's name inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";

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
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(IDENTITY_FILE), b"short").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
