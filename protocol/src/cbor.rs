//! The canonical CBOR that entries are made of, read and written by hand.
//!
//! Entries use a small subset of CBOR (unsigned integers, byte and text strings, arrays, `null`)
//! where every head takes its shortest form and every length is definite (docs/protocol.md,
//! 2.4). Reading checks that form while parsing, so an entry decodes in one pass over its bytes,
//! with no intermediate values and no re-encoding to compare.

use crate::entry::DecodeError;

const UINT: u8 = 0;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
/// The one-byte encoding of `null`.
pub(crate) const NULL: u8 = 0xf6;

/// Said of bytes that are not what was expected, when nothing more precise can be said.
const SHAPE: &str = "the bytes are not CBOR of the expected shape";

/// What a serde CBOR decoding error means, in words (its own text is Rust debug output).
pub(crate) fn serde_error_words<E>(error: &cbor4ii::serde::DecodeError<E>) -> String {
    use cbor4ii::core::error::DecodeError as Core;
    let core = match error {
        cbor4ii::serde::DecodeError::Core(core) => core,
        // serde passes the decoder's errors inside its own as their (debug) text.
        cbor4ii::serde::DecodeError::Custom(what) if what.starts_with("Core(") => {
            return SHAPE.to_owned();
        }
        cbor4ii::serde::DecodeError::Custom(what) => return what.to_string(),
    };
    match core {
        Core::Mismatch { name, found } => {
            format!("{name} expected, found the CBOR byte {found:#04x}")
        }
        Core::Unsupported { name, found } => {
            format!("the CBOR byte {found:#04x} cannot start {name}")
        }
        Core::Eof { name, .. } => format!("the bytes end inside {name}"),
        Core::RequireLength { name, .. } => format!("{name} needs a definite length"),
        Core::RequireUtf8 { name } => format!("{name} is not UTF-8"),
        Core::LengthOverflow { name, .. } => format!("{name} is longer than the bytes"),
        Core::CastOverflow { name } | Core::ArithmeticOverflow { name, .. } => {
            format!("a number in {name} is out of range")
        }
        Core::DepthOverflow { .. } => "the items are nested too deep".to_owned(),
        _ => SHAPE.to_owned(),
    }
}

fn malformed(what: &str) -> DecodeError {
    DecodeError::Malformed(what.to_owned())
}

/// Reads items front to back; the first item that is not what the caller expects, or not in
/// canonical form, is the error.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| malformed("unexpected end of input"))?;
        let taken = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    /// Reads the head of an item of type `major` and returns its argument (the value of an
    /// integer, the length of a string or array), refusing any head longer than needed.
    fn head(&mut self, major: u8) -> Result<u64, DecodeError> {
        let initial = self.take(1)?[0];
        if initial >> 5 != major {
            return Err(malformed("unexpected item type"));
        }
        let (value, shortest_from) = match initial & 0x1f {
            info @ 0..=23 => return Ok(u64::from(info)),
            24 => (u64::from(self.take(1)?[0]), 24),
            25 => (u64::from(u16::from_be_bytes(self.array_of()?)), 1 << 8),
            26 => (u64::from(u32::from_be_bytes(self.array_of()?)), 1 << 16),
            27 => (u64::from_be_bytes(self.array_of()?), 1 << 32),
            31 if major != UINT => return Err(DecodeError::NonCanonical), // indefinite length
            _ => return Err(malformed("reserved additional information")),
        };
        if value < shortest_from {
            return Err(DecodeError::NonCanonical);
        }
        Ok(value)
    }

    fn array_of<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn string(&mut self, major: u8) -> Result<&'a [u8], DecodeError> {
        let len = self.head(major)?;
        self.take(usize::try_from(len).map_err(|_| malformed("length out of range"))?)
    }

    /// An unsigned integer.
    pub(crate) fn uint(&mut self) -> Result<u64, DecodeError> {
        self.head(UINT)
    }

    /// A byte string.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        self.string(BYTES)
    }

    /// A text string (valid UTF-8).
    pub(crate) fn text(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.string(TEXT)?).map_err(|_| malformed("text is not UTF-8"))
    }

    /// The head of an array: its number of items.
    pub(crate) fn array(&mut self) -> Result<u64, DecodeError> {
        self.head(ARRAY)
    }

    /// Consumes a `null` if one is next.
    pub(crate) fn null(&mut self) -> bool {
        let is_null = self.bytes.get(self.pos) == Some(&NULL);
        self.pos += usize::from(is_null);
        is_null
    }

    /// Everything not read yet, consumed.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        rest
    }

    /// Checks that everything was read: bytes after the last item are not canonical.
    pub(crate) fn end(&self) -> Result<(), DecodeError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError::NonCanonical)
        }
    }
}

/// Appends a head of type `major` with argument `value`, in its shortest form.
fn head(out: &mut Vec<u8>, major: u8, value: u64) {
    let major = major << 5;
    match value {
        0..=23 => out.push(major | value as u8),
        24..=0xff => out.extend_from_slice(&[major | 24, value as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// Appends an unsigned integer.
pub(crate) fn write_uint(out: &mut Vec<u8>, value: u64) {
    head(out, UINT, value);
}

/// Appends a byte string.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    head(out, BYTES, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a text string.
pub(crate) fn write_text(out: &mut Vec<u8>, text: &str) {
    head(out, TEXT, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Appends the head of an array of `len` items (the items follow).
pub(crate) fn write_array(out: &mut Vec<u8>, len: u64) {
    head(out, ARRAY, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_take_their_shortest_form_and_read_back() {
        for (value, len) in [
            (0, 1),
            (23, 1),
            (24, 2),
            (0xff, 2),
            (0x100, 3),
            (0xffff, 3),
            (0x1_0000, 5),
            (0xffff_ffff, 5),
            (1 << 32, 9),
            (u64::MAX, 9),
        ] {
            let mut out = Vec::new();
            write_uint(&mut out, value);
            assert_eq!(out.len(), len, "{value}");
            let mut reader = Reader::new(&out);
            assert_eq!(reader.uint(), Ok(value));
            assert_eq!(reader.end(), Ok(()));
        }
    }

    #[test]
    fn longer_heads_and_indefinite_lengths_are_not_canonical() {
        for bytes in [
            &[0x18, 0x17][..],
            &[0x19, 0x00, 0xff],
            &[0x1a, 0x00, 0x00, 0xff, 0xff],
            &[0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert_eq!(Reader::new(bytes).uint(), Err(DecodeError::NonCanonical));
        }
        assert_eq!(
            Reader::new(&[0x5f, 0x41, 0x00, 0xff]).bytes(),
            Err(DecodeError::NonCanonical)
        );
        assert!(matches!(
            Reader::new(&[0x1f]).uint(),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn wrong_types_short_input_and_bad_utf8_are_malformed() {
        for result in [
            Reader::new(&[0x41, 0x00]).uint().map(drop),
            Reader::new(&[0x5a, 0xff, 0xff, 0xff, 0xff])
                .bytes()
                .map(drop),
            Reader::new(&[0x62, 0xc3, 0x28]).text().map(drop),
            Reader::new(&[]).array().map(drop),
        ] {
            assert!(
                matches!(result, Err(DecodeError::Malformed(_))),
                "{result:?}"
            );
        }
    }
}
