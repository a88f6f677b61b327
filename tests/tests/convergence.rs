//! Convergence over the network: three real nodes on 127.0.0.1 take a random schedule of
//! appends and restarts (a restart disconnects the node from everyone, and a node restarted
//! while others append misses their pushes). After healing, every node holds the same heads,
//! every chain validates, and every line that was acknowledged is held everywhere. The seed is
//! printed; `P2PCHAT_SEED=N` replays a schedule.

use std::time::Duration;

use anyhow::Context;
use p2pchat_node::{Node, PeerSpec};
use p2pchat_tests::{DEADLINE, verify_store};
use rand::{Rng, SeedableRng};

const NODES: usize = 3;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start(
    name: &str,
    dir: &std::path::Path,
    port: u16,
    peers: &[u16],
) -> anyhow::Result<Node> {
    let mut builder = Node::builder()
        .name(name)
        .data_dir(dir)
        .mdns(false)
        .listen(format!("/ip4/127.0.0.1/tcp/{port}").parse()?);
    for peer in peers {
        builder = builder.peer(PeerSpec::Addr(
            format!("/ip4/127.0.0.1/tcp/{peer}").parse()?,
        ));
    }
    Ok(builder.spawn().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_converge_after_a_random_schedule_of_appends_and_restarts() -> anyhow::Result<()> {
    let seed = std::env::var("P2PCHAT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("P2PCHAT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dirs: Vec<tempfile::TempDir> = (0..NODES)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect::<Result<_, _>>()?;
    let names = ["ann", "ben", "cat"];
    // Each node dials the ones before it: a line ann ← ben ← cat, plus cat → ann.
    let peers = |i: usize| -> Vec<u16> {
        if i == 2 {
            vec![ports[0], ports[1]]
        } else {
            ports[..i].to_vec()
        }
    };
    let mut nodes = Vec::new();
    for i in 0..NODES {
        nodes.push(Some(
            start(names[i], dirs[i].path(), ports[i], &peers(i)).await?,
        ));
    }
    let mut acknowledged = Vec::new();
    for step in 0..60 {
        let i = rng.gen_range(0..NODES);
        match rng.gen_range(0..10) {
            0 | 1 => {
                if let Some(node) = nodes[i].take() {
                    node.shutdown().await;
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
                nodes[i] = Some(start(names[i], dirs[i].path(), ports[i], &peers(i)).await?);
            }
            _ => {
                if let Some(node) = &nodes[i] {
                    let message = node
                        .send(&format!("step {step}"))?
                        .context("an intact store never holds a line")?;
                    acknowledged.push((message.author, message.seq));
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
            }
        }
    }
    // Heal: everyone stays up until all heads agree.
    let deadline = tokio::time::Instant::now() + 2 * DEADLINE;
    loop {
        let heads: Vec<_> = nodes.iter().flatten().map(Node::heads).collect();
        if heads.windows(2).all(|pair| pair[0] == pair[1]) && heads[0].len() == NODES {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: no convergence: {heads:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in nodes.into_iter().flatten() {
        node.shutdown().await;
    }
    let stores: Vec<_> = dirs
        .iter()
        .map(|dir| verify_store(dir.path()))
        .collect::<Result<_, _>>()?;
    for (i, store) in stores.iter().enumerate() {
        assert_eq!(
            store.heads, stores[0].heads,
            "seed {seed}: {} differs after shutdown",
            names[i]
        );
        for (author, seq) in &acknowledged {
            assert!(
                store.heads.get(author).is_some_and(|head| head >= seq),
                "seed {seed}: {} lacks {author} seq {seq}",
                names[i]
            );
        }
    }
    Ok(())
}
