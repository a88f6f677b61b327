//! The p2pchat node: a library that the `p2pchat` binary, the tests and other programs use.
//! One node is in one or more rooms ([`NodeBuilder::room`]; the LAN room when none is given)
//! over one swarm.
//!
//! ```no_run
//! # async fn demo() -> Result<(), p2pchat_node::NodeError> {
//! use p2pchat_node::Node;
//! let node = Node::builder()
//!     .name("alice")
//!     .data_dir("/tmp/alice")
//!     .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
//!     .mdns(false)
//!     .spawn()
//!     .await?;
//! let mut messages = node.messages();
//! node.send("hello")?;
//! while let Some(message) = messages.next().await {
//!     println!("{}> {}", message.name, message.text);
//! }
//! # Ok(()) }
//! ```

mod backoff;
mod behaviour;
mod config;
mod dial;
mod discovery;
mod doctor;
mod event_loop;
mod feed;
mod frames;
pub mod identity;
mod import;
mod lanes;
mod node;
mod own_log;
mod room;
mod roster;
mod shared;
mod storer;
mod warnings;

pub use behaviour::Transport;
pub use config::Config;
pub use dial::ConnectFailure;
pub use doctor::{Checkup, LogReport, doctor};
pub use feed::MessageFeed;
pub use import::{IMPORT_CHUNK, Imported, import};
pub use node::{
    Direction, Event, Message, MissingLog, Node, NodeBuilder, NodeError, PeerSpec, PenaltyReason,
    Stats, SyncTimeout, check_text,
};
pub use own_log::MAX_HELD;
/// The merged history's order, as [`Message::history_key`] gives it.
pub use p2pchat_storage::HistoryKey;
pub use room::{RoomKey, RoomKeyError, room_of_key_file};
pub use roster::{Archive, Contact, SyncProgress, identity_of};
pub use warnings::WINDOW as NOTICE_INTERVAL;
