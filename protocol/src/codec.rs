//! The one place that touches the CBOR library.
//!
//! Every encoding and decoding in Kith goes through [`to_vec`] and [`from_slice`], so the CBOR
//! implementation (today `serde_cbor`, unmaintained upstream) can be swapped by editing this file
//! alone. Decoding checks the input length against an explicit limit *before* parsing, rejects
//! trailing bytes and any input that is not the canonical encoding of its value, and relies on
//! the parser's nesting limit, so no input can make it panic or allocate more than a small
//! multiple of the limit.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::DecodeError;

/// Encodes `value` as CBOR.
///
/// Kith's own types always encode; the error is kept for values with maps whose keys CBOR cannot
/// express, which Kith never defines.
pub fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    // Measured first, so a large value (a blob's chunk) is written once into a buffer of its
    // size instead of being copied as the buffer grows.
    let mut counter = Counter(0);
    let mut bytes = match serde_cbor::to_writer(&mut counter, value) {
        Ok(()) => Vec::with_capacity(counter.0),
        Err(e) => unreachable!("kith types always encode to CBOR: {e}"),
    };
    match serde_cbor::to_writer(&mut bytes, value) {
        Ok(()) => bytes,
        // Every type encoded here is a plain struct or enum of Kith's own: serialization into a
        // `Vec` cannot fail for them (no I/O, no non-string map keys, no custom errors).
        Err(e) => unreachable!("kith types always encode to CBOR: {e}"),
    }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compares the bytes written to it with `expected`, failing at the first difference.
struct Compare<'a> {
    expected: &'a [u8],
}

impl std::io::Write for Compare<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.expected.strip_prefix(buf) {
            Some(rest) => {
                self.expected = rest;
                Ok(buf.len())
            }
            None => Err(std::io::ErrorKind::InvalidData.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether [`to_vec`] of `value` gives exactly `bytes` (without making a copy).
fn encodes_to<T: Serialize>(value: &T, bytes: &[u8]) -> bool {
    let mut compare = Compare { expected: bytes };
    serde_cbor::to_writer(&mut compare, value).is_ok() && compare.expected.is_empty()
}

/// Decodes one CBOR value of type `T` from `bytes`, which must hold exactly that value, be at
/// most `max` bytes long, and be its canonical encoding: the bytes [`to_vec`] produces for the
/// decoded value. So every value has exactly one encoding, and no byte of an encoded value can
/// change without changing the value (no malleable outer layers around signed or sealed bytes).
pub fn from_slice<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge { len: bytes.len(), max });
    }
    let value: T =
        serde_cbor::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !encodes_to(&value, bytes) {
        return Err(DecodeError::Malformed("not in canonical form".into()));
    }
    Ok(value)
}

/// Decodes a value this program stored itself (local databases, not the wire): like
/// [`from_slice`] but without the canonical-form check, so stored values written by an older
/// encoder still read.
pub fn from_stored_slice<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge { len: bytes.len(), max });
    }
    serde_cbor::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// The envelope of every request-response frame: the protocol version and the body.
#[derive(Serialize, Deserialize)]
struct Frame<T> {
    v: u8,
    body: T,
}

/// Encodes `body` as a request-response frame `{v, body}` of version [`crate::VERSION`].
pub(crate) fn to_frame<T: Serialize>(body: &T) -> Vec<u8> {
    to_vec(&Frame { v: crate::VERSION, body })
}

/// Decodes a frame written by [`to_frame`]: at most `max` bytes, canonical, of a version this
/// implementation speaks.
pub(crate) fn from_frame<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    let f: Frame<T> = from_slice(bytes, max)?;
    crate::check_version(f.v)?;
    Ok(f.body)
}
