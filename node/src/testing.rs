//! Many nodes in one process, for tests (the `testing` feature): spawn a cluster, wire it up,
//! cut it in two, heal it, and wait until every node holds every log.
//!
//! ```
//! use std::time::Duration;
//! use p2pchat_node::testing::Cluster;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cluster = Cluster::builder().nodes(5).memory().seed(7).spawn().await?;
//! cluster.line().await?;
//! cluster.partition(&[0, 1], &[2, 3, 4]).await?;
//! cluster.node(0).send("from the left")?;
//! cluster.node(4).send("from the right")?;
//! cluster.heal().await?;
//! cluster.wait_converged(Duration::from_secs(30)).await?;
//! for node in cluster.nodes() {
//!     let texts: Vec<String> = node.history(10).await?.into_iter().map(|m| m.text).collect();
//!     assert!(texts.contains(&"from the left".into()), "{texts:?}");
//!     assert!(texts.contains(&"from the right".into()), "{texts:?}");
//! }
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Node `i` is called `node{i}`; its key is drawn from the seed, so a seed gives the same
//! authors (and peer ids) on every run. mDNS is off: nodes connect only as the cluster says.
//! Each node listens on 127.0.0.1 (a port the system picks) and keeps its data in a temporary
//! directory that the cluster deletes when dropped; with [`ClusterBuilder::memory`], nodes
//! keep their logs in memory and connect over libp2p's memory transport (no disk, no ports). A partition blocks the peers of the other
//! side ([`Node::block`]), so neither side reaches the other until [`Cluster::heal`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use p2pchat_protocol::{Author, Heads, SigningKey};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::{Node, NodeError, Transport};

/// How long [`Cluster::partition`] waits for the connections it cuts to close.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Why a cluster could not be set up, or did not converge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A node could not start, stop or act.
    #[error("{node}: {source}")]
    Node {
        /// The node's name (`node3`).
        node: String,
        /// What went wrong.
        source: NodeError,
    },
    /// [`Cluster::start`] was asked to restart a node of a [`ClusterBuilder::memory`] cluster.
    #[error(
        "{node} keeps its logs in memory: starting it again would lose them (and sign its own \
         log anew, a fork); use a cluster without .memory() to restart nodes"
    )]
    InMemory {
        /// The node's name.
        node: String,
    },
    /// A node's temporary data directory could not be made.
    #[error("cannot make a temporary data directory for {node}: {source}")]
    TempDir {
        /// The node's name.
        node: String,
        /// Why.
        source: std::io::Error,
    },
    /// A connection that [`Cluster::partition`] cut did not close.
    #[error("{node} is still connected to {peer} {CLOSE_WAIT:?} after the partition")]
    StillConnected {
        /// The node's name.
        node: String,
        /// The peer's name.
        peer: String,
    },
    /// [`Cluster::wait_converged`] ran out of time.
    #[error("the cluster did not converge within {waited:?}: {missing}")]
    NotConverged {
        /// How long it waited.
        waited: Duration,
        /// Which node lacked which entries when it gave up, in words.
        missing: String,
    },
}

/// Configures a [`Cluster`]; see [`Cluster::builder`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    nodes: usize,
    seed: u64,
    memory: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            nodes: 2,
            seed: 0,
            memory: false,
        }
    }
}

impl ClusterBuilder {
    /// How many nodes (default 2).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// The seed that the nodes' keys and [`Cluster::mesh`]'s choices are drawn from
    /// (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Keeps each node's logs in memory ([`NodeBuilder::in_memory`](crate::NodeBuilder::in_memory))
    /// and connects the nodes over libp2p's in-process memory transport (`/memory/N`
    /// addresses) instead of temporary data directories and TCP on 127.0.0.1: no disk, no
    /// ports, nothing outside the test in the way. Such nodes cannot restart
    /// ([`Cluster::start`]).
    pub fn memory(mut self) -> Self {
        self.memory = true;
        self
    }

    /// Starts every node, none connected yet.
    pub async fn spawn(self) -> Result<Cluster, ClusterError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let mut members = Vec::with_capacity(self.nodes);
        for i in 0..self.nodes {
            let name = format!("node{i}");
            let dir = match self.memory {
                true => None,
                false => Some(tempfile::tempdir().map_err(|source| ClusterError::TempDir {
                    node: name.clone(),
                    source,
                })?),
            };
            let key = SigningKey::generate(&mut rng);
            let peer = crate::identity::keypair(&key).public().to_peer_id();
            members.push(Member {
                name,
                key,
                peer,
                node: None,
                dir,
            });
        }
        let mut cluster = Cluster {
            members,
            links: BTreeSet::new(),
            cut: BTreeSet::new(),
            seed: self.seed,
            memory: self.memory,
        };
        for i in 0..self.nodes {
            cluster.launch(i).await?;
        }
        Ok(cluster)
    }
}

/// One node of the cluster and what it needs to start again.
struct Member {
    name: String,
    key: SigningKey,
    peer: PeerId,
    /// `None` while stopped.
    node: Option<Node>,
    /// `None` for an in-memory node.
    dir: Option<tempfile::TempDir>,
}

/// Nodes in one process with their links: see the [module docs](self).
pub struct Cluster {
    members: Vec<Member>,
    /// The links asked for (`(i, j)` with `i < j`), cut or not.
    links: BTreeSet<(usize, usize)>,
    /// The links a [`Cluster::partition`] cut, until [`Cluster::heal`].
    cut: BTreeSet<(usize, usize)>,
    seed: u64,
    memory: bool,
}

impl Cluster {
    /// Starts configuring a cluster.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Node `i`. Panics if there is no node `i`.
    pub fn node(&self, i: usize) -> &Node {
        let Some(member) = self.members.get(i) else {
            panic!("the cluster has {} nodes, no node {i}", self.len());
        };
        let Some(node) = &member.node else {
            panic!("{} is stopped", member.name);
        };
        node
    }

    /// Every running node, in order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.members
            .iter()
            .filter_map(|member| member.node.as_ref())
    }

    /// Where node `i` keeps its data (its store can be opened there while it is stopped);
    /// `None` in a [`ClusterBuilder::memory`] cluster.
    pub fn data_dir(&self, i: usize) -> Option<&Path> {
        self.members[i].dir.as_ref().map(tempfile::TempDir::path)
    }

    /// Stops node `i` (its data and links are kept for [`Cluster::start`]): its peers see it
    /// go, and [`Cluster::node`] panics until it starts again.
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.members[i].node.take() {
            node.shutdown().await;
        }
    }

    /// Starts node `i` again after [`Cluster::stop`], with its data, key and links, on a new
    /// port (a running node restarts). Refused in a [`ClusterBuilder::memory`] cluster.
    pub async fn start(&mut self, i: usize) -> Result<(), ClusterError> {
        if self.memory {
            return Err(ClusterError::InMemory {
                node: self.members[i].name.clone(),
            });
        }
        self.stop(i).await;
        self.launch(i).await
    }

    /// Starts node `i` (stopped) and connects its links.
    async fn launch(&mut self, i: usize) -> Result<(), ClusterError> {
        let member = &self.members[i];
        let transport = match self.memory {
            true => Transport::Memory,
            false => Transport::Tcp,
        };
        let builder = Node::builder()
            .name(&member.name)
            .keypair(member.key.clone())
            .transport(transport)
            .listen(listen_address(transport))
            .mdns(false);
        let builder = match &member.dir {
            Some(dir) => builder.data_dir(dir.path()),
            None => builder.in_memory(),
        };
        let node = builder
            .spawn()
            .await
            .map_err(|source| self.failed(i, source))?;
        self.members[i].node = Some(node);
        let links: Vec<_> = self.links_of(i).collect();
        for (a, b) in links {
            let other = if a == i { b } else { a };
            if self.cut.contains(&(a, b)) {
                self.act(i, |node| node.block(self.members[other].peer))
                    .await?;
            }
            // The dialer of a link that restarted took its addresses along; the other end of
            // a link it listens for forgets its old address.
            if other > i {
                self.act(other, |node| node.disconnect(self.members[i].peer))
                    .await?;
            }
            self.dial(a, b).await?;
        }
        Ok(())
    }

    /// Node `i`'s name: `node{i}`.
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// Connects nodes `i` and `j` and keeps them connected (until a [`Cluster::partition`]
    /// puts them on different sides): the later of the two dials the earlier
    /// ([`Node::dial`]) and redials when the connection is lost.
    pub async fn connect(&mut self, i: usize, j: usize) -> Result<(), ClusterError> {
        self.add_links([(i, j)]).await
    }

    /// Connects each node to the next: `node0 – node1 – … – node{n-1}`.
    pub async fn line(&mut self) -> Result<(), ClusterError> {
        let links: Vec<_> = (1..self.len()).map(|j| (j - 1, j)).collect();
        self.add_links(links).await
    }

    /// Connects each node to at least `k` others, chosen from the seed (the same seed, the
    /// same links).
    pub async fn mesh(&mut self, k: usize) -> Result<(), ClusterError> {
        let n = self.len();
        let k = k.min(n.saturating_sub(1));
        // A stream of its own ("mesh"), so the links do not repeat the keys' draws.
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ 0x6d65_7368);
        let mut links = self.links.clone();
        for i in 0..n {
            let mut others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            others.shuffle(&mut rng);
            for j in others {
                if degree(&links, i) >= k {
                    break;
                }
                links.insert(ordered(i, j));
            }
        }
        let new: Vec<_> = links.difference(&self.links).copied().collect();
        self.add_links(new).await
    }

    /// Cuts every link between a node of `left` and a node of `right`, and keeps them apart
    /// until [`Cluster::heal`]. Returns once those connections are closed.
    pub async fn partition(&mut self, left: &[usize], right: &[usize]) -> Result<(), ClusterError> {
        let crossing: Vec<_> = self
            .links
            .iter()
            .copied()
            .filter(|&(i, j)| {
                (left.contains(&i) && right.contains(&j))
                    || (left.contains(&j) && right.contains(&i))
            })
            .filter(|link| !self.cut.contains(link))
            .collect();
        for &(i, j) in &crossing {
            self.act(i, |node| node.block(self.members[j].peer)).await?;
            self.act(j, |node| node.block(self.members[i].peer)).await?;
            self.cut.insert((i, j));
        }
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        for (i, j) in crossing {
            for (node, peer) in [(i, j), (j, i)] {
                while self.connected(node, peer) {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ClusterError::StillConnected {
                            node: self.members[node].name.clone(),
                            peer: self.members[peer].name.clone(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Ok(())
    }

    /// Restores every link a [`Cluster::partition`] cut (each dialer redials at once).
    pub async fn heal(&mut self) -> Result<(), ClusterError> {
        for (i, j) in std::mem::take(&mut self.cut) {
            self.act(i, |node| node.unblock(self.members[j].peer))
                .await?;
            self.act(j, |node| node.unblock(self.members[i].peer))
                .await?;
        }
        Ok(())
    }

    /// Waits until every running node holds the same logs (the same heads in every room), or
    /// fails after `timeout` saying which node lacks what.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let missing = self.missing();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::NotConverged {
                    waited: timeout,
                    missing,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for member in &mut self.members {
            if let Some(node) = member.node.take() {
                node.shutdown().await;
            }
        }
    }

    /// What each node lacks of the logs any node holds, in words; empty when converged.
    fn missing(&self) -> String {
        let mut said = String::new();
        let Some(rooms) = self.nodes().next().map(Node::rooms) else {
            return said;
        };
        for room in &rooms {
            let label = room.label();
            let heads: Vec<(&str, Heads)> = self
                .members
                .iter()
                .filter_map(|member| Some((member.name.as_str(), member.node.as_ref()?)))
                .map(|(name, node)| (name, node.heads_in(label).unwrap_or_default()))
                .collect();
            let mut all = Heads::new();
            for (_, held) in &heads {
                for (author, seq) in held {
                    let top = all.entry(*author).or_default();
                    *top = (*top).max(*seq);
                }
            }
            for (name, held) in &heads {
                for (author, top) in &all {
                    let have = held.get(author).copied().unwrap_or(0);
                    if have < *top {
                        let _ = write!(
                            said,
                            "{}{} lacks {}'s seqs {}..={top}",
                            if said.is_empty() { "" } else { "; " },
                            name,
                            self.author_name(author),
                            have + 1,
                        );
                        if rooms.len() > 1 {
                            let _ = write!(said, " in room {label}");
                        }
                    }
                }
            }
        }
        said
    }

    /// The cluster's name for `author`, or its fingerprint if no node of the cluster has it.
    fn author_name(&self, author: &Author) -> String {
        self.members
            .iter()
            .find(|member| crate::identity::author_of(&member.peer) == Some(*author))
            .map(|member| member.name.clone())
            .unwrap_or_else(|| format!("#{}", author.fingerprint()))
    }

    /// Adds `links` and connects them.
    async fn add_links(
        &mut self,
        links: impl IntoIterator<Item = (usize, usize)>,
    ) -> Result<(), ClusterError> {
        for (i, j) in links {
            let link = ordered(i, j);
            assert!(
                link.1 < self.len() && link.0 != link.1,
                "the cluster has {} nodes: no link {i}–{j}",
                self.len()
            );
            if self.links.insert(link) {
                self.dial(link.0, link.1).await?;
            }
        }
        Ok(())
    }

    /// The links of node `i`.
    fn links_of(&self, i: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.links
            .iter()
            .copied()
            .filter(move |&(a, b)| a == i || b == i)
    }

    /// Has the later node `j` of the link `(i, j)` dial the earlier one and keep it connected
    /// (when both run: a node that starts again dials or is dialed then).
    async fn dial(&self, i: usize, j: usize) -> Result<(), ClusterError> {
        let Some(address) = self.members[i]
            .node
            .as_ref()
            .and_then(|node| node.listen_addrs().into_iter().next())
        else {
            return Ok(());
        };
        self.act(j, |node| node.dial(address)).await
    }

    /// Whether node `i` has `peer` among its connected peers.
    fn connected(&self, i: usize, peer: usize) -> bool {
        self.members[i].node.as_ref().is_some_and(|node| {
            node.connected_peers()
                .iter()
                .any(|(id, _)| *id == self.members[peer].peer)
        })
    }

    /// Runs `action` on node `i` if it runs (a stopped node catches up when it starts).
    async fn act<'a, F, A>(&'a self, i: usize, action: A) -> Result<(), ClusterError>
    where
        A: FnOnce(&'a Node) -> F,
        F: std::future::Future<Output = Result<(), NodeError>>,
    {
        match &self.members[i].node {
            Some(node) => action(node).await.map_err(|source| self.failed(i, source)),
            None => Ok(()),
        }
    }

    fn failed(&self, i: usize, source: NodeError) -> ClusterError {
        ClusterError::Node {
            node: self.members[i].name.clone(),
            source,
        }
    }
}

/// Where a node of `transport` listens: 127.0.0.1 or memory, at a free port.
fn listen_address(transport: Transport) -> Multiaddr {
    match transport {
        Transport::Tcp => Multiaddr::empty()
            .with(Protocol::Ip4([127, 0, 0, 1].into()))
            .with(Protocol::Tcp(0)),
        Transport::Memory => Multiaddr::empty().with(Protocol::Memory(0)),
    }
}

fn ordered(i: usize, j: usize) -> (usize, usize) {
    (i.min(j), i.max(j))
}

fn degree(links: &BTreeSet<(usize, usize)>, i: usize) -> usize {
    links.iter().filter(|&&(a, b)| a == i || b == i).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(60);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_nodes_in_a_line_converge() -> Result<(), ClusterError> {
        let mut cluster = Cluster::builder()
            .nodes(20)
            .memory()
            .seed(1)
            .spawn()
            .await?;
        cluster.line().await?;
        for (i, node) in cluster.nodes().enumerate() {
            node.send(&format!("hello from {i}"))
                .map_err(|source| ClusterError::Node {
                    node: format!("node{i}"),
                    source,
                })?;
        }
        cluster.wait_converged(DEADLINE).await?;
        let heads = cluster.node(19).heads();
        assert_eq!(heads.len(), 20, "every author's log");
        assert!(
            heads.values().all(|&seq| seq == 3),
            "profile, encryption key and line: {heads:?}"
        );
        cluster.shutdown().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_stops_exchange_and_heal_resumes_it() -> Result<(), ClusterError> {
        let mut cluster = Cluster::builder().nodes(4).memory().seed(2).spawn().await?;
        cluster.line().await?;
        cluster.wait_converged(DEADLINE).await?;
        cluster.partition(&[0, 1], &[2, 3]).await?;
        let left = cluster.node(0).author();
        cluster.node(0).send("left").expect("sent");
        cluster.node(3).send("right").expect("sent");
        // Within one side it still flows, across it does not.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while cluster.node(1).heads().get(&left) != Some(&3) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node1 never got node0's line"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let error = cluster
            .wait_converged(Duration::from_secs(2))
            .await
            .expect_err("cut in two");
        let words = error.to_string();
        assert!(words.contains("node2 lacks node0's seqs 3..=3"), "{words}");
        assert!(words.contains("node0 lacks node3's seqs 3..=3"), "{words}");
        cluster.heal().await?;
        cluster.wait_converged(DEADLINE).await?;
        cluster.shutdown().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_synced_says_what_a_cut_off_node_lacks() -> Result<(), ClusterError> {
        let mut cluster = Cluster::builder().nodes(3).memory().seed(3).spawn().await?;
        cluster.line().await?;
        cluster.wait_converged(DEADLINE).await?;
        cluster.partition(&[0, 1], &[2]).await?;
        cluster.node(0).send("unseen by node2").expect("sent");
        let (first, cut_off) = (cluster.node(0), cluster.node(2));
        cluster
            .node(1)
            .wait_synced(first, DEADLINE)
            .await
            .expect("node1 is on node0's side");
        let error = cut_off
            .wait_synced(first, Duration::from_secs(1))
            .await
            .expect_err("node2 is cut off");
        assert_eq!(error.missing.len(), 1, "{error}");
        let words = error.to_string();
        let lacks = format!(
            "lacks room lan: #{} seqs 3..=3",
            first.author().fingerprint()
        );
        assert!(words.contains(&lacks), "{words}");
        cluster.heal().await?;
        cluster
            .node(2)
            .wait_synced(cluster.node(0), DEADLINE)
            .await
            .expect("healed, node2 catches up");
        Ok(())
    }

    #[tokio::test]
    async fn in_memory_nodes_keep_nothing_on_disk_and_refuse_a_restart() -> Result<(), ClusterError>
    {
        let mut cluster = Cluster::builder().nodes(2).memory().spawn().await?;
        assert!(cluster.data_dir(0).is_none());
        assert!(
            cluster.node(0).listen_addrs()[0]
                .to_string()
                .starts_with("/memory/"),
            "{:?}",
            cluster.node(0).listen_addrs()
        );
        cluster.stop(1).await;
        let error = cluster.start(1).await.expect_err("its logs are gone");
        assert!(
            error.to_string().contains("node1 keeps its logs in memory"),
            "{error}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn keys_and_meshes_come_from_the_seed() -> Result<(), ClusterError> {
        let authors = |cluster: &Cluster| cluster.nodes().map(Node::author).collect::<Vec<_>>();
        let mut one = Cluster::builder().nodes(6).seed(9).spawn().await?;
        let mut two = Cluster::builder().nodes(6).seed(9).spawn().await?;
        let other = Cluster::builder().nodes(6).seed(10).spawn().await?;
        assert_eq!(authors(&one), authors(&two));
        assert_ne!(authors(&one), authors(&other));
        one.mesh(2).await?;
        two.mesh(2).await?;
        assert_eq!(one.links, two.links);
        assert!(
            (0..6).all(|i| degree(&one.links, i) >= 2),
            "{:?}",
            one.links
        );
        assert_eq!(one.name(3), "node3");
        Ok(())
    }
}
