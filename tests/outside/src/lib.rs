//! Nothing to build: this package holds `tests/partition.rs`, a multi-node test written the
//! way a program that uses `p2pchat-node` would write it, through its public API alone (the
//! example of `p2pchat_node::testing`'s docs).
