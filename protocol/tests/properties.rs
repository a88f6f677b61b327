//! Property tests over the decoders and the signing rules: arbitrary bytes are an error, never a
//! panic; what is signed or sent decodes back to itself; a changed envelope never validates; a
//! message over a limit, or a hello of another version, is refused. The same
//! decoders are fuzzed in `fuzz/` (see docs/reliability.md).

use bytes::Bytes;
use p2pchat_protocol::dm::{EncKey, Sealed};
use p2pchat_protocol::limits::{
    MAX_BATCH_ENTRIES, MAX_MESSAGE_NOTES, MAX_QUERY_RANGES, MAX_REPLY_HEADS, MAX_ROUTE_AUTHORS,
};
use p2pchat_protocol::message::{
    AuthorRange, Batch, Fingerprint, HeadInfo, HeadNote, Hello, Message, MessageError, Part,
    Summary,
};
use p2pchat_protocol::validate::{check_known, check_next};
use p2pchat_protocol::{Author, Body, Draft, Entry, RoomId, SigningKey};
use proptest::prelude::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn room() -> RoomId {
    RoomId::from_bytes([0xee; 32])
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        "[a-z]{1,20}".prop_map(|name| Body::Profile { name }),
        any::<String>().prop_filter_map("over the text limit", |text| (text.len() <= 4096)
            .then_some(Body::Text { text })),
        ("[a-z0-9][a-z0-9._-]{0,31}", any::<String>()).prop_filter_map(
            "not a channel, or over the text limit",
            |(channel, text)| (channel != "general" && text.len() <= 4096)
                .then_some(Body::Post { channel, text })
        ),
        any::<[u8; 32]>().prop_map(|key| Body::EncKey {
            key: EncKey::from_bytes(key)
        }),
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<[u8; 24]>(),
            proptest::collection::vec(any::<u8>(), 16..300)
        )
            .prop_map(
                |(to, to_key, from_key, nonce, ciphertext)| Body::Direct(Sealed {
                    to: Author::from_bytes(to),
                    to_key: EncKey::from_bytes(to_key),
                    from_key: EncKey::from_bytes(from_key),
                    nonce,
                    ciphertext,
                })
            ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Entry::decode(Bytes::from(bytes.clone()));
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn signed_entries_decode_to_themselves(
        seq in 1u64..u64::MAX, timestamp: u64, clock in 1u64..(1 << 62), body in body(), room: [u8; 32],
    ) {
        let prev = (seq > 1).then(|| p2pchat_protocol::Hash::of(&seq.to_be_bytes()));
        let room = RoomId::from_bytes(room);
        let entry = Entry::sign(&key(1), Draft { room, seq, prev, timestamp, clock, body: body.clone() }).unwrap();
        let decoded = Entry::decode(entry.envelope().clone()).unwrap();
        prop_assert_eq!(&decoded, &entry);
        prop_assert_eq!((decoded.room(), decoded.seq(), decoded.prev(), decoded.timestamp(), decoded.clock()), (Some(room), seq, prev, timestamp, clock));
        prop_assert_eq!(decoded.body(), &body);
        prop_assert!(decoded.signature_is_valid());
    }

    #[test]
    fn a_changed_envelope_never_validates(at in any::<prop::sample::Index>(), bit in 0u8..8, name in "[a-z]{1,20}") {
        let entry = Entry::sign(&key(1), Draft { room: room(), seq: 1, prev: None, timestamp: 7, clock: 1, body: Body::Profile { name } }).unwrap();
        let mut bytes = entry.envelope().to_vec();
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        if let Ok(changed) = Entry::decode(Bytes::from(bytes)) {
            prop_assert!(check_next(room(), Author::of(&key(1)), None, &changed).is_err(), "a flipped bit at {} validated", at);
            prop_assert!(check_known(room(), &entry, &changed).is_err());
        }
    }

    #[test]
    fn truncated_or_extended_envelopes_are_refused(cut in any::<prop::sample::Index>(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
        let entry = Entry::sign(&key(2), Draft { room: room(), seq: 1, prev: None, timestamp: 1, clock: 1, body: Body::Profile { name: "bob".into() } }).unwrap();
        let bytes = entry.envelope().to_vec();
        let cut = cut.index(bytes.len());
        prop_assert!(Entry::decode(Bytes::copy_from_slice(&bytes[..cut])).is_err());
        prop_assert!(Entry::decode(Bytes::from([&bytes[..], &extra[..]].concat())).is_err());
    }

    #[test]
    fn messages_round_trip(message in message()) {
        prop_assert_eq!(Message::decode(&message.encode()).unwrap(), message);
    }

    #[test]
    fn what_is_accepted_of_a_changed_message_round_trips(
        message in message(), edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let mut bytes = message.encode();
        edits.iter().for_each(|edit| apply(&mut bytes, edit));
        if let Ok(decoded) = Message::decode(&bytes) {
            // Whatever the decoder accepts obeys the limits, and encodes to a message that
            // decodes to itself.
            prop_assert_eq!(Message::decode(&decoded.encode()).unwrap(), decoded);
        }
    }

    #[test]
    fn a_hello_of_another_version_is_refused(version: u32, name in "[a-z]{1,20}") {
        prop_assume!(version != p2pchat_protocol::message::PROTOCOL_VERSION);
        let hello = Message::Hello(Hello {
            version,
            name,
            heads: Summary { count: 0, fingerprint: Fingerprint::default() },
        });
        prop_assert_eq!(Message::decode(&hello.encode()), Err(MessageError::Version(version)));
    }

    #[test]
    fn lists_over_their_limit_are_refused(over in 1usize..4, which in 0usize..6) {
        let note = HeadNote { author: Author::of(&key(4)), seq: 1 };
        let (message, what) = match which {
            0 => (Message::Batch(Batch {
                author: note.author,
                entries: vec![serde_bytes::ByteBuf::new(); MAX_BATCH_ENTRIES + over],
            }), "entries"),
            1 => (Message::Have(vec![note; MAX_MESSAGE_NOTES + over]), "notes"),
            2 => (Message::Query(vec![AuthorRange::ALL; MAX_QUERY_RANGES + over]), "ranges"),
            3 => (Message::Route { skip: vec![note.author; MAX_ROUTE_AUTHORS + over], unskip: vec![] }, "authors to skip"),
            4 => (Message::Route { skip: vec![], unskip: vec![note.author; MAX_ROUTE_AUTHORS + over] }, "authors to unskip"),
            _ => {
                // Few parts, but too many heads in all.
                let heads = vec![head(1); MAX_REPLY_HEADS / 2 + over];
                let part = Part::Heads { range: AuthorRange::ALL, heads };
                (Message::Reply(vec![part.clone(), part]), "heads")
            }
        };
        let refused = Message::decode(&message.encode());
        prop_assert!(
            matches!(refused, Err(MessageError::TooLarge { what: found, .. }) if found == what),
            "{:?}", refused
        );
    }
}

fn head(seed: u8) -> HeadInfo {
    HeadInfo {
        author: Author::of(&key(seed)),
        seq: u64::from(seed),
        hash: p2pchat_protocol::Hash::of(&[seed]),
    }
}

fn author_range() -> impl Strategy<Value = AuthorRange> {
    (any::<u8>(), proptest::option::of(any::<u8>())).prop_map(|(start, end)| AuthorRange {
        start: Author::from_bytes([start; 32]),
        end: end.map(|end| Author::from_bytes([end; 32])),
    })
}

fn summary() -> impl Strategy<Value = Summary> {
    (any::<u64>(), any::<[u8; 32]>()).prop_map(|(count, fingerprint)| Summary {
        count,
        fingerprint: Fingerprint(fingerprint),
    })
}

/// Any message within the limits (lists kept short).
fn message() -> impl Strategy<Value = Message> {
    let note = (any::<u8>(), any::<u64>()).prop_map(|(seed, seq)| HeadNote {
        author: Author::from_bytes([seed; 32]),
        seq,
    });
    let authors = proptest::collection::vec(any::<[u8; 32]>().prop_map(Author::from_bytes), 0..8);
    let part = prop_oneof![
        (
            author_range(),
            proptest::collection::vec(any::<u8>().prop_map(head), 0..8)
        )
            .prop_map(|(range, heads)| Part::Heads { range, heads }),
        proptest::collection::vec((author_range(), summary()), 0..8).prop_map(Part::Split),
    ];
    prop_oneof![
        ("[a-z]{1,20}", summary()).prop_map(|(name, heads)| Message::Hello(Hello {
            version: p2pchat_protocol::message::PROTOCOL_VERSION,
            name,
            heads,
        })),
        proptest::collection::vec(author_range(), 0..8).prop_map(Message::Query),
        proptest::collection::vec(part, 0..4).prop_map(Message::Reply),
        proptest::collection::vec(note.clone(), 0..8).prop_map(Message::Have),
        note.prop_map(Message::Want),
        (authors.clone(), authors).prop_map(|(skip, unskip)| Message::Route { skip, unskip }),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16).prop_map(
            |entries| Message::Batch(Batch {
                author: Author::of(&key(3)),
                entries: entries
                    .into_iter()
                    .map(serde_bytes::ByteBuf::from)
                    .collect(),
            })
        ),
        any::<u32>().prop_map(Message::Ack),
        Just(Message::Ping),
    ]
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
        assert!(Message::decode(&bytes).is_err());
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

/// The first decoder, kept as the oracle for the hand-written one: decode with serde into
/// generic values, re-encode, and compare bytes. Returns the fields, or `None` if it refuses.
mod oracle {
    use cbor4ii::core::Value;
    use p2pchat_protocol::{Author, Hash, RoomId};
    use serde::{Deserialize, Serialize};

    /// Format 1, before rooms.
    #[derive(Serialize, Deserialize)]
    struct Payload1(u8, Author, u64, Option<Hash>, u64, u64, Value);

    /// Format 2: the room after the version.
    #[derive(Serialize, Deserialize)]
    struct Payload2(u8, RoomId, Author, u64, Option<Hash>, u64, u64, Value);

    #[derive(Serialize, Deserialize)]
    struct Envelope<'a>(
        #[serde(borrow)] &'a serde_bytes::Bytes,
        &'a serde_bytes::Bytes,
    );

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        cbor4ii::serde::to_vec(Vec::new(), value).expect("encodes")
    }

    /// (format, room, author, seq, prev, timestamp, clock, body kind, body field if known).
    pub type Fields = (
        u8,
        Option<RoomId>,
        Author,
        u64,
        Option<Hash>,
        u64,
        u64,
        String,
        Option<String>,
    );

    pub fn decode(envelope: &[u8]) -> Option<Fields> {
        if envelope.len() > 8192 {
            return None;
        }
        let Envelope(payload, signature) = cbor4ii::serde::from_slice(envelope).ok()?;
        if encode(&Envelope(payload, signature)) != envelope || signature.len() != 64 {
            return None;
        }
        let format_2 = cbor4ii::serde::from_slice(payload)
            .ok()
            .filter(|decoded: &Payload2| encode(decoded) == payload[..] && decoded.0 == 2)
            .map(
                |Payload2(v, room, author, seq, prev, timestamp, clock, body)| {
                    (v, Some(room), author, seq, prev, timestamp, clock, body)
                },
            );
        let format_1 = || {
            cbor4ii::serde::from_slice(payload)
                .ok()
                .filter(|decoded: &Payload1| encode(decoded) == payload[..] && decoded.0 == 1)
                .map(|Payload1(v, author, seq, prev, timestamp, clock, body)| {
                    (v, None, author, seq, prev, timestamp, clock, body)
                })
        };
        let (version, room, author, seq, prev, timestamp, clock, body) =
            format_2.or_else(format_1)?;
        let Value::Array(items) = body else {
            return None;
        };
        let Some(Value::Text(kind)) = items.first() else {
            return None;
        };
        let field = match (kind.as_str(), &items[1..]) {
            ("profile", [Value::Text(name)]) => {
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name.trim() == name
                    && !name.chars().any(char::is_control);
                ok.then(|| name.clone())?.into()
            }
            ("text", [Value::Text(text)]) => (text.len() <= 4096).then(|| text.clone())?.into(),
            ("post", [Value::Text(channel), Value::Text(text)]) => {
                let ok = (1..=32).contains(&channel.len())
                    && channel.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && channel
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
                    && channel != "general"
                    && text.len() <= 4096;
                ok.then(|| format!("{channel}/{text}"))?.into()
            }
            ("enckey", [Value::Bytes(key)]) => (key.len() == 32).then(|| super::hex(key))?.into(),
            (
                "dm",
                items @ [
                    Value::Bytes(_),
                    Value::Bytes(_),
                    Value::Bytes(_),
                    Value::Bytes(_),
                    Value::Bytes(_),
                ],
            ) => {
                let fields: Vec<&Vec<u8>> = items
                    .iter()
                    .filter_map(|item| match item {
                        Value::Bytes(bytes) => Some(bytes),
                        _ => None,
                    })
                    .collect();
                let sizes_ok = fields[0].len() == 32
                    && fields[1].len() == 32
                    && fields[2].len() == 32
                    && fields[3].len() == 24
                    && (16..=4112).contains(&fields[4].len());
                sizes_ok
                    .then(|| {
                        fields
                            .iter()
                            .map(|f| super::hex(f))
                            .collect::<Vec<_>>()
                            .join("/")
                    })?
                    .into()
            }
            ("profile" | "text" | "post" | "enckey" | "dm", _) => return None,
            _ => None,
        };
        Some((
            version,
            room,
            author,
            seq,
            prev,
            timestamp,
            clock,
            kind.clone(),
            field,
        ))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fields_of(entry: &Entry) -> oracle::Fields {
    let (kind, field) = match entry.body() {
        Body::Profile { name } => ("profile".to_owned(), Some(name.clone())),
        Body::Text { text } => ("text".to_owned(), Some(text.clone())),
        Body::Post { channel, text } => ("post".to_owned(), Some(format!("{channel}/{text}"))),
        Body::EncKey { key } => ("enckey".to_owned(), Some(hex(key.as_bytes()))),
        Body::Direct(sealed) => {
            let fields: [&[u8]; 5] = [
                sealed.to.as_bytes(),
                sealed.to_key.as_bytes(),
                sealed.from_key.as_bytes(),
                &sealed.nonce,
                &sealed.ciphertext,
            ];
            let field = fields.map(hex).join("/");
            ("dm".to_owned(), Some(field))
        }
        Body::Unknown { kind } => (kind.clone(), None),
        _ => unreachable!("no other kinds"),
    };
    (
        entry.format(),
        entry.room(),
        entry.author(),
        entry.seq(),
        entry.prev(),
        entry.timestamp(),
        entry.clock(),
        kind,
        field,
    )
}

/// A signed entry's envelope, or one with an unknown body kind built by hand.
fn envelope() -> impl Strategy<Value = Vec<u8>> {
    let known = (1u64..u64::MAX, any::<u64>(), 1u64..(1 << 62), body()).prop_map(
        |(seq, timestamp, clock, body)| {
            let prev = (seq > 1).then(|| p2pchat_protocol::Hash::of(&seq.to_be_bytes()));
            let draft = Draft {
                room: room(),
                seq,
                prev,
                timestamp,
                clock,
                body,
            };
            Entry::sign(&key(1), draft).unwrap().envelope().to_vec()
        },
    );
    let unknown = (any::<u64>(), "[a-z]{0,12}").prop_map(|(n, kind)| {
        let body = cbor4ii::core::Value::Array(vec![
            cbor4ii::core::Value::Text(kind),
            cbor4ii::core::Value::Integer(n.into()),
        ]);
        let mut payload = vec![0x87, 0x01, 0x58, 0x20];
        payload.extend(Author::of(&key(1)).as_bytes());
        payload.extend([0x01, 0xf6, 0x01, 0x01]);
        payload.extend(cbor4ii::serde::to_vec(Vec::new(), &body).unwrap());
        wrap(&payload)
    });
    prop_oneof![3 => known, 1 => unknown]
}

/// `[payload, 64 zero bytes]`, with correct lengths.
fn wrap(payload: &[u8]) -> Vec<u8> {
    let mut envelope = vec![0x82];
    envelope.extend(cbor4ii::serde::to_vec(Vec::new(), &serde_bytes::Bytes::new(payload)).unwrap());
    envelope.extend([0x58, 0x40]);
    envelope.extend([0; 64]);
    envelope
}

/// One small change to a byte string: a byte replaced, inserted or removed, or a byte read as
/// a CBOR head with a small argument rewritten in a longer form (`01` → `18 01`).
#[derive(Debug, Clone)]
enum Edit {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Stretch(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<prop::sample::Index>().prop_map(Edit::Remove),
        any::<prop::sample::Index>().prop_map(Edit::Stretch),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    if bytes.is_empty() {
        return;
    }
    match edit {
        Edit::Set(at, b) => {
            let at = at.index(bytes.len());
            bytes[at] = *b;
        }
        Edit::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), *b),
        Edit::Remove(at) => {
            bytes.remove(at.index(bytes.len()));
        }
        Edit::Stretch(at) => {
            let at = at.index(bytes.len());
            if bytes[at] & 0x1f < 24 {
                let b = bytes[at];
                bytes.splice(at..=at, [b & 0xe0 | 24, b & 0x1f]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The one-pass decoder accepts exactly what the re-encoding oracle accepts, with the same
    /// fields: edits anywhere in the envelope, and edits inside the payload with the envelope
    /// rebuilt around it (so they reach the payload's own checks).
    #[test]
    fn the_one_pass_decoder_agrees_with_the_oracle(
        envelope in envelope(), edits in proptest::collection::vec(edit(), 0..4), inner: bool,
    ) {
        let mut bytes = envelope;
        if inner {
            let Envelope(payload) = Envelope::payload_of(&bytes);
            let mut payload = payload;
            edits.iter().for_each(|edit| apply(&mut payload, edit));
            bytes = wrap(&payload);
        } else {
            edits.iter().for_each(|edit| apply(&mut bytes, edit));
        }
        let ours = Entry::decode(Bytes::from(bytes.clone())).ok().map(|entry| fields_of(&entry));
        prop_assert_eq!(ours, oracle::decode(&bytes), "on {:02x?}", bytes);
    }
}

/// Reads the payload back out of an envelope built by [`Entry::sign`] or [`wrap`].
struct Envelope(Vec<u8>);

impl Envelope {
    fn payload_of(envelope: &[u8]) -> Self {
        let (payload, _): (serde_bytes::ByteBuf, serde_bytes::ByteBuf) =
            cbor4ii::serde::from_slice(envelope).unwrap();
        Envelope(payload.into_vec())
    }
}
