//! The checksummed value framing shared by journal records, the journal snapshot and checkpoints.
//!
//! A framed value (all integers little-endian):
//!
//! ```text
//! +-----------------+-------------+----------------+-------------------+
//! | fields: N x u64 | len: u32    | crc32c: u32    | payload: len bytes |
//! +-----------------+-------------+----------------+-------------------+
//! ```
//!
//! `crc32c` is CRC-32C (Castagnoli) over `key | fields | len | payload`, where `key` is the fjall
//! key the value is stored under. Covering the key binds a value to its key: a value that ends up
//! under another key (a copied block, a bug) fails its check like a flipped bit does. `N` is fixed
//! per kind of value (0 for journal records, 2 for the snapshot, 1 for checkpoints) and documented
//! where that kind is written.
//!
//! This module never touches the disk and never panics on malformed input: a value that is too
//! short, whose length does not match, or whose checksum fails is a [`FrameError`].

use std::fmt;

use crate::StoreError;

/// Largest payload a frame can carry: fjall values are limited to `u32::MAX` bytes, and the
/// frame adds its header.
pub const MAX_PAYLOAD: usize = u32::MAX as usize - 64;

/// Bytes a frame adds to its payload, for `N` fields.
pub const fn overhead(n_fields: usize) -> usize {
    n_fields * 8 + 8
}

/// Why a stored value does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than the fixed header.
    Short { len: usize, need: usize },
    /// The stored length disagrees with the bytes present.
    Length { declared: u64, actual: u64 },
    /// The CRC-32C does not match.
    Checksum { stored: u32, computed: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Short { len, need } => {
                write!(
                    f,
                    "value of {len} bytes is shorter than its {need}-byte header"
                )
            }
            FrameError::Length { declared, actual } => write!(
                f,
                "header declares a {declared}-byte payload but {actual} bytes follow it"
            ),
            FrameError::Checksum { stored, computed } => write!(
                f,
                "CRC-32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// Frames `payload` with `fields` for storage under `key`.
pub fn encode<const N: usize>(
    key: &[u8],
    fields: [u64; N],
    payload: &[u8],
    what: &'static str,
) -> Result<Vec<u8>, StoreError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_PAYLOAD)
        .ok_or(StoreError::TooLarge {
            what,
            len: payload.len(),
            max: MAX_PAYLOAD,
        })?;
    let mut out = Vec::with_capacity(overhead(N) + payload.len());
    for field in fields {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(key), &out);
    let crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Checks and unframes a value stored under `key`; returns its fields and payload.
pub fn decode<'v, const N: usize>(
    key: &[u8],
    value: &'v [u8],
) -> Result<([u64; N], &'v [u8]), FrameError> {
    let need = overhead(N);
    let short = FrameError::Short {
        len: value.len(),
        need,
    };
    let (header, payload) = value.split_at_checked(need).ok_or(short.clone())?;
    let (before_crc, crc_bytes) = header.split_at_checked(need - 4).ok_or(short.clone())?;
    let (field_bytes, len_bytes) = before_crc.split_at_checked(N * 8).ok_or(short.clone())?;

    let mut fields = [0u64; N];
    for (field, chunk) in fields.iter_mut().zip(field_bytes.chunks_exact(8)) {
        *field = u64::from_le_bytes(chunk.try_into().map_err(|_| short.clone())?);
    }
    let declared = u32::from_le_bytes(len_bytes.try_into().map_err(|_| short.clone())?);
    if u64::from(declared) != payload.len() as u64 {
        return Err(FrameError::Length {
            declared: u64::from(declared),
            actual: payload.len() as u64,
        });
    }
    let stored = u32::from_le_bytes(crc_bytes.try_into().map_err(|_| short)?);
    let computed = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(key), before_crc),
        payload,
    );
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok((fields, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_bit_flip_is_caught() {
        let key = 7u64.to_be_bytes();
        let value = encode(&key, [1, 2], b"hello", "test").unwrap();
        assert_eq!(value.len(), overhead(2) + 5);
        let (fields, payload) = decode::<2>(&key, &value).unwrap();
        assert_eq!((fields, payload), ([1, 2], &b"hello"[..]));
        for byte in 0..value.len() {
            for bit in 0..8 {
                let mut bad = value.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode::<2>(&key, &bad).is_err(),
                    "flip {byte}.{bit} not caught"
                );
            }
        }
        // The same value under another key fails.
        assert!(matches!(
            decode::<2>(&8u64.to_be_bytes(), &value),
            Err(FrameError::Checksum { .. })
        ));
    }

    #[test]
    fn truncated_values_are_errors_not_panics() {
        let key = b"k";
        let value = encode(key, [9], b"payload", "test").unwrap();
        for len in 0..value.len() {
            assert!(decode::<1>(key, &value[..len]).is_err(), "length {len}");
        }
        assert!(matches!(
            decode::<1>(key, &value[..3]),
            Err(FrameError::Short { len: 3, need: 16 })
        ));
        let mut longer = value.clone();
        longer.push(0);
        assert!(matches!(
            decode::<1>(key, &longer),
            Err(FrameError::Length {
                declared: 7,
                actual: 8
            })
        ));
    }

    #[test]
    fn empty_payload_and_no_fields() {
        let value = encode(b"", [], b"", "test").unwrap();
        assert_eq!(value.len(), 8);
        assert_eq!(decode::<0>(b"", &value).unwrap(), ([], &b""[..]));
    }
}
