//! What a run measured, and what it found wrong.

use std::fmt;
use std::time::Duration;

use super::hostile::Attack;
use super::scenario::NodeId;

/// Delays counted in 1 ms buckets up to a minute (later ones in the last bucket).
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const HISTOGRAM_MS: usize = 60_000;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; HISTOGRAM_MS + 1],
            count: 0,
        }
    }
}

impl Histogram {
    /// Counts one delay.
    pub fn record(&mut self, delay: Duration) {
        let ms = usize::try_from(delay.as_millis()).unwrap_or(usize::MAX);
        self.buckets[ms.min(HISTOGRAM_MS)] += 1;
        self.count += 1;
    }

    /// How many delays were counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The delay that `fraction` of those counted did not exceed (to the millisecond above),
    /// or `None` if none was counted.
    pub fn quantile(&self, fraction: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64 * fraction).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (ms, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_millis(ms as u64 + 1));
            }
        }
        None
    }
}

/// One disconnect a core asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnected {
    /// Virtual time.
    pub at: Duration,
    /// The node that disconnected.
    pub node: NodeId,
    /// Whom.
    pub peer: NodeId,
    /// Why, in words (`Disconnect`'s display).
    pub reason: String,
    /// Whether the reason is a penalty.
    pub penalised: bool,
}

/// One connection of the hostile node and what came of its attack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttackOutcome {
    /// Whom it attacked.
    pub target: NodeId,
    /// How.
    pub attack: Attack,
    /// When it attacked (`None`: the connection closed first, say because it was banned).
    pub attacked_at: Option<Duration>,
    /// Why the target disconnected it, if it did.
    pub refused: Option<String>,
    /// Whether that was a penalty (not a ban still running, say).
    pub penalised: bool,
}

/// What honest nodes sent of one kind of message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Frames.
    pub frames: u64,
    /// Bytes, with the length prefixes.
    pub bytes: u64,
    /// Entries (batches only).
    pub entries: u64,
}

/// What a run measured. Printable, and as one JSON line ([`Report::json`]).
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// Honest nodes.
    pub nodes: usize,
    /// When every honest node first held every line (after all writes and faults).
    pub converged_at: Option<Duration>,
    /// When the run ended.
    pub ended_at: Duration,
    /// Lines written during the run.
    pub lines_written: u64,
    /// Entries of honest logs (written and preloaded) that every honest node must end with.
    pub entries_total: u64,
    /// Entries in batches that honest nodes received from honest peers.
    pub entries_received: u64,
    /// Of `entries_received`, those that came on a live lane.
    pub entries_received_live: u64,
    /// Entries the storage workers were given that their stores already held.
    pub duplicates_stored: u64,
    /// Entries received again, by lane (`[0]` live, `[1]` bulk), and by whether the sender
    /// was the receiver's source of the log (`[_][1]`) or not (`[_][0]`).
    pub redundant: [[Redundant; 2]; 2],
    /// Entries the honest nodes lacked at the start or did not write themselves: what they
    /// had to receive at least.
    pub unique_needed: u64,
    /// Bytes honest nodes sent (frames with their 4-byte length).
    pub bytes_sent: u64,
    /// Of `bytes_sent`, those on bulk lanes.
    pub bulk_bytes_sent: u64,
    /// Frames honest nodes sent.
    pub frames_sent: u64,
    /// What honest nodes sent, by kind of message (`hello`, `batch`, `have`, ...).
    pub by_kind: std::collections::BTreeMap<&'static str, Sent>,
    /// Frames the hostile node sent.
    pub hostile_frames: u64,
    /// The most per-peer items one core held at once (`Replica::footprint`, after each input).
    pub peak_footprint: usize,
    /// How long lines written during the run took to be stored by each other honest node.
    pub latency: Histogram,
    /// Disconnects the cores asked for.
    pub disconnects: Vec<Disconnected>,
    /// The hostile node's attacks.
    pub attacks: Vec<AttackOutcome>,
    /// Events the simulator processed.
    pub events: u64,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// Whether the run was stopped by the scenario's `wall_limit`.
    pub wall_limited: bool,
    /// A hash of every frame delivered (with its time and endpoints): equal runs, equal traces.
    pub trace: u64,
    /// Entries delivered to (or stored by) a node in a room they are not of (must stay 0).
    pub misplaced_entries: u64,
    /// Batches from honest peers that stopped at an entry refused (`Event::Rejected`).
    pub rejected_from_honest: u64,
    /// Things worth knowing that are not wrong in themselves (the first few rejections).
    pub notes: Vec<String>,
    /// What the run found wrong (empty: nothing).
    pub problems: Vec<String>,
}

/// Entries an honest node received from an honest peer that it already had.
#[derive(Clone, Copy, Debug, Default)]
pub struct Redundant {
    /// Already stored when they arrived.
    pub held: u64,
    /// Not stored yet, but queued for the store (from another peer, or earlier).
    pub queued: u64,
    /// Of `queued`, those of a log the node held nothing of yet.
    pub queued_new_log: u64,
}

impl Redundant {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "held": self.held, "queued": self.queued, "queued_new_log": self.queued_new_log,
        })
    }
}

impl Report {
    /// Received entries per entry needed (1.0: no duplicate at all).
    pub fn duplicate_ratio(&self) -> f64 {
        if self.unique_needed == 0 {
            return if self.entries_received == 0 {
                1.0
            } else {
                f64::INFINITY
            };
        }
        self.entries_received as f64 / self.unique_needed as f64
    }

    /// Simulator events per wall-clock second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Penalties honest nodes gave each other (an honest node never earns one).
    pub fn honest_penalties(&self, hostile: impl Fn(NodeId) -> bool) -> Vec<&Disconnected> {
        self.disconnects
            .iter()
            .filter(|d| d.penalised && !hostile(d.peer))
            .collect()
    }

    /// The report as one JSON line (for the bench).
    pub fn json(&self) -> String {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        serde_json::json!({
            "scenario": self.scenario,
            "seed": self.seed,
            "nodes": self.nodes,
            "converged": self.converged_at.is_some(),
            "convergence_ms": ms(self.converged_at),
            "ended_ms": self.ended_at.as_secs_f64() * 1000.0,
            "lines_written": self.lines_written,
            "entries_total": self.entries_total,
            "entries_received": self.entries_received,
            "entries_received_live": self.entries_received_live,
            "duplicates_stored": self.duplicates_stored,
            "redundant": {
                "live": {"other": self.redundant[0][0].json(), "source": self.redundant[0][1].json()},
                "bulk": {"other": self.redundant[1][0].json(), "source": self.redundant[1][1].json()},
            },
            "unique_needed": self.unique_needed,
            "duplicate_ratio": self.duplicate_ratio(),
            "bytes_sent": self.bytes_sent,
            "bulk_bytes_sent": self.bulk_bytes_sent,
            "frames_sent": self.frames_sent,
            "by_kind": self.by_kind.iter().map(|(kind, sent)| (kind.to_string(), serde_json::json!({
                "frames": sent.frames, "bytes": sent.bytes, "entries": sent.entries,
            }))).collect::<serde_json::Map<_, _>>(),
            "peak_footprint": self.peak_footprint,
            "latency_p50_ms": ms(self.latency.quantile(0.5)),
            "latency_p99_ms": ms(self.latency.quantile(0.99)),
            "disconnects": self.disconnects.len(),
            "rejected_from_honest": self.rejected_from_honest,
            "misplaced_entries": self.misplaced_entries,
            "events": self.events,
            "wall_ms": self.wall.as_secs_f64() * 1000.0,
            "wall_limited": self.wall_limited,
            "events_per_s": self.events_per_second(),
            "trace": format!("{:016x}", self.trace),
            "problems": self.problems,
        })
        .to_string()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        let opt = |d: Option<Duration>| d.map_or("-".to_owned(), ms);
        writeln!(
            f,
            "scenario {:?}, seed {} (replay with SEED={}), {} honest nodes",
            self.scenario, self.seed, self.seed, self.nodes
        )?;
        match self.converged_at {
            Some(at) => writeln!(f, "  converged at {} (virtual)", ms(at))?,
            None if self.wall_limited => writeln!(
                f,
                "  did not converge; stopped by the wall-clock limit at {} (virtual)",
                ms(self.ended_at)
            )?,
            None => writeln!(f, "  did not converge; ended at {}", ms(self.ended_at))?,
        }
        writeln!(
            f,
            "  {} lines written, {} entries in all; received {} of {} needed ({:.3}x; {} on live lanes; {} duplicates given to stores)",
            self.lines_written,
            self.entries_total,
            self.entries_received,
            self.unique_needed,
            self.duplicate_ratio(),
            self.entries_received_live,
            self.duplicates_stored
        )?;
        writeln!(
            f,
            "  {} bytes in {} frames sent by honest nodes ({} frames by the hostile one)",
            self.bytes_sent, self.frames_sent, self.hostile_frames
        )?;
        for (kind, sent) in &self.by_kind {
            writeln!(
                f,
                "    {kind}: {} frames, {} bytes, {} entries",
                sent.frames, sent.bytes, sent.entries
            )?;
        }
        writeln!(
            f,
            "  line latency p50 {}, p99 {} ({} deliveries); peak footprint {}",
            opt(self.latency.quantile(0.5)),
            opt(self.latency.quantile(0.99)),
            self.latency.count(),
            self.peak_footprint
        )?;
        writeln!(
            f,
            "  {} disconnects, {} batches from honest peers rejected",
            self.disconnects.len(),
            self.rejected_from_honest
        )?;
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        for attack in &self.attacks {
            writeln!(
                f,
                "  attack {:?} on {} at {}: {}",
                attack.attack,
                attack.target,
                opt(attack.attacked_at),
                attack.refused.as_deref().unwrap_or("still connected")
            )?;
        }
        writeln!(
            f,
            "  {} events in {} ({:.0}/s), trace {:016x}",
            self.events,
            ms(self.wall),
            self.events_per_second(),
            self.trace
        )?;
        for problem in &self.problems {
            writeln!(f, "  PROBLEM: {problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_counted_delays() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.quantile(0.5), None);
        for ms in 0..100 {
            histogram.record(Duration::from_millis(ms));
        }
        histogram.record(Duration::from_secs(3600));
        assert_eq!(histogram.count(), 101);
        assert_eq!(histogram.quantile(0.5), Some(Duration::from_millis(51)));
        assert_eq!(histogram.quantile(0.99), Some(Duration::from_millis(100)));
        assert_eq!(
            histogram.quantile(1.0),
            Some(Duration::from_secs(60) + Duration::from_millis(1))
        );
    }
}
