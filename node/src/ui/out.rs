//! Line mode's output: stdout and stderr each have a thread of their own, so no task of the
//! runtime ever blocks on a reader that stopped reading, and a stdout nobody reads (a full pipe)
//! never holds up the `info>` lines on stderr, nor the other way round. On each stream, status
//! output goes out in the order it was queued, ahead of chat messages still waiting (those may
//! be history scrolling by; a status event is about now); chat messages keep their order.
//!
//! Status output ([`Out::write`]) is queued without waiting; it is little. Chat messages
//! ([`Out::messages`]) wait while [`ROOM`] of them are queued but not yet written, so memory
//! stays bounded however long the history being printed. Each thread writes through a buffer
//! and flushes whenever its queue is momentarily empty: no delay when live, and few system
//! calls in bulk, where messages come in pieces of many lines.

use std::collections::VecDeque;
use std::io::{BufWriter, Stdout, Write};
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

/// Text to write on stdout, with the room it takes in the queue (chat messages only).
struct Piece {
    text: String,
    /// Released once the text is written; `None` for status output.
    room: Option<OwnedSemaphorePermit>,
}

/// A handle to queue output on the writer threads. They finish once every handle is dropped
/// and all that was queued is written.
#[derive(Clone)]
pub struct Out {
    /// Pieces for stdout.
    stdout: Sender<Piece>,
    /// Text for stderr.
    stderr: Sender<String>,
    room: Arc<Semaphore>,
}

/// The writer threads, to wait for them to finish.
pub struct Writer {
    stdout_done: oneshot::Receiver<()>,
    stderr_done: oneshot::Receiver<()>,
}

/// Starts the writer threads.
pub fn start() -> std::io::Result<(Out, Writer)> {
    let (stdout, pieces) = mpsc::channel();
    let (stderr, texts) = mpsc::channel();
    let room = Arc::new(Semaphore::new(ROOM as usize));
    let sink = Sink {
        stdout: Some(BufWriter::new(std::io::stdout())),
        room: room.clone(),
    };
    let stdout_done = spawn("stdout", move || sink.run(&pieces))?;
    let stderr_done = spawn("stderr", move || write_stderr(&texts))?;
    let out = Out {
        stdout,
        stderr,
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
    /// Queues `text` (with its newline, if it is a line) without waiting.
    pub fn write(&self, stream: Stream, text: String) {
        match stream {
            Stream::Stdout => {
                let _ = self.stdout.send(Piece { text, room: None });
            }
            Stream::Stderr => {
                let _ = self.stderr.send(text);
            }
        }
    }

    /// Queues `count` chat messages, `lines` (newlines included), for stdout, first waiting for
    /// room for them (a piece bigger than the room waits for all of it); `false` once stdout is
    /// gone.
    pub async fn messages(&self, lines: String, count: usize) -> bool {
        let count = u32::try_from(count).map_or(ROOM, |count| count.min(ROOM));
        let Ok(room) = self.room.clone().acquire_many_owned(count).await else {
            return false;
        };
        self.stdout
            .send(Piece {
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
        let both = async {
            let _ = self.stdout_done.await;
            let _ = self.stderr_done.await;
        };
        let _ = tokio::time::timeout_at(deadline, both).await;
    }
}

/// The stderr thread: writes the queued texts until every sender is gone, flushing whenever the
/// queue is empty. Errors are ignored: there is nowhere to report them.
fn write_stderr(texts: &Receiver<String>) {
    let mut stderr = BufWriter::new(std::io::stderr());
    while let Ok(mut text) = texts.recv() {
        loop {
            let _ = stderr.write_all(text.as_bytes());
            match texts.try_recv() {
                Ok(next) => text = next,
                Err(_) => break,
            }
        }
        let _ = stderr.flush();
    }
}

/// The stdout thread's side, buffered.
struct Sink {
    /// `None` once stdout is gone (the reader went away).
    stdout: Option<BufWriter<Stdout>>,
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
            self.flush();
            match pieces.recv() {
                Ok(piece) if piece.room.is_some() => messages.push_back(piece),
                Ok(piece) => self.write(piece),
                Err(mpsc::RecvError) => break,
            }
        }
        self.flush();
    }

    /// Writes one piece.
    fn write(&mut self, piece: Piece) {
        let written = self
            .stdout
            .as_mut()
            .map(|w| w.write_all(piece.text.as_bytes()));
        self.check_stdout(written);
    }

    /// Flushes the buffer.
    fn flush(&mut self) {
        let flushed = self.stdout.as_mut().map(BufWriter::flush);
        self.check_stdout(flushed);
    }

    /// After a write to stdout: on an error, gives stdout up and stops the message printer.
    fn check_stdout(&mut self, result: Option<std::io::Result<()>>) {
        if let Some(Err(_)) = result {
            self.stdout = None;
            self.room.close();
        }
    }
}
