//! What a simulated run is made of: nodes, how they connect, what they write, what goes wrong.

use std::fmt;
use std::time::Duration;

use super::hostile::Attack;
use super::link::LinkParams;

/// A simulated node: honest nodes are `0..nodes`, hostile ones come after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The node's index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Who dials whom at the start (each dialer redials a connection it made when it closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Everyone dials everyone with a higher id.
    FullMesh,
    /// Each node dials `k` others picked at random (so about `2k` connections each).
    Random {
        /// Dials per node.
        k: usize,
    },
    /// Node `i` dials node `i + 1`.
    Line,
}

/// Which nodes write lines during the run, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Lines {
    /// The writers (`None`: every honest node).
    pub writers: Option<Vec<NodeId>>,
    /// Lines each writer writes.
    pub per_writer: usize,
    /// The first line is written no earlier than this.
    pub from: Duration,
    /// The last line is written no later than this.
    pub to: Duration,
    /// Evenly spaced (`true`) or at random times (`false`).
    pub even: bool,
}

/// Logs every listed node holds before the run starts (as if synced long ago).
#[derive(Clone, Debug, PartialEq)]
pub struct Preload {
    /// The nodes holding them.
    pub holders: Vec<NodeId>,
    /// How many authors (fresh keys; none of them a node in the run).
    pub authors: usize,
    /// Entries in each author's log (a profile, then texts).
    pub entries: usize,
}

/// Something that goes wrong (or right again) at a given time.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Cut these nodes off from the others: frames between the two sides wait (TCP
    /// retransmits) until [`Fault::Heal`]; new connections across fail.
    Partition(Vec<NodeId>),
    /// The partition ends.
    Heal,
    /// The node stops (its connections close at once) and starts again after `down`, with its
    /// store and a fresh replica built from the store's heads.
    Restart {
        /// The node.
        node: NodeId,
        /// How long it is down.
        down: Duration,
    },
    /// The node stops processing anything (SIGSTOP): frames to it pile up, it sends nothing.
    Freeze(NodeId),
    /// A frozen node goes on, first processing everything that piled up.
    Thaw(NodeId),
}

/// When the run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// When every honest node holds every line (after every write and fault), or at the limit.
    Converged,
    /// At this virtual time.
    Time(Duration),
}

/// A whole simulated run. Same scenario, same seed: the same run, byte for byte.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Its name, in reports.
    pub name: String,
    /// Seeds every random choice (keys, dials, jitter, loss, write times).
    pub seed: u64,
    /// Honest nodes.
    pub nodes: usize,
    /// Who dials whom.
    pub topology: Topology,
    /// Every link's behaviour.
    pub link: LinkParams,
    /// How long storing one batch takes (plus `store_per_entry` for each entry).
    pub store_delay: Duration,
    /// Added to `store_delay` per entry of a batch.
    pub store_per_entry: Duration,
    /// What is written during the run.
    pub lines: Lines,
    /// Logs held before the run.
    pub preload: Option<Preload>,
    /// What goes wrong, and when.
    pub faults: Vec<(Duration, Fault)>,
    /// The rooms (numbered from 0; room 0 is the LAN room, the others private) node `i` is
    /// in, at index `i`, in its order. A node past the list is in room 0 only (so an empty
    /// list is one room for everyone). Preloaded logs and the hostile node are of room 0.
    pub rooms: Vec<Vec<usize>>,
    /// One hostile node trying these attacks, one per connection it makes (none: no hostile).
    pub attacks: Vec<Attack>,
    /// How many honest nodes the hostile one dials.
    pub hostile_targets: usize,
    /// When the run ends.
    pub until: Until,
    /// A run still going at this virtual time stops (unconverged).
    pub time_limit: Duration,
    /// A run still going after this much real time stops (unconverged, the report says so):
    /// for benchmarks only, since a test's run must replay the same on any machine.
    pub wall_limit: Option<Duration>,
    /// Check every signature of every chain of this many honest nodes at the end (all if
    /// larger than the run).
    pub verify_nodes: usize,
}

impl Scenario {
    /// `nodes` honest nodes on a LAN, each dialing 3 others, each writing 3 lines in the first
    /// 2 s, no faults, until converged (at most 60 s).
    pub fn new(name: &str, seed: u64, nodes: usize) -> Self {
        Self {
            name: name.to_owned(),
            seed,
            nodes,
            topology: Topology::Random { k: 3 },
            link: LinkParams::LAN,
            store_delay: Duration::from_millis(2),
            store_per_entry: Duration::from_micros(5),
            lines: Lines {
                writers: None,
                per_writer: 3,
                from: Duration::ZERO,
                to: Duration::from_secs(2),
                even: false,
            },
            preload: None,
            faults: Vec::new(),
            rooms: Vec::new(),
            attacks: Vec::new(),
            hostile_targets: 0,
            until: Until::Converged,
            time_limit: Duration::from_secs(60),
            wall_limit: None,
            verify_nodes: usize::MAX,
        }
    }

    /// The name and seed, and how to replay it.
    pub fn label(&self) -> String {
        format!(
            "scenario {:?}, seed {} (replay with SEED={})",
            self.name, self.seed, self.seed
        )
    }
}

/// The seeds to run: the one in `SEED` if set (to replay a failure), else `defaults`.
pub fn seeds(defaults: &[u64]) -> Vec<u64> {
    match std::env::var("SEED") {
        Ok(seed) => match seed.trim().parse() {
            Ok(seed) => vec![seed],
            Err(e) => panic!("SEED={seed:?} is not a number ({e}); give the seed a report printed"),
        },
        Err(_) => defaults.to_vec(),
    }
}
