//! Text shown to people: safe strings, times, counts, and the one-line form of a message that
//! `/history` and `p2pchat export --format text` share.

use chrono::{DateTime, Local};
use p2pchat_node::{ConnectFailure, Message, Place};

use super::channels::label;

/// Makes text safe to print on a terminal: a tab is shown as a space, other control
/// characters (which could fake lines or move the cursor) as `�`. Each char becomes one.
pub fn display(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// `43000` as `43,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `1 entry`, `43,000 entries`.
pub fn entries(n: u64) -> String {
    format!(
        "{} {}",
        thousands(n),
        if n == 1 { "entry" } else { "entries" }
    )
}

/// A failed connection in words: `cannot connect to TARGET: REASON`, or for one a peer dialed
/// to us `a connection from TARGET failed: REASON`, with the number of failures it covers.
pub fn connection_failed(
    target: &str,
    incoming: bool,
    reason: &ConnectFailure,
    count: u64,
) -> String {
    let mut line = match incoming {
        true => format!("a connection from {target} failed: {reason}"),
        false => format!("cannot connect to {target}: {reason}"),
    };
    if count > 1 {
        line.push_str(&format!(" ({count} failures since the last notice)"));
    }
    line
}

/// The notice that a catch-up is complete. It counts log entries, which are messages and
/// profiles (a user's first entry names them), so it says so.
pub fn caught_up(name: &str, received: u64) -> String {
    format!(
        "caught up with {}: {} received (messages and profiles)",
        display(name),
        entries(received)
    )
}

/// A timestamp (milliseconds since the Unix epoch, as written by the author's clock) in local
/// time, formatted with `pattern`; question marks if the clock was absurd.
fn local(ms: u64, pattern: &str, unknown: &str) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(
            || unknown.to_owned(),
            |t| t.with_timezone(&Local).format(pattern).to_string(),
        )
}

/// `HH:MM` in local time.
pub fn clock(ms: u64) -> String {
    local(ms, "%H:%M", "??:??")
}

/// A message as plain mode prints it: `NAME> TEXT` in `#general`, `#CHANNEL NAME> TEXT` in
/// another channel, `@OTHER NAME> TEXT` for a direct message (OTHER the other party), control
/// characters neutralised.
pub fn message_line(message: &Message) -> String {
    let mark = match &message.place {
        Place::Channel(channel) if channel == p2pchat_protocol::entry::GENERAL => String::new(),
        place => format!("{} ", label(place)),
    };
    format!(
        "{mark}{}> {}",
        display(&message.name),
        display(&message.text)
    )
}

/// `YYYY-MM-DD HH:MM:SS ` then [`message_line`], local time.
pub fn history_line(message: &Message) -> String {
    let time = local(
        message.timestamp,
        "%Y-%m-%d %H:%M:%S",
        "????-??-?? ??:??:??",
    );
    format!("{time} {}", message_line(message))
}

/// `restored 31 of your own entries from alice; 2 held entries sent on top`.
pub fn own_log_restored(restored: u64, from: &[String], sent: u64) -> String {
    let from: Vec<String> = from.iter().map(|name| display(name)).collect();
    let mut line = format!("restored {restored} of your own entries");
    if !from.is_empty() {
        line += &format!(" from {}", from.join(", "));
    }
    if sent > 0 {
        line += &format!("; {sent} held entries sent on top");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(
            display("hi\nbob> fake\u{1b}[2J"),
            "hi\u{fffd}bob> fake\u{fffd}[2J"
        );
        assert_eq!(display("a\tb"), "a b");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(43_000), "43,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn a_line_says_its_channel_or_the_other_party_of_a_direct_message() {
        let mut message = Message {
            author: p2pchat_protocol::Author::from_bytes([2; 32]),
            name: "alice".into(),
            room: "lan".into(),
            seq: 2,
            clock: 5,
            timestamp: 0,
            place: Place::general(),
            text: "hi\tall".into(),
        };
        assert_eq!(message_line(&message), "alice> hi all");
        message.place = Place::Channel("ops".into());
        assert_eq!(message_line(&message), "#ops alice> hi all");
        message.place = Place::Direct {
            with: p2pchat_protocol::Author::from_bytes([3; 32]),
            with_name: "bob\x1b".into(),
        };
        assert_eq!(message_line(&message), "@bob\u{fffd} alice> hi all");
        assert!(history_line(&message).ends_with(" @bob\u{fffd} alice> hi all"));
    }

    #[test]
    fn absurd_clocks_do_not_panic() {
        assert_eq!(clock(u64::MAX), "??:??");
        assert_eq!(clock(0).len(), 5);
    }
}
