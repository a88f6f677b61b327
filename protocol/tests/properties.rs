//! Property tests over the decoders and the signing rules: arbitrary bytes are an error, never a
//! panic; what is signed decodes back to itself; a changed envelope never validates. The same
//! decoders are fuzzed in `fuzz/` (see docs/reliability.md).

use bytes::Bytes;
use p2pchat_protocol::validate::{check_known, check_next};
use p2pchat_protocol::wire::{Frame, Request, Response};
use p2pchat_protocol::{Author, Body, Draft, Entry, SigningKey};
use proptest::prelude::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        "[a-z]{1,20}".prop_map(|name| Body::Profile { name }),
        any::<String>().prop_filter_map("over the text limit", |text| (text.len() <= 4096)
            .then_some(Body::Text { text })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Entry::decode(Bytes::from(bytes.clone()));
        let _ = Frame::decode(&bytes);
        if let Ok(Request::Hello(hello)) = cbor4ii::serde::from_slice::<Request>(&bytes) {
            let _ = hello.check();
        }
        let _ = cbor4ii::serde::from_slice::<Response>(&bytes);
    }

    #[test]
    fn signed_entries_decode_to_themselves(
        seq in 1u64..u64::MAX, timestamp: u64, lamport in 1u64..(1 << 53), body in body(),
    ) {
        let prev = (seq > 1).then(|| p2pchat_protocol::Hash::of(&seq.to_be_bytes()));
        let entry = Entry::sign(&key(1), Draft { seq, prev, timestamp, lamport, body: body.clone() }).unwrap();
        let decoded = Entry::decode(entry.envelope().clone()).unwrap();
        prop_assert_eq!(&decoded, &entry);
        prop_assert_eq!((decoded.seq(), decoded.prev(), decoded.timestamp(), decoded.lamport()), (seq, prev, timestamp, lamport));
        prop_assert_eq!(decoded.body(), &body);
        prop_assert!(decoded.signature_is_valid());
    }

    #[test]
    fn a_changed_envelope_never_validates(at in any::<prop::sample::Index>(), bit in 0u8..8, name in "[a-z]{1,20}") {
        let entry = Entry::sign(&key(1), Draft { seq: 1, prev: None, timestamp: 7, lamport: 1, body: Body::Profile { name } }).unwrap();
        let mut bytes = entry.envelope().to_vec();
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        if let Ok(changed) = Entry::decode(Bytes::from(bytes)) {
            prop_assert!(check_next(Author::of(&key(1)), None, &changed).is_err(), "a flipped bit at {} validated", at);
            prop_assert!(check_known(&entry, &changed).is_err());
        }
    }

    #[test]
    fn truncated_or_extended_envelopes_are_refused(cut in any::<prop::sample::Index>(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
        let entry = Entry::sign(&key(2), Draft { seq: 1, prev: None, timestamp: 1, lamport: 1, body: Body::Profile { name: "bob".into() } }).unwrap();
        let bytes = entry.envelope().to_vec();
        let cut = cut.index(bytes.len());
        prop_assert!(Entry::decode(Bytes::copy_from_slice(&bytes[..cut])).is_err());
        prop_assert!(Entry::decode(Bytes::from([&bytes[..], &extra[..]].concat())).is_err());
    }

    #[test]
    fn frames_round_trip(entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let batch = Frame::Batch(p2pchat_protocol::wire::Batch {
            author: Author::of(&key(3)),
            entries: entries.into_iter().map(serde_bytes::ByteBuf::from).collect(),
        });
        prop_assert_eq!(Frame::decode(&batch.encode()).unwrap(), batch);
    }
}

/// Deeply nested CBOR inside an unknown body is refused with an error, not a stack overflow.
#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    // An entry whose body is an unknown kind holding 5,000 nested arrays: build the payload by
    // hand, since the encoder would refuse nothing here.
    let mut nested = vec![0x82, 0x63, b'x', b'y', b'z'];
    nested.extend(std::iter::repeat_n(0x81, 5_000));
    nested.push(0x00);
    for bytes in [nested.clone(), [&[0x81][..], &nested].concat()] {
        let _ = Entry::decode(Bytes::from(bytes.clone()));
        assert!(Frame::decode(&bytes).is_err());
        assert!(cbor4ii::serde::from_slice::<Request>(&bytes).is_err());
    }
    // And as the body of an otherwise well-formed envelope: [1, author, 1, null, 1, 1, body].
    let mut payload = vec![0x87, 0x01, 0x58, 0x20];
    payload.extend(Author::of(&key(1)).as_bytes());
    payload.extend([0x01, 0xf6, 0x01, 0x01]);
    payload.extend(&nested);
    let mut envelope = vec![0x82, 0x59];
    envelope.extend((payload.len() as u16).to_be_bytes());
    envelope.extend(&payload);
    envelope.extend([0x58, 0x40]);
    envelope.extend([0; 64]);
    let error = Entry::decode(Bytes::from(envelope)).unwrap_err();
    assert!(
        matches!(error, p2pchat_protocol::DecodeError::Malformed(_)),
        "{error}"
    );
}
