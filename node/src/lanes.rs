//! A peer's lanes (docs/protocol.md, section 9): each side opens two streams to the other,
//! [`LIVE_PROTOCOL`] and [`BULK_PROTOCOL`], and writes [`Frame`]s on them (a `u32` big-endian
//! length, then the frame's CBOR): the membership handshake, then the shared rooms' messages. One writer task per outbound lane, fed by a
//! bounded queue; one reader task per inbound lane, reporting into the event loop's bounded
//! inbox (a full inbox stops the reader, which holds the peer back).

use bytes::Bytes;
use futures::{AsyncRead, AsyncWrite, SinkExt};
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};
use p2pchat_protocol::limits::MAX_FRAME_BYTES;
use p2pchat_protocol::message::{BULK_PROTOCOL, Frame, LIVE_PROTOCOL, Lane, MessageError};
use p2pchat_protocol::replica::MAX_UNACKED_BATCHES;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};
use tokio_util::compat::FuturesAsyncWriteCompatExt;

use crate::frames::{FRAME_TIMEOUT, FrameReadError, read_frame};

/// Frames queued for one outbound lane. The core keeps at most [`MAX_UNACKED_BATCHES`]
/// batches unacknowledged (and sends little else), so a queue that fills up means the peer
/// does not read: its connection is dropped.
pub const LANE_QUEUE: usize = 2 * MAX_UNACKED_BATCHES;

/// Tells the tasks of one peer's lanes apart, so that what an older task says after its lane
/// was replaced is ignored.
pub type TaskId = u64;

/// The libp2p protocol name of `lane`.
pub fn protocol(lane: Lane) -> StreamProtocol {
    StreamProtocol::new(match lane {
        Lane::Live => LIVE_PROTOCOL,
        Lane::Bulk => BULK_PROTOCOL,
    })
}

/// What a lane task tells the event loop.
#[derive(Debug)]
pub enum LaneEvent {
    /// A reader read a frame, or bytes that are not one.
    Received {
        /// The sender.
        peer: PeerId,
        /// The reader.
        task: TaskId,
        /// The frame, decoded and checked.
        frame: Result<Frame, MessageError>,
    },
    /// A lane ended or broke (its reader or writer stopped).
    Ended {
        /// The peer.
        peer: PeerId,
        /// The task that stopped.
        task: TaskId,
        /// Why, in words (for the debug log).
        why: String,
    },
    /// A frame from the peer stalled midway (a warning, then the lane is reopened).
    Stalled {
        /// The peer.
        peer: PeerId,
        /// The reader.
        task: TaskId,
        /// What happened, in words.
        why: String,
    },
    /// The peer does not speak this protocol version (its lanes' protocol names are not ours):
    /// its connection is closed.
    Unsupported {
        /// The peer.
        peer: PeerId,
        /// The writer.
        task: TaskId,
    },
}

/// Opens `lane` to `peer` and writes what `queue` brings, until the queue closes (the session
/// ended) or the stream breaks; then tells `events` (unless the queue closed).
pub async fn write_lane(
    mut control: Control,
    peer: PeerId,
    lane: Lane,
    task: TaskId,
    mut queue: mpsc::Receiver<Frame>,
    events: mpsc::Sender<LaneEvent>,
) {
    let event = match control.open_stream(peer, protocol(lane)).await {
        Ok(stream) => match write_all(stream, &mut queue).await {
            Ok(()) => return,
            Err(e) => LaneEvent::Ended {
                peer,
                task,
                why: format!("writing the {} lane failed: {e}", lane_name(lane)),
            },
        },
        Err(OpenStreamError::UnsupportedProtocol(_)) => LaneEvent::Unsupported { peer, task },
        Err(e) => LaneEvent::Ended {
            peer,
            task,
            why: format!("cannot open the {} lane: {e}", lane_name(lane)),
        },
    };
    let _ = events.send(event).await;
}

/// The lane's name in words.
fn lane_name(lane: Lane) -> &'static str {
    match lane {
        Lane::Live => "live",
        Lane::Bulk => "bulk",
    }
}

/// Writes every frame `queue` brings on `stream`, flushing whenever the queue is empty.
async fn write_all(
    stream: impl AsyncWrite + Unpin,
    queue: &mut mpsc::Receiver<Frame>,
) -> std::io::Result<()> {
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec();
    let mut frames = FramedWrite::new(stream.compat_write(), codec);
    while let Some(frame) = queue.recv().await {
        frames.feed(Bytes::from(frame.encode())).await?;
        while let Ok(frame) = queue.try_recv() {
            frames.feed(Bytes::from(frame.encode())).await?;
        }
        SinkExt::<Bytes>::flush(&mut frames).await?;
    }
    SinkExt::<Bytes>::close(&mut frames).await
}

/// Reads the frames `peer` writes on one of its lanes into `events`, until the stream ends.
pub async fn read_lane(
    peer: PeerId,
    task: TaskId,
    stream: impl AsyncRead + Unpin,
    events: mpsc::Sender<LaneEvent>,
) {
    // Buffered, so a small frame (length prefix and body) takes one read from the stream.
    let mut stream = futures::io::BufReader::new(stream);
    loop {
        let (event, more) = match read_frame(&mut stream, FRAME_TIMEOUT).await {
            Ok(Some(bytes)) => {
                let frame = Frame::decode(&bytes);
                (LaneEvent::Received { peer, task, frame }, true)
            }
            Ok(None) => {
                let why = "the peer closed it".to_owned();
                (LaneEvent::Ended { peer, task, why }, false)
            }
            Err(FrameReadError::TooLarge(found)) => {
                // The rest of the stream cannot be framed any more.
                let frame = Err(MessageError::TooLarge {
                    what: "bytes in a frame",
                    found,
                    limit: MAX_FRAME_BYTES,
                });
                (LaneEvent::Received { peer, task, frame }, false)
            }
            Err(e @ FrameReadError::Stalled(_)) => {
                let why = e.to_string();
                (LaneEvent::Stalled { peer, task, why }, false)
            }
            Err(e) => {
                let why = e.to_string();
                (LaneEvent::Ended { peer, task, why }, false)
            }
        };
        if events.send(event).await.is_err() || !more {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::AsyncWriteExt;
    use p2pchat_protocol::membership::{Greet, Nonce};
    use p2pchat_protocol::message::{Fingerprint, Hello, Message, PROTOCOL_VERSION, Summary};
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::*;

    /// Reads `peer`'s lane from `stream` until it ends, returning every event.
    async fn read_all(stream: impl AsyncRead + Unpin) -> Vec<LaneEvent> {
        let (events, mut said) = mpsc::channel(16);
        read_lane(PeerId::random(), 7, stream, events).await;
        let mut all = Vec::new();
        while let Ok(event) = said.try_recv() {
            all.push(event);
        }
        all
    }

    fn received(event: &LaneEvent) -> &Result<Frame, MessageError> {
        match event {
            LaneEvent::Received { frame, task: 7, .. } => frame,
            other => panic!("not a message read: {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_written_are_read_in_order_until_the_writer_closes() {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (queue, mut queued) = mpsc::channel(LANE_QUEUE);
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            name: "alice".into(),
            heads: Summary {
                count: 0,
                fingerprint: Fingerprint::default(),
            },
        });
        let greet = Frame::Greet(Greet {
            version: PROTOCOL_VERSION,
            nonce: Nonce::new([9; 32]),
        });
        let sent = [
            greet,
            Frame::Room(0, hello),
            Frame::Room(1, Message::Ack(3)),
            Frame::Room(0, Message::Ping),
        ];
        for frame in sent.clone() {
            queue.try_send(frame).unwrap();
        }
        drop(queue);
        write_all(ours.compat(), &mut queued).await.unwrap();
        let events = read_all(theirs.compat()).await;
        let (last, messages) = events.split_last().unwrap();
        let read: Vec<Frame> = messages
            .iter()
            .map(|event| received(event).clone().unwrap())
            .collect();
        assert_eq!(read, sent);
        assert!(matches!(last, LaneEvent::Ended { .. }), "{last:?}");
    }

    #[tokio::test]
    async fn bad_bytes_are_reported_and_an_oversized_frame_ends_the_lane() {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let mut ours = ours.compat();
        let garbage = [0, 0, 0, 2, 0xff, 0x00];
        let oversized = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        let ping = Frame::Room(0, Message::Ping).encode();
        let after = [&(ping.len() as u32).to_be_bytes()[..], &ping].concat();
        ours.write_all(&[&garbage[..], &oversized, &after].concat())
            .await
            .unwrap();
        ours.close().await.unwrap();
        let events = read_all(theirs.compat()).await;
        assert_eq!(events.len(), 2, "nothing is read past the oversized frame");
        assert!(matches!(
            received(&events[0]),
            Err(MessageError::Malformed(_))
        ));
        assert!(matches!(
            received(&events[1]),
            Err(MessageError::TooLarge { found, .. }) if *found == MAX_FRAME_BYTES + 1
        ));
    }
}
