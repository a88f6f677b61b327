//! The terminal UI's input line: editing keys and a history of sent lines (Up/Down).

use std::collections::VecDeque;

/// Lines kept for Up/Down.
const HISTORY: usize = 200;

/// An editable line with a cursor and a history of submitted lines.
#[derive(Debug, Default)]
pub struct InputLine {
    text: Vec<char>,
    /// Cursor position, in chars (0 ..= text.len()).
    cursor: usize,
    history: VecDeque<String>,
    /// While browsing history: the index shown, and the line being typed before browsing.
    browsing: Option<(usize, String)>,
}

impl InputLine {
    /// The current text.
    pub fn text(&self) -> String {
        self.text.iter().collect()
    }

    /// The cursor position, in chars.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Types a character at the cursor.
    pub fn insert(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += 1;
    }

    /// Deletes the character before the cursor (Backspace).
    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.text.remove(self.cursor);
        }
    }

    /// Deletes the character under the cursor (Delete).
    pub fn delete(&mut self) {
        if self.cursor < self.text.len() {
            self.text.remove(self.cursor);
        }
    }

    /// Moves the cursor one character left.
    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    /// Moves the cursor one character right.
    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.text.len());
    }

    /// Moves the cursor to the start (Home, Ctrl-A).
    pub fn home(&mut self) {
        self.cursor = 0;
    }

    /// Moves the cursor to the end (End, Ctrl-E).
    pub fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// Deletes from the start to the cursor (Ctrl-U).
    pub fn kill_to_start(&mut self) {
        self.text.drain(..self.cursor);
        self.cursor = 0;
    }

    /// Deletes from the cursor to the end (Ctrl-K).
    pub fn kill_to_end(&mut self) {
        self.text.truncate(self.cursor);
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub fn delete_word(&mut self) {
        let mut start = self.cursor;
        while start > 0 && self.text[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !self.text[start - 1].is_whitespace() {
            start -= 1;
        }
        self.text.drain(start..self.cursor);
        self.cursor = start;
    }

    /// Shows the previous submitted line (Up).
    pub fn previous(&mut self) {
        let index = match &self.browsing {
            Some((0, _)) => return,
            Some((index, _)) => index - 1,
            None if self.history.is_empty() => return,
            None => {
                self.browsing = Some((self.history.len(), self.text()));
                self.history.len() - 1
            }
        };
        if let Some((shown, _)) = &mut self.browsing {
            *shown = index;
        }
        let line = self.history[index].clone();
        self.set(&line);
    }

    /// Shows the next submitted line, or the line being typed after the last one (Down).
    pub fn next(&mut self) {
        let Some((index, typed)) = self.browsing.take() else {
            return;
        };
        if index + 1 < self.history.len() {
            self.browsing = Some((index + 1, typed));
            let line = self.history[index + 1].clone();
            self.set(&line);
        } else {
            self.set(&typed);
        }
    }

    /// Empties the line and returns it, remembering it for Up/Down.
    pub fn submit(&mut self) -> String {
        let line = self.text();
        self.set("");
        self.browsing = None;
        if !line.trim().is_empty() && self.history.back() != Some(&line) {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(line.clone());
        }
        line
    }

    /// Puts `line` back as the text, cursor at its end, if the text is empty; returns
    /// whether it did.
    pub fn restore(&mut self, line: &str) -> bool {
        if !self.text.is_empty() {
            return false;
        }
        self.set(line);
        true
    }

    fn set(&mut self, line: &str) {
        self.text = line.chars().collect();
        self.cursor = self.text.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> InputLine {
        let mut input = InputLine::default();
        text.chars().for_each(|c| input.insert(c));
        input
    }

    #[test]
    fn editing_keys() {
        let mut input = typed("helo world");
        input.home();
        (0..3).for_each(|_| input.right());
        input.insert('l');
        assert_eq!(input.text(), "hello world");
        input.end();
        input.delete_word();
        assert_eq!(input.text(), "hello ");
        input.backspace();
        input.left();
        input.delete();
        assert_eq!((input.text(), input.cursor()), ("hell".into(), 4));
        input.left();
        input.kill_to_end();
        input.home();
        input.right();
        input.kill_to_start();
        assert_eq!((input.text(), input.cursor()), ("el".into(), 0));
    }

    #[test]
    fn up_and_down_browse_sent_lines_and_keep_the_draft() {
        let mut input = InputLine::default();
        for line in ["one", "two"] {
            line.chars().for_each(|c| input.insert(c));
            assert_eq!(input.submit(), line);
        }
        "dra".chars().for_each(|c| input.insert(c));
        input.previous();
        assert_eq!(input.text(), "two");
        input.previous();
        input.previous();
        assert_eq!(input.text(), "one");
        input.next();
        assert_eq!(input.text(), "two");
        input.next();
        assert_eq!((input.text(), input.cursor()), ("dra".into(), 3));
    }
}
