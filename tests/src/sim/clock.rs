//! Virtual time: one queue of events ordered by time, ties broken by the order they were
//! scheduled in, so that a run depends on nothing but its seed.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

/// Events to happen at virtual times (offsets from the start of the run).
pub struct Queue<E> {
    heap: BinaryHeap<Reverse<Scheduled<E>>>,
    scheduled: u64,
    now: Duration,
}

struct Scheduled<E> {
    at: Duration,
    order: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            scheduled: 0,
            now: Duration::ZERO,
        }
    }
}

impl<E> Queue<E> {
    /// An empty queue at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The time of the event taken last.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Schedules `event` at `at` (an event in the past happens now).
    pub fn push(&mut self, at: Duration, event: E) {
        let at = at.max(self.now);
        self.heap.push(Reverse(Scheduled {
            at,
            order: self.scheduled,
            event,
        }));
        self.scheduled += 1;
    }

    /// Schedules `event` after `delay` from now.
    pub fn after(&mut self, delay: Duration, event: E) {
        self.push(self.now + delay, event);
    }

    /// Takes the earliest event (the first scheduled among equals) and moves time to it.
    pub fn pop(&mut self) -> Option<(Duration, E)> {
        let Reverse(next) = self.heap.pop()?;
        self.now = next.at;
        Some((next.at, next.event))
    }

    /// How many events are waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn events_come_in_time_order_and_ties_in_scheduling_order() {
        let mut queue = Queue::new();
        queue.push(3 * MS, "c");
        queue.push(MS, "a1");
        queue.push(2 * MS, "b");
        queue.push(MS, "a2");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(
            order,
            [(MS, "a1"), (MS, "a2"), (2 * MS, "b"), (3 * MS, "c")]
        );
        assert_eq!(queue.now(), 3 * MS);
    }

    #[test]
    fn time_never_runs_backwards() {
        let mut queue = Queue::new();
        queue.push(5 * MS, 1);
        assert_eq!(queue.pop(), Some((5 * MS, 1)));
        queue.push(MS, 2);
        queue.after(MS, 3);
        assert_eq!(queue.pop(), Some((5 * MS, 2)));
        assert_eq!(queue.pop(), Some((6 * MS, 3)));
        assert!(queue.is_empty());
    }
}
