//! A deterministic simulator of many nodes, for what real swarms cannot show quickly: dozens
//! to thousands of nodes, loss, jitter, slow links, partitions, restarts, frozen and hostile
//! peers, on a virtual clock.
//!
//! Each honest node is a [`p2pchat_protocol::replica::Replica`] over a
//! [`p2pchat_protocol::store::MemoryStore`], driven through its public API only, as the node's
//! driver drives it: inputs in order, every output carried out (frames encoded and written to
//! simulated links, batches stored after a storage delay and reported back, disconnects, hellos
//! accepted). Links model TCP ([`link`]). One event queue ([`clock`]) and one seeded RNG make a
//! run a function of its [`Scenario`]: same seed, same run, byte for byte ([`Report::trace`]).
//!
//! `SEED=N` replays one seed in the tests ([`seeds`]); every report names its seed.

pub mod clock;
pub mod hostile;
pub mod link;
pub mod report;
pub mod scenario;
mod world;

pub use hostile::Attack;
pub use link::LinkParams;
pub use report::Report;
pub use scenario::{Fault, Lines, NodeId, Preload, Scenario, Topology, Until, seeds};

/// Wall-clock time of the run's start, in ms since the Unix epoch (entries' timestamps).
pub const BASE_UNIX_MS: u64 = 1_700_000_000_000;

/// Runs `scenario` to its end.
pub fn run(scenario: Scenario) -> Report {
    world::Sim::new(scenario).run()
}
