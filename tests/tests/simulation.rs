//! The replication core in the deterministic simulator (tests/src/sim): many nodes, loss,
//! jitter, slow links, partitions, restarts, frozen and hostile peers, on a virtual clock.
//! Every failure names its scenario and seed first; `SEED=N` replays one seed.

use std::time::Duration;

use p2pchat_tests::sim::{
    self, Attack, Fault, Lines, LinkParams, NodeId, Preload, Report, Scenario, Topology, Until,
    seeds,
};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// Runs the scenario, prints its report, and fails if it found anything wrong (honest nodes
/// not converged or holding other heads, a chain that does not verify, an honest peer
/// penalised, an honest log forked, a frame an honest node could not decode).
fn run(scenario: Scenario) -> Report {
    let label = scenario.label();
    let report = sim::run(scenario);
    println!("{report}");
    assert!(
        report.problems.is_empty(),
        "{label}: {} problems:\n{report}",
        report.problems.len()
    );
    report
}

fn no_lines() -> Lines {
    Lines {
        writers: None,
        per_writer: 0,
        from: Duration::ZERO,
        to: Duration::ZERO,
        even: true,
    }
}

/// 50 nodes dialing 3 others each, 4 lines each in the first 6 s over a lossy, jittery link;
/// a tenth of them cut off from 1 s to 4 s, one restarting, one frozen for 3 s, and a hostile
/// node trying every attack.
fn mesh50(seed: u64) -> Scenario {
    let mut scenario = Scenario::new("mesh50", seed, 50);
    scenario.topology = Topology::Random { k: 3 };
    scenario.link = LinkParams {
        latency: 2 * MS,
        jitter: 3 * MS,
        bandwidth: Some(100_000_000),
        loss: 0.01,
        rto: 200 * MS,
    };
    scenario.lines = Lines {
        writers: None,
        per_writer: 4,
        from: Duration::ZERO,
        to: 6 * S,
        even: false,
    };
    let side: Vec<NodeId> = (0..10).map(NodeId).collect();
    scenario.faults = vec![
        (S, Fault::Partition(side)),
        (4 * S, Fault::Heal),
        (
            2 * S,
            Fault::Restart {
                node: NodeId(20),
                down: 2 * S,
            },
        ),
        (3 * S, Fault::Freeze(NodeId(30))),
        (6 * S, Fault::Thaw(NodeId(30))),
    ];
    scenario.attacks = Attack::ALL.to_vec();
    scenario.hostile_targets = Attack::ALL.len();
    scenario
}

#[test]
fn fifty_nodes_converge_through_loss_partition_restart_freeze_and_a_hostile_node() {
    for seed in seeds(&[1, 2, 3]) {
        let scenario = mesh50(seed);
        let label = scenario.label();
        let report = run(scenario);
        for attack in Attack::ALL.into_iter().filter(|a| a.is_penalised()) {
            assert!(
                report
                    .attacks
                    .iter()
                    .any(|a| a.attack == attack && a.penalised),
                "{label}: the hostile node's {attack:?} was never penalised"
            );
        }
        for outcome in &report.attacks {
            let judged = outcome
                .attacked_at
                .is_some_and(|at| at + S < report.ended_at);
            if outcome.attack.is_penalised() && judged {
                assert!(
                    outcome.refused.is_some(),
                    "{label}: {:?} on {} left the hostile node connected",
                    outcome.attack,
                    outcome.target
                );
            }
        }
    }
}

#[test]
fn fifty_nodes_receive_each_entry_at_most_1_3_times() {
    for seed in seeds(&[1, 2, 3]) {
        let scenario = mesh50(seed);
        let label = scenario.label();
        let report = run(scenario);
        assert!(
            report.duplicate_ratio() <= 1.3,
            "{label}: {:.3} entries received per entry needed",
            report.duplicate_ratio()
        );
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let scenario = |seed| {
        let mut scenario = Scenario::new("replay", seed, 12);
        scenario.link = LinkParams {
            latency: 3 * MS,
            jitter: 5 * MS,
            bandwidth: Some(10_000_000),
            loss: 0.02,
            rto: 200 * MS,
        };
        scenario.faults = vec![(
            S,
            Fault::Restart {
                node: NodeId(3),
                down: S,
            },
        )];
        scenario
    };
    let seed = seeds(&[7])[0];
    let (first, again, other) = (
        run(scenario(seed)),
        run(scenario(seed)),
        run(scenario(seed + 1)),
    );
    let label = scenario(seed).label();
    assert_eq!(first.trace, again.trace, "{label}: replay differs");
    assert_eq!(
        (first.converged_at, first.bytes_sent, first.events),
        (again.converged_at, again.bytes_sent, again.events),
        "{label}: replay differs"
    );
    assert_ne!(
        first.trace, other.trace,
        "{label}: another seed, the same run"
    );
}

#[test]
fn reconnecting_with_nothing_new_costs_little_whatever_the_number_of_authors() {
    // Two nodes holding the same 10,000 logs sync their profiles; node 1 restarts at 5 s and
    // comes back at 6 s; node 0 redials it. Runs are deterministic, so the bytes of the
    // reconnection are those of a run to 9 s less those of the same run to 5.9 s.
    let seed = seeds(&[1])[0];
    let scenario = |until| {
        let mut scenario = Scenario::new("reconnect10k", seed, 2);
        scenario.topology = Topology::Line;
        scenario.lines = no_lines();
        scenario.preload = Some(Preload {
            holders: vec![NodeId(0), NodeId(1)],
            authors: 10_000,
            entries: 1,
        });
        scenario.faults = vec![(
            5 * S,
            Fault::Restart {
                node: NodeId(1),
                down: S,
            },
        )];
        scenario.until = Until::Time(until);
        scenario
    };
    let label = scenario(S).label();
    let before = run(scenario(5900 * MS));
    let after = run(scenario(9 * S));
    let hellos = |r: &Report| r.by_kind.get("hello").map_or(0, |s| s.frames);
    assert_eq!(
        hellos(&after) - hellos(&before),
        2,
        "{label}: the two nodes did not say hello again after the restart"
    );
    let bytes = after.bytes_sent - before.bytes_sent;
    println!("reconnect with 10,000 logs and nothing new: {bytes} bytes both ways");
    assert!(bytes <= 4096, "{label}: reconnecting cost {bytes} bytes");
}

#[test]
fn a_live_line_does_not_wait_behind_a_catch_up_on_a_slow_link() {
    for seed in seeds(&[1, 2, 3]) {
        live_under_catch_up(seed);
    }
}

/// Node 0 holds a 20,000-entry log node 1 lacks; they share a 1 Mbit/s link (the catch-up
/// takes about half a minute); node 0's user writes a line every 50 ms meanwhile.
fn live_under_catch_up(seed: u64) {
    let mut scenario = Scenario::new("live_under_catchup", seed, 2);
    scenario.topology = Topology::Line;
    scenario.link = LinkParams {
        latency: 5 * MS,
        jitter: MS,
        bandwidth: Some(1_000_000),
        loss: 0.0,
        rto: 200 * MS,
    };
    scenario.preload = Some(Preload {
        holders: vec![NodeId(0)],
        authors: 1,
        entries: 20_000,
    });
    scenario.lines = Lines {
        writers: Some(vec![NodeId(0)]),
        per_writer: 300,
        from: S,
        to: 16 * S,
        even: true,
    };
    scenario.time_limit = Duration::from_secs(180);
    let label = scenario.label();
    let report = run(scenario);
    let (p50, p99) = (report.latency.quantile(0.5), report.latency.quantile(0.99));
    println!("live line latency during the catch-up: p50 {p50:?}, p99 {p99:?}");
    assert_eq!(report.latency.count(), 300, "{label}");
    assert!(
        p99.is_some_and(|p99| p99 <= S),
        "{label}: live lines p99 {p99:?}"
    );
}

#[test]
fn a_frozen_peer_is_detected_within_three_seconds_and_syncs_when_thawed() {
    let seed = seeds(&[1])[0];
    let mut scenario = Scenario::new("freeze", seed, 2);
    scenario.topology = Topology::Line;
    scenario.link.latency = 5 * MS;
    scenario.faults = vec![
        (3 * S, Fault::Freeze(NodeId(1))),
        (10 * S, Fault::Thaw(NodeId(1))),
    ];
    // Node 1's user types while it is frozen and after; node 0's user while it is frozen.
    scenario.lines = Lines {
        writers: None,
        per_writer: 4,
        from: 4 * S,
        to: 12 * S,
        even: true,
    };
    let label = scenario.label();
    let report = run(scenario);
    let detected = report
        .disconnects
        .iter()
        .find(|d| d.node == NodeId(0) && d.peer == NodeId(1) && d.at > 3 * S);
    let detected = detected.unwrap_or_else(|| panic!("{label}: node 0 never let go of node 1"));
    assert!(
        detected.at <= 6 * S && detected.reason.contains("nothing arrived"),
        "{label}: frozen at 3 s, disconnected at {:?} because {}",
        detected.at,
        detected.reason
    );
}

#[test]
fn three_rooms_with_overlapping_members_each_converge_and_keep_their_entries() {
    // Room 0 is the LAN room, 1 and 2 private. Four nodes in room 0 only, two in room 1 only,
    // one in room 2 only, three in two rooms, two in all three (in various orders).
    let rooms: Vec<Vec<usize>> = vec![
        vec![0],
        vec![0],
        vec![0],
        vec![0],
        vec![1],
        vec![1],
        vec![2],
        vec![0, 1],
        vec![1, 2],
        vec![2, 0],
        vec![0, 1, 2],
        vec![2, 1, 0],
    ];
    let shares = |a: usize, b: usize| rooms[a].iter().any(|r| rooms[b].contains(r));
    for seed in seeds(&[1, 2]) {
        let mut scenario = Scenario::new("three_rooms", seed, rooms.len());
        scenario.topology = Topology::FullMesh;
        scenario.rooms = rooms.clone();
        scenario.link.loss = 0.01;
        scenario.lines = Lines {
            writers: None,
            per_writer: 6,
            from: Duration::ZERO,
            to: 3 * S,
            even: false,
        };
        scenario.faults = vec![(
            S,
            Fault::Restart {
                node: NodeId(10),
                down: S,
            },
        )];
        let label = scenario.label();
        // Convergence of every room, the same heads for every member of a room, and no entry
        // stored in a room it is not of are checked by `run`.
        let report = run(scenario);
        assert_eq!(report.misplaced_entries, 0, "{label}");
        assert_eq!(report.lines_written, 6 * rooms.len() as u64, "{label}");
        let closed_for_no_room: Vec<_> = report
            .disconnects
            .iter()
            .filter(|d| d.reason.contains("shares no room"))
            .collect();
        assert!(
            !closed_for_no_room.is_empty(),
            "{label}: n4 and n6 share no room"
        );
        for d in &closed_for_no_room {
            assert!(
                !shares(d.node.index(), d.peer.index()),
                "{label}: {} closed {} though they share a room",
                d.node,
                d.peer
            );
        }
        for d in &report.disconnects {
            let (a, b) = (d.node.index(), d.peer.index());
            assert!(
                !shares(a, b)
                    || d.reason.contains("nothing arrived")
                    || d.reason.contains("shares no room"),
                "{label}: unexpected disconnect {d:?}"
            );
        }
    }
}

/// A benchmark's wall-clock bound stops a run that is not done, and the report says so (a
/// test's run never has one: it must replay the same on any machine).
#[test]
fn a_wall_clock_limit_stops_an_unfinished_run_and_the_report_says_so() {
    let mut scenario = Scenario::new("wall-limited", 1, 20);
    scenario.wall_limit = Some(Duration::ZERO);
    let report = sim::run(scenario);
    assert!(report.wall_limited);
    assert_eq!(report.converged_at, None);
    assert!(
        report
            .to_string()
            .contains("stopped by the wall-clock limit")
    );
    assert!(report.json().contains("\"wall_limited\":true"));

    let report = sim::run(Scenario::new("unlimited", 1, 20));
    assert!(!report.wall_limited);
    assert!(report.converged_at.is_some());
}
