//! How a room's entries show as messages to the node's user: a line of a channel, or a direct
//! message between them and someone else, opened with the secret derived from their key.
//! Every place that shows messages (the feed, history, export) goes through
//! [`Message::of`](crate::Message::of).

use p2pchat_protocol::dm::{DmSecret, EncKey};
use p2pchat_protocol::entry::GENERAL;
use p2pchat_protocol::{Author, Body, Entry, RoomId, SigningKey};

use crate::{Message, Place};

/// The node's user as a reader of direct messages: their key, and the secret that opens the
/// messages sealed to them (or sent by them).
pub(crate) struct Reader {
    me: Author,
    secret: DmSecret,
}

impl Reader {
    /// The reader holding `key`.
    pub(crate) fn new(key: &SigningKey) -> Self {
        Self {
            me: Author::of(key),
            secret: DmSecret::derive(key),
        }
    }

    /// The user's key.
    pub(crate) fn me(&self) -> Author {
        self.me
    }

    /// The encryption key the user publishes in every room.
    pub(crate) fn enc_key(&self) -> EncKey {
        self.secret.public()
    }
}

/// Where an entry was said, as far as it is known without decrypting anything.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Said<'a> {
    /// A line of this channel.
    Channel(&'a str, &'a str),
    /// A direct message between the reader and `with`.
    Direct {
        /// The other party.
        with: Author,
        /// The sealed message.
        sealed: &'a p2pchat_protocol::dm::Sealed,
    },
}

impl Said<'_> {
    /// Whether this is said at `place` (a direct conversation is known by its other party).
    pub(crate) fn is_at(&self, place: &Place) -> bool {
        match (self, place) {
            (Said::Channel(channel, _), Place::Channel(wanted)) => channel == wanted,
            (Said::Direct { with, .. }, Place::Direct { with: wanted, .. }) => with == wanted,
            _ => false,
        }
    }
}

/// Where `entry` was said, for `reader`; `None` for what is no message to them: another kind,
/// or a direct message between others (or any direct message, without a reader).
pub(crate) fn said<'a>(entry: &'a Entry, reader: Option<&Reader>) -> Option<Said<'a>> {
    match entry.body() {
        Body::Text { text } => Some(Said::Channel(GENERAL, text)),
        Body::Post { channel, text } => Some(Said::Channel(channel, text)),
        Body::Direct(sealed) => {
            let me = reader?.me;
            let with = match (entry.author() == me, sealed.to == me) {
                (true, _) => sealed.to,
                (false, true) => entry.author(),
                (false, false) => {
                    tracing::debug!(
                        author = %entry.author().fingerprint(),
                        seq = entry.seq(),
                        to = %sealed.to.fingerprint(),
                        "a direct message between others: not shown"
                    );
                    return None;
                }
            };
            Some(Said::Direct { with, sealed })
        }
        _ => None,
    }
}

impl Message {
    /// The message `entry` of room `room` (labelled `label`) shows as to `reader`, with
    /// `name` giving the names of authors as shown; `None` for what is no message to them
    /// (see [`said`]), and for a direct message that does not open (said in a debug trace).
    pub(crate) fn of(
        entry: &Entry,
        room: &RoomId,
        label: &str,
        reader: Option<&Reader>,
        mut name: impl FnMut(&Author) -> String,
    ) -> Option<Message> {
        let (place, text) = match said(entry, reader)? {
            Said::Channel(channel, text) => (Place::Channel(channel.to_owned()), text.to_owned()),
            Said::Direct { with, sealed } => {
                let reader = reader?;
                let opened = sealed.open(
                    &reader.secret,
                    &reader.me,
                    room,
                    &entry.author(),
                    entry.seq(),
                );
                let text = match opened {
                    Ok(text) => text,
                    Err(e) => {
                        tracing::debug!(
                            author = %entry.author().fingerprint(),
                            seq = entry.seq(),
                            "a direct message to or from us not shown: {e}"
                        );
                        return None;
                    }
                };
                let with_name = name(&with);
                (Place::Direct { with, with_name }, text)
            }
        };
        Some(Message {
            author: entry.author(),
            name: name(&entry.author()),
            room: label.to_owned(),
            seq: entry.seq(),
            clock: entry.clock(),
            timestamp: entry.timestamp(),
            place,
            text,
        })
    }
}
#[cfg(test)]
mod tests;
