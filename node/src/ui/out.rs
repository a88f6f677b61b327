//! Line mode's output: one thread of its own writes stdout and stderr, so no task of the runtime
//! ever blocks on a reader that stopped reading. Status output goes out in the order it was
//! queued, ahead of chat messages still waiting (those may be history scrolling by; a status
//! event is about now); chat messages keep their order.
//!
//! Status output ([`Out::write`]) is queued without waiting; it is little. Chat messages
//! ([`Out::messages`]) wait while [`ROOM`] of them are queued but not yet written, so memory
//! stays bounded however long the history being printed. The thread writes through buffers and
//! flushes whenever the queue is momentarily empty: no delay when live, and few system calls in
//! bulk, where messages come in pieces of many lines.

use std::collections::VecDeque;
use std::io::{BufWriter, Stderr, Stdout, Write};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

/// Most chat messages queued but not yet written.
const ROOM: u32 = 1024;

/// Where a piece of output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Chat messages, and JSON events.
    Stdout,
    /// `info>` lines and the progress line (plain mode).
    Stderr,
}

/// Text to write, with the room it takes in the queue (chat messages only).
struct Piece {
    stream: Stream,
    text: String,
    /// Released once the text is written; `None` for status output.
    room: Option<OwnedSemaphorePermit>,
}

/// A handle to queue output on the writer thread. The thread finishes once every handle is
/// dropped and all that was queued is written.
#[derive(Clone)]
pub struct Out {
    queue: Sender<Piece>,
    room: Arc<Semaphore>,
}

/// The writer thread, to wait for it to finish.
pub struct Writer {
    done: oneshot::Receiver<()>,
}

/// Starts the writer thread.
pub fn start() -> std::io::Result<(Out, Writer)> {
    let (queue, pieces) = mpsc::channel();
    let room = Arc::new(Semaphore::new(ROOM as usize));
    let (finished, done) = oneshot::channel();
    let sink = Sink {
        stdout: Some(BufWriter::new(std::io::stdout())),
        stderr: BufWriter::new(std::io::stderr()),
        last: Stream::Stdout,
        room: room.clone(),
    };
    std::thread::Builder::new()
        .name("output".into())
        .spawn(move || {
            sink.run(&pieces);
            let _ = finished.send(());
        })?;
    Ok((Out { queue, room }, Writer { done }))
}

impl Out {
    /// Queues `text` (with its newline, if it is a line) without waiting.
    pub fn write(&self, stream: Stream, text: String) {
        let _ = self.queue.send(Piece {
            stream,
            text,
            room: None,
        });
    }

    /// Queues `count` chat messages, `lines` (newlines included), for stdout, first waiting for
    /// room for them (a piece bigger than the room waits for all of it); `false` once stdout is
    /// gone.
    pub async fn messages(&self, lines: String, count: usize) -> bool {
        let count = u32::try_from(count).map_or(ROOM, |count| count.min(ROOM));
        let Ok(room) = self.room.clone().acquire_many_owned(count).await else {
            return false;
        };
        self.queue
            .send(Piece {
                stream: Stream::Stdout,
                text: lines,
                room: Some(room),
            })
            .is_ok()
    }
}

impl Writer {
    /// Waits until everything queued is written and flushed (once every [`Out`] is dropped), or
    /// until `deadline`, whichever comes first.
    pub async fn drained(self, deadline: Instant) {
        let _ = tokio::time::timeout_at(deadline, self.done).await;
    }
}

/// The writer thread's side: both streams, buffered.
struct Sink {
    /// `None` once stdout is gone (the reader went away).
    stdout: Option<BufWriter<Stdout>>,
    /// Errors on stderr are ignored: there is nowhere to report them.
    stderr: BufWriter<Stderr>,
    /// The stream written last, flushed before the other is written, to keep their order.
    last: Stream,
    /// Closed once stdout is gone, which stops the message printer.
    room: Arc<Semaphore>,
}

impl Sink {
    /// Writes the queued pieces until every sender is gone, status first, flushing whenever the
    /// queue is empty.
    fn run(mut self, pieces: &Receiver<Piece>) {
        // Chat messages taken from the queue but not written yet (at most [`ROOM`] lines).
        let mut messages: VecDeque<Piece> = VecDeque::new();
        loop {
            let mut open = true;
            loop {
                match pieces.try_recv() {
                    Ok(piece) if piece.room.is_some() => messages.push_back(piece),
                    Ok(piece) => self.write(piece),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if let Some(piece) = messages.pop_front() {
                self.write(piece);
                continue;
            }
            if !open {
                break;
            }
            self.flush(Stream::Stdout);
            self.flush(Stream::Stderr);
            match pieces.recv() {
                Ok(piece) if piece.room.is_some() => messages.push_back(piece),
                Ok(piece) => self.write(piece),
                Err(mpsc::RecvError) => break,
            }
        }
        self.flush(Stream::Stdout);
        self.flush(Stream::Stderr);
    }

    /// Writes one piece (flushing the other stream first, to keep their order).
    fn write(&mut self, piece: Piece) {
        if piece.stream != self.last {
            self.flush(self.last);
            self.last = piece.stream;
        }
        match piece.stream {
            Stream::Stdout => {
                let written = self
                    .stdout
                    .as_mut()
                    .map(|w| w.write_all(piece.text.as_bytes()));
                self.check_stdout(written);
            }
            Stream::Stderr => {
                let _ = self.stderr.write_all(piece.text.as_bytes());
            }
        }
    }

    /// Flushes `stream`'s buffer.
    fn flush(&mut self, stream: Stream) {
        match stream {
            Stream::Stdout => {
                let flushed = self.stdout.as_mut().map(BufWriter::flush);
                self.check_stdout(flushed);
            }
            Stream::Stderr => {
                let _ = self.stderr.flush();
            }
        }
    }

    /// After a write to stdout: on an error, gives stdout up and stops the message printer.
    fn check_stdout(&mut self, result: Option<std::io::Result<()>>) {
        if let Some(Err(_)) = result {
            self.stdout = None;
            self.room.close();
        }
    }
}
