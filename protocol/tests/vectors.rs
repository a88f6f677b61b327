//! The test vectors of docs/protocol.md, checked against the code: every hex value quoted in
//! the document under a label (`label = hex`, the hex possibly continued on the lines below)
//! is read from the document itself, so the document cannot drift from what the code does.
//! Where a vector is a derivation a second implementation must redo (room ids, proof keys,
//! membership tags), the test also redoes it from the document's recipe with plain BLAKE3.

use bytes::Bytes;
use p2pchat_protocol::clock;
use p2pchat_protocol::entry::VerifyError;
use p2pchat_protocol::limits::MAX_CLOCK_AHEAD_MS;
use p2pchat_protocol::membership::{Greet, Nonce, Tag, Transcript};
use p2pchat_protocol::message::{Frame, HeadNote, Message, PROTOCOL_VERSION};
use p2pchat_protocol::validate::{check_known, check_next};
use p2pchat_protocol::{
    Author, Body, Draft, Entry, Hash, KeyError, Room, RoomId, SigningKey, ValidationError,
};

const PROTOCOL_MD: &str = include_str!("../../docs/protocol.md");

/// The hex quoted in docs/protocol.md as `label = …`: the rest of that line, then every line
/// after it that holds only hex digits (spaces ignored). The label must occur exactly once.
fn vector(label: &str) -> Vec<u8> {
    let lines: Vec<&str> = PROTOCOL_MD.lines().collect();
    let found: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            lines[i]
                .split_once('=')
                .is_some_and(|(left, _)| left.trim() == label)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "label {label:?} in docs/protocol.md: {found:?}"
    );
    let start = found[0];
    let mut hex: String = lines[start]
        .split_once('=')
        .map(|(_, right)| right.split_whitespace().collect())
        .unwrap_or_default();
    for line in &lines[start + 1..] {
        let digits: String = line.split_whitespace().collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            break;
        }
        hex.push_str(&digits);
    }
    assert!(
        !hex.is_empty() && hex.len().is_multiple_of(2),
        "label {label:?}: {hex:?} is not hex bytes"
    );
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}

fn vector_32(label: &str) -> [u8; 32] {
    vector(label)
        .try_into()
        .unwrap_or_else(|bytes: Vec<u8>| panic!("{label:?} is {} bytes, not 32", bytes.len()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The context strings of section 4.1, as the document states them.
const OPEN_SECRET: &str = "p2pchat 2026-12 open room secret";
const PRIVATE_SECRET: &str = "p2pchat 2026-12 private room secret";
const ROOM_ID: &str = "p2pchat 2026-12 room id";
const PROOF_KEY: &str = "p2pchat 2026-12 room proof key";
/// The prefix of a membership transcript (section 9.1.2).
const TRANSCRIPT_PREFIX: &[u8] = b"p2pchat/membership/v1";
/// The context of a node's padding key (section 9.1.2).
const PADDING_KEY: &str = "p2pchat 2026-12 membership padding key";

#[test]
fn the_documented_context_strings_are_quoted_in_the_document() {
    for context in [OPEN_SECRET, PRIVATE_SECRET, ROOM_ID, PROOF_KEY, PADDING_KEY] {
        assert!(
            PROTOCOL_MD.contains(&format!("`\"{context}\"`")),
            "{context:?} is not quoted in the document"
        );
    }
    assert!(PROTOCOL_MD.contains("`\"p2pchat/membership/v1\"`"));
}

#[test]
fn room_ids_and_proof_keys_follow_section_4() {
    // The LAN room: the open room `lan`.
    let secret = blake3::derive_key(OPEN_SECRET, b"lan");
    assert_eq!(hex(&secret), hex(&vector("secret of lan")));
    let id = blake3::derive_key(ROOM_ID, &secret);
    assert_eq!(hex(&id), hex(&vector("room id of lan")));
    assert_eq!(Room::lan().id().as_bytes(), &id);
    assert_eq!(
        Room::open("lan").expect("a room name").id(),
        Room::lan().id()
    );
    assert_eq!(
        hex(&blake3::derive_key(PROOF_KEY, &secret)),
        hex(&vector("proof key of lan"))
    );
    // Another open room, to show the name is the key material.
    let ops = blake3::derive_key(ROOM_ID, &blake3::derive_key(OPEN_SECRET, b"ops"));
    assert_eq!(hex(&ops), hex(&vector("room id of ops")));
    assert_eq!(
        Room::open("ops").expect("a room name").id().as_bytes(),
        &ops
    );

    // A private room from a key file's 32 bytes.
    let key = vector_32("team.key bytes");
    assert_eq!(key, std::array::from_fn(|i| i as u8), "00 01 … 1f");
    let secret = blake3::derive_key(PRIVATE_SECRET, &key);
    assert_eq!(hex(&secret), hex(&vector("secret of team")));
    let id = blake3::derive_key(ROOM_ID, &secret);
    assert_eq!(hex(&id), hex(&vector("room id of team")));
    assert_eq!(Room::private(&key, "team").id().as_bytes(), &id);
    assert_eq!(
        Room::private(&key, "other label").id(),
        Room::private(&key, "team").id(),
        "the label is not part of the room"
    );
    assert_eq!(
        hex(&blake3::derive_key(PROOF_KEY, &secret)),
        hex(&vector("proof key of team"))
    );
}

/// Alice (section 7's key) and bob (the secret `02 … 02`) on one connection, with the nonces
/// of section 9.1.5, as each of them sees it.
fn alice_and_bob() -> (Transcript, Transcript) {
    let alice = Author::of(&SigningKey::from_bytes(&[1; 32]));
    let bob = Author::of(&SigningKey::from_bytes(&[2; 32]));
    assert_eq!(alice.as_bytes(), &vector_32("alice's key"));
    assert_eq!(bob.as_bytes(), &vector_32("bob's key"));
    let alice_nonce = Nonce::new(vector_32("alice's nonce"));
    let bob_nonce = Nonce::new(vector_32("bob's nonce"));
    (
        Transcript {
            us: alice,
            them: bob,
            our_nonce: alice_nonce,
            their_nonce: bob_nonce,
        },
        Transcript {
            us: bob,
            them: alice,
            our_nonce: bob_nonce,
            their_nonce: alice_nonce,
        },
    )
}

#[test]
fn membership_tags_follow_section_9_1() {
    let (alice, bob) = alice_and_bob();
    let team = Room::private(&vector_32("team.key bytes"), "team");
    let lan = Room::lan();

    // The transcript of alice's tags: prefix, prover, verifier, prover's nonce, verifier's.
    let mut transcript = TRANSCRIPT_PREFIX.to_vec();
    transcript.extend_from_slice(alice.us.as_bytes());
    transcript.extend_from_slice(alice.them.as_bytes());
    transcript.extend_from_slice(&alice.our_nonce.0[..]);
    transcript.extend_from_slice(&alice.their_nonce.0[..]);
    assert_eq!(transcript.len(), 149);
    assert_eq!(hex(&transcript), hex(&vector("alice's transcript")));

    let tag_of = |proof_key: &str| {
        let key = vector_32(proof_key);
        *blake3::keyed_hash(&key, &transcript).as_bytes()
    };
    let lan_tag = tag_of("proof key of lan");
    let team_tag = tag_of("proof key of team");
    assert_eq!(hex(&lan_tag), hex(&vector("alice's tag for lan")));
    assert_eq!(hex(&team_tag), hex(&vector("alice's tag for team")));

    // Padding up to 16 tags, keyed by a key of all of alice's proof keys in her rooms' order.
    let mut proof_keys = vector("proof key of lan");
    proof_keys.extend(vector("proof key of team"));
    let padding_key = blake3::derive_key(PADDING_KEY, &proof_keys);
    assert_eq!(hex(&padding_key), hex(&vector("alice's padding key")));
    let padding = |i: u8| {
        let mut input = transcript.clone();
        input.push(i);
        *blake3::keyed_hash(&padding_key, &input).as_bytes()
    };
    assert_eq!(hex(&padding(2)), hex(&vector("alice's padding 2")));
    assert_eq!(hex(&padding(15)), hex(&vector("alice's padding 15")));
    let mut proof: Vec<[u8; 32]> = vec![lan_tag, team_tag];
    proof.extend((2..16).map(padding));
    proof.sort();
    let proof: Vec<Tag> = proof.into_iter().map(|tag| Tag(tag.into())).collect();
    assert_eq!(
        hex(&encode(&Frame::Proof(proof.clone()))),
        hex(&vector("alice's proof"))
    );
    // The code agrees, for her rooms in that order.
    let alice_rooms = [lan.clone(), team.clone()];
    assert_eq!(alice.our_tags(&alice_rooms), proof);

    // Bob, in `ops`, team and the LAN room (in that order), finds the two he shares with
    // alice, numbered by room id: lan (00c8…) is slot 0, team (2ed4…) slot 1.
    let ops = Room::open("ops").expect("a room name");
    let bob_rooms = [ops, team.clone(), lan.clone()];
    let shared = bob.shared(&bob_rooms, &proof);
    assert_eq!(shared, vec![2, 1], "bob's indices of lan, then team");
    let at_alice = alice.shared(&alice_rooms, &bob.our_tags(&bob_rooms));
    assert_eq!(at_alice, vec![0, 1], "alice's indices of lan, then team");
    // A tag for a room proves nothing on another connection, nor sent back to its prover.
    let replayed = Transcript {
        their_nonce: Nonce::new([0xb3; 32]),
        ..alice
    };
    assert!(
        bob.shared(&bob_rooms, &replayed.our_tags(&alice_rooms))
            .is_empty()
    );
    assert!(
        alice
            .shared(&alice_rooms, &alice.our_tags(&alice_rooms))
            .is_empty()
    );
}

fn encode(frame: &Frame) -> Vec<u8> {
    frame.encode()
}

fn decode(bytes: &[u8]) -> Frame {
    Frame::decode(bytes).expect("a valid frame")
}

#[test]
fn frames_encode_as_section_9_1_shows() {
    let (alice, _) = alice_and_bob();
    let greet = Frame::Greet(Greet {
        version: PROTOCOL_VERSION,
        nonce: alice.our_nonce,
    });
    let ping = Frame::Room(1, Message::Ping);
    let want = Frame::Room(
        0,
        Message::Want(HeadNote {
            author: alice.us,
            seq: 2,
        }),
    );
    for (frame, label) in [
        (greet, "alice's greet"),
        (decode(&vector("alice's proof")), "alice's proof"),
        (ping, "a ping in slot 1"),
        (want, "a want in slot 0"),
    ] {
        let bytes = vector(label);
        assert_eq!(hex(&encode(&frame)), hex(&bytes), "{label}");
        assert_eq!(decode(&bytes), frame, "{label}");
    }
    // A whole frame on a lane: the 4-byte big-endian length, then the CBOR.
    let note = vector("a note in slot 0");
    let (length, body) = note.split_at(4);
    assert_eq!(
        u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize,
        body.len()
    );
    let have = Frame::Room(
        0,
        Message::Have(vec![HeadNote {
            author: alice.us,
            seq: 2,
        }]),
    );
    assert_eq!(hex(&encode(&have)), hex(body));
}

#[test]
fn the_format_1_entries_of_section_7_still_decode_and_verify() {
    let key = SigningKey::from_bytes(&[1; 32]);
    let first = Entry::decode(Bytes::from(vector("format 1, entry 1"))).expect("entry 1");
    let second = Entry::decode(Bytes::from(vector("format 1, entry 2"))).expect("entry 2");
    for (entry, hash) in [
        (&first, "format 1, hash of entry 1"),
        (&second, "format 1, hash of entry 2"),
    ] {
        assert_eq!(entry.author(), Author::of(&key));
        assert!(entry.signature_is_valid());
        assert_eq!(entry.hash(), Hash::from_bytes(vector_32(hash)));
    }
    assert_eq!(second.prev(), Some(first.hash()));
    assert_eq!((first.seq(), second.seq()), (1, 2));
}

#[test]
fn the_format_2_entries_of_section_7_are_what_entry_sign_writes() {
    let key = SigningKey::from_bytes(&[1; 32]);
    let team = Room::private(&vector_32("team.key bytes"), "team");
    let now_ms = 1_800_000_000_000;
    let first = Entry::sign(
        &key,
        Draft {
            room: team.id(),
            seq: 1,
            prev: None,
            timestamp: now_ms,
            clock: clock::next(now_ms, 0, 0),
            body: Body::Profile {
                name: "alice".into(),
            },
        },
    )
    .expect("a valid draft");
    let second = Entry::sign(
        &key,
        Draft {
            room: team.id(),
            seq: 2,
            prev: Some(first.hash()),
            timestamp: now_ms + 1,
            clock: clock::next(now_ms + 1, first.clock(), first.clock()),
            body: Body::Text {
                text: "hello".into(),
            },
        },
    )
    .expect("a valid draft");
    for (entry, envelope, hash) in [
        (&first, "format 2, entry 1", "format 2, hash of entry 1"),
        (&second, "format 2, entry 2", "format 2, hash of entry 2"),
    ] {
        assert_eq!(hex(entry.envelope()), hex(&vector(envelope)), "{envelope}");
        assert_eq!(entry.hash(), Hash::from_bytes(vector_32(hash)), "{hash}");
        let decoded = Entry::decode(Bytes::from(vector(envelope))).expect("a format 2 entry");
        assert_eq!((decoded.format(), decoded.room()), (2, Some(team.id())));
        assert!(decoded.signature_is_valid());
    }
    assert_eq!(first.clock(), now_ms << 16);
    assert_eq!(second.clock(), (now_ms + 1) << 16);

    // Their room is named under the signature: the LAN room's store refuses them.
    let lan = Room::lan().id();
    assert_eq!(
        check_next(lan, first.author(), None, &first),
        Err(ValidationError::WrongRoom { seq: 1 })
    );
    check_next(team.id(), first.author(), None, &first).expect("entry 1 in its room");
    check_next(team.id(), first.author(), Some(&first), &second).expect("entry 2 after it");
}

#[test]
fn format_1_is_accepted_only_as_a_prefix() {
    let old = Entry::decode(Bytes::from(vector("format 1, entry 1"))).expect("entry 1");
    assert_eq!((old.format(), old.room(), old.clock()), (1, None, 1));
    let team = Room::private(&vector_32("team.key bytes"), "team").id();
    check_next(team, old.author(), None, &old).expect("a format-1 log start, in any room");
    let new = Entry::decode(Bytes::from(vector("format 2, entry 1"))).expect("a format-2 entry");
    // A format-1 entry where the log holds a format-2 one is another room's, not a fork.
    assert_eq!(
        check_known(team, &new, &old),
        Err(ValidationError::WrongRoom { seq: 1 })
    );
}

#[test]
fn clock_next_follows_section_2_5() {
    let at_ms = clock::at_ms;
    let now = 1_800_000_000_000;
    let doc = |case: &str| {
        u64::from_be_bytes(
            vector(&format!("clock case {case}"))
                .try_into()
                .expect("8 bytes"),
        )
    };
    assert_eq!(at_ms(now), 0x01a3_185c_5000_0000);
    let cases = [
        ("a", now, 0, at_ms(now - 360_000) + 3),
        ("b", now, at_ms(now), at_ms(now)),
        ("c", now, 0, at_ms(now + 2000) + 7),
        ("d", now, 0, at_ms(now + 86_400_000)),
        ("e", now - 5000, at_ms(now) + 1, 0),
    ];
    for (case, now_ms, last_own, max_seen) in cases {
        assert_eq!(
            format!("{:016x}", clock::next(now_ms, last_own, max_seen)),
            format!("{:016x}", doc(case)),
            "case {case}"
        );
    }
    assert_eq!(
        doc("d"),
        at_ms(now + MAX_CLOCK_AHEAD_MS) + 1,
        "bounded 10 min ahead"
    );
}

#[test]
fn the_small_order_forgery_of_section_3_1_is_refused() {
    let forgery = Entry::decode(Bytes::from(vector("the small-order forgery"))).expect("decodes");
    let mut identity = [0; 32];
    identity[0] = 1;
    assert_eq!(forgery.author(), Author::from_bytes(identity));
    let room = RoomId::from_bytes([0xee; 32]);
    assert_eq!(forgery.room(), Some(room));
    assert_eq!(
        forgery.verify(),
        Err(VerifyError::Key(KeyError::SmallOrder))
    );
    assert_eq!(
        check_next(room, forgery.author(), None, &forgery),
        Err(ValidationError::BadAuthorKey(KeyError::SmallOrder))
    );
}

/// The context of the dm secret, and the prefixes of the binding and the key info (2.7).
const DM_SECRET: &str = "p2pchat 2026-12-01 dm secret";
const DM_BINDING: &[u8] = b"p2pchat/dm/v2";
const DM_KEY_INFO: &[u8] = b"p2pchat/dm/v2";

/// Checks `bytes` against the vector `label` (printed first, so a changed recipe shows the
/// values a new document needs).
fn check(label: &str, bytes: &[u8]) {
    eprintln!("{label} = {}", hex(bytes));
    assert_eq!(hex(bytes), hex(&vector(label)), "{label}");
}

/// The X25519 public key of `secret`, by the recipe: X25519 with the base point 9.
fn x25519_public(secret: [u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES)
}

#[test]
fn enc_keys_and_direct_messages_follow_section_2_7() {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use p2pchat_protocol::dm::{DmSecret, Letter};
    assert!(PROTOCOL_MD.contains(&format!("`\"{DM_SECRET}\"`")));
    let (alice_key, bob_key) = (
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    );
    let (alice, bob) = (Author::of(&alice_key), Author::of(&bob_key));

    // Keys: derived from the identity's secret bytes.
    let alice_secret = blake3::derive_key(DM_SECRET, &[1; 32]);
    let bob_secret = blake3::derive_key(DM_SECRET, &[2; 32]);
    check("dm secret of alice", &alice_secret);
    check("dm secret of bob", &bob_secret);
    let (alice_enc, bob_enc) = (x25519_public(alice_secret), x25519_public(bob_secret));
    check("enc key of alice", &alice_enc);
    check("enc key of bob", &bob_enc);
    let alice_dm = DmSecret::derive(&alice_key);
    let bob_dm = DmSecret::derive(&bob_key);
    assert_eq!(alice_dm.public().as_bytes(), &alice_enc);
    assert_eq!(bob_dm.public().as_bytes(), &bob_enc);

    // One agreement per pair: both sides get the same secret.
    let shared = x25519_dalek::x25519(alice_secret, bob_enc);
    assert_eq!(shared, x25519_dalek::x25519(bob_secret, alice_enc));
    check("shared secret of alice and bob", &shared);

    // Entry 5 of alice's log in the team room: "meet at noon" to bob, nonce 00 01 … 17.
    let team = Room::private(&vector_32("team.key bytes"), "team").id();
    let nonce: [u8; 24] = std::array::from_fn(|i| i as u8);
    let text = "meet at noon";
    let binding = [
        DM_BINDING,
        team.as_bytes(),
        alice.as_bytes(),
        &5u64.to_be_bytes(),
    ]
    .concat();
    check("binding of entry 5", &binding);
    let mut message_key = [0; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&[alice_enc, bob_enc].concat()), &shared)
        .expand(&[DM_KEY_INFO, &binding].concat(), &mut message_key)
        .expect("32 bytes");
    check("message key of entry 5", &message_key);
    let ciphertext = chacha20poly1305::XChaCha20Poly1305::new(&message_key.into())
        .encrypt(
            &nonce.into(),
            Payload {
                msg: text.as_bytes(),
                aad: &binding,
            },
        )
        .expect("a short message");
    check("ciphertext of entry 5", &ciphertext);

    // The code seals the same bytes, and both parties read the line back.
    let letter = Letter {
        to: bob,
        pair: alice_dm.agree(&bob_dm.public()).expect("a usable key"),
        text: text.into(),
        nonce,
    };
    let sealed = letter.seal(&team, &alice, 5).expect("a valid letter");
    assert_eq!(sealed.to_key, bob_dm.public());
    assert_eq!(sealed.from_key, alice_dm.public());
    assert_eq!(sealed.nonce, nonce);
    assert_eq!(hex(&sealed.ciphertext), hex(&ciphertext));
    assert_eq!(
        sealed.open(&bob_dm, &bob, &team, &alice, 5).as_deref(),
        Ok(text)
    );
    assert_eq!(
        sealed.open(&alice_dm, &alice, &team, &alice, 5).as_deref(),
        Ok(text)
    );

    // The body: ["dm", to, to_key, from_key, nonce, ciphertext].
    let mut body = vec![0x86, 0x62, b'd', b'm'];
    for key in [bob.as_bytes(), &bob_enc, &alice_enc] {
        body.extend_from_slice(&[0x58, 0x20]);
        body.extend_from_slice(key);
    }
    body.extend_from_slice(&[0x58, 0x18]);
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&[
        0x58,
        u8::try_from(ciphertext.len()).expect("24 to 255 bytes"),
    ]);
    body.extend_from_slice(&ciphertext);
    check("body of entry 5", &body);
    let entry = Entry::decode(Bytes::from(vector("format 2, entry 5"))).expect("entry 5");
    assert!(entry.signature_is_valid());
    assert_eq!(entry.body(), &Body::Direct(sealed));
    assert!(
        vector("format 2, entry 5")
            .windows(body.len())
            .any(|w| w == body)
    );
}

#[test]
fn the_channel_and_key_entries_of_section_7_3_are_what_entry_sign_writes() {
    use p2pchat_protocol::dm::{DmSecret, Letter};
    let key = SigningKey::from_bytes(&[1; 32]);
    let bob = SigningKey::from_bytes(&[2; 32]);
    let team = Room::private(&vector_32("team.key bytes"), "team").id();
    let second = Entry::decode(Bytes::from(vector("format 2, entry 2"))).expect("entry 2");
    let now_ms = 1_800_000_000_000;
    let letter = Letter {
        to: Author::of(&bob),
        pair: DmSecret::derive(&key)
            .agree(&DmSecret::derive(&bob).public())
            .expect("a usable key"),
        text: "meet at noon".into(),
        nonce: std::array::from_fn(|i| i as u8),
    };
    let bodies = [
        p2pchat_protocol::Outgoing::Body(Body::EncKey {
            key: DmSecret::derive(&key).public(),
        }),
        p2pchat_protocol::Outgoing::Body(Body::Post {
            channel: "ops".into(),
            text: "hello ops".into(),
        }),
        p2pchat_protocol::Outgoing::Letter(letter),
    ];
    let mut last = second;
    for (seq, outgoing) in (3..).zip(bodies) {
        let timestamp = now_ms + seq - 1;
        let author = Author::of(&key);
        let draft = Draft {
            room: team,
            seq,
            prev: Some(last.hash()),
            timestamp,
            clock: clock::next(timestamp, last.clock(), last.clock()),
            body: outgoing
                .into_body(&team, &author, seq)
                .expect("a valid body"),
        };
        let entry = Entry::sign(&key, draft).expect("a valid draft");
        check(&format!("format 2, entry {seq}"), entry.envelope());
        check(
            &format!("format 2, hash of entry {seq}"),
            entry.hash().as_bytes(),
        );
        check_next(team, author, Some(&last), &entry).expect("the next entry of the log");
        last = entry;
    }
}
