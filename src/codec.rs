//! The value codec: serde with postcard's compact binary format.
//!
//! Arguments, return values and messages are `Serialize + DeserializeOwned`,
//! so a value that cannot cross a process boundary is a compile error rather
//! than Python's runtime `PicklingError`. postcard is small, fast, stable and
//! well kept; the format is private to multiproc peers (Python interop uses
//! raw bytes, or the `pickle` feature of [`Connection`](crate::connection)).

use crate::error::Result;
use serde::{de::DeserializeOwned, Serialize};

/// Encodes `value`, appending to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let taken = std::mem::take(out);
    *out = postcard::to_extend(value, taken)?;
    Ok(())
}

/// Encodes `value` into a new buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes a whole buffer.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
}

/// Decodes one value from the front of `bytes`, returning it and the rest.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8])> {
    Ok(postcard::take_from_bytes(bytes)?)
}
