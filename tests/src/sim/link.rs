//! One direction of a simulated connection, modelled as TCP carries it.
//!
//! Both lanes of a connection are streams multiplexed over one TCP connection, so a direction
//! is one FIFO: frames are sent one after another at the link's bandwidth and arrive in the
//! order they were sent, after the latency and some jitter (which never reorders them). A lost
//! packet is not lost: it is sent again after a retransmit timeout, and everything behind it
//! waits for it, as in TCP. The lane is the sender's choice of what to write first; the link
//! does not let live frames overtake bulk ones already written.

use std::time::Duration;

use rand::Rng;

/// Bytes of payload per TCP packet, for counting packets that can be lost.
const PACKET_BYTES: usize = 1448;
/// At most this many losses in a row of one packet (a loss rate near 1 must still end).
const MAX_RETRANSMITS: u32 = 6;

/// How a link behaves (each direction alike).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// One-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from zero to this, per frame.
    pub jitter: Duration,
    /// Bits per second (`None`: sending takes no time).
    pub bandwidth: Option<u64>,
    /// The chance that a packet is lost (and sent again after `rto`).
    pub loss: f64,
    /// How long TCP waits before sending a lost packet again.
    pub rto: Duration,
}

impl LinkParams {
    /// A LAN: 1 ms one way, no jitter, no loss, unlimited bandwidth.
    pub const LAN: LinkParams = LinkParams {
        latency: Duration::from_millis(1),
        jitter: Duration::ZERO,
        bandwidth: None,
        loss: 0.0,
        rto: Duration::from_millis(200),
    };

    /// How long putting `bytes` on the wire takes.
    pub fn transmit_time(&self, bytes: usize) -> Duration {
        match self.bandwidth {
            Some(bits_per_second) => {
                let nanos =
                    (bytes as u128 * 8 * 1_000_000_000) / u128::from(bits_per_second.max(1));
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
            None => Duration::ZERO,
        }
    }
}

/// One direction of a connection: when each frame written to it arrives.
#[derive(Clone, Debug)]
pub struct Link {
    params: LinkParams,
    /// When the sender has put everything written so far on the wire.
    sent_until: Duration,
    /// When the last frame written arrives (no later frame arrives before it).
    last_arrival: Duration,
}

impl Link {
    /// An idle link.
    pub fn new(params: LinkParams) -> Self {
        Self {
            params,
            sent_until: Duration::ZERO,
            last_arrival: Duration::ZERO,
        }
    }

    /// The link's behaviour.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// Writes a frame of `bytes` at `now`; returns when it arrives at the other end.
    pub fn send(&mut self, now: Duration, bytes: usize, rng: &mut impl Rng) -> Duration {
        let params = self.params;
        let start = now.max(self.sent_until);
        self.sent_until = start + params.transmit_time(bytes);
        let mut arrival = self.sent_until + params.latency;
        if !params.jitter.is_zero() {
            arrival += params.jitter.mul_f64(rng.r#gen::<f64>());
        }
        if params.loss > 0.0 {
            let packets = bytes.div_ceil(PACKET_BYTES).max(1);
            for _ in 0..packets {
                let mut tries = 0;
                while tries < MAX_RETRANSMITS && rng.gen_bool(params.loss.min(1.0)) {
                    arrival += params.rto;
                    tries += 1;
                }
            }
        }
        self.last_arrival = arrival.max(self.last_arrival);
        self.last_arrival
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bandwidth_spaces_frames_out_and_latency_delays_them() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut link = Link::new(LinkParams {
            latency: 10 * MS,
            bandwidth: Some(1_000_000),
            ..LinkParams::LAN
        });
        // 125,000 bytes are one second at 1 Mbit/s.
        assert_eq!(link.send(Duration::ZERO, 125_000, &mut rng), 1010 * MS);
        // Written meanwhile: waits for the first to be on the wire.
        assert_eq!(link.send(500 * MS, 1250, &mut rng), 1020 * MS);
        // Written once the link is idle: only its own time and the latency.
        assert_eq!(link.send(2000 * MS, 1250, &mut rng), 2020 * MS);
    }

    #[test]
    fn jitter_never_reorders_frames() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut link = Link::new(LinkParams {
            latency: 5 * MS,
            jitter: 20 * MS,
            ..LinkParams::LAN
        });
        let arrivals: Vec<_> = (0..1000u32)
            .map(|i| link.send(i * Duration::from_micros(100), 100, &mut rng))
            .collect();
        assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
        let spread = arrivals
            .iter()
            .enumerate()
            .map(|(i, at)| *at - u32::try_from(i).unwrap() * Duration::from_micros(100))
            .max()
            .unwrap();
        assert!(spread > 5 * MS, "jitter adds delay: {spread:?}");
    }

    #[test]
    fn a_lost_packet_delays_everything_behind_it() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut link = Link::new(LinkParams {
            loss: 1.0,
            ..LinkParams::LAN
        });
        let lost = link.send(Duration::ZERO, 100, &mut rng);
        assert_eq!(lost, MS + MAX_RETRANSMITS * 200 * MS);
        let mut link_after = link.clone();
        link_after.params.loss = 0.0;
        assert_eq!(
            link_after.send(MS, 100, &mut rng),
            lost,
            "waits behind the lost one"
        );
        assert_eq!(link_after.send(lost, 100, &mut rng), lost + MS);
    }

    #[test]
    fn some_loss_delays_some_frames_by_the_retransmit_timeout() {
        let mut rng = StdRng::seed_from_u64(4);
        let params = LinkParams {
            loss: 0.05,
            ..LinkParams::LAN
        };
        let mut delayed = 0;
        for i in 0..1000u32 {
            let mut link = Link::new(params);
            let now = i * MS;
            if link.send(now, 100, &mut rng) > now + MS {
                delayed += 1;
            }
        }
        assert!(
            (20..=90).contains(&delayed),
            "{delayed} of 1000 delayed at 5% loss"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_arrivals() {
        let params = LinkParams {
            latency: 3 * MS,
            jitter: 7 * MS,
            bandwidth: Some(10_000_000),
            loss: 0.1,
            rto: 200 * MS,
        };
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut link = Link::new(params);
            (0..200u32)
                .map(|i| link.send(i * MS, 3000, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
