//! The p2pchat node as a library: a serverless, encrypted chat peer that you can start, drive
//! and watch from a program or a test. The `p2pchat` binary (the `p2pchat` package beside this
//! one) is a command line and terminal UI over exactly this API.
//!
//! # A node
//!
//! [`Node::builder`] gives a [`NodeBuilder`]; [`NodeBuilder::spawn`] opens the data directory
//! (its identity key and one store per room), starts the swarm and returns a [`Node`], the
//! handle. A node is in one or more rooms ([`NodeBuilder::room`], repeatable; the LAN room when
//! none is given) and replicates every log of the rooms it shares with each peer it connects to.
//! Peers are found on the LAN by mDNS ([`NodeBuilder::mdns`]) or dialled by address or name
//! ([`NodeBuilder::peer`] with a [`PeerSpec`]); in a test, turn mDNS off and listen on
//! 127.0.0.1 only.
//!
//! # Sending and receiving
//!
//! [`Node::send`] appends a message to the node's own log in its first room ([`Node::send_in`]
//! for another, [`Node::send_all`] for many lines in one disk commit), [`Node::post`] to a
//! channel of a room, and [`Node::send_direct`] a direct message, end-to-end encrypted, to the
//! author [`Node::resolve`] finds by name. Each [`Message`] says where it was said
//! ([`Place`]). [`Node::messages`] is a
//! [`MessageFeed`]: every message of every room exactly once, history first, then live.
//! [`Node::events`] says what happens meanwhile ([`Event`]: connections, catch-up progress,
//! warnings); [`Node::heads`] and [`Node::stats`] tell how much is held and was received.
//! [`Node::shutdown`] stops the node and frees its data directory.
//!
//! Two nodes on 127.0.0.1, the second dialling the first, and a message from one to the other:
//!
//! ```
//! use std::time::Duration;
//! use p2pchat_node::{Node, PeerSpec};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (alice_dir, bob_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
//! let alice = Node::builder()
//!     .name("alice")
//!     .data_dir(alice_dir.path())
//!     .listen("/ip4/127.0.0.1/tcp/0".parse()?)
//!     .mdns(false)
//!     .spawn()
//!     .await?;
//! let bob = Node::builder()
//!     .name("bob")
//!     .data_dir(bob_dir.path())
//!     .peer(PeerSpec::Addr(alice.listen_addrs()[0].clone()))
//!     .mdns(false)
//!     .spawn()
//!     .await?;
//!
//! alice.send("hello bob")?;
//! let mut messages = bob.messages();
//! let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
//!     .await?
//!     .ok_or("bob's feed ended")?;
//! assert_eq!((message.name.as_str(), message.text.as_str()), ("alice", "hello bob"));
//!
//! bob.shutdown().await;
//! alice.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Offline tools
//!
//! Without going online: [`import`] appends lines to a data directory as messages, [`Archive`]
//! reads one room's history (for export), [`doctor`] checks a room's store (and repairs it),
//! [`identity_of`] reads a data directory's identity, [`RoomKey`] creates and reads a private
//! room's key file.

#![warn(missing_docs)]

mod backoff;
mod behaviour;
mod config;
mod dial;
mod discovery;
mod doctor;
mod event_loop;
mod feed;
mod frames;
mod handover;
pub mod identity;
mod import;
mod lanes;
mod node;
mod own_log;
mod read;
pub mod relay;
mod relays;
mod room;
mod roster;
mod shared;
mod storer;
#[cfg(feature = "testing")]
pub mod testing;
mod warnings;

pub use behaviour::Transport;
pub use config::Config;
pub use dial::ConnectFailure;
pub use doctor::{Checkup, LogReport, doctor};
pub use feed::MessageFeed;
pub use import::{IMPORT_CHUNK, Imported, import};
pub use node::{
    Direction, Event, Message, MissingLog, Node, NodeBuilder, NodeError, PeerSpec, PenaltyReason,
    Place, Stats, SyncTimeout, check_relay_address, check_text,
};
pub use own_log::MAX_HELD;
/// The merged history's order, as [`Message::history_key`] gives it.
pub use p2pchat_storage::HistoryKey;
pub use relays::Path;
pub use room::{RoomKey, RoomKeyError, room_of_key_file};
pub use roster::{Archive, Contact, SyncProgress, identity_of};
pub use warnings::WINDOW as NOTICE_INTERVAL;
