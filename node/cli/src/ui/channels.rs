//! The conversations of each room a user interface shows: its channels and direct
//! conversations, which one typed lines go to (the current one), how many new lines each of the
//! others has, and whether one of those names the user (a mention).

use p2pchat_node::{Message, Place};

use super::format::display;

/// Conversations a room lists at most. Past it, the one quiet longest is forgotten, one with
/// nothing unread first (never `#general` nor the current one): its lines stay stored
/// (`/history`), and its next line lists it again. Without a bound, a member posting into
/// thousands of channel names would grow every user interface's memory.
pub const MAX_CONVERSATIONS: usize = 256;

/// A conversation a room holds, with what the user has not read of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// A channel, or a direct conversation.
    pub place: Place,
    /// New lines since it was last current.
    pub unread: u64,
    /// Whether one of those lines names the user.
    pub mentioned: bool,
    /// Its own in its room while it is listed (what a view keeps its lines by; positions
    /// move when a conversation is forgotten).
    pub id: u64,
    /// The room's count of lines and switches when it last had one.
    active: u64,
}

/// Each room's conversations, by room index, `#general` first, then in the order first seen.
#[derive(Clone, Debug)]
pub struct Conversations {
    rooms: Vec<RoomConversations>,
    me: String,
}

#[derive(Clone, Debug)]
struct RoomConversations {
    current: usize,
    known: Vec<Conversation>,
    /// Lines and switches so far (when each conversation was last active).
    clock: u64,
    /// The id of the next conversation listed.
    next_id: u64,
}

/// What a new message is to the user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notice {
    /// It names the user (never one of the user's own lines).
    pub mention: bool,
    /// It is a direct message to the user.
    pub direct: bool,
}

/// Whether two places are the same conversation (a direct one by the other party's key:
/// names change).
fn same(a: &Place, b: &Place) -> bool {
    match (a, b) {
        (Place::Channel(a), Place::Channel(b)) => a == b,
        (Place::Direct { with: a, .. }, Place::Direct { with: b, .. }) => a == b,
        _ => false,
    }
}

impl Conversations {
    /// `rooms` rooms, each with only `#general`, current; `me` is the user's name.
    pub fn new(rooms: usize, me: &str) -> Self {
        let room = RoomConversations {
            current: 0,
            known: vec![Conversation {
                place: Place::general(),
                unread: 0,
                mentioned: false,
                id: 0,
                active: 0,
            }],
            clock: 0,
            next_id: 1,
        };
        Conversations {
            rooms: vec![room; rooms.max(1)],
            me: me.to_owned(),
        }
    }

    /// The user is called `me` now (what a mention names).
    pub fn rename(&mut self, me: &str) {
        me.clone_into(&mut self.me);
    }

    /// Notes `message` of room `room` (`mine`: written by the user): a conversation not seen
    /// before is added, and a line outside the current one counts as unread.
    pub fn seen(&mut self, room: usize, message: &Message, mine: bool) -> Notice {
        let notice = Notice {
            mention: !mine && mentions(&message.text, &self.me),
            direct: !mine && matches!(message.place, Place::Direct { .. }),
        };
        let Some(state) = self.rooms.get_mut(room) else {
            return notice;
        };
        let index = state.index_or_add(&message.place);
        let conversation = &mut state.known[index];
        if let Place::Direct { .. } = message.place {
            // Keep the newest name of the other party.
            conversation.place = message.place.clone();
        }
        if index != state.current && !mine {
            conversation.unread += 1;
            conversation.mentioned |= notice.mention;
        }
        notice
    }

    /// Where lines typed in room `room` go.
    pub fn current(&self, room: usize) -> &Place {
        let state = &self.rooms[room.min(self.rooms.len() - 1)];
        &state.known[state.current].place
    }

    /// Makes `place` the current conversation of room `room` (its lines are read now).
    pub fn switch(&mut self, room: usize, place: Place) {
        if let Some(state) = self.rooms.get_mut(room) {
            let index = state.index_or_add(&place);
            state.make_current(index);
        }
    }

    /// Makes the conversation `steps` places on current (back if negative), round the list.
    pub fn step(&mut self, room: usize, steps: isize) {
        if let Some(state) = self.rooms.get_mut(room) {
            let count = state.known.len() as isize;
            let index = (state.current as isize + steps).rem_euclid(count) as usize;
            state.make_current(index);
        }
    }

    /// Makes the `n`th conversation (from 0) of room `room` current, if there is one.
    pub fn go_to(&mut self, room: usize, n: usize) {
        if let Some(state) = self.rooms.get_mut(room)
            && n < state.known.len()
        {
            state.make_current(n);
        }
    }

    /// Makes current, in each room, the conversation current in `changed`: a copy a command
    /// switched (`/join`, `/dm`) while this one went on noting messages.
    pub fn follow(&mut self, changed: &Conversations) {
        for room in 0..self.rooms.len().min(changed.rooms.len()) {
            let wanted = changed.current(room);
            if !same(self.current(room), wanted) {
                self.switch(room, wanted.clone());
            }
        }
    }

    /// The conversations of room `room`, in order.
    pub fn list(&self, room: usize) -> &[Conversation] {
        self.rooms.get(room).map_or(&[], |state| &state.known)
    }

    /// The position of `place`'s conversation in room `room`'s [`Conversations::list`].
    pub fn position(&self, room: usize, place: &Place) -> Option<usize> {
        self.list(room).iter().position(|c| same(&c.place, place))
    }

    /// The position of the current conversation of room `room` in [`Conversations::list`].
    pub fn current_index(&self, room: usize) -> usize {
        self.rooms.get(room).map_or(0, |state| state.current)
    }
}

impl RoomConversations {
    /// The position of `place`'s conversation, listed now if it was not (forgetting one
    /// past [`MAX_CONVERSATIONS`]), made the latest active.
    fn index_or_add(&mut self, place: &Place) -> usize {
        self.clock += 1;
        let index = match self.known.iter().position(|c| same(&c.place, place)) {
            Some(index) => index,
            None => {
                if self.known.len() >= MAX_CONVERSATIONS {
                    self.forget_one();
                }
                self.known.push(Conversation {
                    place: place.clone(),
                    unread: 0,
                    mentioned: false,
                    id: self.next_id,
                    active: 0,
                });
                self.next_id += 1;
                self.known.len() - 1
            }
        };
        self.known[index].active = self.clock;
        index
    }

    /// Forgets the conversation quiet longest, one with nothing unread first; never
    /// `#general` (the first) nor the current one.
    fn forget_one(&mut self) {
        let oldest = (1..self.known.len())
            .filter(|&index| index != self.current)
            .min_by_key(|&index| {
                let c = &self.known[index];
                (c.unread > 0 || c.mentioned, c.active)
            });
        if let Some(index) = oldest {
            self.known.remove(index);
            if index < self.current {
                self.current -= 1;
            }
        }
    }

    fn make_current(&mut self, index: usize) {
        self.current = index;
        self.known[index].unread = 0;
        self.known[index].mentioned = false;
    }
}

/// How a place is written: `#ops`, `@bob` (made safe to show).
pub fn label(place: &Place) -> String {
    match place {
        Place::Channel(channel) => format!("#{}", display(channel)),
        Place::Direct { with_name, .. } => format!("@{}", display(with_name)),
    }
}

/// Whether `text` names `name` (as `name` or `@name`) as a word of its own: not inside a longer
/// word (`alice` is not mentioned by `malice` or `alice2`).
pub fn mentions(text: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(|c| word(c) && c != '@') && !after.is_some_and(word)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p2pchat_protocol::Author;

    /// A message of bob's at `place` (for the tests of the modules that use conversations).
    pub(crate) fn message(place: Place, text: &str) -> Message {
        Message {
            author: Author::from_bytes([2; 32]),
            name: "bob".into(),
            room: "lan".into(),
            seq: 2,
            clock: 5,
            timestamp: 0,
            place,
            text: text.into(),
        }
    }

    #[test]
    fn a_mention_is_the_name_as_a_word() {
        assert!(mentions("alice: look", "alice"));
        assert!(mentions("hi @alice!", "alice"));
        assert!(mentions("alice", "alice"));
        assert!(!mentions("malice aforethought", "alice"));
        assert!(!mentions("alice2 is here", "alice"));
        assert!(!mentions("nothing", "alice"));
        assert!(mentions("ask Alice Smith", "Alice Smith"));
    }

    #[test]
    fn lines_elsewhere_are_unread_until_switched_to() {
        let mut c = Conversations::new(1, "alice");
        let ops = Place::Channel("ops".into());
        assert!(
            c.seen(0, &message(ops.clone(), "alice, deploy?"), false)
                .mention
        );
        c.seen(0, &message(ops.clone(), "now"), false);
        c.seen(0, &message(Place::general(), "here"), false);
        let list = c.list(0);
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].unread, list[1].unread, list[1].mentioned),
            (0, 2, true)
        );
        c.switch(0, ops.clone());
        assert_eq!(c.current(0), &ops);
        assert_eq!((c.list(0)[1].unread, c.list(0)[1].mentioned), (0, false));
        c.step(0, 1);
        assert_eq!(c.current(0), &Place::general());
    }

    #[test]
    fn own_lines_are_never_unread_nor_mentions() {
        let mut c = Conversations::new(1, "bob");
        let notice = c.seen(0, &message(Place::Channel("x".into()), "bob here"), true);
        assert_eq!(notice, Notice::default());
        assert_eq!(c.list(0)[1].unread, 0);
    }

    #[test]
    fn a_direct_conversation_is_one_per_key_and_keeps_the_newest_name() {
        let mut c = Conversations::new(1, "alice");
        let with = Author::from_bytes([2; 32]);
        let dm = |name: &str| Place::Direct {
            with,
            with_name: name.into(),
        };
        assert!(c.seen(0, &message(dm("bob"), "hi"), false).direct);
        c.seen(0, &message(dm("robert"), "hi again"), false);
        assert_eq!(c.list(0).len(), 2);
        assert_eq!(label(&c.list(0)[1].place), "@robert");
        assert_eq!(c.list(0)[1].unread, 2);
    }

    #[test]
    fn a_switch_made_on_a_copy_is_followed_and_counts_go_on() {
        let mut shared = Conversations::new(1, "alice");
        let mut copy = shared.clone();
        let ops = Place::Channel("ops".into());
        copy.switch(0, ops.clone());
        shared.seen(0, &message(Place::Channel("lunch".into()), "hi"), false);
        shared.follow(&copy);
        assert_eq!(shared.current(0), &ops);
        assert_eq!(shared.list(0).len(), 3, "general, lunch, ops");
        assert_eq!(shared.list(0)[1].unread, 1, "counted meanwhile, kept");
    }

    #[test]
    fn past_the_bound_the_longest_quiet_read_conversation_is_forgotten() {
        let mut c = Conversations::new(1, "alice");
        let channel = |n: usize| Place::Channel(format!("c{n}"));
        c.switch(0, channel(1)); // current, quiet longest: kept
        c.seen(0, &message(channel(2), "unread"), false); // unread: kept
        for n in 3..MAX_CONVERSATIONS {
            c.seen(0, &message(channel(n), "read"), true);
        }
        assert_eq!(c.list(0).len(), MAX_CONVERSATIONS);
        let third = c.list(0)[3].id;
        c.seen(0, &message(channel(3), "active again"), true);
        c.seen(0, &message(channel(1000), "new"), false);
        let list = c.list(0);
        assert_eq!(list.len(), MAX_CONVERSATIONS, "bounded");
        let listed = |p: &Place| list.iter().any(|c| same(&c.place, p));
        assert!(listed(&Place::general()) && listed(&channel(1)) && listed(&channel(2)));
        assert!(listed(&channel(3)) && listed(&channel(1000)));
        assert!(
            !listed(&channel(4)),
            "the longest quiet with nothing unread went"
        );
        assert_eq!(c.current(0), &channel(1), "the current one stays current");
        assert_eq!(c.list(0)[2].unread, 1);
        assert_eq!(c.list(0)[3].id, third, "ids stay while listed");
        let ids: std::collections::HashSet<u64> = list.iter().map(|x| x.id).collect();
        assert_eq!(ids.len(), list.len(), "each id its own");
        for n in 2000..2000 + 2 * MAX_CONVERSATIONS {
            c.seen(0, &message(channel(n), "all unread"), false);
        }
        assert_eq!(
            c.list(0).len(),
            MAX_CONVERSATIONS,
            "bounded when all are unread too"
        );
        assert_eq!(c.current(0), &channel(1));
    }
}
