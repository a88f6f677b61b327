//! Line mode's output: stdout and stderr each have a thread of their own, so no task of the
//! runtime ever blocks on a reader that stopped reading, and a stdout nobody reads (a full pipe)
//! never holds up the `info>` lines on stderr, nor the other way round. On each stream, status
//! output goes out in the order it was queued, ahead of chat messages still waiting (those may
//! be history scrolling by; a status event is about now); chat messages keep their order.
//!
//! Status output ([`Out::write`], [`Out::write_error`]) is queued without waiting, at most
//! [`STATUS_ROOM`] lines per stream: past that (a flood of events while the stream is read
//! slowly) the oldest line that is not an error goes, and the stream says once how many went
//! before the lines still queued. Chat messages ([`Out::messages`]) wait while [`ROOM`] of them
//! are queued but not yet written, so memory stays bounded however long the history being
//! printed. Each thread writes through a buffer and flushes whenever its queue is momentarily
//! empty: no delay when live, and few system calls in bulk, where messages come in pieces of
//! many lines.

use std::collections::VecDeque;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

/// Most chat messages queued but not yet written.
const ROOM: u32 = 1024;

/// Most status lines queued per stream but not yet written.
const STATUS_ROOM: usize = 1024;

/// Where a piece of output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Chat messages, and JSON events.
    Stdout,
    /// `info>` lines and the progress line (plain mode).
    Stderr,
}

/// The line that says `n` status lines were dropped, as the stream's format has it.
pub type Dropped = fn(u64) -> String;

/// Text to write, with the room it takes in the queue (chat messages only).
struct Piece {
    text: String,
    /// Released once the text is written (the piece is dropped then); `None` for status.
    _room: Option<OwnedSemaphorePermit>,
}

/// A status line waiting to be written.
struct Status {
    text: String,
    /// Errors are dropped only when the queue holds nothing else.
    error: bool,
}

/// What waits to be written on one stream.
#[derive(Default)]
struct Queue {
    /// Oldest first, at most [`STATUS_ROOM`].
    status: VecDeque<Status>,
    /// Status lines dropped since the last was written.
    dropped: u64,
    /// Chat messages, oldest first (bounded by [`ROOM`]'s permits).
    messages: VecDeque<Piece>,
    /// Whether every [`Out`] is gone (nothing more will come).
    closed: bool,
}

impl Queue {
    /// Queues a status line; when full, drops the oldest that is not an error (the oldest of
    /// all if every one is).
    fn push_status(&mut self, text: String, error: bool) {
        if self.status.len() >= STATUS_ROOM {
            let oldest = self.status.iter().position(|status| !status.error);
            self.status.remove(oldest.unwrap_or(0));
            self.dropped += 1;
        }
        self.status.push_back(Status { text, error });
    }

    /// The next piece to write: the word on dropped lines, then status, then messages.
    fn pop(&mut self, dropped: Dropped) -> Option<Piece> {
        if self.dropped > 0 {
            let text = dropped(std::mem::take(&mut self.dropped));
            return Some(Piece { text, _room: None });
        }
        match self.status.pop_front() {
            Some(status) => Some(Piece {
                text: status.text,
                _room: None,
            }),
            None => self.messages.pop_front(),
        }
    }
}

/// One stream's queue, shared by the [`Out`] handles and the stream's thread.
struct Lane {
    queue: Mutex<Queue>,
    /// Notified when something is queued, or the queue is closed.
    ready: Condvar,
    dropped: Dropped,
}

impl Lane {
    fn new(dropped: Dropped) -> Self {
        Lane {
            queue: Mutex::default(),
            ready: Condvar::new(),
            dropped,
        }
    }

    /// The queue (a thread that panicked holding it left it whole: each change is one call).
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the queue and wakes the thread.
    fn with(&self, change: impl FnOnce(&mut Queue)) {
        change(&mut self.lock());
        self.ready.notify_one();
    }

    /// The next piece, if one is queued.
    fn try_pop(&self) -> Option<Piece> {
        self.lock().pop(self.dropped)
    }

    /// The next piece, waiting for one; `None` once the queue is closed and empty.
    fn pop(&self) -> Option<Piece> {
        let mut queue = self.lock();
        loop {
            if let Some(piece) = queue.pop(self.dropped) {
                return Some(piece);
            }
            if queue.closed {
                return None;
            }
            queue = self
                .ready
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The two lanes, closed once the last [`Out`] is dropped.
struct Lanes {
    stdout: Arc<Lane>,
    stderr: Arc<Lane>,
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for lane in [&self.stdout, &self.stderr] {
            lane.with(|queue| queue.closed = true);
        }
    }
}

/// A handle to queue output on the writer threads. They finish once every handle is dropped
/// and all that was queued is written.
#[derive(Clone)]
pub struct Out {
    lanes: Arc<Lanes>,
    room: Arc<Semaphore>,
}

/// The writer threads, to wait for them to finish.
pub struct Writer {
    stdout_done: oneshot::Receiver<()>,
    stderr_done: oneshot::Receiver<()>,
}

/// Starts the writer threads; `dropped` words the line said when status lines were dropped.
pub fn start(dropped: Dropped) -> std::io::Result<(Out, Writer)> {
    let stdout = Arc::new(Lane::new(dropped));
    let stderr = Arc::new(Lane::new(dropped));
    let room = Arc::new(Semaphore::new(ROOM as usize));
    let stdout_done = spawn("stdout", {
        let (lane, room) = (stdout.clone(), room.clone());
        move || Sink::new(std::io::stdout(), Some(room)).run(&lane)
    })?;
    let stderr_done = spawn("stderr", {
        let lane = stderr.clone();
        move || Sink::new(std::io::stderr(), None).run(&lane)
    })?;
    let out = Out {
        lanes: Arc::new(Lanes { stdout, stderr }),
        room,
    };
    Ok((
        out,
        Writer {
            stdout_done,
            stderr_done,
        },
    ))
}

/// Runs `work` on a thread named `name`; the receiver hears once it is done.
fn spawn(
    name: &str,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<oneshot::Receiver<()>> {
    let (finished, done) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("output to {name}"))
        .spawn(move || {
            work();
            let _ = finished.send(());
        })?;
    Ok(done)
}

impl Out {
    /// Queues a status line, `text` (with its newline, if it is a line), without waiting; it
    /// may be dropped in a flood (see the module docs).
    pub fn write(&self, stream: Stream, text: String) {
        self.lane(stream)
            .with(|queue| queue.push_status(text, false));
    }

    /// Queues an error line like [`Out::write`]; it is dropped only if the queue holds nothing
    /// but errors.
    pub fn write_error(&self, stream: Stream, text: String) {
        self.lane(stream)
            .with(|queue| queue.push_status(text, true));
    }

    /// Queues `count` chat messages, `lines` (newlines included), for stdout, first waiting for
    /// room for them (a piece bigger than the room waits for all of it); `false` once stdout is
    /// gone.
    pub async fn messages(&self, lines: String, count: usize) -> bool {
        let count = u32::try_from(count).map_or(ROOM, |count| count.min(ROOM));
        let Ok(room) = self.room.clone().acquire_many_owned(count).await else {
            return false;
        };
        let piece = Piece {
            text: lines,
            _room: Some(room),
        };
        self.lanes
            .stdout
            .with(|queue| queue.messages.push_back(piece));
        true
    }

    fn lane(&self, stream: Stream) -> &Lane {
        match stream {
            Stream::Stdout => &self.lanes.stdout,
            Stream::Stderr => &self.lanes.stderr,
        }
    }
}

impl Writer {
    /// Waits until everything queued is written and flushed (once every [`Out`] is dropped), or
    /// until `deadline`, whichever comes first.
    pub async fn drained(self, deadline: Instant) {
        let both = async {
            let _ = self.stdout_done.await;
            let _ = self.stderr_done.await;
        };
        let _ = tokio::time::timeout_at(deadline, both).await;
    }
}

/// A stream's thread's side, buffered.
struct Sink<W: Write> {
    /// `None` once the stream is gone (the reader went away).
    out: Option<BufWriter<W>>,
    /// Closed once the stream is gone, which stops the message printer (stdout only).
    room: Option<Arc<Semaphore>>,
}

impl<W: Write> Sink<W> {
    fn new(out: W, room: Option<Arc<Semaphore>>) -> Self {
        Sink {
            out: Some(BufWriter::new(out)),
            room,
        }
    }

    /// Writes what `lane` queues until it is closed and empty, flushing whenever it is empty.
    fn run(mut self, lane: &Lane) {
        loop {
            let piece = match lane.try_pop() {
                Some(piece) => piece,
                None => {
                    self.flush();
                    match lane.pop() {
                        Some(piece) => piece,
                        None => break,
                    }
                }
            };
            self.write(&piece);
        }
        self.flush();
    }

    /// Writes one piece (its room is released as it is dropped after).
    fn write(&mut self, piece: &Piece) {
        let written = self
            .out
            .as_mut()
            .map(|w| w.write_all(piece.text.as_bytes()));
        self.check(written);
    }

    /// Flushes the buffer.
    fn flush(&mut self) {
        let flushed = self.out.as_mut().map(BufWriter::flush);
        self.check(flushed);
    }

    /// After a write: on an error, gives the stream up (there is nowhere to report it) and stops
    /// the message printer.
    fn check(&mut self, result: Option<std::io::Result<()>>) {
        if let Some(Err(_)) = result {
            self.out = None;
            if let Some(room) = &self.room {
                room.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn dropped(n: u64) -> String {
        format!("{n} dropped\n")
    }

    /// Everything `queue` gives, in order.
    fn drain(queue: &mut Queue) -> Vec<String> {
        std::iter::from_fn(|| queue.pop(dropped))
            .map(|piece| piece.text)
            .collect()
    }

    #[test]
    fn a_flood_keeps_the_newest_lines_and_every_error_and_says_once_how_many_went() {
        let mut queue = Queue::default();
        queue.push_status("error 1\n".into(), true);
        for n in 0..5000 {
            queue.push_status(format!("line {n}\n"), false);
            if n == 10 {
                queue.push_status("error 2\n".into(), true);
            }
        }
        assert_eq!(queue.status.len(), STATUS_ROOM);
        let written = drain(&mut queue);
        let kept_lines = STATUS_ROOM - 2;
        let first_kept = 5000 - kept_lines;
        assert_eq!(
            written[0],
            format!("{first_kept} dropped\n"),
            "said once, first"
        );
        assert_eq!(written[1..3], ["error 1\n", "error 2\n"], "errors kept");
        assert_eq!(written[3], format!("line {first_kept}\n"));
        assert_eq!(written.last().map(String::as_str), Some("line 4999\n"));
        assert_eq!(written.len(), 1 + STATUS_ROOM, "the newest lines, in order");
        assert!(drain(&mut queue).is_empty(), "nothing more to say");
    }

    #[test]
    fn a_queue_of_errors_only_drops_its_oldest_error() {
        let mut queue = Queue::default();
        for n in 0..=STATUS_ROOM {
            queue.push_status(format!("error {n}\n"), true);
        }
        let written = drain(&mut queue);
        assert_eq!(written[0], "1 dropped\n");
        assert_eq!(written[1], "error 1\n");
        assert_eq!(written.len(), 1 + STATUS_ROOM);
    }

    #[test]
    fn status_goes_ahead_of_messages_still_queued() {
        let mut queue = Queue::default();
        for text in ["message 1\n", "message 2\n"] {
            queue.messages.push_back(Piece {
                text: text.into(),
                _room: None,
            });
        }
        queue.push_status("status\n".into(), false);
        assert_eq!(
            drain(&mut queue),
            ["status\n", "message 1\n", "message 2\n"]
        );
    }

    /// A stream whose reader reads nothing until told to: its first write says it is blocked,
    /// then waits for `go`.
    struct Stuck {
        blocked: Option<mpsc::SyncSender<()>>,
        go: mpsc::Receiver<()>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Some(blocked) = self.blocked.take() {
                let _ = blocked.send(());
                let _ = self.go.recv();
            }
            self.written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stream_not_read_holds_no_more_than_the_room_and_writes_the_rest_when_read() {
        let lane = Arc::new(Lane::new(dropped));
        let (blocked, is_blocked) = mpsc::sync_channel(1);
        let (go, gone) = mpsc::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let stuck = Stuck {
            blocked: Some(blocked),
            go: gone,
            written: written.clone(),
        };
        let writer = std::thread::spawn({
            let lane = lane.clone();
            move || Sink::new(stuck, None).run(&lane)
        });
        lane.with(|queue| queue.push_status("first\n".into(), false));
        is_blocked.recv().expect("the writer thread runs");
        for n in 0..10_000 {
            lane.with(|queue| queue.push_status(format!("line {n}\n"), false));
        }
        lane.with(|queue| queue.push_status("error\n".into(), true));
        assert_eq!(lane.lock().status.len(), STATUS_ROOM, "bounded while stuck");
        go.send(()).expect("the writer waits");
        lane.with(|queue| queue.closed = true);
        writer.join().expect("the writer thread ends once closed");
        let written = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines[0], "first");
        assert_eq!(lines[1], format!("{} dropped", 10_001 - STATUS_ROOM));
        assert_eq!(lines[2], format!("line {}", 10_001 - STATUS_ROOM));
        assert_eq!(lines.last(), Some(&"error"));
        assert_eq!(lines.len(), 2 + STATUS_ROOM);
    }

    /// A stream whose reader went away.
    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_stream_gone_stops_the_message_printer() {
        let lane = Lane::new(dropped);
        let room = Arc::new(Semaphore::new(ROOM as usize));
        lane.with(|queue| {
            queue.push_status("status\n".into(), false);
            queue.closed = true;
        });
        Sink::new(Gone, Some(room.clone())).run(&lane);
        assert!(room.is_closed());
    }
}
