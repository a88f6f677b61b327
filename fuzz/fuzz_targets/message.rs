//! `Message::decode` on arbitrary bytes (the body of one frame on a live or bulk lane), as the
//! receiver reads it: every envelope of a batch through `Entry::decode`, and a reply through the
//! asker's `Reconciler::on_reply` (a reply that does not answer is an error, never a panic).
//! Whatever decodes re-encodes to a message that decodes to the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use p2pchat_protocol::message::{Fingerprint, HeadInfo, Message, Summary};
use p2pchat_protocol::reconcile::{HeadSet, Reconciler};
use p2pchat_protocol::{Author, Entry, Hash};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data) else { return };
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
    let again = Message::decode(&message.encode()).expect("a decoded message re-encodes to a valid one");
    assert_eq!(again, message);
});
