//! The IO-free core of p2pchat.
//!
//! Everything that two implementations must agree on lives here: the signed [`Entry`] format,
//! the [`validate`] rules applied before anything is stored, the [`message`]s of the wire, and the
//! [`sync`] planner that says which ranges a peer lacks. Nothing in this crate touches the
//! network or the disk, so every rule can be tested with plain function calls.

mod cbor;
pub mod clock;
pub mod dm;
pub mod entry;
pub mod limits;
pub mod membership;
pub mod message;
pub mod own;
pub mod reconcile;
pub mod replica;
pub mod room;
pub mod rooms;
pub mod route;
pub mod store;
pub mod sync;
pub mod validate;

pub use entry::{Author, Body, DecodeError, Draft, Entry, Hash, KeyError, Outgoing, SigningKey};
pub use room::{Room, RoomId, RoomKind};
pub use sync::{Heads, Range};
pub use validate::ValidationError;
