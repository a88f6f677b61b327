//! The strict signature rule of docs/protocol.md, section 3, against forgeries that a lax
//! ed25519 verifier (RFC 8032's equation alone, as `ed25519_dalek::Verifier::verify`) accepts.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, ED25519_BASEPOINT_TABLE};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use ed25519_dalek::Verifier;
use sha2::{Digest, Sha512};

use super::*;
use crate::validate::{ValidationError, check_next, newest_vouches_for_run};

/// 2^255 - 19, the field prime, little-endian.
const P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// The identity point: the simplest key of small order.
const IDENTITY: [u8; 32] = {
    let mut y = [0; 32];
    y[0] = 1;
    y
};

/// A point of order 8 (the torsion subgroup's generator used by libsodium's blocklist).
fn order_8_point() -> EdwardsPoint {
    let bytes: [u8; 32] = [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ];
    let point = CompressedEdwardsY(bytes).decompress().unwrap();
    assert!(!(point * Scalar::from(4u8)).is_identity() && point.mul_by_cofactor().is_identity());
    point
}

/// The room of every entry here.
fn room() -> RoomId {
    RoomId::from_bytes([0xee; 32])
}

/// `[2, room, author, 1, null, 1700000000000, 1, ["profile", name]]`: a first entry's payload.
fn profile_payload(author: &[u8; 32], name: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    cbor::write_array(&mut payload, 8);
    cbor::write_uint(&mut payload, 2);
    cbor::write_bytes(&mut payload, room().as_bytes());
    cbor::write_bytes(&mut payload, author);
    cbor::write_uint(&mut payload, 1);
    payload.push(cbor::NULL);
    cbor::write_uint(&mut payload, 1_700_000_000_000);
    cbor::write_uint(&mut payload, 1);
    Body::Profile { name: name.into() }
        .write(&mut payload)
        .unwrap();
    payload
}

/// The entry with this payload and the signature `R ‖ S`.
fn entry_with(payload: &[u8], r: [u8; 32], s: [u8; 32]) -> Entry {
    let mut envelope = Vec::new();
    cbor::write_array(&mut envelope, 2);
    cbor::write_bytes(&mut envelope, payload);
    cbor::write_bytes(&mut envelope, &[r, s].concat());
    Entry::decode(Bytes::from(envelope)).unwrap()
}

/// `k = SHA-512(R ‖ A ‖ M) mod L`, with `M` the domain tag and the payload.
fn challenge(r: &[u8; 32], author: &[u8; 32], payload: &[u8]) -> Scalar {
    let digest = Sha512::new()
        .chain_update(r)
        .chain_update(author)
        .chain_update(signed_message(payload))
        .finalize();
    Scalar::from_bytes_mod_order_wide(&digest.into())
}

/// The secret scalar `a` of `key`, with `A = [a]B` (RFC 8032, 5.1.5).
fn secret_scalar(key: &SigningKey) -> Scalar {
    let hash = Sha512::digest(key.to_bytes());
    let mut a: [u8; 32] = hash[..32].try_into().unwrap();
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    Scalar::from_bytes_mod_order(a)
}

/// What a lax verifier says: RFC 8032's cofactorless equation, no small-order checks.
fn lax_accepts(entry: &Entry) -> bool {
    VerifyingKey::from_bytes(entry.author().as_bytes()).is_ok_and(|key| {
        key.verify(
            &signed_message(&entry.payload),
            &Signature::from_bytes(&entry.signature),
        )
        .is_ok()
    })
}

fn hex_of(bytes: &[u8]) -> String {
    hex(bytes)
}

/// `y + p` for a point's encoding `bytes`, if that still fits in 255 bits: another spelling.
fn plus_p(bytes: [u8; 32]) -> Option<[u8; 32]> {
    let sign = bytes[31] & 0x80;
    let mut y = bytes;
    y[31] &= 0x7f;
    let mut carry = 0u16;
    for (byte, p) in y.iter_mut().zip(P) {
        let sum = u16::from(*byte) + u16::from(p) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    (carry == 0 && y[31] & 0x80 == 0).then(|| {
        y[31] |= sign;
        y
    })
}

#[test]
fn the_small_order_key_vector_is_forgeable_by_anyone_and_refused() {
    // The worked vector of docs/protocol.md, 3.2 (a format 2 entry in room ee…ee): the
    // identity point as the author, "signed" with R = [1]B, S = 1, which satisfies
    // [S]B = R + [k]A for every message.
    let payload = profile_payload(&IDENTITY, "mallory");
    let mut one = [0; 32];
    one[0] = 1;
    let basepoint = ED25519_BASEPOINT_POINT.compress().to_bytes();
    let entry = entry_with(&payload, basepoint, one);
    assert_eq!(
        hex_of(entry.envelope()),
        concat!(
            "82586388025820eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
            "eeeeeeeeeeeeee58200100000000000000000000000000000000000000000000",
            "00000000000000000001f61b0000018bcfe5680001826770726f66696c65676d",
            "616c6c6f72795840586666666666666666666666666666666666666666666666",
            "6666666666666666010000000000000000000000000000000000000000000000",
            "0000000000000000",
        )
    );
    assert!(lax_accepts(&entry), "a lax verifier takes the forgery");
    assert_eq!(entry.verify(), Err(VerifyError::Key(KeyError::SmallOrder)));
    assert_eq!(
        check_next(room(), Author::from_bytes(IDENTITY), None, &entry),
        Err(ValidationError::BadAuthorKey(KeyError::SmallOrder))
    );
}

#[test]
fn a_log_of_a_small_order_key_is_refused_as_a_whole_with_one_check() {
    // R = [s]B, S = s for a random s: anyone can write such a log, with any text.
    let mut run: Vec<Entry> = Vec::new();
    for seq in 1..=3u64 {
        let s = Scalar::from_bytes_mod_order(rand::random());
        let r = (ED25519_BASEPOINT_TABLE * &s).compress().to_bytes();
        let mut payload = Vec::new();
        cbor::write_array(&mut payload, 7);
        cbor::write_uint(&mut payload, 1);
        cbor::write_bytes(&mut payload, &IDENTITY);
        cbor::write_uint(&mut payload, seq);
        match run.last() {
            Some(prev) => cbor::write_bytes(&mut payload, prev.hash().as_bytes()),
            None => payload.push(cbor::NULL),
        }
        cbor::write_uint(&mut payload, 1);
        cbor::write_uint(&mut payload, seq);
        let body = if seq == 1 {
            Body::Profile {
                name: "alice".into(),
            }
        } else {
            Body::Text { text: "hi".into() }
        };
        body.write(&mut payload).unwrap();
        let entry = entry_with(&payload, r, s.to_bytes());
        assert!(lax_accepts(&entry));
        run.push(entry);
    }
    assert_eq!(
        newest_vouches_for_run(&run),
        (0, Some(ValidationError::BadAuthorKey(KeyError::SmallOrder)))
    );
}

#[test]
fn honest_keys_are_usable() {
    for seed in 0..=32u8 {
        let key = SigningKey::from_bytes(&[seed; 32]);
        assert!(Author::of(&key).check_key().is_ok(), "seed {seed}");
    }
}

#[test]
fn every_small_order_key_is_refused_however_it_is_spelled() {
    let torsion = order_8_point();
    let mut spellings = 0;
    for i in 0..8u8 {
        let point = torsion * Scalar::from(i);
        let canonical = point.compress().to_bytes();
        assert_eq!(
            Author::from_bytes(canonical).check_key().err(),
            Some(KeyError::SmallOrder),
            "{}",
            hex_of(&canonical)
        );
        // The other spellings of the same point: y + p, and a set sign bit on x = 0.
        let sign_flipped = {
            let mut bytes = canonical;
            bytes[31] ^= 0x80;
            Some(bytes).filter(|b| CompressedEdwardsY(*b).decompress() == Some(point))
        };
        for other in [plus_p(canonical), sign_flipped].into_iter().flatten() {
            spellings += 1;
            assert_eq!(
                Author::from_bytes(other).check_key().err(),
                Some(KeyError::NonCanonical),
                "{}",
                hex_of(&other)
            );
        }
    }
    // y = 0 (two points) and y = 1 have a y + p spelling; x = 0 (y = ±1) a negative zero.
    assert_eq!(spellings, 5);
}

#[test]
fn non_canonical_keys_are_refused_even_of_large_order() {
    let mut large_order = 0;
    for k in 0..19u8 {
        let mut y = [0; 32];
        y[0] = k;
        let Some(spelling) = plus_p(y) else { continue };
        for bytes in [spelling, {
            let mut b = spelling;
            b[31] |= 0x80;
            b
        }] {
            let Some(point) = CompressedEdwardsY(bytes).decompress() else {
                assert_eq!(
                    Author::from_bytes(bytes).check_key().err(),
                    Some(KeyError::NotAPoint)
                );
                continue;
            };
            large_order += usize::from(!point.is_small_order());
            assert_eq!(
                Author::from_bytes(bytes).check_key().err(),
                Some(KeyError::NonCanonical),
                "{}",
                hex_of(&bytes)
            );
        }
    }
    assert!(large_order > 0, "some y ≥ p spell a point of large order");
}

#[test]
fn bytes_off_the_curve_are_refused() {
    let mut y = [0; 32];
    y[0] = 2;
    assert!(CompressedEdwardsY(y).decompress().is_none());
    assert_eq!(
        Author::from_bytes(y).check_key().err(),
        Some(KeyError::NotAPoint)
    );
}

#[test]
fn a_small_order_r_is_refused_even_from_the_key_owner() {
    // The owner of key(1) makes R the identity: S = k·a satisfies [S]B = R + [k]A.
    let key = tests::key(1);
    let author = *Author::of(&key).as_bytes();
    let payload = profile_payload(&author, "alice");
    let k = challenge(&IDENTITY, &author, &payload);
    let s = k * secret_scalar(&key);
    let entry = entry_with(&payload, IDENTITY, s.to_bytes());
    assert!(lax_accepts(&entry), "the cofactorless equation holds");
    assert_eq!(entry.verify(), Err(VerifyError::Signature));
    assert_eq!(
        check_next(room(), Author::of(&key), None, &entry),
        Err(ValidationError::BadSignature { seq: 1 })
    );
}

#[test]
fn a_signature_valid_only_with_the_cofactor_is_refused() {
    // R = [r]B + T with T of order 8: [8][S]B = [8]R + [8][k]A holds, [S]B = R + [k]A does not.
    let key = tests::key(1);
    let author = *Author::of(&key).as_bytes();
    let payload = profile_payload(&author, "alice");
    let r = Scalar::from_bytes_mod_order([7; 32]);
    let big_r = ED25519_BASEPOINT_TABLE * &r + order_8_point();
    let r_bytes = big_r.compress().to_bytes();
    let k = challenge(&r_bytes, &author, &payload);
    let s = r + k * secret_scalar(&key);
    let a = Author::of(&key).check_key().unwrap().to_edwards();
    let sb = ED25519_BASEPOINT_TABLE * &s;
    assert!((sb - big_r - a * k).mul_by_cofactor().is_identity());
    let entry = entry_with(&payload, r_bytes, s.to_bytes());
    assert_eq!(entry.verify(), Err(VerifyError::Signature));
}

#[test]
fn a_non_canonical_s_is_refused() {
    // S + L verifies the same equation; only S < L is accepted.
    let key = tests::key(1);
    let honest = Entry::sign(
        &key,
        Draft {
            room: room(),
            seq: 1,
            prev: None,
            timestamp: 1,
            clock: 1,
            body: Body::Profile { name: "a".into() },
        },
    )
    .unwrap();
    assert_eq!(honest.verify(), Ok(()));
    let r: [u8; 32] = honest.signature[..32].try_into().unwrap();
    let s: [u8; 32] = honest.signature[32..].try_into().unwrap();
    // S + L, as S + (L - 1) + 1.
    let mut stretched = s;
    let mut carry = 1u16;
    for (byte, l) in stretched.iter_mut().zip((-Scalar::ONE).to_bytes()) {
        let sum = u16::from(*byte) + u16::from(l) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    let forged = entry_with(&honest.payload, r, stretched);
    assert_eq!(forged.verify(), Err(VerifyError::Signature));
}

#[test]
fn the_key_vectors_of_protocol_md() {
    let vectors = [
        (
            "0100000000000000000000000000000000000000000000000000000000000000",
            Some(KeyError::SmallOrder),
        ),
        (
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            Some(KeyError::SmallOrder),
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            Some(KeyError::SmallOrder),
        ),
        (
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            Some(KeyError::SmallOrder),
        ),
        (
            "0100000000000000000000000000000000000000000000000000000000000080",
            Some(KeyError::NonCanonical),
        ),
        (
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            Some(KeyError::NonCanonical),
        ),
        (
            "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            Some(KeyError::NonCanonical),
        ),
        (
            "0200000000000000000000000000000000000000000000000000000000000000",
            Some(KeyError::NotAPoint),
        ),
        (
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            None,
        ),
    ];
    for (key, expected) in vectors {
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let author = Author::from_bytes(bytes.try_into().unwrap());
        assert_eq!(author.check_key().err(), expected, "{key}");
    }
    // f0ff…7f is y = p + 3: a point of large order, only spelled wrong.
    let mut spelled_wrong = [0xff; 32];
    spelled_wrong[0] = 0xf0;
    spelled_wrong[31] = 0x7f;
    let point = CompressedEdwardsY(spelled_wrong).decompress().unwrap();
    assert!(!point.is_small_order());
}
