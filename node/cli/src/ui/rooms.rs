//! The rooms a user interface shows: which one typed lines go to (the current room), and how
//! many new lines each of the others has (the chat window's unread counts).

use super::format::display;

/// The rooms of the node, in its order (the first is the default room), one of them current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rooms {
    labels: Vec<String>,
    /// New lines per room since it was last current.
    unread: Vec<u64>,
    current: usize,
}

impl Rooms {
    /// The rooms labelled `labels`, the first current. A node is always in at least one room;
    /// given none, this is the LAN room.
    pub fn new(mut labels: Vec<String>) -> Self {
        if labels.is_empty() {
            labels.push(p2pchat_protocol::room::LAN.to_owned());
        }
        Rooms {
            unread: vec![0; labels.len()],
            labels,
            current: 0,
        }
    }

    /// Whether there is more than one room (then lines say which room they are in).
    pub fn several(&self) -> bool {
        self.labels.len() > 1
    }

    /// Every room's label, in the node's order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The current room's label.
    pub fn current(&self) -> &str {
        &self.labels[self.current]
    }

    /// The current room's position in [`Rooms::labels`].
    pub fn current_index(&self) -> usize {
        self.current
    }

    /// The position of the room labelled `label`.
    pub fn index_of(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }

    /// Makes the room labelled `label` current (its new lines are read now); otherwise why
    /// not, in words.
    pub fn switch(&mut self, label: &str) -> Result<(), String> {
        match self.index_of(label) {
            Some(index) => {
                self.make_current(index);
                Ok(())
            }
            None => Err(format!(
                "no room called {}: your rooms are {} (/room NAME switches)",
                display(label),
                self.names().join(", ")
            )),
        }
    }

    /// Makes the room `steps` places on current (back if negative), round the list.
    pub fn step(&mut self, steps: isize) {
        let count = self.labels.len() as isize;
        self.make_current((self.current as isize + steps).rem_euclid(count) as usize);
    }

    fn make_current(&mut self, index: usize) {
        self.current = index;
        self.unread[index] = 0;
    }

    /// `rooms: lan (current), team`, as `/rooms` says it.
    pub fn list(&self) -> String {
        let mut names = self.names();
        names[self.current].push_str(" (current)");
        format!("rooms: {}", names.join(", "))
    }

    /// The rooms' labels made safe to show.
    fn names(&self) -> Vec<String> {
        self.labels.iter().map(|label| display(label)).collect()
    }

    /// What a line of room `label` starts with: `[LABEL] ` when there are several rooms,
    /// nothing with one (so one room prints as before rooms existed).
    pub fn prefix(&self, label: &str) -> String {
        if self.several() {
            format!("[{}] ", display(label))
        } else {
            String::new()
        }
    }

    /// Counts a new line in room `index`, unless it is the current one (read as it comes).
    pub fn mark_unread(&mut self, index: usize) {
        if index != self.current
            && let Some(unread) = self.unread.get_mut(index)
        {
            *unread += 1;
        }
    }

    /// New lines in room `index` since it was last current.
    pub fn unread(&self, index: usize) -> u64 {
        self.unread.get(index).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(labels: &[&str]) -> Rooms {
        Rooms::new(labels.iter().map(|l| (*l).to_owned()).collect())
    }

    #[test]
    fn one_room_has_no_prefix_and_several_do() {
        let one = rooms(&["lan"]);
        assert!(!one.several());
        assert_eq!(one.prefix("lan"), "");
        let several = rooms(&["lan", "team"]);
        assert!(several.several());
        assert_eq!(several.prefix("team"), "[team] ");
        assert_eq!(several.prefix("a\x1b[2Jb"), "[a\u{fffd}[2Jb] ");
        assert_eq!(Rooms::new(Vec::new()).labels(), ["lan"]);
    }

    #[test]
    fn the_first_room_is_current_and_switching_says_what_is_wrong() {
        let mut rooms = rooms(&["lan", "team", "ops"]);
        assert_eq!(rooms.current(), "lan");
        assert_eq!(rooms.list(), "rooms: lan (current), team, ops");
        rooms.switch("team").expect("a room it is in");
        assert_eq!(rooms.current(), "team");
        assert_eq!(rooms.list(), "rooms: lan, team (current), ops");
        let why = rooms.switch("nope").expect_err("not one of its rooms");
        assert_eq!(
            why,
            "no room called nope: your rooms are lan, team, ops (/room NAME switches)"
        );
        assert_eq!(rooms.current(), "team", "a failed switch stays");
    }

    #[test]
    fn stepping_goes_round_and_reading_a_room_clears_its_count() {
        let mut rooms = rooms(&["lan", "team", "ops"]);
        rooms.mark_unread(0);
        rooms.mark_unread(1);
        rooms.mark_unread(1);
        rooms.mark_unread(7);
        assert_eq!((rooms.unread(0), rooms.unread(1)), (0, 2), "lan is current");
        rooms.step(-1);
        assert_eq!(rooms.current(), "ops");
        rooms.step(2);
        assert_eq!(rooms.current(), "team");
        assert_eq!(rooms.unread(1), 0, "read once current");
        rooms.step(1);
        rooms.step(1);
        assert_eq!(rooms.current(), "lan");
    }
}
