//! What the user interfaces need besides sending: who is known and connected, renaming, recent
//! history, and reading a data directory offline (`p2pchat export`, `p2pchat id`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use p2pchat_protocol::entry::check_name;
use p2pchat_protocol::{Author, Body, Entry};
use p2pchat_storage::{Store, StoreError};

use p2pchat_protocol::room::Room;

use crate::node::check_not_a_file;
use crate::read::{Reader, said};
use crate::shared::display_name;
use crate::{HistoryKey, Message, Node, NodeError, Place, identity};

/// Someone this node knows: an author whose log it holds, or a peer connected to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Their key.
    pub author: Author,
    /// Their peer id (the same key).
    pub peer: PeerId,
    /// The name to show (`name#fingerprint` when ambiguous, `#fingerprint` before a profile).
    pub name: String,
    /// Whether this is the node's own user.
    pub is_self: bool,
    /// Whether they are connected to this node directly (their log may still arrive through
    /// others when they are not).
    pub connected: bool,
    /// How many entries of their log this node holds (their head seq).
    pub held: u64,
    /// The catch-up on what they announced when they connected, while under way.
    pub sync: Option<SyncProgress>,
    /// How it is connected (direct or through a relay), while connected.
    pub path: Option<crate::Path>,
}

/// Progress of a catch-up from one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncProgress {
    /// Entries held so far of those missing when the peer connected.
    pub received: u64,
    /// Entries missing when the peer connected.
    pub total: u64,
}

impl Contact {
    /// The key's short fingerprint, as in `name#fingerprint`.
    pub fn fingerprint(&self) -> String {
        self.author.fingerprint()
    }
}

impl Node {
    /// Everyone the node knows, in any of its rooms: itself first, then connected peers, then
    /// the other authors whose logs it holds, each group by name (as the first room that
    /// holds their log names them).
    pub fn contacts(&self) -> Vec<Contact> {
        let shared = &self.shared;
        let heads: Vec<p2pchat_protocol::Heads> = shared
            .rooms
            .iter()
            .map(|state| state.store.heads())
            .collect();
        let me = shared.author();
        let peers = shared.peers();
        let connected: Vec<(Author, PeerId, Option<SyncProgress>, crate::Path)> = peers
            .iter()
            .filter_map(|(peer, view)| {
                Some((identity::author_of(peer)?, *peer, view.sync, view.path))
            })
            .collect();
        drop(peers);
        let authors: BTreeSet<Author> = heads
            .iter()
            .flat_map(|heads| heads.keys().copied())
            .chain(connected.iter().map(|(a, ..)| *a))
            .collect();
        let mut contacts: Vec<Contact> = authors
            .into_iter()
            .map(|author| {
                let link = connected.iter().find(|(a, ..)| *a == author);
                let room = heads
                    .iter()
                    .position(|heads| heads.contains_key(&author))
                    .unwrap_or(0);
                Contact {
                    author,
                    peer: link.map_or_else(|| identity::peer_id_of(&author), |(_, peer, ..)| *peer),
                    name: shared.display_name(room, &author),
                    is_self: author == me,
                    connected: link.is_some(),
                    held: heads
                        .iter()
                        .map(|heads| heads.get(&author).copied().unwrap_or(0))
                        .sum(),
                    sync: link.and_then(|(_, _, sync, _)| *sync),
                    path: link.map(|(.., path)| *path),
                }
            })
            .collect();
        contacts.sort_by(|a, b| {
            (!a.is_self, !a.connected, &a.name).cmp(&(!b.is_self, !b.connected, &b.name))
        });
        contacts
    }

    /// `author` as a contact, named as room `room` shows them (as [`Node::contacts`] gives
    /// them).
    pub(crate) fn contact(&self, room: usize, author: Author) -> Contact {
        let shared = &self.shared;
        let peer = identity::peer_id_of(&author);
        let link = shared.peers().get(&peer).map(|view| (view.sync, view.path));
        Contact {
            author,
            peer,
            name: shared.display_name(room, &author),
            is_self: author == shared.author(),
            connected: link.is_some(),
            held: shared
                .rooms
                .iter()
                .map(|state| state.store.head_seq(&author))
                .sum(),
            sync: link.and_then(|(sync, _)| sync),
            path: link.map(|(_, path)| path),
        }
    }

    /// The contacts that answer to `name` in any room: by their name, or as shown
    /// (`name#fingerprint`).
    pub fn whois(&self, name: &str) -> Vec<Contact> {
        self.contacts()
            .into_iter()
            .filter(|c| {
                c.name == name
                    || self.shared.rooms.iter().any(|state| {
                        let claimed = state.store.name(&c.author).unwrap_or_default();
                        claimed == name || format!("{claimed}#{}", c.fingerprint()) == name
                    })
            })
            .collect()
    }

    /// Renames the node's user in every room: appends a profile entry to each room's own log
    /// whose name differs, which peers receive like any other. Refused if the name breaks the
    /// name rules or is pinned to another key in any room.
    pub fn rename(&self, name: &str) -> Result<(), NodeError> {
        check_name(name).map_err(NodeError::Name)?;
        let me = self.shared.author();
        if let Some(owner) = self
            .shared
            .rooms
            .iter()
            .find_map(|state| state.store.pinned(name).filter(|owner| *owner != me))
        {
            return Err(NodeError::NameTaken {
                name: name.to_owned(),
                owner: owner.fingerprint(),
            });
        }
        for (room, state) in self.shared.rooms.iter().enumerate() {
            if state.store.name(&me).as_deref() != Some(name) {
                self.shared.append(
                    room,
                    [Body::Profile {
                        name: name.to_owned(),
                    }],
                )?;
            }
        }
        Ok(())
    }

    /// The last `n` messages of the first room, in merged order, as [`Node::messages`] shows
    /// them; see [`Node::history_in`].
    pub async fn history(&self, n: usize) -> Result<Vec<Message>, NodeError> {
        self.history_of(0, n).await
    }

    /// Where the newest entry stored in the room labelled `room` sits in the merged history
    /// (`None` if it holds none): every message whose [`Message::history_key`] comes before
    /// it was stored before it. Kept by the store, so it costs a lookup however many logs.
    pub fn newest_in(&self, room: &str) -> Result<Option<HistoryKey>, NodeError> {
        Ok(self.shared.rooms[self.room_index(room)?].store.newest())
    }

    /// The last `n` messages of the room labelled `room`, in merged order. Read on a blocking
    /// thread: `n` may be large, and the caller's task stays free meanwhile (to notice a
    /// signal, say).
    pub async fn history_in(&self, room: &str, n: usize) -> Result<Vec<Message>, NodeError> {
        self.history_of(self.room_index(room)?, n).await
    }

    /// The last `n` messages said at `place` (a channel, or a direct conversation) of the
    /// room labelled `room`, in merged order. A conversation is known by its other party
    /// (`with`; `with_name` is only shown), and only its direct messages are decrypted.
    pub async fn history_at(
        &self,
        room: &str,
        place: &Place,
        n: usize,
    ) -> Result<Vec<Message>, NodeError> {
        let place = place.clone();
        self.last_of(self.room_index(room)?, n, Some(place)).await
    }

    async fn history_of(&self, room: usize, n: usize) -> Result<Vec<Message>, NodeError> {
        self.last_of(room, n, None).await
    }

    /// The last `n` messages of `room` (said at `place`, if given).
    async fn last_of(
        &self,
        room: usize,
        n: usize,
        place: Option<Place>,
    ) -> Result<Vec<Message>, NodeError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let state = &shared.rooms[room];
            let reading = Reading {
                store: &state.store,
                label: state.room.label(),
                reader: Some(&shared.reader),
            };
            reading.last(n, place.as_ref())
        })
        .await
        .map_err(|_| NodeError::Stopped)?
    }
}

/// One room of a user's data directory, opened without going online: to export messages.
/// The chat must not be running on it (the store's lock makes sure).
pub struct Archive {
    store: Store,
    /// The room's label.
    label: String,
    /// The user, to read their direct messages (`None` without an identity key).
    reader: Option<Reader>,
    /// The copy read, when the data directory is read-only.
    _copy: Option<tempfile::TempDir>,
}

/// Where `room`'s store is in `dir`, without recording anything: reading must not decide which
/// room the logs stored before rooms go to.
pub(crate) fn recorded_store(dir: &Path, room: &Room) -> Result<PathBuf, NodeError> {
    if let Some(path) = p2pchat_storage::find(dir, &room.id())? {
        return Ok(path);
    }
    if dir.join("store").is_dir() && !p2pchat_storage::store_claimed(dir)? {
        return Err(NodeError::BeforeRooms(dir.to_owned()));
    }
    Err(NodeError::NoRoomData {
        dir: dir.to_owned(),
        room: room.label().to_owned(),
    })
}

impl Archive {
    /// Opens `room`'s store in `dir`; an error if the user has none yet. A read-only store (a
    /// failing disk remounted read-only, say) is copied to a temporary directory and read
    /// there.
    pub fn open(dir: &Path, room: &Room) -> Result<Self, NodeError> {
        check_not_a_file(dir)?;
        if !dir.join(identity::IDENTITY_FILE).is_file() && !dir.join("store").is_dir() {
            return Err(NodeError::NoData(dir.to_owned()));
        }
        let path = recorded_store(dir, room)?;
        let label = room.label().to_owned();
        let reader = reader_of(dir)?;
        match Store::open(&path, room.id()) {
            Ok(store) => Ok(Archive {
                store,
                label,
                reader,
                _copy: None,
            }),
            Err(StoreError::ReadOnly { .. }) => Self::open_copy(dir, &path, room, false),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a copy of `room`'s store in `dir` rebuilt from what verifies, in a temporary
    /// directory (the original is not changed): for reading a store found damaged while read.
    pub fn salvaged(dir: &Path, room: &Room) -> Result<Self, NodeError> {
        let path = recorded_store(dir, room)?;
        Self::open_copy(dir, &path, room, true)
    }

    /// Opens a copy of the store in `path` (of the data directory `dir`) in a temporary
    /// directory; with `repair`, rebuilt from what verifies there.
    fn open_copy(dir: &Path, path: &Path, room: &Room, repair: bool) -> Result<Self, NodeError> {
        let copy = tempfile::tempdir().map_err(|source| NodeError::DataDir {
            path: std::env::temp_dir(),
            source,
        })?;
        let store = Store::open_copy(path, copy.path(), repair, room.id())?;
        Ok(Archive {
            store,
            label: room.label().to_owned(),
            reader: reader_of(dir)?,
            _copy: Some(copy),
        })
    }

    /// What the user should know about the store: logs it ignores, for one.
    pub fn warnings(&self) -> Vec<String> {
        self.store
            .refused_logs()
            .iter()
            .map(crate::node::refused_log_warning)
            .collect()
    }

    /// What opening the store found damaged and repaired, if anything.
    pub fn damage(&self) -> Option<&p2pchat_storage::Damage> {
        self.store.damage()
    }

    /// Every message of every log of the room held, in merged order (clock, then author,
    /// then seq): the lines of every channel, and the user's direct messages decrypted.
    pub fn messages(&self) -> impl Iterator<Item = Result<Message, NodeError>> + '_ {
        let reading = Reading {
            store: &self.store,
            label: &self.label,
            reader: self.reader.as_ref(),
        };
        self.store.history().filter_map(move |entry| {
            entry
                .map_err(NodeError::from)
                .map(|entry| reading.message(&entry))
                .transpose()
        })
    }
}

/// The user of the data directory `dir` as a reader of direct messages; `None` when it holds
/// no identity key (never creates one).
fn reader_of(dir: &Path) -> Result<Option<Reader>, NodeError> {
    if !dir.join(identity::IDENTITY_FILE).is_file() {
        return Ok(None);
    }
    Ok(Some(Reader::new(&identity::load_or_create(dir)?)))
}

/// The user's peer id and key fingerprint, from the identity in `dir` (never creates one).
pub fn identity_of(dir: &Path) -> Result<(PeerId, String), NodeError> {
    check_not_a_file(dir)?;
    if !dir.join(identity::IDENTITY_FILE).is_file() {
        return Err(NodeError::NoData(PathBuf::from(dir)));
    }
    let key = identity::load_or_create(dir)?;
    Ok((
        identity::keypair(&key).public().to_peer_id(),
        Author::of(&key).fingerprint(),
    ))
}

/// A room's store read as messages for the user (names as they are now).
#[derive(Clone, Copy)]
struct Reading<'a> {
    store: &'a Store,
    /// The room's label.
    label: &'a str,
    reader: Option<&'a Reader>,
}

impl Reading<'_> {
    /// The message `entry` shows as, if any (see [`Message::of`]).
    fn message(&self, entry: &Entry) -> Option<Message> {
        Message::of(
            entry,
            &self.store.room(),
            self.label,
            self.reader,
            |author| display_name(self.store, author),
        )
    }

    /// The last `n` messages of the merged history (said at `place`, if given), read from the
    /// newest back; a direct message is decrypted only when it is at `place`.
    fn last(&self, n: usize, place: Option<&Place>) -> Result<Vec<Message>, NodeError> {
        let mut last = Vec::with_capacity(n.min(4096));
        for entry in self.store.history_newest_first() {
            if last.len() == n {
                break;
            }
            let entry = entry?;
            let here = place.is_none_or(|place| {
                said(&entry, self.reader).is_some_and(|said| said.is_at(place))
            });
            if here {
                last.extend(self.message(&entry));
            }
        }
        last.reverse();
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    async fn node(name: &str, dir: &Path) -> Node {
        Node::builder()
            .name(name)
            .data_dir(dir)
            .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .mdns(false)
            .spawn()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn rename_history_and_contacts() {
        let dir = tempfile::tempdir().unwrap();
        let alice = node("alice", dir.path()).await;
        for text in ["one", "two", "three"] {
            alice.send(text).unwrap();
        }
        let texts =
            |messages: Vec<Message>| messages.into_iter().map(|m| m.text).collect::<Vec<_>>();
        assert_eq!(texts(alice.history(2).await.unwrap()), ["two", "three"]);
        assert_eq!(
            texts(alice.history(10).await.unwrap()),
            ["one", "two", "three"]
        );
        assert!(alice.history(0).await.unwrap().is_empty());

        assert!(matches!(alice.rename(""), Err(NodeError::Name(_))));
        alice.rename("alicia").unwrap();
        let contacts = alice.contacts();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].name, "alicia");
        assert!(contacts[0].is_self && !contacts[0].connected);
        assert_eq!(
            contacts[0].held, 6,
            "profile, encryption key, three lines, new profile"
        );
        assert_eq!(
            alice.history(1).await.unwrap()[0].name,
            "alicia",
            "history shows names as they are now"
        );
        assert_eq!(alice.whois("alicia").len(), 1);
        assert!(alice.whois("alice").is_empty());
        // The old name stays pinned to alice's own key, so she may take it back.
        alice.rename("alice").unwrap();
        alice.shutdown().await;

        let archive = Archive::open(dir.path(), &Room::lan()).unwrap();
        let all: Vec<Message> = archive.messages().collect::<Result<_, _>>().unwrap();
        assert_eq!(texts(all.clone()), ["one", "two", "three"]);
        assert!(all.iter().all(|m| m.name == "alice"));
        let (peer, fingerprint) = identity_of(dir.path()).unwrap();
        assert_eq!(
            identity::author_of(&peer).map(|a| a.fingerprint()),
            Some(fingerprint)
        );
    }

    #[test]
    fn a_missing_data_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody");
        let error = Archive::open(&missing, &Room::lan())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("no p2pchat data in") && error.contains("nobody"),
            "{error}"
        );
        assert!(matches!(identity_of(&missing), Err(NodeError::NoData(_))));
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let error = Archive::open(&file, &Room::lan())
            .err()
            .map(|e| e.to_string());
        assert!(
            error
                .as_ref()
                .is_some_and(|e| e.contains("is not a directory")
                    && e.contains("a-file")
                    && !e.contains("--name")),
            "{error:?}"
        );
        assert!(matches!(
            identity_of(&file),
            Err(NodeError::NotADirectory(_))
        ));
    }

    #[tokio::test]
    async fn a_nick_survives_a_restart_with_the_first_name() {
        let dir = tempfile::tempdir().unwrap();
        let alice = node("alice", dir.path()).await;
        alice.rename("alice_w").unwrap();
        alice.shutdown().await;

        let again = node("alice", dir.path()).await;
        let mut events = again.events();
        assert_eq!(again.contacts()[0].name, "alice_w", "the nick is kept");
        let Ok(Event::Warning { message }) = events.try_recv() else {
            panic!("the user is told why --name alice did not rename them")
        };
        assert!(
            message.contains("you are alice_w") && message.contains("/nick alice"),
            "{message}"
        );
        assert_eq!(
            again.heads().get(&again.author()),
            Some(&3),
            "profile, encryption key, nick, and nothing written at start-up"
        );
        again.shutdown().await;
    }
}
