//! Convergence over the network: three real nodes (a `p2pchat_node::testing::Cluster`, each
//! connected to the others) take a random schedule of appends and restarts (a restart
//! disconnects the node from everyone, and a node restarted while others append misses their
//! pushes). After healing, every node holds the same heads, every chain validates, and every
//! line that was acknowledged is held everywhere. The seed is printed; `P2PCHAT_SEED=N`
//! replays a schedule (the keys too).

use std::time::Duration;

use anyhow::Context;
use p2pchat_node::testing::Cluster;
use p2pchat_tests::{DEADLINE, verify_store};
use rand::{Rng, SeedableRng};

const NODES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_converge_after_a_random_schedule_of_appends_and_restarts() -> anyhow::Result<()> {
    let seed = std::env::var("P2PCHAT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("P2PCHAT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::builder().nodes(NODES).seed(seed).spawn().await?;
    cluster.mesh(NODES - 1).await?;
    let mut acknowledged = Vec::new();
    for step in 0..60 {
        let i = rng.gen_range(0..NODES);
        match rng.gen_range(0..10) {
            0 | 1 => {
                cluster.stop(i).await;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
                cluster.start(i).await?;
            }
            _ => {
                let message = cluster
                    .node(i)
                    .send(&format!("step {step}"))?
                    .context("an intact store never holds a line")?;
                acknowledged.push((message.author, message.seq));
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
            }
        }
    }
    // Heal: everyone stays up until all heads agree.
    cluster
        .wait_converged(2 * DEADLINE)
        .await
        .with_context(|| format!("seed {seed}"))?;
    for i in 0..NODES {
        cluster.stop(i).await;
    }
    let stores: Vec<_> = (0..NODES)
        .map(|i| verify_store(cluster.data_dir(i).context("a node with a data dir")?))
        .collect::<Result<_, _>>()?;
    for (i, store) in stores.iter().enumerate() {
        assert_eq!(store.heads.len(), NODES, "seed {seed}: every log");
        assert_eq!(
            store.heads,
            stores[0].heads,
            "seed {seed}: {} differs after shutdown",
            cluster.name(i)
        );
        for (author, seq) in &acknowledged {
            assert!(
                store.heads.get(author).is_some_and(|head| head >= seq),
                "seed {seed}: {} lacks {author} seq {seq}",
                cluster.name(i)
            );
        }
    }
    Ok(())
}
