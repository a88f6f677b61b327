//! Push streams: each side of a connection opens one long-lived [`PUSH_PROTOCOL`] stream to
//! the other and sends, as length-prefixed frames, every batch of entries the other lacks, or,
//! for logs the other asked to skip (see [`p2pchat_protocol::route`]), notes of how far it
//! holds them.
//!
//! The pusher is pull-driven: it compares the store's heads with what the peer is known to
//! hold, sends the difference in bounded batches, then sleeps until the store changes. Writes
//! wait for the peer (backpressure) and nothing is queued in memory beyond one batch.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use libp2p::{PeerId, Stream, StreamProtocol};
use p2pchat_protocol::Heads;
use p2pchat_protocol::limits::{
    BATCH_BYTE_BUDGET, MAX_BATCH_ENTRIES, MAX_FRAME_BYTES, MAX_HELLO_HEADS,
};
use p2pchat_protocol::sync::{Range, merge, missing};
use p2pchat_protocol::validate::is_far_future;
use p2pchat_protocol::wire::{Batch, Frame, HeadNote, PUSH_PROTOCOL, RangeRequest};
use p2pchat_protocol::{Author, Entry, ValidationError};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};
use tokio_util::compat::FuturesAsyncWriteCompatExt;

use crate::Event;
use crate::frames::{FRAME_TIMEOUT, FrameReadError, read_frame};
use crate::shared::{SharedRef, now_ms};
use crate::warnings::Cause;

/// The push protocol as a libp2p protocol name.
pub fn protocol() -> StreamProtocol {
    StreamProtocol::new(PUSH_PROTOCOL)
}

/// How long an incoming push stream waits for its peer's hello to be accepted.
const ACCEPT_WAIT: Duration = Duration::from_secs(2);

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// Sends `peer` everything it lacks, for as long as the stream and the peer last.
///
/// What the peer holds is known from its hello and from what it sent us; what this stream sent
/// is added on top, but only for the life of the stream: entries written to a stream that then
/// failed may not have arrived, so a new stream starts again from what is known for sure.
pub async fn push_to(shared: SharedRef, peer: PeerId, stream: Stream) {
    let mut frames = FramedWrite::new(stream.compat_write(), codec());
    let mut changed = shared.changed.subscribe();
    let mut sent = Heads::new();
    let mut noted = Heads::new();
    loop {
        changed.borrow_and_update();
        // Our heads first, then what the peer holds: a receiver records that the sender holds
        // a batch before storing it, so everything these heads cover that came from the peer
        // is already in `theirs` and is not echoed back.
        let ours = shared.store.heads();
        let Some(mut theirs) = shared.peers().get(&peer).map(|state| state.heads.clone()) else {
            return; // the peer left
        };
        merge(&mut theirs, &sent);
        let skip = shared
            .peers()
            .get(&peer)
            .map(|state| state.skip.clone())
            .unwrap_or_default();
        let ranges = missing(&ours, &theirs);
        let mut sent_any = false;
        let notes: Vec<HeadNote> = ranges
            .iter()
            .filter(|range| {
                skip.contains(&range.author) && noted.get(&range.author) < Some(&range.to)
            })
            .filter(|range| !shared.store.is_frozen(&range.author))
            .map(|range| HeadNote {
                author: range.author,
                seq: range.to,
            })
            .take(MAX_HELLO_HEADS)
            .collect();
        if !notes.is_empty() {
            if let Err(e) = frames
                .send(Bytes::from(Frame::Notes(notes.clone()).encode()))
                .await
            {
                tracing::debug!(%peer, "push stream closed: {e}");
                return;
            }
            noted.extend(notes.iter().map(|note| (note.author, note.seq)));
            sent_any = true;
        }
        let wanted = |range: &&Range| {
            !skip.contains(&range.author) && !shared.store.is_frozen(&range.author)
        };
        for range in ranges.iter().filter(wanted) {
            // Only up to the heads read above: later entries may have come from the peer.
            let count = usize::try_from(range.size()).unwrap_or(usize::MAX);
            let entries = match shared.store.range_envelopes(
                &range.author,
                range.from,
                count.min(MAX_BATCH_ENTRIES),
                BATCH_BYTE_BUDGET,
            ) {
                Ok(entries) if !entries.is_empty() => entries,
                Ok(_) => continue,
                Err(e) if e.is_damage() => {
                    // What cannot be read is not sent; the peer may get it from others.
                    shared.store_failed("reading the store", &e);
                    continue;
                }
                Err(e) => {
                    shared.store_failed("reading the store", &e);
                    return;
                }
            };
            let last = entries.last().map_or(0, |(seq, _)| *seq);
            let batch = Batch {
                author: range.author,
                entries: entries
                    .into_iter()
                    .map(|(_, envelope)| ByteBuf::from(Vec::from(envelope)))
                    .collect(),
            };
            tracing::debug!(%peer, author = ?range.author, from = range.from, to = last, "pushing");
            if let Err(e) = frames.send(Bytes::from(Frame::Batch(batch).encode())).await {
                tracing::debug!(%peer, "push stream closed: {e}");
                return;
            }
            sent.insert(range.author, last);
            sent_any = true;
        }
        if !sent_any && changed.changed().await.is_err() {
            return; // the node is shutting down
        }
    }
}

/// What a stream reader tells the event loop.
#[derive(Debug)]
pub enum Report {
    /// Fetch part of a log from a peer (a batch did not join our log).
    Fetch(Fetch),
    /// A peer pushed entries of a log (it may be worth skipping, see the router).
    Received {
        /// The sender.
        peer: PeerId,
        /// Whose log.
        author: Author,
    },
    /// A peer sent what no honest peer sends (a forged entry, a bad frame): disconnect it.
    Misbehaved {
        /// The sender.
        peer: PeerId,
        /// What it did, in words.
        reason: String,
    },
    /// A peer noted how far it holds a log it was asked to skip.
    Noted {
        /// The sender.
        peer: PeerId,
        /// Whose log.
        author: Author,
        /// The highest seq it holds.
        seq: u64,
    },
}

/// A range request to send: fetch a log from a peer from `request.from` on.
#[derive(Debug)]
pub struct Fetch {
    /// Whom to ask.
    pub peer: PeerId,
    /// What to ask for.
    pub request: RangeRequest,
}

/// Reads frames pushed by `peer`, storing batches and passing notes on, until the stream ends
/// or misbehaves.
pub async fn receive_from(
    shared: SharedRef,
    peer: PeerId,
    stream: Stream,
    reports: mpsc::Sender<Report>,
) {
    // The peer may accept our hello before we accept its: give that a moment. A peer we do not
    // sync with (a probe) is refused; the connection is about to close anyway.
    let deadline = tokio::time::Instant::now() + ACCEPT_WAIT;
    while !shared.peers().contains_key(&peer) {
        if tokio::time::Instant::now() >= deadline {
            tracing::debug!(%peer, "refusing a push stream from a peer not accepted");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Batches are stored on their own thread, so the next frames are read (and the sender
    // keeps sending) while one is validated and synced to disk.
    let (batches, queued) = mpsc::channel(QUEUED_BATCHES);
    let storer = tokio::task::spawn_blocking({
        let (shared, reports) = (shared.clone(), reports.clone());
        move || store_batches(&shared, peer, queued, &reports)
    });
    read_frames(&shared, peer, stream, batches, &reports).await;
    // Whatever was read is stored before the stream is done with.
    let _ = storer.await;
}

/// Batches read but not yet stored, per push stream: enough to keep the sender busy while one
/// is stored, few enough to bound memory (each frame is at most [`MAX_FRAME_BYTES`]).
const QUEUED_BATCHES: usize = 2;

/// Reads frames from `peer`'s push stream: batches go to `batches`, notes are applied at once.
async fn read_frames(
    shared: &SharedRef,
    peer: PeerId,
    stream: Stream,
    batches: mpsc::Sender<Batch>,
    reports: &mpsc::Sender<Report>,
) {
    // Buffered, so a small frame (length prefix and body) takes one read from the stream.
    let mut stream = futures::io::BufReader::new(stream);
    loop {
        let frame = match read_frame(&mut stream, FRAME_TIMEOUT).await {
            Ok(Some(bytes)) => Frame::decode(&bytes).map_err(|e| e.to_string()),
            Ok(None) => return,
            Err(e) if e.is_misbehaviour() => Err(e.to_string()),
            Err(e @ FrameReadError::Stalled(_)) => {
                // The sender reopens a stream; a peer that keeps stalling only slows itself.
                shared.warn(&peer.to_string(), Cause::Stalled, 1, || {
                    format!("dropped the push stream from {peer}: {e}")
                });
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, "push stream ended: {e}");
                return;
            }
        };
        match frame {
            Ok(Frame::Batch(batch)) => {
                if batches.send(batch).await.is_err() {
                    return; // the storer stopped
                }
            }
            Ok(Frame::Notes(notes)) => {
                for note in notes {
                    shared.peer_has(&peer, note.author, note.seq);
                    let noted = Report::Noted {
                        peer,
                        author: note.author,
                        seq: note.seq,
                    };
                    if reports.send(noted).await.is_err() {
                        return;
                    }
                }
            }
            Err(reason) => {
                let _ = reports
                    .send(Report::Misbehaved {
                        peer,
                        reason: format!("a bad push frame ({reason})"),
                    })
                    .await;
                return;
            }
        }
    }
}

/// Stores the batches read from `peer`, in order, on a blocking thread, and reports each.
fn store_batches(
    shared: &SharedRef,
    peer: PeerId,
    mut queued: mpsc::Receiver<Batch>,
    reports: &mpsc::Sender<Report>,
) {
    while let Some(batch) = queued.blocking_recv() {
        let author = batch.author;
        let next = match absorb(shared, peer, batch) {
            Ok(absorbed) => absorbed.fetch.map(Report::Fetch),
            Err(Misbehaviour(reason)) => Some(Report::Misbehaved { peer, reason }),
        };
        for report in [Report::Received { peer, author }].into_iter().chain(next) {
            if reports.blocking_send(report).is_err() {
                return;
            }
        }
    }
}

/// What a peer did that no honest peer does, in words. Honest peers relay only entries they
/// validated, so an undecodable entry, a forged signature or an entry filed under another
/// author's log can only come from a peer that is broken or hostile.
#[derive(Debug)]
pub struct Misbehaviour(pub String);

/// What [`absorb`] did with a batch.
#[derive(Debug, Default)]
pub struct Absorbed {
    /// How many entries were newly stored.
    pub stored: usize,
    /// The range to fetch from the peer when the batch did not join our log (a gap).
    pub fetch: Option<Fetch>,
}

/// Stores a batch received from `peer`, records what the peer holds, and reports problems.
/// Returns what was stored and what to fetch, or the peer's misbehaviour (the valid prefix of
/// the batch is stored all the same).
pub fn absorb(shared: &SharedRef, peer: PeerId, batch: Batch) -> Result<Absorbed, Misbehaviour> {
    let author = batch.author;
    // The peer holds what it sends: record that first, so no pusher woken by the insert below
    // echoes these entries back to it.
    if let Some(last) = batch
        .entries
        .last()
        .and_then(|e| Entry::decode(Bytes::copy_from_slice(e)).ok())
        && last.author() == author
    {
        shared.peer_has(&peer, author, last.seq());
    }
    let received = batch.entries.len();
    tracing::debug!(%peer, ?author, entries = received, "received a batch");
    let entries = batch.entries.into_iter().map(|e| Bytes::from(e.into_vec()));
    let insert = || shared.store.insert_remote(author, entries);
    let stored = if author == shared.author() {
        // Our own log, given back by a peer: counted for the restore notice as it is stored.
        let from = shared
            .peers()
            .get(&peer)
            .and_then(|state| state.name.clone())
            .unwrap_or_else(|| peer.to_string());
        shared.own.insert_received(from, insert)
    } else {
        insert()
    };
    let inserted = match stored {
        Ok(inserted) => inserted,
        Err(e) => {
            shared.store_failed("storing entries", &e);
            return Ok(Absorbed::default());
        }
    };
    tracing::debug!(%peer, ?author, stored = inserted.stored.len(), rejected = ?inserted.rejected, "absorbed");
    shared.peer_has(&peer, author, inserted.held_through);
    if !inserted.stored.is_empty() {
        // Shown as soon as written; relayed and counted as stored once synced to disk.
        shared.notify_written();
        if let Err(e) = shared.store.sync() {
            shared.emit(Event::Error {
                message: format!("storing entries failed: {e}"),
            });
            return Ok(Absorbed::default());
        }
        shared.notify_changed();
    }
    let counters = &shared.stats;
    counters
        .received
        .fetch_add(received as u64, Ordering::Relaxed);
    counters
        .stored
        .fetch_add(inserted.stored.len() as u64, Ordering::Relaxed);
    counters
        .duplicates
        .fetch_add(inserted.duplicates as u64, Ordering::Relaxed);
    if inserted.rejected.is_some() {
        counters.rejected_batches.fetch_add(1, Ordering::Relaxed);
    }
    if !inserted.stored.is_empty() {
        shared.report_catch_up();
    }
    let forked = matches!(inserted.rejected, Some(ValidationError::Fork { .. }));
    if author == shared.author() && (!inserted.stored.is_empty() || forked) {
        // Our own log, given back by a peer: what was held may go on top now.
        shared.check_own();
    }
    warn_of_clocks_ahead(shared, author, &inserted.stored);
    let stored = inserted.stored.len();
    let fetch = match inserted.rejected {
        None => None,
        Some(ValidationError::Gap { expected, .. }) => Some(Fetch {
            peer,
            request: RangeRequest {
                author,
                from: expected,
                limit: MAX_BATCH_ENTRIES as u32,
            },
        }),
        Some(ValidationError::Fork { seq }) => {
            let name = shared.display_name(&author);
            shared.emit(Event::Warning {
                message: format!(
                    "{name} ({}) signed two different entries at seq {seq}: their log is forked, \
                     no more of it will be accepted",
                    author.fingerprint()
                ),
            });
            None
        }
        Some(ValidationError::WrongPrev { .. }) if author == shared.author() => {
            // Our own log, but not on top of what we hold: fetch from our head, so the
            // entry there shows whether the two are a fork.
            let ours = shared.store.head_seq(&author);
            Some(Fetch {
                peer,
                request: RangeRequest {
                    author,
                    from: ours.max(1),
                    limit: MAX_BATCH_ENTRIES as u32,
                },
            })
        }
        Some(ValidationError::AuthorFrozen) => None,
        Some(ValidationError::BadAuthorKey(reason)) => {
            return Err(Misbehaviour(format!(
                "entries of #{}, a key that {reason}: no honest peer relays them (older p2pchat \
                 versions accepted them; if it runs one, it should be updated)",
                author.fingerprint()
            )));
        }
        Some(
            forged @ (ValidationError::Decode(_)
            | ValidationError::BadSignature { .. }
            | ValidationError::WrongAuthor { .. }),
        ) => return Err(Misbehaviour(format!("an invalid entry ({forged})"))),
        Some(other) => {
            shared.warn(&peer.to_string(), Cause::Rejected, 1, || {
                format!("rejected an entry from peer {peer}: {other}")
            });
            None
        }
    };
    Ok(Absorbed { stored, fetch })
}

/// Warns, once in a while per author, when entries just stored are dated far ahead of our
/// clock. Either clock may be wrong; when several people's entries are ahead, ours likely is.
fn warn_of_clocks_ahead(shared: &SharedRef, author: Author, stored: &[Entry]) {
    let now = now_ms();
    let ahead: Vec<u64> = stored
        .iter()
        .filter(|entry| is_far_future(entry, now))
        .map(|entry| entry.timestamp() - now)
        .collect();
    let Some(&most) = ahead.iter().max() else {
        return;
    };
    let name = shared.display_name(&author);
    let others = shared.warnings().others_open(Cause::ClockAhead, &name);
    shared.warn(&name, Cause::ClockAhead, ahead.len() as u64, || {
        let whose = match ahead.len() {
            1 => format!("{name}'s entries are"),
            n => format!("{n} of {name}'s entries are up to"),
        };
        let likely = if others > 0 {
            format!(
                "; the entries of {} people are ahead of your clock, so it is likely yours",
                others + 1
            )
        } else {
            String::new()
        };
        format!(
            "{whose} {} ahead of your clock: one of the two clocks is wrong{likely} (kept; \
             messages are ordered by lamport clock, not by date)",
            span(most)
        )
    });
}

/// `ms` in words, roughly: "25 minutes", "2 h", "3 days", "1 year".
fn span(ms: u64) -> String {
    const MINUTE: u64 = 60_000;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    const YEAR: u64 = 365 * DAY;
    match ms {
        ms if ms < 2 * HOUR => format!("{} minutes", ms / MINUTE),
        ms if ms < 2 * DAY => format!("{} h", ms / HOUR),
        ms if ms < 2 * YEAR => format!("{} days", ms / DAY),
        ms => format!("{} years", ms / YEAR),
    }
}

/// The head `peer` should be asked to continue from after a range answer, if it has more.
pub fn next_fetch(shared: &SharedRef, peer: PeerId, author: Author) -> Option<Fetch> {
    let ours = shared.store.head_seq(&author);
    let theirs = shared.peers().get(&peer)?.heads.get(&author).copied()?;
    (theirs > ours).then(|| Fetch {
        peer,
        request: RangeRequest {
            author,
            from: ours + 1,
            limit: MAX_BATCH_ENTRIES as u32,
        },
    })
}
