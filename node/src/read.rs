//! How a room's entries show as messages to the node's user: a line of a channel, or a direct
//! message between them and someone else, opened with the secret derived from their key.
//! Every place that shows messages (the feed, history, export) goes through
//! [`Message::of`](crate::Message::of).

use std::collections::HashMap;
use std::sync::Mutex;

use p2pchat_protocol::dm::{DmSecret, EncKey, OpenError, PairKey, SealError, Sealed};
use p2pchat_protocol::entry::GENERAL;
use p2pchat_protocol::{Author, Body, Entry, RoomId, SigningKey};

use crate::{Message, Place};

/// Most correspondents' keys a [`Reader`] keeps the agreement with; past that it starts
/// again (an agreement costs one X25519, ~60 µs, so this bounds memory, not speed).
const MAX_PAIRS: usize = 4096;

/// The node's user as a reader of direct messages: their key, the secret that opens the
/// messages sealed to them (or sent by them), and the agreement with each correspondent's
/// key, kept so that a catch-up costs one X25519 per correspondent, not per message.
pub(crate) struct Reader {
    me: Author,
    secret: DmSecret,
    pairs: Mutex<HashMap<EncKey, PairKey>>,
}

impl Reader {
    /// The reader holding `key`.
    pub(crate) fn new(key: &SigningKey) -> Self {
        Self {
            me: Author::of(key),
            secret: DmSecret::derive(key),
            pairs: Mutex::new(HashMap::new()),
        }
    }

    /// The key shared with the holder of `other` (kept once agreed); refused when `other` is
    /// of small order.
    pub(crate) fn pair(&self, other: &EncKey) -> Result<PairKey, SealError> {
        if let Some(pair) = self.kept_pairs().get(other) {
            return Ok(pair.clone());
        }
        let pair = self.secret.agree(other)?;
        let mut pairs = self.kept_pairs();
        if pairs.len() >= MAX_PAIRS {
            pairs.clear();
        }
        pairs.insert(*other, pair.clone());
        Ok(pair)
    }

    /// The agreements kept (a panic while holding them leaves them whole: only inserts).
    fn kept_pairs(&self) -> std::sync::MutexGuard<'_, HashMap<EncKey, PairKey>> {
        self.pairs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The text of `sealed`, entry `seq` of `author`'s log in `room`, for this reader.
    pub(crate) fn open(
        &self,
        sealed: &Sealed,
        room: &RoomId,
        author: &Author,
        seq: u64,
    ) -> Result<String, OpenError> {
        let other = sealed.other_key(&self.me, author)?;
        let pair = self.pair(&other).map_err(|_| OpenError::Undecryptable)?;
        sealed.open_with(&pair, &self.me, room, author, seq)
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
        sealed: &'a Sealed,
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
                let opened = reader.open(sealed, room, &entry.author(), entry.seq());
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
