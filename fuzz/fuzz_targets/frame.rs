//! `Frame::decode` on arbitrary bytes (the body of one push-stream frame), and every envelope of
//! a decoded batch through `Entry::decode`, as the receiver does.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use p2pchat_protocol::Entry;
use p2pchat_protocol::wire::Frame;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::decode(data) else { return };
    if let Frame::Batch(batch) = &frame {
        for envelope in &batch.entries {
            let _ = Entry::decode(Bytes::copy_from_slice(envelope));
        }
    }
    let again = Frame::decode(&frame.encode()).expect("a decoded frame re-encodes to a valid frame");
    assert_eq!(again, frame);
});
