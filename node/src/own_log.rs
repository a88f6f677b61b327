//! The one path for appends to the node's own log: [`OwnWriter`] keeps the own log's mark
//! beside the key in step with the store, and holds appends while the store may be behind
//! what this key wrote before (the rule is [`p2pchat_protocol::own::own_log`]).
//!
//! Held lines wait in memory (at most [`MAX_HELD`]) until the own log is fetched back from a
//! peer; then they are appended on top of it, in one group commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use p2pchat_protocol::own::{OwnLog, OwnMark, own_log};
use p2pchat_protocol::{Author, Body, Entry, Outgoing, SigningKey};
use p2pchat_storage::{Inserted, Store, StoreError};

use crate::NodeError;
use crate::identity::OwnMarkFile;
use crate::shared::now_ms;

/// Own entries held at most while the own log is behind; more are refused.
pub const MAX_HELD: usize = 4096;

/// See the module docs.
pub struct OwnWriter {
    /// The mark file; `None` for a store in memory, whose mark is kept in memory only.
    mark: Option<PathBuf>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The mark file, once there is one.
    file: Option<OwnMarkFile>,
    /// The recorded mark (`None`: an older release's data directory with an empty store).
    mark: Option<OwnMark>,
    /// Entries waiting for the own log, oldest first (a direct message is sealed when it is
    /// appended, at the seq it gets then).
    held: Vec<Outgoing>,
    /// The store's own head when the own log was found behind, until it is back.
    head_when_held: Option<u64>,
    /// Own entries received from each peer (by name) while held.
    restored_from: BTreeMap<String, u64>,
    /// The state last warned about.
    warned: Option<OwnLog>,
}

/// What [`OwnWriter::append`] did.
#[derive(Debug)]
pub enum Appended {
    /// Signed, stored durably and marked.
    Stored(Vec<Entry>),
    /// Held until the own log is back.
    Held {
        /// Bodies waiting, these included.
        waiting: usize,
    },
    /// The own log was found back (a peer's batch of it was just stored, not yet rechecked):
    /// the held bodies were appended, these on top, in one group commit, and holding ended.
    Restored {
        /// Every entry appended: the held ones, then these.
        entries: Vec<Entry>,
        /// What was restored, to tell the user.
        restored: Restored,
    },
}

/// What [`OwnWriter::recheck`] did when the own log came back.
#[derive(Debug, PartialEq, Eq)]
pub struct Restored {
    /// Own entries fetched back from peers.
    pub restored: u64,
    /// The peers they came from, by name.
    pub from: Vec<String>,
    /// Held entries appended on top.
    pub sent: u64,
}

impl OwnWriter {
    /// Reads the mark file `mark` of the own log in `store` (a data directory of an older
    /// release gets one from its store's head, so upgrading raises no alarm). With `fresh`, a
    /// missing mark means the own log in this store has not started yet (a room joined for the
    /// first time), and an empty store gets a mark at seq 0.
    pub fn open(
        mark: &Path,
        store: &Store,
        key: &SigningKey,
        fresh: bool,
    ) -> Result<Self, NodeError> {
        let path = mark;
        let (mut file, mut mark) = OwnMarkFile::open(path)?.unzip();
        let author = Author::of(key);
        let head = store.head_seq(&author);
        if mark.is_none() && (head > 0 || fresh) {
            let upgraded = stored_mark(store, &author, head)?;
            file = Some(OwnMarkFile::create(path, &upgraded)?);
            mark = Some(upgraded);
        }
        Ok(Self {
            mark: Some(path.to_owned()),
            inner: Mutex::new(Inner {
                file,
                mark,
                ..Inner::default()
            }),
        })
    }

    /// The writer of the own log in `store`, a store in memory ([`Store::in_memory`]): no mark
    /// file, the mark starts at the store's own head (0 for a new store: the own log has not
    /// started) and follows it in memory.
    pub fn in_memory(store: &Store, key: &SigningKey) -> Result<Self, NodeError> {
        let author = Author::of(key);
        let mark = stored_mark(store, &author, store.head_seq(&author))?;
        Ok(Self {
            mark: None,
            inner: Mutex::new(Inner {
                mark: Some(mark),
                ..Inner::default()
            }),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The own log's state, given the highest seq of it a connected peer claims.
    pub fn state(
        &self,
        store: &Store,
        key: &SigningKey,
        claimed: u64,
    ) -> Result<OwnLog, NodeError> {
        state(&self.inner(), store, &Author::of(key), claimed)
    }

    /// How many entries are held, waiting for the own log.
    pub fn held(&self) -> usize {
        self.inner().held.len()
    }

    /// The name in the newest held profile entry, if any (the name to claim while held).
    pub fn held_name(&self) -> Option<String> {
        self.inner().held.iter().rev().find_map(|held| match held {
            Outgoing::Body(Body::Profile { name }) => Some(name.clone()),
            _ => None,
        })
    }

    /// Signs `bodies` as the next own entries, stores them in one fsynced batch and records
    /// the new mark durably, before returning; or holds them while the own log is behind; or,
    /// when the own log has just come back, stores them on top of what was held and ends
    /// holding, as [`OwnWriter::recheck`] would have. `claimed` is the highest seq of the own
    /// log a connected peer claims to hold.
    pub fn append(
        &self,
        store: &Store,
        key: &SigningKey,
        bodies: impl IntoIterator<Item = impl Into<Outgoing>>,
        claimed: u64,
    ) -> Result<Appended, NodeError> {
        let mut inner = self.inner();
        let author = Author::of(key);
        let state = state(&inner, store, &author, claimed)?;
        if state == OwnLog::Current {
            if inner.head_when_held.is_none() {
                let entries = store.append_own_many(key, bodies, now_ms())?;
                self.mark_stored(&mut inner, store, &author)?;
                return Ok(Appended::Stored(entries));
            }
            // Back, but not rechecked yet (the batch that brought it back was just stored):
            // holding ends here, so that these bodies go on top of what was held and are not
            // counted among the entries restored.
            let (restored, entries) = self.end_holding(&mut inner, store, key, &author, bodies)?;
            return Ok(Appended::Restored { entries, restored });
        }
        let bodies: Vec<Outgoing> = bodies.into_iter().map(Into::into).collect();
        for body in &bodies {
            check_limits(body)?;
        }
        if inner.held.len() + bodies.len() > MAX_HELD {
            return Err(NodeError::OwnLogBehind(format!(
                "{} lines are already held, waiting for your own log to come back from a peer; \
                 no more are taken",
                inner.held.len()
            )));
        }
        if inner.head_when_held.is_none() {
            inner.head_when_held = Some(store.head_seq(&author));
        }
        inner.held.extend(bodies);
        Ok(Appended::Held {
            waiting: inner.held.len(),
        })
    }

    /// Notes the own log's `state` (from [`OwnWriter::state`]) and returns the warning to
    /// give for it, once per state; `None` when current or already said.
    pub fn observe(&self, state: OwnLog, store_head: u64) -> Option<String> {
        let mut inner = self.inner();
        if state == OwnLog::Current {
            inner.warned = None;
            return None;
        }
        // From here on, what comes back is counted for the restore notice.
        inner.head_when_held.get_or_insert(store_head);
        if inner.warned == Some(state) {
            return None;
        }
        inner.warned = Some(state);
        behind_warning(state, store_head)
    }

    /// Stores own entries received from `peer` (by name) with `insert`, and counts what it
    /// stored for the restore notice, under the lock appends take: an append that ends the
    /// hold cannot come between the two and leave the peer out of the notice.
    pub fn insert_received(
        &self,
        peer: String,
        insert: impl FnOnce() -> Result<Inserted, StoreError>,
    ) -> Result<Inserted, StoreError> {
        let mut inner = self.inner();
        let inserted = insert()?;
        if inner.head_when_held.is_some() && !inserted.stored.is_empty() {
            *inner.restored_from.entry(peer).or_default() += inserted.stored.len() as u64;
        }
        Ok(inserted)
    }

    /// Looks again after the store or the peers changed: when the own log is current, the
    /// held entries are appended on top (a held profile or encryption key that the log already
    /// has is dropped) and the mark follows the store. Returns what was restored, once, when
    /// holding ends.
    pub fn recheck(
        &self,
        store: &Store,
        key: &SigningKey,
        claimed: u64,
    ) -> Result<Option<Restored>, NodeError> {
        let mut inner = self.inner();
        let author = Author::of(key);
        if state(&inner, store, &author, claimed)? != OwnLog::Current {
            return Ok(None);
        }
        if inner.head_when_held.is_none() {
            // Own entries may have come from a peer (the store was behind, unknown to us).
            if inner
                .mark
                .is_none_or(|mark| mark.seq < store.head_seq(&author))
            {
                self.mark_stored(&mut inner, store, &author)?;
            }
            return Ok(None);
        }
        let (restored, _) =
            self.end_holding(&mut inner, store, key, &author, Vec::<Outgoing>::new())?;
        Ok(Some(restored))
    }

    /// Ends holding, the own log being current: appends the held entries on top of it (a held
    /// profile or encryption key that the log already has is dropped), then `more`, in one group
    /// commit, and marks the new head. Returns what was restored since holding began, and
    /// every entry appended.
    fn end_holding(
        &self,
        inner: &mut Inner,
        store: &Store,
        key: &SigningKey,
        author: &Author,
        more: impl IntoIterator<Item = impl Into<Outgoing>>,
    ) -> Result<(Restored, Vec<Entry>), NodeError> {
        let head = store.head_seq(author);
        let mut name = store.name(author);
        let mut enc_key = store.enc_key(author)?;
        let bodies: Vec<Outgoing> = inner
            .held
            .iter()
            .filter(|held| match held {
                Outgoing::Body(Body::Profile { name: new }) if name.as_deref() == Some(new) => {
                    false
                }
                Outgoing::Body(Body::Profile { name: new }) => {
                    name = Some(new.clone());
                    true
                }
                Outgoing::Body(Body::EncKey { key }) if enc_key == Some(*key) => false,
                Outgoing::Body(Body::EncKey { key }) => {
                    enc_key = Some(*key);
                    true
                }
                _ => true,
            })
            .cloned()
            .collect();
        let sent = bodies.len() as u64;
        // Nothing held is dropped before it is stored: a failed write keeps it held.
        let more = more.into_iter().map(Into::into);
        let entries = store.append_own_many(key, bodies.into_iter().chain(more), now_ms())?;
        inner.held.clear();
        let held_at = inner.head_when_held.take().unwrap_or(head);
        self.mark_stored(inner, store, author)?;
        let restored = Restored {
            restored: head.saturating_sub(held_at),
            from: std::mem::take(&mut inner.restored_from)
                .into_keys()
                .collect(),
            sent,
        };
        Ok((restored, entries))
    }

    /// Records the store's own head as the mark, durably.
    fn mark_stored(
        &self,
        inner: &mut Inner,
        store: &Store,
        author: &Author,
    ) -> Result<(), NodeError> {
        let mark = stored_mark(store, author, store.head_seq(author))?;
        if inner.mark != Some(mark) {
            match (&mut inner.file, &self.mark) {
                (Some(file), _) => file.write(&mark)?,
                (None, Some(path)) => inner.file = Some(OwnMarkFile::create(path, &mark)?),
                (None, None) => {}
            }
            inner.mark = Some(mark);
        }
        Ok(())
    }
}

/// Refuses what could never be appended: a body over a limit, a direct message too long.
fn check_limits(outgoing: &Outgoing) -> Result<(), NodeError> {
    match outgoing {
        Outgoing::Body(body) => body.check_limits().map_err(NodeError::Invalid),
        Outgoing::Letter(letter) => crate::check_text(&letter.text),
    }
}

fn state(inner: &Inner, store: &Store, author: &Author, claimed: u64) -> Result<OwnLog, NodeError> {
    let head = store.head_seq(author);
    let at_mark = match inner.mark {
        Some(mark) if mark.seq > 0 && mark.seq <= head => {
            store.get(author, mark.seq)?.map(|entry| entry.hash())
        }
        _ => None,
    };
    Ok(own_log(
        inner.mark.as_ref(),
        head,
        at_mark,
        store.is_frozen(author),
        claimed,
    ))
}

fn stored_mark(store: &Store, author: &Author, seq: u64) -> Result<OwnMark, NodeError> {
    let hash = match seq {
        0 => None,
        seq => store.get(author, seq)?.map(|entry| entry.hash()),
    };
    Ok(OwnMark { seq, hash })
}

/// The warning for an own log that is not current; `store` is the store's own head.
pub fn behind_warning(state: OwnLog, store: u64) -> Option<String> {
    Some(match state {
        OwnLog::Current => return None,
        OwnLog::Behind {
            expected: Some(expected),
        } => format!(
            "your own log is behind what you wrote before (seq {expected} expected, store has \
             {store}): new lines are held until a peer gives it back; see p2pchat doctor"
        ),
        OwnLog::Behind { expected: None } => "this store holds none of your own log, but your key \
             is not new (a data directory of an older release whose store was lost?): new lines \
             are held until a peer gives your log back; see p2pchat doctor"
            .to_owned(),
        OwnLog::Forked => "your own log is forked: this store holds another entry at a seq your \
             key signed before (a store restored from a backup and written to?); new lines are \
             held, as every peer would refuse them; see p2pchat doctor"
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity;

    fn text(text: &str) -> Body {
        Body::Text { text: text.into() }
    }

    /// The LAN room's store in the data directory `dir`.
    fn lan_store(dir: &std::path::Path) -> Store {
        Store::open(&dir.join("store"), p2pchat_protocol::Room::lan().id()).unwrap()
    }

    /// The own log's writer of that store, with its mark beside the key (as the first room's).
    fn own_writer(dir: &std::path::Path, store: &Store, key: &SigningKey) -> OwnWriter {
        OwnWriter::open(&dir.join(identity::OWN_HEAD_FILE), store, key, false).unwrap()
    }

    #[test]
    fn a_lost_store_holds_appends_until_the_log_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = identity::load_or_create(dir.path()).unwrap();
        let author = Author::of(&key);
        let store = lan_store(dir.path());
        let own = own_writer(dir.path(), &store, &key);
        let profile = Body::Profile { name: "bob".into() };
        assert!(matches!(
            own.append(&store, &key, [profile.clone(), text("one"), text("two")], 0)
                .unwrap(),
            Appended::Stored(_)
        ));
        assert_eq!(identity::read_own_mark(dir.path()).unwrap().unwrap().seq, 3);
        let old: Vec<_> = store
            .range_envelopes(&author, 1, 10, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, envelope)| envelope)
            .collect();
        drop((own, store));

        // The store is lost; the key and its mark are not.
        std::fs::remove_dir_all(dir.path().join("store")).unwrap();
        let store = lan_store(dir.path());
        let own = own_writer(dir.path(), &store, &key);
        let behind = OwnLog::Behind { expected: Some(3) };
        assert_eq!(own.state(&store, &key, 0).unwrap(), behind);
        let held = own
            .append(&store, &key, [profile, text("three")], 0)
            .unwrap();
        assert!(
            matches!(held, Appended::Held { waiting: 2, .. }),
            "{held:?}"
        );
        assert_eq!(own.held_name().as_deref(), Some("bob"));
        assert_eq!(store.head_seq(&author), 0, "nothing signed while behind");
        assert_eq!(own.recheck(&store, &key, 0).unwrap(), None);

        // A peer gives the log back.
        own.insert_received("alice".into(), || store.insert_remote(author, old))
            .unwrap();
        let restored = own.recheck(&store, &key, 0).unwrap();
        assert_eq!(
            restored,
            Some(Restored {
                restored: 3,
                from: vec!["alice".into()],
                sent: 1, // the held profile names the name the log has
            })
        );
        assert_eq!(store.head_seq(&author), 4);
        assert_eq!(identity::read_own_mark(dir.path()).unwrap().unwrap().seq, 4);
        assert_eq!(own.recheck(&store, &key, 0).unwrap(), None, "said once");
    }

    #[test]
    fn a_line_typed_as_the_log_comes_back_goes_on_top_and_is_not_counted_as_restored() {
        let dir = tempfile::tempdir().unwrap();
        let key = identity::load_or_create(dir.path()).unwrap();
        let author = Author::of(&key);
        let store = lan_store(dir.path());
        let own = own_writer(dir.path(), &store, &key);
        let profile = Body::Profile { name: "bob".into() };
        own.append(&store, &key, [profile, text("one"), text("two")], 0)
            .unwrap();
        let mut old: Vec<_> = store
            .range_envelopes(&author, 1, 10, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, envelope)| envelope)
            .collect();
        let tail = old.split_off(1);

        // The store lost its tail (the mark kept): behind, and nothing held yet.
        drop((own, store));
        std::fs::remove_dir_all(dir.path().join("store")).unwrap();
        let store = lan_store(dir.path());
        store.insert_remote(author, old).unwrap();
        let own = own_writer(dir.path(), &store, &key);
        let behind = own.state(&store, &key, 0).unwrap();
        assert_eq!(behind, OwnLog::Behind { expected: Some(3) });
        assert!(own.observe(behind, 1).is_some());

        // The peer's batch is stored, and a line is typed before anything rechecks.
        own.insert_received("alice".into(), || store.insert_remote(author, tail))
            .unwrap();
        let (entries, told) = match own.append(&store, &key, [text("three")], 0).unwrap() {
            Appended::Restored { entries, restored } => (entries, Some(restored)),
            Appended::Stored(entries) => (entries, None),
            held => panic!("the log is back, yet {held:?}"),
        };
        assert_eq!(entries.iter().map(Entry::seq).collect::<Vec<_>>(), [4]);
        let told_later = own.recheck(&store, &key, 0).unwrap();
        assert_eq!(
            told.into_iter().chain(told_later).collect::<Vec<_>>(),
            [Restored {
                restored: 2,
                from: vec!["alice".into()],
                sent: 0,
            }],
            "told once, counting only what came back"
        );
        assert_eq!(store.head_seq(&author), 4);
        assert_eq!(identity::read_own_mark(dir.path()).unwrap().unwrap().seq, 4);
    }

    #[test]
    fn a_peer_holding_more_of_the_own_log_holds_appends() {
        let dir = tempfile::tempdir().unwrap();
        let key = identity::load_or_create(dir.path()).unwrap();
        let store = lan_store(dir.path());
        let own = own_writer(dir.path(), &store, &key);
        let profile = Body::Profile { name: "bob".into() };
        own.append(&store, &key, [profile], 0).unwrap();
        let held = own.append(&store, &key, [text("x")], 5).unwrap();
        assert!(matches!(held, Appended::Held { waiting: 1 }));
        assert_eq!(
            own.state(&store, &key, 5).unwrap(),
            OwnLog::Behind { expected: Some(5) }
        );
        // The peer could not back its claim: the held line goes on top.
        let restored = own.recheck(&store, &key, 1).unwrap().unwrap();
        assert_eq!((restored.restored, restored.sent), (0, 1));
    }

    #[test]
    fn an_older_release_without_a_mark_gets_one_from_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let key = identity::load_or_create(dir.path()).unwrap();
        let store = lan_store(dir.path());
        store
            .append_own(&key, Body::Profile { name: "bob".into() }, 0)
            .unwrap();
        std::fs::remove_file(dir.path().join(identity::OWN_HEAD_FILE)).unwrap();
        let own = own_writer(dir.path(), &store, &key);
        assert_eq!(own.state(&store, &key, 0).unwrap(), OwnLog::Current);
        assert_eq!(identity::read_own_mark(dir.path()).unwrap().unwrap().seq, 1);

        // With an empty store and no mark, how far the log went is unknown: hold.
        drop((own, store));
        std::fs::remove_dir_all(dir.path().join("store")).unwrap();
        std::fs::remove_file(dir.path().join(identity::OWN_HEAD_FILE)).unwrap();
        let store = lan_store(dir.path());
        let own = own_writer(dir.path(), &store, &key);
        assert_eq!(
            own.state(&store, &key, 0).unwrap(),
            OwnLog::Behind { expected: None }
        );
    }
}
