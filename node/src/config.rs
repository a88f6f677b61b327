//! The timeouts and limits a program (a test, say) may change, as one value.

use std::time::Duration;

/// Timeouts and limits of a node that a program may change
/// ([`NodeBuilder::config`](crate::NodeBuilder::config)); the defaults are the chat's. The replication core's own
/// timeouts and limits are constants of the protocol, the same for every node.
///
/// ```
/// use std::time::Duration;
/// let config = p2pchat_node::Config::default()
///     .with_redial_backoff(Duration::from_millis(50), Duration::from_millis(400))
///     .with_notice_interval(Duration::from_secs(1));
/// assert_eq!(
///     config.redial_backoff(),
///     (Duration::from_millis(50), Duration::from_millis(400))
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    redial_first: Duration,
    redial_longest: Duration,
    notice_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redial_first: crate::dial::INITIAL_BACKOFF,
            redial_longest: crate::dial::MAX_BACKOFF,
            notice_interval: crate::warnings::WINDOW,
        }
    }
}

impl Config {
    /// The wait before redialing an address kept connected ([`Node::dial`](crate::Node::dial),
    /// [`PeerSpec::Addr`](crate::PeerSpec::Addr)) after it failed or was lost: `first`, doubled
    /// with each failure up to `longest` (default: 500 ms up to 15 s). A `longest` below
    /// `first` is taken as `first`.
    pub fn with_redial_backoff(mut self, first: Duration, longest: Duration) -> Self {
        self.redial_first = first;
        self.redial_longest = longest.max(first);
        self
    }

    /// How long repeats of a warning or a failed connection are counted before they are said
    /// as one summary (default: [`NOTICE_INTERVAL`](crate::NOTICE_INTERVAL), 30 s).
    pub fn with_notice_interval(mut self, interval: Duration) -> Self {
        self.notice_interval = interval;
        self
    }

    /// The first wait before a redial, and the longest.
    pub fn redial_backoff(&self) -> (Duration, Duration) {
        (self.redial_first, self.redial_longest)
    }

    /// How long repeats of a warning are counted before a summary.
    pub fn notice_interval(&self) -> Duration {
        self.notice_interval
    }
}
