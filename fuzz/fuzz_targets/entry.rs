//! `Entry::decode` on arbitrary bytes (envelopes arrive from peers and are read back from disk).
//! Whatever decodes must be canonical: its envelope is the input, unchanged, and validating it
//! as the first entry of its own log must not panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use p2pchat_protocol::{Entry, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = Entry::decode(Bytes::copy_from_slice(data)) else { return };
    assert_eq!(entry.envelope().as_ref(), data, "a decoded entry keeps its exact bytes");
    let room = entry.room().unwrap_or_else(|| p2pchat_protocol::Room::lan().id());
    let _ = validate::check_next(room, entry.author(), None, &entry);
    let _ = validate::check_known(room, &entry, &entry);
    let again = Entry::decode(entry.envelope().clone()).expect("an entry that decoded once decodes again");
    assert_eq!(again.hash(), entry.hash());
});
