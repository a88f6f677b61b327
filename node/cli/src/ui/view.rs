//! The terminal UI's state and drawing, with no terminal attached (so it is tested with
//! ratatui's `TestBackend`): each conversation (channel or direct) of each room with
//! scrollback, the room list (with several rooms), the conversation list (with more than
//! `#general`), the people panel, the input line.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound::{Excluded, Included, Unbounded};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};
use libp2p::PeerId;
use p2pchat_node::{Contact, HistoryKey, Message, Place as Said};
use p2pchat_protocol::Author;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use unicode_width::UnicodeWidthChar;

use super::Names;
use super::channels::{Conversations, label, mentions};
use super::format::{clock, display, thousands};
use super::input::InputLine;
use super::rooms::Rooms;

/// Width of the people panel (shown when the terminal is at least [`PANEL_MIN_WIDTH`] wide).
const PANEL_WIDTH: u16 = 30;
/// The narrowest terminal that still gets a people panel.
const PANEL_MIN_WIDTH: u16 = 72;
/// Most lines a conversation keeps (older ones: `/history N`, `p2pchat export`).
const MAX_ITEMS: usize = 10_000;
/// Rows scrolled per mouse wheel step.
const WHEEL_STEP: usize = 3;
/// Columns before a message's text (`HH:MM `), where wrapped lines continue.
const INDENT: usize = 6;
/// How a line naming the user is shown, and a conversation holding one unread.
const MENTION: Style = Style::new()
    .fg(Color::Black)
    .bg(Color::LightYellow)
    .add_modifier(Modifier::BOLD);
/// Colours for names, picked by key so a person keeps theirs.
const NAME_COLOURS: [Color; 6] = [
    Color::Cyan,
    Color::Green,
    Color::Magenta,
    Color::Blue,
    Color::LightRed,
    Color::LightYellow,
];

/// One line of the conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A chat message.
    Message(Message),
    /// Status: someone connected, the answer to a command.
    Notice(String),
    /// Something to look at: a fork, a name claimed by another key.
    Warning(String),
    /// Something that went wrong: a refused line, an unknown command.
    Error(String),
}

/// What a key asks the caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The user pressed Enter on this line.
    Submit(String),
    /// The user wants to leave.
    Quit,
}

/// Where a line sits in the conversation: a message at its place in the merged history (a
/// catch-up brings one log after another, and each message still lands in its place); any
/// other line after the newest message there was when it came, in the order they came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    /// The message's key, or for other lines the newest message's then.
    after: Option<HistoryKey>,
    /// Whether the line is not a message (so it comes after the message it follows).
    notice: bool,
    /// When it came, making every place unique.
    arrival: u64,
}

/// One conversation (a channel or a direct one) of a room: at most [`MAX_ITEMS`] lines,
/// oldest first, and where it is scrolled to.
#[derive(Default)]
struct Conversation {
    items: BTreeMap<Place, Item>,
    /// The line at the bottom of the view when scrolled back (`None`: following the newest).
    /// Lines added above or below it do not move it.
    anchor: Option<Place>,
}

/// A conversation with nothing in it yet, shown for one the view has no lines of.
static EMPTY: Conversation = Conversation {
    items: BTreeMap::new(),
    anchor: None,
};

/// One room's conversations (by the id of each in [`Conversations::list`]), and who wrote
/// there.
#[derive(Default)]
struct Room {
    /// Only those listed are kept: one the list forgot goes with its lines.
    conversations: HashMap<u64, Conversation>,
    /// Who wrote here, for the people panel.
    authors: HashSet<Author>,
    /// The newest message stored when the view opened: other lines go after it even while
    /// the stored history is still being read in, so start-up notices are not buried above it;
    /// and only messages after it count as new (unread, a mention, the bell).
    stored: Option<HistoryKey>,
}

impl Conversation {
    /// Adds `item` at `place`; past [`MAX_ITEMS`], the oldest line goes.
    fn insert(&mut self, place: Place, item: Item) {
        self.items.insert(place, item);
        while self.items.len() > MAX_ITEMS {
            let oldest = self.items.pop_first().map(|(place, _)| place);
            if self.anchor.is_some() && self.anchor == oldest {
                self.anchor = self.items.first_key_value().map(|(place, _)| *place);
            }
        }
    }
}

/// Everything the terminal UI shows.
pub struct App {
    me: Author,
    /// The rooms, the current one, and their unread counts.
    rooms: Rooms,
    /// Each room's conversations, the current one, and their unread counts and mentions.
    chats: Conversations,
    /// Each room's lines, in the order of `rooms`.
    lines: Vec<Room>,
    /// Whether a mention or a direct message rings the terminal bell.
    bell: bool,
    /// Whether one came since the bell last rang.
    ring: bool,
    /// Lines added so far, for [`Place::arrival`].
    arrivals: u64,
    /// Current names by key, so a rename shows on earlier messages too.
    names: Names,
    contacts: Vec<Contact>,
    /// The rooms each connected peer shares with us.
    shared: HashMap<PeerId, Vec<String>>,
    input: InputLine,
    /// Items wholly visible in the last drawing, to page by.
    page: Cell<usize>,
}

impl App {
    /// An empty view for the user with key `me`, in `rooms`.
    pub fn new(me: Author, rooms: Rooms) -> Self {
        App {
            me,
            chats: Conversations::new(rooms.labels().len(), ""),
            lines: rooms.labels().iter().map(|_| Room::default()).collect(),
            bell: false,
            ring: false,
            rooms,
            arrivals: 0,
            names: Names::default(),
            contacts: Vec::new(),
            shared: HashMap::new(),
            input: InputLine::default(),
            page: Cell::new(1),
        }
    }

    /// Tells the view where the newest entry already stored in room `label` sits (`newest`):
    /// the feed has yet to bring the messages up to it, and lines other than messages are
    /// placed after it from now on.
    pub fn history_ends_at(&mut self, label: &str, newest: HistoryKey) {
        if let Some(room) = self.rooms.index_of(label) {
            self.lines[room].stored = Some(newest);
        }
    }

    /// The rooms, to list or switch (`/rooms`, `/room NAME`).
    pub fn rooms(&mut self) -> &mut Rooms {
        &mut self.rooms
    }

    /// The rooms and their conversations, for the commands that list or switch them.
    pub fn state(&mut self) -> (&mut Rooms, &mut Conversations) {
        (&mut self.rooms, &mut self.chats)
    }

    /// Where lines typed now go: the current room and its current conversation.
    pub fn target(&self) -> (String, Said) {
        let room = self.rooms.current_index();
        (
            self.rooms.current().to_owned(),
            self.chats.current(room).clone(),
        )
    }

    /// Turns the terminal bell for mentions and direct messages on or off.
    pub fn set_bell(&mut self, on: bool) {
        self.bell = on;
    }

    /// Whether the terminal bell should ring now (a mention or a direct message came while
    /// it is on); it is then rung.
    pub fn take_bell(&mut self) -> bool {
        std::mem::take(&mut self.ring)
    }

    /// The current room's current conversation.
    fn current(&self) -> &Conversation {
        let room = self.rooms.current_index();
        let id = self.chats.list(room)[self.chats.current_index(room)].id;
        self.lines[room].conversations.get(&id).unwrap_or(&EMPTY)
    }

    fn current_mut(&mut self) -> &mut Conversation {
        let room = self.rooms.current_index();
        let index = self.chats.current_index(room);
        self.conversation_mut(room, index)
    }

    /// Conversation `index` of room `room`'s list, made if the view has none yet (commands add
    /// conversations to the list too); those the list forgot are let go.
    fn conversation_mut(&mut self, room: usize, index: usize) -> &mut Conversation {
        let listed = self.chats.list(room);
        let id = listed.get(index).unwrap_or(&listed[0]).id;
        let conversations = &mut self.lines[room].conversations;
        if conversations.len() >= listed.len() && !conversations.contains_key(&id) {
            conversations.retain(|kept, _| listed.iter().any(|c| c.id == *kept));
        }
        conversations.entry(id).or_default()
    }

    /// Adds a line: a message at its place in its conversation's merged history, anything else
    /// at the bottom of the current room's current conversation. A view scrolled back stays
    /// where it is. Past [`MAX_ITEMS`] in a conversation, its oldest line goes. A message that
    /// is not the user's, newer than what was stored in its room at start, counts as new while
    /// its room or conversation is not current, and rings the bell (when on) if it names the
    /// user or is a direct message.
    pub fn push(&mut self, item: Item) {
        let room = match &item {
            Item::Message(message) => self.rooms.index_of(&message.room),
            _ => None,
        };
        self.push_at(room.unwrap_or(self.rooms.current_index()), item);
    }

    /// Adds a line other than a message at the bottom of room `label`'s current conversation
    /// (the current room if there is none of that label).
    pub fn push_in(&mut self, label: &str, item: Item) {
        let room = self.rooms.index_of(label);
        self.push_at(room.unwrap_or(self.rooms.current_index()), item);
    }

    fn push_at(&mut self, room: usize, item: Item) {
        let stored = self.lines[room].stored;
        let (index, after, notice) = match &item {
            Item::Message(message) => {
                self.lines[room].authors.insert(message.author);
                let mine = message.author == self.me;
                let new = !mine && Some(message.history_key()) > stored;
                // Lines stored before the view opened were read then.
                let said = self.chats.seen(room, message, !new);
                if new {
                    self.rooms.mark_unread(room);
                    self.ring |= self.bell && (said.mention || said.direct);
                }
                let index = self.chats.position(room, &message.place).unwrap_or(0);
                (index, Some(message.history_key()), false)
            }
            _ => (self.chats.current_index(room), None, true),
        };
        let arrival = self.arrivals;
        self.arrivals += 1;
        let conversation = self.conversation_mut(room, index);
        let after = after.or_else(|| {
            conversation
                .items
                .last_key_value()
                .and_then(|(place, _)| place.after)
                .max(stored)
        });
        let place = Place {
            after,
            notice,
            arrival,
        };
        conversation.insert(place, item);
    }

    /// Notes that `peer` connected, sharing `rooms` with us.
    pub fn connected(&mut self, peer: PeerId, rooms: Vec<String>) {
        self.shared.insert(peer, rooms);
    }

    /// Notes that `peer` disconnected; returns the rooms it shared.
    pub fn disconnected(&mut self, peer: &PeerId) -> Vec<String> {
        self.shared.remove(peer).unwrap_or_default()
    }

    /// Replaces the people panel's contents and the names shown on messages, with a notice
    /// for each rename.
    pub fn set_contacts(&mut self, contacts: Vec<Contact>) {
        if let Some(me) = contacts.iter().find(|c| c.is_self) {
            self.chats.rename(&me.name);
        }
        for notice in self.names.update(&contacts) {
            self.push(Item::Notice(notice));
        }
        self.contacts = contacts;
    }

    /// Handles a key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.kind != KeyEventKind::Press {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        match key.code {
            KeyCode::Char('c') if ctrl => return Some(Action::Quit),
            KeyCode::Char('d') if ctrl && self.input.text().is_empty() => {
                return Some(Action::Quit);
            }
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char('u') if ctrl => self.input.kill_to_start(),
            KeyCode::Char('k') if ctrl => self.input.kill_to_end(),
            KeyCode::Char('w') if ctrl => self.input.delete_word(),
            KeyCode::Char('n') if ctrl => self.step_conversation(1),
            KeyCode::Char('p') if ctrl => self.step_conversation(-1),
            KeyCode::Char(_) if ctrl => {}
            KeyCode::Char(c @ '1'..='9') if alt => {
                let room = self.rooms.current_index();
                self.chats.go_to(room, c as usize - '1' as usize);
            }
            KeyCode::Char(c) => self.input.insert(c),
            KeyCode::Tab => self.input.insert('\t'),
            KeyCode::Enter => return self.enter().map(Action::Submit),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::Up if alt => self.rooms.step(-1),
            KeyCode::Down if alt => self.rooms.step(1),
            KeyCode::Up if key.modifiers.contains(KeyModifiers::SHIFT) => self.scroll_up(1),
            KeyCode::Down if key.modifiers.contains(KeyModifiers::SHIFT) => self.scroll_down(1),
            KeyCode::Up => self.input.previous(),
            KeyCode::Down => self.input.next(),
            KeyCode::PageUp => self.scroll_up(self.page.get().saturating_sub(1).max(1)),
            KeyCode::PageDown => self.scroll_down(self.page.get().saturating_sub(1).max(1)),
            KeyCode::Esc => self.current_mut().anchor = None,
            _ => {}
        }
        None
    }

    /// Makes the conversation `steps` on (back if negative) the current one of the room.
    fn step_conversation(&mut self, steps: isize) {
        let room = self.rooms.current_index();
        self.chats.step(room, steps);
    }

    /// Handles a paste (one event, from a terminal in bracketed-paste mode) as if it were
    /// typed: the text goes in at the cursor, and each line break submits the input line.
    /// Returns the lines submitted, in order; text after the last line break stays in the
    /// input line.
    pub fn on_paste(&mut self, text: &str) -> Vec<String> {
        let mut submitted = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' | '\n' => {
                    if c == '\r' && chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    submitted.extend(self.enter());
                }
                c => self.input.insert(c),
            }
        }
        submitted
    }

    /// Puts a refused line back into the input line, to be edited, if nothing has been
    /// typed since; returns whether it did.
    pub fn keep_input(&mut self, line: &str) -> bool {
        self.input.restore(line)
    }

    /// Submits the input line (Enter): empties it and returns it, unless it is blank.
    fn enter(&mut self) -> Option<String> {
        let line = self.input.submit();
        if line.trim().is_empty() {
            return None;
        }
        self.current_mut().anchor = None;
        Some(line)
    }

    /// Handles the mouse wheel.
    pub fn on_mouse(&mut self, mouse: MouseEvent) {
        match mouse.kind {
            MouseEventKind::ScrollUp => self.scroll_up(WHEEL_STEP),
            MouseEventKind::ScrollDown => self.scroll_down(WHEEL_STEP),
            _ => {}
        }
    }

    /// Moves the view `items` lines back, to the oldest line at most.
    fn scroll_up(&mut self, items: usize) {
        let conversation = self.current_mut();
        let bottom = conversation
            .anchor
            .or_else(|| conversation.items.last_key_value().map(|(place, _)| *place));
        let Some(bottom) = bottom else { return };
        if let Some((place, _)) = conversation.items.range(..bottom).rev().take(items).last() {
            conversation.anchor = Some(*place);
        }
    }

    /// Moves the view `items` lines on, following the newest again once it gets there.
    fn scroll_down(&mut self, items: usize) {
        let conversation = self.current_mut();
        let Some(anchor) = conversation.anchor else {
            return;
        };
        let newest = conversation.items.last_key_value().map(|(place, _)| *place);
        conversation.anchor = conversation
            .items
            .range((Excluded(anchor), Unbounded))
            .nth(items.saturating_sub(1))
            .map(|(place, _)| *place)
            .filter(|place| Some(*place) != newest);
    }

    /// Draws the whole screen.
    pub fn render(&self, frame: &mut Frame) {
        let [title, body, input] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(2),
        ])
        .areas(frame.area());
        self.render_title(frame, title);
        if body.width >= PANEL_MIN_WIDTH {
            let [messages, panel] =
                Layout::horizontal([Constraint::Min(1), Constraint::Length(PANEL_WIDTH)])
                    .areas(body);
            self.render_messages(frame, messages);
            // The room list with several rooms, the conversation list with more than
            // #general (at most two thirds of the panel), then the people.
            let rooms = if self.rooms.several() {
                self.rooms.labels().len() as u16 + 2
            } else {
                0
            };
            let listed = self.chats.list(self.rooms.current_index()).len() as u16;
            let chats = if listed > 1 {
                (listed + 2).min(panel.height * 2 / 3)
            } else {
                0
            };
            let [rooms, chats, people] = Layout::vertical([
                Constraint::Length(rooms),
                Constraint::Length(chats),
                Constraint::Min(1),
            ])
            .areas(panel);
            if !rooms.is_empty() {
                self.render_rooms(frame, rooms);
            }
            if !chats.is_empty() {
                self.render_conversations(frame, chats);
            }
            self.render_people(frame, people);
        } else {
            self.render_messages(frame, body);
        }
        self.render_input(frame, input);
    }

    fn render_title(&self, frame: &mut Frame, area: Rect) {
        let me = self.names.get(&self.me).map_or("", String::as_str);
        let online = self.contacts.iter().filter(|c| c.connected).count();
        let room = self.rooms.current_index();
        let current = self.chats.current(room);
        // Where typed lines go, unless it is #general.
        let place = if *current == Said::general() {
            String::new()
        } else {
            format!(" · {}", label(current))
        };
        let mut left = format!(" p2pchat · {}{place} · {online} connected", display(me));
        let mut right = "PgUp/PgDn scroll · /help · Ctrl-C quit ";
        if self.chats.list(room).len() > 1 {
            right = "Alt-1…9 Ctrl-N/P channel · PgUp/PgDn scroll · /help · Ctrl-C quit ";
        }
        if self.rooms.several() {
            left = format!(
                " p2pchat · {} · room {}{place}",
                display(me),
                display(self.rooms.current())
            );
            let unread: u64 = (0..self.rooms.labels().len())
                .map(|room| self.rooms.unread(room))
                .sum();
            if unread > 0 {
                left.push_str(&format!(" · {} new in other rooms", thousands(unread)));
            }
            right = "Alt-Up/Down room · PgUp/PgDn scroll · /help · Ctrl-C quit ";
        }
        let gap =
            (area.width as usize).saturating_sub(left.chars().count() + right.chars().count());
        let text = if gap > 0 {
            format!("{left}{}{right}", " ".repeat(gap))
        } else {
            left
        };
        frame.render_widget(
            Paragraph::new(text).style(Style::new().add_modifier(Modifier::REVERSED)),
            area,
        );
    }

    /// Draws the newest items that fit (or those above the scroll position), reading only
    /// those: a long history costs nothing until it is scrolled to.
    fn render_messages(&self, frame: &mut Frame, area: Rect) {
        let (width, mut height) = (area.width as usize, area.height as usize);
        let Conversation { items, anchor } = self.current();
        let (bottom, mut below) = match *anchor {
            None => (Unbounded, 0),
            Some(anchor) => (
                Included(anchor),
                items.range((Excluded(anchor), Unbounded)).count(),
            ),
        };
        if below > 0 {
            height = height.saturating_sub(1);
        }
        let mut rows: Vec<Line> = Vec::with_capacity(height);
        let mut whole = 0;
        for (_, item) in items.range((Unbounded, bottom)).rev() {
            let mut wrapped = wrap(self.line_of(item), width);
            while rows.len() < height {
                match wrapped.pop() {
                    Some(row) => rows.push(row),
                    None => break,
                }
            }
            if !wrapped.is_empty() || rows.len() >= height {
                whole += usize::from(wrapped.is_empty());
                break;
            }
            whole += 1;
        }
        self.page.set(whole.max(1));
        rows.reverse();
        if let Some(anchor) = *anchor {
            // Scrolled to the oldest lines: fill the rest of the view with those after them,
            // rather than leave it blank.
            for (_, item) in items.range((Excluded(anchor), Unbounded)) {
                if rows.len() >= height {
                    break;
                }
                let wrapped = wrap(self.line_of(item), width);
                if rows.len() + wrapped.len() > height {
                    break;
                }
                rows.extend(wrapped);
                below -= 1;
            }
        }
        if below > 0 {
            let hint = format!(
                "── {} newer below · PgDn or Esc ──",
                thousands(below as u64)
            );
            rows.push(Line::from(hint).style(Style::new().fg(Color::Black).bg(Color::Yellow)));
        }
        frame.render_widget(Paragraph::new(rows), area);
    }

    fn line_of(&self, item: &Item) -> Line<'static> {
        match item {
            Item::Message(message) => {
                let name = self.names.get(&message.author).unwrap_or(&message.name);
                let mut style = Style::new()
                    .fg(NAME_COLOURS[message.author.as_bytes()[0] as usize % NAME_COLOURS.len()]);
                let mut text = Style::new();
                if message.author == self.me {
                    style = style.add_modifier(Modifier::BOLD);
                } else if self.names_me(&message.text) {
                    text = MENTION;
                }
                Line::from(vec![
                    Span::from(format!("{} ", clock(message.timestamp))).dark_gray(),
                    Span::styled(display(name), style),
                    Span::styled(format!("> {}", display(&message.text)), text),
                ])
            }
            Item::Notice(text) => Line::from(format!("   -- {}", display(text))).dark_gray(),
            Item::Warning(text) => Line::from(format!("    ! warning: {}", display(text))).yellow(),
            Item::Error(text) => Line::from(format!("    ! {}", display(text))).light_red(),
        }
    }

    /// Whether `text` names the user (by their current name).
    fn names_me(&self, text: &str) -> bool {
        self.names
            .get(&self.me)
            .is_some_and(|me| mentions(text, me))
    }

    /// The current room's conversations: the current one marked, the others with their count
    /// of new lines and `!` when one of those names the user; the first nine numbered for
    /// Alt-1…9; scrolled so the current one shows.
    fn render_conversations(&self, frame: &mut Frame, area: Rect) {
        let room = self.rooms.current_index();
        let current = self.chats.current_index(room);
        let lines: Vec<Line> = self
            .chats
            .list(room)
            .iter()
            .enumerate()
            .map(|(index, conversation)| {
                let number = if index < 9 {
                    char::from(b'1' + index as u8)
                } else {
                    ' '
                };
                let name = label(&conversation.place);
                if index == current {
                    Line::from(format!("▸{number} {name}")).bold()
                } else if conversation.unread > 0 {
                    let marker = if conversation.mentioned { '!' } else { ' ' };
                    let line = format!(
                        "{marker}{number} {name} ({} new)",
                        thousands(conversation.unread)
                    );
                    if conversation.mentioned {
                        Line::from(line).style(MENTION)
                    } else {
                        Line::from(line).yellow()
                    }
                } else {
                    Line::from(format!(" {number} {name}"))
                }
            })
            .collect();
        let block = Block::new()
            .borders(Borders::LEFT | Borders::BOTTOM)
            .title(" channels ");
        let shown = block.inner(area).height as usize;
        let scroll = (current + 1).saturating_sub(shown) as u16;
        let list = Paragraph::new(lines).block(block).scroll((scroll, 0));
        frame.render_widget(list, area);
    }

    /// The room list: the current room marked, the others with their count of new lines.
    fn render_rooms(&self, frame: &mut Frame, area: Rect) {
        let lines: Vec<Line> = self
            .rooms
            .labels()
            .iter()
            .enumerate()
            .map(|(room, label)| {
                let unread = self.rooms.unread(room);
                if room == self.rooms.current_index() {
                    Line::from(format!("▸ {}", display(label))).bold()
                } else if unread > 0 {
                    Line::from(format!("  {} ({} new)", display(label), thousands(unread))).yellow()
                } else {
                    Line::from(format!("  {}", display(label)))
                }
            })
            .collect();
        let block = Block::new()
            .borders(Borders::LEFT | Borders::BOTTOM)
            .title(" rooms ");
        frame.render_widget(Paragraph::new(lines).block(block), area);
    }

    /// Who is in the current room, and whether they are connected to us there: with one room,
    /// every contact; with several, the user, the peers sharing the room, and those who wrote
    /// in it.
    fn people(&self) -> Vec<(&Contact, bool)> {
        let room = self.rooms.current();
        let authors = &self.lines[self.rooms.current_index()].authors;
        self.contacts
            .iter()
            .filter_map(|contact| {
                if !self.rooms.several() {
                    return Some((contact, contact.connected));
                }
                let here = contact.connected
                    && self
                        .shared
                        .get(&contact.peer)
                        .is_some_and(|rooms| rooms.iter().any(|r| r == room));
                (contact.is_self || here || authors.contains(&contact.author))
                    .then_some((contact, here))
            })
            .collect()
    }

    fn render_people(&self, frame: &mut Frame, area: Rect) {
        let people = self.people();
        let online = people.iter().filter(|(_, here)| *here).count();
        let mut lines = Vec::new();
        for (contact, connected) in people {
            let (dot, style) = match (contact.is_self, connected) {
                (true, _) => ("●", Style::new().bold()),
                (false, true) => ("●", Style::new().green()),
                (false, false) => ("○", Style::new().dark_gray()),
            };
            let you = match (contact.is_self, connected, contact.path) {
                (true, ..) => " (you)",
                (false, true, Some(p2pchat_node::Path::Relayed)) => " (relayed)",
                _ => "",
            };
            lines.push(Line::from(format!("{dot} {}{you}", display(&contact.name))).style(style));
            if let Some(sync) = contact.sync {
                let progress =
                    format!("  {} / {}", thousands(sync.received), thousands(sync.total));
                lines.push(Line::from(progress).yellow());
            }
        }
        let block = Block::new()
            .borders(Borders::LEFT)
            .title(format!(" people ({online} connected) "));
        frame.render_widget(Paragraph::new(lines).block(block), area);
    }

    fn render_input(&self, frame: &mut Frame, area: Rect) {
        let block = Block::new()
            .borders(Borders::TOP)
            .border_style(Style::new().dark_gray());
        let inner = block.inner(area);
        frame.render_widget(block, area);
        // As shown (a tab as a space): one shown char per char, so the cursor index holds.
        let text: Vec<char> = display(&self.input.text()).chars().collect();
        let room = (inner.width as usize).saturating_sub(3).max(1);
        // Scroll sideways so the cursor stays in view.
        let cursor = self.input.cursor();
        let mut start = 0;
        let mut before: usize = text[..cursor].iter().map(|c| c.width().unwrap_or(0)).sum();
        while before >= room && start < cursor {
            before -= text[start].width().unwrap_or(0);
            start += 1;
        }
        let line = if text.is_empty() {
            Line::from(vec![
                Span::from("> "),
                Span::from("type a message, or /help").dark_gray(),
            ])
        } else {
            Line::from(format!("> {}", text[start..].iter().collect::<String>()))
        };
        frame.render_widget(Paragraph::new(line), inner);
        frame.set_cursor_position(Position::new(inner.x + 2 + before as u16, inner.y));
    }
}

/// Breaks a line into rows of at most `width` columns; rows after the first are indented.
fn wrap(line: Line<'static>, width: usize) -> Vec<Line<'static>> {
    let width = width.max(INDENT + 1);
    let mut rows = Vec::new();
    let mut row: Vec<Span> = Vec::new();
    let mut used = 0;
    for span in line.spans {
        let style = span.style.patch(line.style);
        let mut piece = String::new();
        for c in span.content.chars() {
            let w = c.width().unwrap_or(0);
            if used + w > width {
                row.push(Span::styled(std::mem::take(&mut piece), style));
                rows.push(Line::from(std::mem::take(&mut row)));
                row.push(Span::from(" ".repeat(INDENT)));
                used = INDENT;
            }
            piece.push(c);
            used += w;
        }
        row.push(Span::styled(piece, style));
    }
    rows.push(Line::from(row));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pchat_node::SyncProgress;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn author(n: u8) -> Author {
        Author::from_bytes([n; 32])
    }

    fn message(from: u8, name: &str, text: &str) -> Item {
        message_at(from, name, 1, text)
    }

    /// A message with clock `clock` (and as seq, which grows with it in a log).
    fn message_at(from: u8, name: &str, clock: u64, text: &str) -> Item {
        Item::Message(Message {
            author: author(from),
            name: name.into(),
            seq: clock,
            clock,
            timestamp: 0,
            text: text.into(),
            room: "lan".into(),
            place: p2pchat_node::Place::general(),
        })
    }

    fn one_room() -> Rooms {
        Rooms::new(vec!["lan".into()])
    }

    /// The conversation's non-empty rows as drawn, top to bottom, without the `HH:MM ` of
    /// messages or the indent of notices.
    fn conversation(app: &App, width: u16, height: u16) -> Vec<String> {
        screen(app, width, height)[1..height as usize - 2]
            .iter()
            .map(|row| match row.chars().nth(2) {
                Some(':') => row.chars().skip(INDENT).collect(),
                _ => row.trim().to_owned(),
            })
            .filter(|row| !row.is_empty())
            .collect()
    }

    fn contact(n: u8, name: &str, connected: bool, sync: Option<SyncProgress>) -> Contact {
        Contact {
            author: author(n),
            peer: p2pchat_node::identity::peer_id_of(&author(n)),
            name: name.into(),
            is_self: n == 1,
            connected,
            held: 1,
            sync,
            path: None,
        }
    }

    fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| app.render(frame)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            app.on_key(KeyEvent::from(KeyCode::Char(c)));
        }
    }

    #[test]
    fn messages_people_and_input_are_drawn() {
        let mut app = App::new(author(1), one_room());
        app.set_contacts(vec![
            contact(1, "alice", false, None),
            contact(
                2,
                "bob",
                true,
                Some(SyncProgress {
                    received: 43_000,
                    total: 100_000,
                }),
            ),
            contact(3, "carol", false, None),
        ]);
        app.push(message(2, "bob", "hi alice"));
        app.push(Item::Warning("bob#020202 claims the name bob".into()));
        typed(&mut app, "half a li");
        let rows = screen(&app, 80, 10);
        assert!(
            rows[0].starts_with(" p2pchat · alice · 1 connected")
                && rows[0].ends_with("Ctrl-C quit"),
            "{rows:#?}"
        );
        assert!(
            rows.iter().any(|r| r.contains(":00 bob> hi alice")),
            "{rows:#?}"
        );
        assert!(
            rows.iter()
                .any(|r| r.contains("! warning: bob#020202 claims the name bob")),
            "{rows:#?}"
        );
        assert!(rows[1].contains("│ people (1 connected)"), "{rows:#?}");
        assert!(rows[2].ends_with("│● alice (you)"), "{rows:#?}");
        assert!(rows[3].ends_with("│● bob"), "{rows:#?}");
        assert!(rows[4].ends_with("│  43,000 / 100,000"), "{rows:#?}");
        assert!(rows[5].ends_with("│○ carol"), "{rows:#?}");
        assert_eq!(rows[9], "> half a li");
    }

    /// A message in room `room`.
    fn message_in(room: &str, from: u8, name: &str, clock: u64, text: &str) -> Item {
        let Item::Message(message) = message_at(from, name, clock, text) else {
            unreachable!()
        };
        Item::Message(Message {
            room: room.into(),
            ..message
        })
    }

    #[test]
    fn each_room_has_its_conversation_and_new_lines_are_counted_until_read() {
        let rooms = Rooms::new(vec!["lan".into(), "team".into(), "ops".into()]);
        let mut app = App::new(author(1), rooms);
        let bob = PeerId::random();
        app.set_contacts(vec![
            contact(1, "alice", false, None),
            Contact {
                peer: bob,
                ..contact(2, "bob", true, None)
            },
            contact(3, "carol", false, None),
            contact(4, "dave", false, None),
        ]);
        app.connected(bob, vec!["team".into()]);
        app.push(message_in("lan", 3, "carol", 1, "in the open"));
        app.push(message_in("team", 2, "bob", 2, "team only"));
        app.push(message_in("team", 2, "bob", 3, "team again"));
        app.push(message_in("team", 1, "alice", 4, "mine is not new"));
        app.push(message_in("ops", 4, "dave", 5, "ops only"));
        let title = &screen(&app, 120, 12)[0];
        assert!(
            title.starts_with(" p2pchat · alice · room lan · 3 new in other rooms")
                && title.ends_with("Alt-Up/Down room · PgUp/PgDn scroll · /help · Ctrl-C quit"),
            "{title}"
        );
        let rows = screen(&app, 80, 12);
        assert!(rows[1].ends_with("│ rooms"), "{rows:#?}");
        assert!(rows[2].ends_with("│▸ lan"), "{rows:#?}");
        assert!(rows[3].ends_with("│  team (2 new)"), "{rows:#?}");
        assert!(rows[4].ends_with("│  ops (1 new)"), "{rows:#?}");
        assert!(rows[6].ends_with("│ people (0 connected)"), "{rows:#?}");
        assert!(rows[7].ends_with("│● alice (you)"), "{rows:#?}");
        assert!(rows[8].ends_with("│○ carol"), "{rows:#?}");
        assert!(!rows[9].contains("bob"), "bob is not in lan: {rows:#?}");
        assert_eq!(conversation(&app, 40, 12), ["carol> in the open"]);

        app.on_key(KeyEvent::new(KeyCode::Down, KeyModifiers::ALT));
        let rows = screen(&app, 80, 12);
        assert!(
            rows[0].contains("· room team · 1 new in other rooms"),
            "{rows:#?}"
        );
        assert!(rows[3].ends_with("│▸ team"), "{rows:#?}");
        assert!(rows[6].ends_with("│ people (1 connected)"), "{rows:#?}");
        assert!(rows[7].ends_with("│● alice (you)"), "{rows:#?}");
        assert!(rows[8].ends_with("│● bob"), "{rows:#?}");
        assert_eq!(
            conversation(&app, 40, 12),
            [
                "bob> team only",
                "bob> team again",
                "alice> mine is not new"
            ]
        );

        app.push(Item::Notice("said in the current room".into()));
        app.push_in("ops", Item::Notice("caught up with dave".into()));
        app.on_key(KeyEvent::new(KeyCode::Up, KeyModifiers::ALT));
        app.on_key(KeyEvent::new(KeyCode::Up, KeyModifiers::ALT));
        assert_eq!(app.rooms.current(), "ops", "round the list");
        assert_eq!(
            conversation(&app, 40, 12),
            ["dave> ops only", "-- caught up with dave"]
        );
        let rows = screen(&app, 80, 12);
        assert_eq!(rows[0], " p2pchat · alice · room ops", "{rows:#?}");
        assert!(rows[2].ends_with("│  lan"), "{rows:#?}");
        app.rooms().switch("team").expect("one of its rooms");
        assert_eq!(
            conversation(&app, 40, 12).last().map(String::as_str),
            Some("-- said in the current room")
        );
    }

    /// A message of `from` said at `place` of the LAN room.
    fn said_at(place: Said, from: u8, name: &str, clock: u64, text: &str) -> Item {
        let Item::Message(message) = message_at(from, name, clock, text) else {
            unreachable!()
        };
        Item::Message(Message { place, ..message })
    }

    fn ops() -> Said {
        Said::Channel("ops".into())
    }

    fn with_bob() -> Said {
        Said::Direct {
            with: author(2),
            with_name: "bob".into(),
        }
    }

    fn alt(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::ALT)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    #[test]
    fn each_conversation_has_its_lines_and_the_list_counts_what_is_unread() {
        let mut app = App::new(author(1), one_room());
        app.set_contacts(vec![
            contact(1, "alice", false, None),
            contact(2, "bob", true, None),
        ]);
        app.push(message_at(2, "bob", 1, "in general"));
        let rows = screen(&app, 80, 12);
        assert!(
            !rows.iter().any(|r| r.contains("channels")),
            "only #general: no list {rows:#?}"
        );
        app.push(said_at(ops(), 2, "bob", 2, "deploy?"));
        app.push(said_at(ops(), 2, "bob", 3, "now"));
        app.push(said_at(with_bob(), 2, "bob", 4, "psst"));
        let rows = screen(&app, 80, 12);
        assert!(rows[1].ends_with("│ channels"), "{rows:#?}");
        assert!(rows[2].ends_with("│▸1 #general"), "{rows:#?}");
        assert!(rows[3].ends_with("│ 2 #ops (2 new)"), "{rows:#?}");
        assert!(rows[4].ends_with("│ 3 @bob (1 new)"), "{rows:#?}");
        assert!(rows[6].ends_with("│ people (1 connected)"), "{rows:#?}");
        let title = &screen(&app, 140, 12)[0];
        assert!(title.contains("Alt-1…9 Ctrl-N/P channel"), "{title}");
        assert_eq!(conversation(&app, 40, 12), ["bob> in general"]);

        app.on_key(alt('2'));
        assert_eq!(app.target(), ("lan".to_owned(), ops()));
        assert_eq!(conversation(&app, 40, 12), ["bob> deploy?", "bob> now"]);
        let rows = screen(&app, 80, 12);
        assert!(rows[0].starts_with(" p2pchat · alice · #ops · 1 connected"));
        assert!(rows[2].ends_with("│ 1 #general"), "{rows:#?}");
        assert!(rows[3].ends_with("│▸2 #ops"), "read now: {rows:#?}");
        app.push(Item::Notice("an answer".into()));
        app.push(message_at(2, "bob", 5, "back in general"));
        assert_eq!(
            conversation(&app, 40, 12),
            ["bob> deploy?", "bob> now", "-- an answer"],
            "notices go to the current conversation"
        );
        assert!(screen(&app, 80, 12)[2].ends_with("│ 1 #general (1 new)"));

        app.on_key(ctrl('n'));
        assert_eq!(app.target().1, with_bob());
        assert_eq!(conversation(&app, 40, 12), ["bob> psst"]);
        app.on_key(ctrl('n'));
        assert_eq!(app.target().1, Said::general(), "round the list");
        assert_eq!(
            conversation(&app, 40, 12),
            ["bob> in general", "bob> back in general"]
        );
        app.on_key(ctrl('p'));
        assert_eq!(app.target().1, with_bob());
        app.on_key(alt('9'));
        assert_eq!(app.target().1, with_bob(), "no ninth conversation: stays");
    }

    #[test]
    fn a_conversation_the_list_forgets_goes_from_the_view_with_its_lines() {
        use super::super::channels::MAX_CONVERSATIONS;
        let mut app = App::new(author(1), one_room());
        app.push(said_at(ops(), 2, "bob", 1, "kept: current"));
        app.on_key(alt('2'));
        let channel = |n: usize| Said::Channel(format!("c{n}"));
        let many = MAX_CONVERSATIONS as u64 * 3;
        for n in 0..many {
            app.push(said_at(channel(n as usize), 2, "bob", n + 2, "spam"));
        }
        assert_eq!(app.chats.list(0).len(), MAX_CONVERSATIONS);
        assert!(
            app.lines[0].conversations.len() <= MAX_CONVERSATIONS,
            "{} views kept",
            app.lines[0].conversations.len()
        );
        assert_eq!(app.target().1, ops(), "still current");
        assert_eq!(conversation(&app, 40, 12), ["bob> kept: current"]);
        app.push(said_at(channel(0), 2, "bob", many + 2, "back"));
        let back = app.chats.position(0, &channel(0)).expect("listed again");
        app.on_key(alt('1'));
        for _ in 0..back {
            app.on_key(ctrl('n'));
        }
        assert_eq!(app.target().1, channel(0));
        assert_eq!(
            conversation(&app, 40, 12),
            ["bob> back"],
            "its older lines went with it (they stay stored)"
        );
    }

    #[test]
    fn a_line_naming_the_user_is_highlighted_and_marks_its_conversation() {
        let mut app = App::new(author(1), one_room());
        app.set_contacts(vec![contact(1, "alice", false, None)]);
        app.push(said_at(ops(), 2, "bob", 2, "alice: look"));
        app.push(said_at(ops(), 2, "bob", 3, "malice is no mention"));
        app.push(message_at(2, "bob", 4, "@alice here too"));
        app.push(message_at(1, "alice", 5, "alice says her own name"));
        let mut terminal = Terminal::new(TestBackend::new(80, 10)).unwrap();
        terminal.draw(|frame| app.render(frame)).unwrap();
        let buffer = terminal.backend().buffer();
        let style_at = |y: u16, text: &str| {
            let row: String = (0..80).map(|x| buffer[(x, y)].symbol()).collect();
            let x = row.find(text).unwrap_or_else(|| panic!("{text} in {row}"));
            buffer[(row[..x].chars().count() as u16, y)].style()
        };
        assert_eq!(style_at(1, "here too").bg, Some(Color::LightYellow));
        assert_ne!(style_at(2, "says her").bg, Some(Color::LightYellow));
        let rows = screen(&app, 80, 10);
        assert!(rows[3].ends_with("│!2 #ops (2 new)"), "{rows:#?}");
        assert_eq!(style_at(3, "#ops").bg, Some(Color::LightYellow));
        app.on_key(alt('2'));
        let mut terminal = Terminal::new(TestBackend::new(80, 10)).unwrap();
        terminal.draw(|frame| app.render(frame)).unwrap();
        let buffer = terminal.backend().buffer();
        let bg = |y: u16| buffer[(20, y)].style().bg;
        assert_eq!(bg(1), Some(Color::LightYellow), "alice: look");
        assert_ne!(bg(2), Some(Color::LightYellow), "malice");
        assert!(screen(&app, 80, 10)[3].ends_with("│▸2 #ops"));
    }

    #[test]
    fn the_bell_rings_for_new_mentions_and_direct_messages_when_on() {
        let mut app = App::new(author(1), one_room());
        app.set_contacts(vec![contact(1, "alice", false, None)]);
        let Item::Message(newest) = message_at(2, "bob", 3, "stored") else {
            unreachable!()
        };
        app.history_ends_at("lan", newest.history_key());
        app.set_bell(true);
        app.push(message_at(2, "bob", 2, "alice, stored before the start"));
        app.push(said_at(with_bob(), 2, "bob", 3, "a stored direct message"));
        assert!(!app.take_bell(), "what was stored is read already");
        assert_eq!(
            app.chats.list(0)[1].unread,
            0,
            "stored lines are not unread"
        );
        app.push(message_at(1, "alice", 4, "alice is me"));
        app.push(message_at(2, "bob", 5, "no name in it"));
        assert!(!app.take_bell(), "neither a mention nor direct");
        app.push(message_at(2, "bob", 6, "hi alice"));
        assert!(
            app.take_bell(),
            "a mention, in the current conversation too"
        );
        assert!(!app.take_bell(), "rung once");
        app.push(said_at(with_bob(), 2, "bob", 7, "psst"));
        assert!(app.take_bell(), "a direct message");
        app.set_bell(false);
        app.push(said_at(with_bob(), 2, "bob", 8, "alice?"));
        assert!(!app.take_bell(), "off");
    }

    #[test]
    fn stored_history_is_not_new_and_one_room_has_no_room_list() {
        let mut app = App::new(author(1), Rooms::new(vec!["lan".into(), "team".into()]));
        let Item::Message(newest) = message_at(2, "bob", 3, "stored last") else {
            unreachable!()
        };
        app.history_ends_at("team", newest.history_key());
        app.push(message_in("team", 2, "bob", 2, "stored"));
        app.push(message_in("team", 2, "bob", 3, "stored last"));
        assert_eq!(app.rooms.unread(1), 0);
        app.push(message_in("team", 2, "bob", 4, "new"));
        assert_eq!(app.rooms.unread(1), 1);
        app.rooms().switch("team").expect("one of its rooms");
        app.push(message_in(
            "lan",
            2,
            "bob",
            2,
            "older than team's stored, new in lan",
        ));
        assert_eq!(
            app.rooms.unread(0),
            1,
            "each room has its own stored history: lan has none"
        );

        let mut app = App::new(author(1), one_room());
        app.push(message(2, "bob", "hi"));
        app.on_key(KeyEvent::new(KeyCode::Down, KeyModifiers::ALT));
        let rows = screen(&app, 80, 8);
        assert!(
            rows[0].starts_with(" p2pchat ·  · 0 connected"),
            "{rows:#?}"
        );
        assert!(rows[1].ends_with("│ people (0 connected)"), "{rows:#?}");
        assert!(!rows.iter().any(|r| r.contains("rooms")), "{rows:#?}");
    }

    #[test]
    fn a_rename_shows_on_earlier_messages() {
        let mut app = App::new(author(1), one_room());
        app.push(message(2, "bob", "before"));
        app.set_contacts(vec![contact(2, "bob", true, None)]);
        app.set_contacts(vec![contact(2, "robert", true, None)]);
        let rows = screen(&app, 40, 6);
        assert!(rows[1].ends_with("robert> before"), "{rows:#?}");
        assert!(
            rows[2].ends_with("-- bob is now known as robert"),
            "{rows:#?}"
        );
    }

    #[test]
    fn scrollback_pages_through_a_long_history_and_new_lines_do_not_move_it() {
        let mut app = App::new(author(1), one_room());
        for n in 0..100_000 {
            app.push(message(2, "bob", &format!("line {n}")));
        }
        assert_eq!(app.current().items.len(), MAX_ITEMS, "the oldest lines go");
        let rows = screen(&app, 40, 8);
        assert!(rows[5].ends_with("bob> line 99999"), "{rows:#?}");
        app.on_key(KeyEvent::from(KeyCode::PageUp));
        let rows = screen(&app, 40, 8);
        assert!(rows[5].starts_with("── 4 newer below"), "{rows:#?}");
        assert!(rows[4].ends_with("bob> line 99995"), "{rows:#?}");
        app.push(message(2, "bob", "new"));
        assert_eq!(
            screen(&app, 40, 8)[4],
            rows[4],
            "the view stays put while scrolled back"
        );
        app.on_key(KeyEvent::from(KeyCode::Esc));
        assert!(screen(&app, 40, 8)[5].ends_with("bob> new"));
    }

    #[test]
    fn every_kind_of_line_counts_against_the_bound_and_the_oldest_goes() {
        let mut app = App::new(author(1), one_room());
        let first = 1_000_000;
        for n in 0..MAX_ITEMS as u64 {
            app.push(message_at(2, "bob", first + n, &format!("line {n}")));
        }
        app.push(message_at(3, "carol", 5, "older than all"));
        assert_eq!(app.current().items.len(), MAX_ITEMS);
        let texts = |app: &App| -> Vec<String> {
            app.current()
                .items
                .values()
                .map(|item| match item {
                    Item::Message(m) => m.text.clone(),
                    Item::Notice(t) | Item::Warning(t) | Item::Error(t) => t.clone(),
                })
                .collect()
        };
        assert_eq!(
            texts(&app)[0],
            "line 0",
            "a line older than all kept goes at once"
        );
        app.scroll_up(MAX_ITEMS);
        assert_eq!(
            app.current().anchor,
            app.current().items.first_key_value().map(|(p, _)| *p)
        );
        app.push(Item::Notice("notice".into()));
        app.push(Item::Warning("warning".into()));
        app.push(Item::Error("error".into()));
        app.set_contacts(vec![contact(2, "bob", true, None)]);
        app.set_contacts(vec![contact(2, "robert", true, None)]);
        assert_eq!(
            app.current().items.len(),
            MAX_ITEMS,
            "notices push the oldest out too"
        );
        let texts = texts(&app);
        assert_eq!(texts[0], "line 4");
        assert_eq!(
            texts[MAX_ITEMS - 4..],
            ["notice", "warning", "error", "bob is now known as robert"]
        );
        assert_eq!(
            app.current().anchor,
            app.current().items.first_key_value().map(|(p, _)| *p),
            "a view scrolled to the oldest line stays on the oldest one left"
        );
    }

    #[test]
    fn scrolled_to_the_oldest_lines_the_view_is_full() {
        let mut app = App::new(author(1), one_room());
        for n in 0..50 {
            app.push(message(2, "bob", &format!("line {n}")));
        }
        screen(&app, 40, 8);
        for _ in 0..20 {
            app.on_key(KeyEvent::from(KeyCode::PageUp));
            screen(&app, 40, 8);
        }
        let rows = screen(&app, 40, 8);
        assert!(rows[1].ends_with("bob> line 0"), "{rows:#?}");
        for (row, n) in rows[2..5].iter().zip(1..) {
            assert!(row.ends_with(&format!("bob> line {n}")), "{rows:#?}");
        }
        assert!(rows[5].starts_with("── 46 newer below"), "{rows:#?}");
    }

    #[test]
    fn messages_are_shown_in_merged_order_whatever_order_they_arrive_in() {
        let mut app = App::new(author(1), one_room());
        app.push(Item::Notice("listening".into()));
        // A catch-up from bob: his log first, then alice's.
        for (clock, text) in [(3, "answer 1"), (5, "answer 2"), (7, "answer 3")] {
            app.push(message_at(3, "bob", clock, text));
        }
        app.push(Item::Notice("bob connected".into()));
        for (clock, text) in [(2, "question 1"), (4, "question 2"), (6, "question 3")] {
            app.push(message_at(2, "alice", clock, text));
        }
        app.push(Item::Notice("caught up with bob".into()));
        app.push(message_at(1, "carol", 8, "thanks"));
        assert_eq!(
            conversation(&app, 40, 14),
            [
                "-- listening",
                "alice> question 1",
                "bob> answer 1",
                "alice> question 2",
                "bob> answer 2",
                "alice> question 3",
                "bob> answer 3",
                "-- bob connected",
                "-- caught up with bob",
                "carol> thanks",
            ]
        );
    }

    #[test]
    fn start_up_notices_come_after_the_stored_history_read_in_later() {
        let mut app = App::new(author(1), one_room());
        let Item::Message(newest) = message_at(2, "bob", 3, "stored last") else {
            unreachable!()
        };
        app.history_ends_at("lan", newest.history_key());
        app.push(Item::Notice("listening".into()));
        app.push(Item::Warning("mDNS is off".into()));
        // The stored history, read in after the notices.
        app.push(message_at(1, "alice", 1, "stored first"));
        app.push(message_at(2, "bob", 3, "stored last"));
        // A catch-up brings older lines: they go above the notices, as before.
        app.push(message_at(1, "alice", 2, "caught up"));
        app.push(message_at(1, "alice", 4, "new"));
        assert_eq!(
            conversation(&app, 40, 10),
            [
                "alice> stored first",
                "alice> caught up",
                "bob> stored last",
                "-- listening",
                "! warning: mDNS is off",
                "alice> new",
            ]
        );
    }

    #[test]
    fn a_view_scrolled_back_stays_put_while_lines_land_above_and_below_it() {
        let mut app = App::new(author(1), one_room());
        for clock in (2..=40).step_by(2) {
            app.push(message_at(2, "bob", clock, &format!("line {clock}")));
        }
        // Scrolled back 5 lines: line 30 is at the bottom, above the hint.
        for _ in 0..5 {
            app.on_key(KeyEvent::new(KeyCode::Up, KeyModifiers::SHIFT));
        }
        assert_eq!(
            conversation(&app, 40, 8),
            [
                "bob> line 24",
                "bob> line 26",
                "bob> line 28",
                "bob> line 30",
                "── 5 newer below · PgDn or Esc ──"
            ]
        );
        // A catch-up brings alice's log: lines above the view, in it, and below it.
        for clock in [3, 27, 29, 31, 39] {
            app.push(message_at(3, "alice", clock, &format!("line {clock}")));
        }
        app.push(Item::Notice("caught up with alice".into()));
        assert_eq!(
            conversation(&app, 40, 8),
            [
                "alice> line 27",
                "bob> line 28",
                "alice> line 29",
                "bob> line 30",
                "── 8 newer below · PgDn or Esc ──"
            ],
            "the bottom line stays; the lines below it are counted"
        );
        for _ in 0..3 {
            app.on_key(KeyEvent::from(KeyCode::PageDown));
        }
        assert_eq!(
            conversation(&app, 40, 8),
            [
                "bob> line 36",
                "bob> line 38",
                "alice> line 39",
                "bob> line 40",
                "-- caught up with alice",
            ],
            "paging down reaches the newest and follows it again"
        );
        app.push(message_at(2, "bob", 41, "line 41"));
        assert_eq!(
            conversation(&app, 40, 8).last().map(String::as_str),
            Some("bob> line 41")
        );
    }

    #[test]
    fn long_lines_wrap_and_a_tiny_terminal_does_not_panic() {
        let mut app = App::new(author(1), one_room());
        app.push(message(2, "bob", &"x".repeat(50)));
        let rows = screen(&app, 30, 6);
        assert!(rows[1].ends_with("bob> xxxxxxxxxxxxxxxxxxx"), "{rows:#?}");
        assert_eq!(rows[2], format!("      {}", "x".repeat(24)));
        assert_eq!(rows[3], format!("      {}", "x".repeat(7)));
        screen(&app, 1, 1);
        screen(&app, 0, 0);
    }

    #[test]
    fn a_paste_is_typed_and_each_line_break_submits() {
        let mut app = App::new(author(1), one_room());
        typed(&mut app, "draft: ");
        assert_eq!(
            app.on_paste("one\r\ntwo\r\rthree\nfour"),
            ["draft: one", "two", "three"],
            "CR LF, CR and LF each end a line; blank lines are not sent"
        );
        assert_eq!(screen(&app, 40, 6)[5], "> four");
        assert_eq!(app.on_paste("\n"), ["four"]);
        assert_eq!(screen(&app, 40, 6)[5], "> type a message, or /help");
    }

    #[test]
    fn a_refused_line_is_kept_only_if_nothing_was_typed_since() {
        let mut app = App::new(author(1), one_room());
        typed(&mut app, "too long");
        app.on_key(KeyEvent::from(KeyCode::Enter));
        assert!(app.keep_input("too long"));
        assert_eq!(screen(&app, 40, 6)[5], "> too long");
        app.on_key(KeyEvent::from(KeyCode::Enter));
        typed(&mut app, "next");
        assert!(!app.keep_input("too long"));
        assert_eq!(screen(&app, 40, 6)[5], "> next");
    }

    #[test]
    fn a_tab_shows_as_a_space_and_the_cursor_follows() {
        let mut app = App::new(author(1), one_room());
        typed(&mut app, "a");
        app.on_key(KeyEvent::from(KeyCode::Tab));
        typed(&mut app, "b");
        app.push(message(2, "bob", "x\ty"));
        let mut terminal = Terminal::new(TestBackend::new(40, 6)).unwrap();
        terminal.draw(|frame| app.render(frame)).unwrap();
        assert_eq!(terminal.get_cursor_position().unwrap(), Position::new(5, 5));
        let rows = screen(&app, 40, 6);
        assert_eq!(rows[5], "> a b");
        assert!(rows[1].ends_with("bob> x y"), "{rows:#?}");
        assert_eq!(
            app.on_key(KeyEvent::from(KeyCode::Enter)),
            Some(Action::Submit("a\tb".into())),
            "the tab itself is sent"
        );
    }

    #[test]
    fn enter_submits_and_ctrl_c_quits() {
        let mut app = App::new(author(1), one_room());
        typed(&mut app, "hello");
        assert_eq!(
            app.on_key(KeyEvent::from(KeyCode::Enter)),
            Some(Action::Submit("hello".into()))
        );
        assert_eq!(screen(&app, 40, 6)[5], "> type a message, or /help");
        assert_eq!(
            app.on_key(KeyEvent::from(KeyCode::Enter)),
            None,
            "an empty line is not sent"
        );
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(app.on_key(ctrl_c), Some(Action::Quit));
    }
}
