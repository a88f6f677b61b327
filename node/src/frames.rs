//! Reading length-prefixed frames of a lane with a hard size cap and a per-frame deadline.
//!
//! A lane is idle whenever there is nothing to send, so waiting for a frame to *start*
//! has no deadline. Once its first byte has arrived, the rest of the frame must follow within
//! [`FRAME_TIMEOUT`]: a peer that stalls mid-frame loses the stream instead of pinning a task
//! and a buffer forever. The length is checked before anything is read into memory, and the
//! buffer grows only with the bytes that actually arrive.

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt};
use p2pchat_protocol::limits::MAX_FRAME_BYTES;

/// How long the rest of a frame may take once its first byte has arrived.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes reserved for a frame's body before any of it has arrived.
const INITIAL_CAPACITY: usize = 64 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameReadError {
    /// The length prefix announces more than [`MAX_FRAME_BYTES`].
    #[error("a frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// The frame did not arrive completely in time.
    #[error("a frame stalled for more than {0:?}")]
    Stalled(Duration),
    /// The stream failed or ended mid-frame.
    #[error("the stream broke mid-frame: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame (`u32` big-endian length, then that many bytes); `None` when the stream
/// ends or breaks between frames, where nothing is lost.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, FrameReadError> {
    let mut prefix = [0u8; 4];
    if matches!(reader.read(&mut prefix[..1]).await, Ok(0) | Err(_)) {
        return Ok(None);
    }
    let rest = async {
        reader.read_exact(&mut prefix[1..]).await?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(FrameReadError::TooLarge(len));
        }
        // Room for a typical frame up front; a large one grows only as its bytes arrive.
        let mut body = Vec::with_capacity(len.min(INITIAL_CAPACITY));
        (&mut *reader)
            .take(len as u64)
            .read_to_end(&mut body)
            .await?;
        if body.len() < len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, rest)
        .await
        .map_err(|_| FrameReadError::Stalled(timeout))?
        .map(Some)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::io::Cursor;

    use super::*;

    /// A reader that never produces anything (a stalled peer).
    struct Stalled;

    impl AsyncRead for Stalled {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Pending
        }
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        [&(body.len() as u32).to_be_bytes()[..], body].concat()
    }

    #[tokio::test]
    async fn frames_are_read_in_turn_until_the_end() {
        let mut reader = Cursor::new([framed(b"one"), framed(b""), framed(b"three")].concat());
        let timeout = Duration::from_secs(1);
        assert_eq!(
            read_frame(&mut reader, timeout).await.unwrap().unwrap(),
            b"one"
        );
        assert_eq!(
            read_frame(&mut reader, timeout).await.unwrap().unwrap(),
            b""
        );
        assert_eq!(
            read_frame(&mut reader, timeout).await.unwrap().unwrap(),
            b"three"
        );
        assert!(read_frame(&mut reader, timeout).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading_the_body() {
        let mut reader =
            Cursor::new(((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec()).chain(Stalled);
        let error = read_frame(&mut reader, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(error, FrameReadError::TooLarge(len) if len == MAX_FRAME_BYTES + 1),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_frame_that_stalls_midway_times_out() {
        let mut reader = Cursor::new([0, 0, 0, 10, 1, 2]).chain(Stalled);
        let error = read_frame(&mut reader, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(error, FrameReadError::Stalled(_)), "{error}");
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error() {
        let mut reader = Cursor::new(vec![0, 0, 0, 10, 1, 2]);
        assert!(matches!(
            read_frame(&mut reader, Duration::from_secs(1)).await,
            Err(FrameReadError::Io(_))
        ));
    }
}
