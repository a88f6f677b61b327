//! Rooms: replication scopes with a 32-byte id (docs/protocol.md, section 4).
//!
//! Every room has a 32-byte *secret*: for a private room it is derived from the key file's 32
//! bytes, for an open room from its name (so anyone who knows the name is a member). From the
//! secret come the room's public [`RoomId`] (named in every entry's signed payload) and the key
//! of its membership proofs ([`crate::membership`]). All derivations are BLAKE3's key
//! derivation mode with a fixed context string; none of them can be inverted.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteArray;

use crate::limits::MAX_NAME_BYTES;

/// Context of the secret of an open room, derived from its name.
const OPEN_SECRET_CONTEXT: &str = "p2pchat 2026-12 open room secret";
/// Context of the secret of a private room, derived from its key file's 32 bytes.
const PRIVATE_SECRET_CONTEXT: &str = "p2pchat 2026-12 private room secret";
/// Context of a room's id, derived from its secret.
const ID_CONTEXT: &str = "p2pchat 2026-12 room id";
/// Context of a room's proof key, derived from its secret.
const PROOF_KEY_CONTEXT: &str = "p2pchat 2026-12 room proof key";
/// Context of the key of a room's rendezvous namespaces, derived from its secret.
const RENDEZVOUS_CONTEXT: &str = "p2pchat 2026-12-01 rendezvous";
/// What a rendezvous namespace hashes, before the day.
const RENDEZVOUS_TAG: &[u8] = b"p2pchat-rdv";

/// The name of the open LAN room, the default room.
pub const LAN: &str = "lan";

/// A room's public id: what an entry's payload names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomId(ByteArray<32>);

impl RoomId {
    /// A room id from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(ByteArray::new(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomId(")?;
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

/// Whether anyone may join a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoomKind {
    /// An open room: anyone who knows its name (the LAN room is `lan`).
    Open,
    /// A private room: only holders of its key file.
    Private,
}

/// A room a node is in: its id, its secret, and the label it is shown by.
#[derive(Clone, PartialEq, Eq)]
pub struct Room {
    id: RoomId,
    secret: [u8; 32],
    kind: RoomKind,
    label: String,
}

/// Why a name cannot name an open room.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error(
    "{0:?} cannot name a room: use 1 to {MAX_NAME_BYTES} bytes, no spaces at either end, no control characters"
)]
pub struct RoomNameError(pub String);

impl Room {
    /// The open LAN room (`lan`), where a node is when given no room.
    pub fn lan() -> Self {
        Self::from_secret(
            blake3::derive_key(OPEN_SECRET_CONTEXT, LAN.as_bytes()),
            RoomKind::Open,
            LAN.to_owned(),
        )
    }

    /// The open room called `name` (`lan` is the LAN room). Names are compared byte for byte.
    pub fn open(name: &str) -> Result<Self, RoomNameError> {
        crate::entry::check_name(name).map_err(|_| RoomNameError(name.to_owned()))?;
        Ok(Self::from_secret(
            blake3::derive_key(OPEN_SECRET_CONTEXT, name.as_bytes()),
            RoomKind::Open,
            name.to_owned(),
        ))
    }

    /// The private room of a key file's 32 bytes, shown as `label` (the file's stem).
    pub fn private(key: &[u8; 32], label: impl Into<String>) -> Self {
        Self::from_secret(
            blake3::derive_key(PRIVATE_SECRET_CONTEXT, key),
            RoomKind::Private,
            label.into(),
        )
    }

    fn from_secret(secret: [u8; 32], kind: RoomKind, label: String) -> Self {
        Self {
            id: RoomId::from_bytes(blake3::derive_key(ID_CONTEXT, &secret)),
            secret,
            kind,
            label,
        }
    }

    /// The room's public id.
    pub fn id(&self) -> RoomId {
        self.id
    }

    /// Open or private.
    pub fn kind(&self) -> RoomKind {
        self.kind
    }

    /// What the room is shown as: its name, or its key file's stem.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The same room shown as `label`.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The room's namespace at a rendezvous point on day `utc_day` (days since the Unix
    /// epoch, UTC): 32 hex digits of a keyed BLAKE3 hash of the day, keyed by the room's
    /// secret (docs/protocol.md, "Rendezvous"). Only who can derive the secret (knows an open
    /// room's name, holds a private room's key) can compute it, and one day's namespace says
    /// nothing of the next.
    pub fn rendezvous_namespace(&self, utc_day: u64) -> String {
        let key = blake3::derive_key(RENDEZVOUS_CONTEXT, &self.secret);
        let mut hasher = blake3::Hasher::new_keyed(&key);
        hasher.update(RENDEZVOUS_TAG);
        hasher.update(&utc_day.to_be_bytes());
        let hash = hasher.finalize();
        hash.as_bytes()[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The key of this room's membership proofs.
    pub(crate) fn proof_key(&self) -> [u8; 32] {
        blake3::derive_key(PROOF_KEY_CONTEXT, &self.secret)
    }
}

/// Never shows the secret.
impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room")
            .field("label", &self.label)
            .field("kind", &self.kind)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_told_apart_by_their_secrets() {
        let lan = Room::lan();
        assert_eq!(Room::open("lan").unwrap(), lan);
        assert_ne!(Room::open("ops").unwrap().id(), lan.id());
        assert_ne!(
            Room::open("Ops").unwrap().id(),
            Room::open("ops").unwrap().id()
        );
        let private = Room::private(&[7; 32], "team");
        assert_ne!(private.id(), Room::private(&[8; 32], "team").id());
        assert_eq!(private.id(), Room::private(&[7; 32], "other").id());
        assert_ne!(private.proof_key(), *private.id().as_bytes());
        assert!(!format!("{private:?}").contains("0707"));
        assert!(Room::open(" lan").is_err());
        assert!(Room::open("").is_err());
    }

    #[test]
    fn rendezvous_namespaces_change_daily_and_per_room() {
        let lan = Room::lan();
        let today = lan.rendezvous_namespace(20_788);
        assert_eq!(today.len(), 32);
        assert!(
            today
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            today,
            Room::open("lan").unwrap().rendezvous_namespace(20_788)
        );
        assert_ne!(today, lan.rendezvous_namespace(20_789));
        assert_ne!(
            today,
            Room::open("ops").unwrap().rendezvous_namespace(20_788)
        );
        let private = Room::private(&[7; 32], "team");
        assert_eq!(
            private.rendezvous_namespace(20_788),
            Room::private(&[7; 32], "other").rendezvous_namespace(20_788),
            "the label is not part of it"
        );
        assert_ne!(
            private.rendezvous_namespace(20_788),
            Room::private(&[8; 32], "team").rendezvous_namespace(20_788)
        );
        // The vector of docs/protocol.md, "Rendezvous".
        assert_eq!(today, VECTOR_LAN_20788);
    }

    /// The LAN room's namespace on day 20788 (2026-12-01).
    const VECTOR_LAN_20788: &str = "b223bb25ef4fbf4a9b2645803ee6cd02";
}
