//! `Frame::decode` on arbitrary bytes (the body of one frame on a live or bulk lane), as the
//! receiver reads it: in a room's frame, every envelope of a batch through `Entry::decode`, and
//! a reply through the asker's `Reconciler::on_reply` (a reply that does not answer is an
//! error, never a panic). Whatever decodes re-encodes to a frame that decodes to the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use p2pchat_protocol::message::{Fingerprint, Frame, HeadInfo, Message, Summary};
use p2pchat_protocol::reconcile::{HeadSet, Reconciler};
use p2pchat_protocol::{Author, Entry, Hash};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::decode(data) else { return };
    let again = Frame::decode(&frame.encode()).expect("a decoded frame re-encodes to a valid one");
    assert_eq!(again, frame);
    let Frame::Room(_, message) = frame else { return };
    match &message {
        Message::Batch(batch) => {
            for envelope in &batch.entries {
                let _ = Entry::decode(Bytes::copy_from_slice(envelope));
            }
        }
        Message::Reply(parts) => {
            // An asker holding one head, told the replier holds something else.
            let mut ours = HeadSet::new();
            ours.insert(HeadInfo { author: Author::from_bytes([0x40; 32]), seq: 3, hash: Hash::of(b"ours") });
            let theirs = Summary { count: 2, fingerprint: Fingerprint([1; 32]) };
            let mut asker = Reconciler::new(&ours, theirs);
            if asker.next_query().is_some() {
                let _ = asker.on_reply(&ours, parts.clone());
            }
        }
        _ => {}
    }
});
