//! The replication core: one IO-free machine per node (docs/architecture.md, "The core").
//!
//! SKELETON in progress (lead).

mod api;

use std::time::{Duration, Instant};

pub use api::{Disconnect, Event, Input, Output, Penalty};

use crate::entry::Author;
use crate::message::HeadInfo;
use crate::reconcile::HeadSet;
use crate::store::Logs;

/// How often the driver should give the core an [`Input::Tick`].
pub const TICK: Duration = Duration::from_millis(100);
/// How long a peer that misbehaved is kept out.
pub const BAN_TIME: Duration = Duration::from_secs(60);
/// How long a connected peer has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A session with nothing else to send for this long sends a [`crate::message::Message::Ping`].
pub const PING_INTERVAL: Duration = Duration::from_millis(500);
/// A peer from which nothing arrived for this long is disconnected.
pub const SILENCE_LIMIT: Duration = Duration::from_millis(2500);
/// Most batches a peer may send before it hears an ack (live and bulk together).
pub const MAX_UNACKED_BATCHES: usize = 16;

/// See the module docs.
pub struct Replica<P> {
    own: Author,
    name: String,
    heads: HeadSet,
    outputs: std::collections::VecDeque<Output<P>>,
}

impl<P: Copy + Ord + std::fmt::Debug> Replica<P> {
    /// The core of the node whose own log is `own`, called `name`, holding `heads`.
    pub fn new(own: Author, name: String, heads: impl IntoIterator<Item = HeadInfo>) -> Self {
        let mut set = HeadSet::new();
        for head in heads {
            set.insert(head);
        }
        Self { own, name, heads: set, outputs: Default::default() }
    }

    /// Takes one input at time `now`; `logs` is read for entries to send.
    pub fn handle(&mut self, now: Instant, input: Input<P>, logs: &impl Logs) {
        let _ = (now, input, logs, self.own, &self.name);
        unimplemented!()
    }

    /// The next thing the driver must do.
    pub fn poll(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// The heads the core knows to be durable.
    pub fn heads(&self) -> &HeadSet {
        &self.heads
    }
}
