//! Five nodes, cut in two and healed: every message reaches every node. The same code as the
//! example in `p2pchat_node::testing`'s docs.

use std::time::Duration;

use p2pchat_node::testing::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_partitioned_and_healed_hold_every_message()
-> Result<(), Box<dyn std::error::Error>> {
    let mut cluster = Cluster::builder().nodes(5).memory().seed(7).spawn().await?;
    cluster.line().await?;
    cluster.partition(&[0, 1], &[2, 3, 4]).await?;
    cluster.node(0).send("from the left")?;
    cluster.node(4).send("from the right")?;
    cluster.heal().await?;
    cluster.wait_converged(Duration::from_secs(30)).await?;
    for node in cluster.nodes() {
        let texts: Vec<String> = node
            .history(10)
            .await?
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert!(texts.contains(&"from the left".into()), "{texts:?}");
        assert!(texts.contains(&"from the right".into()), "{texts:?}");
    }
    cluster.shutdown().await;
    Ok(())
}
