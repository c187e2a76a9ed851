//! `tf.train.Example` decoding and encoding, written against the protobuf wire format directly.
//!
//! ```text
//! Example  { Features features = 1; }
//! Features { map<string, Feature> feature = 1; }   // entries: { string key = 1; Feature value = 2; }
//! Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
//! BytesList { repeated bytes value = 1; }
//! FloatList { repeated float value = 1 [packed = true]; }
//! Int64List { repeated int64 value = 1 [packed = true]; }
//! ```
//! Both packed and unpacked encodings of the numeric lists are accepted, unknown fields are
//! skipped, and bytes features are zero-copy slices of the record payload.
//!
//! The decoder never panics on malformed input: every length is checked before it is used.

#![deny(clippy::indexing_slicing)]

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};

/// The value of one feature.
#[derive(Debug, Clone, PartialEq)]
pub enum Feature {
    Bytes(Vec<Bytes>),
    Float(Vec<f32>),
    Int64(Vec<i64>),
}

impl Feature {
    pub fn kind(&self) -> &'static str {
        match self {
            Feature::Bytes(_) => "bytes",
            Feature::Float(_) => "float",
            Feature::Int64(_) => "int64",
        }
    }
}

/// A decoded `tf.train.Example`: named features.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Example {
    pub features: BTreeMap<String, Feature>,
}

/// Why a payload is not a valid Example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed tf.train.Example: {0}")]
pub struct ExampleError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ExampleError> {
    Err(ExampleError(msg.into()))
}

const WIRE_VARINT: u64 = 0;
const WIRE_I64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_I32: u64 = 5;

fn read_varint(buf: &mut Bytes) -> Result<u64, ExampleError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return err("truncated varint");
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    err("varint longer than 10 bytes")
}

fn read_len_delimited(buf: &mut Bytes) -> Result<Bytes, ExampleError> {
    let len = read_varint(buf)?;
    if len > buf.remaining() as u64 {
        return err(format!(
            "field length {len} exceeds the {} bytes left",
            buf.remaining()
        ));
    }
    Ok(buf.split_to(len as usize))
}

fn skip_field(buf: &mut Bytes, wire_type: u64) -> Result<(), ExampleError> {
    let n = match wire_type {
        WIRE_VARINT => {
            read_varint(buf)?;
            return Ok(());
        }
        WIRE_I64 => 8,
        WIRE_LEN => {
            read_len_delimited(buf)?;
            return Ok(());
        }
        WIRE_I32 => 4,
        other => return err(format!("unsupported wire type {other}")),
    };
    if buf.remaining() < n {
        return err("truncated fixed-width field");
    }
    buf.advance(n);
    Ok(())
}

/// Iterates the (field number, wire type) tags of a message, handing each field to `on_field`,
/// which must consume it.
fn for_each_field(
    mut buf: Bytes,
    mut on_field: impl FnMut(u64, u64, &mut Bytes) -> Result<(), ExampleError>,
) -> Result<(), ExampleError> {
    while buf.has_remaining() {
        let tag = read_varint(&mut buf)?;
        let (field, wire_type) = (tag >> 3, tag & 7);
        if field == 0 {
            return err("field number 0");
        }
        on_field(field, wire_type, &mut buf)?;
    }
    Ok(())
}

impl Example {
    /// Decodes a serialized Example. Bytes features borrow from `payload`.
    pub fn decode(payload: Bytes) -> Result<Example, ExampleError> {
        let mut example = Example::default();
        for_each_field(payload, |field, wire, buf| {
            if field == 1 && wire == WIRE_LEN {
                let features = read_len_delimited(buf)?;
                decode_features(features, &mut example.features)
            } else {
                skip_field(buf, wire)
            }
        })?;
        Ok(example)
    }

    /// Encodes the Example in the canonical form TensorFlow writes (packed numeric lists,
    /// features in key order).
    pub fn encode(&self) -> Vec<u8> {
        let mut features = Vec::new();
        for (key, feature) in &self.features {
            let mut entry = Vec::new();
            put_len_field(&mut entry, 1, key.as_bytes());
            put_len_field(&mut entry, 2, &encode_feature(feature));
            put_len_field(&mut features, 1, &entry);
        }
        let mut out = Vec::new();
        put_len_field(&mut out, 1, &features);
        out
    }

    pub fn get(&self, key: &str) -> Option<&Feature> {
        self.features.get(key)
    }
}

fn decode_features(buf: Bytes, out: &mut BTreeMap<String, Feature>) -> Result<(), ExampleError> {
    for_each_field(buf, |field, wire, buf| {
        if field != 1 || wire != WIRE_LEN {
            return skip_field(buf, wire);
        }
        let entry = read_len_delimited(buf)?;
        let mut key = None;
        let mut value = None;
        for_each_field(entry, |field, wire, buf| match (field, wire) {
            (1, WIRE_LEN) => {
                let raw = read_len_delimited(buf)?;
                key = Some(
                    String::from_utf8(raw.to_vec())
                        .map_err(|_| ExampleError("feature key is not UTF-8".into()))?,
                );
                Ok(())
            }
            (2, WIRE_LEN) => {
                value = Some(decode_feature(read_len_delimited(buf)?)?);
                Ok(())
            }
            _ => skip_field(buf, wire),
        })?;
        let Some(key) = key else {
            return err("feature map entry without a key");
        };
        // A map entry without a value holds the default (an empty Feature); TensorFlow treats it
        // as an empty list.
        out.insert(key, value.unwrap_or(Feature::Bytes(Vec::new())));
        Ok(())
    })
}

fn decode_feature(buf: Bytes) -> Result<Feature, ExampleError> {
    let mut feature = Feature::Bytes(Vec::new());
    for_each_field(buf, |field, wire, buf| {
        if wire != WIRE_LEN {
            return skip_field(buf, wire);
        }
        let list = read_len_delimited(buf)?;
        feature = match field {
            1 => Feature::Bytes(decode_bytes_list(list)?),
            2 => Feature::Float(decode_float_list(list)?),
            3 => Feature::Int64(decode_int64_list(list)?),
            _ => return Ok(()),
        };
        Ok(())
    })?;
    Ok(feature)
}

fn decode_bytes_list(buf: Bytes) -> Result<Vec<Bytes>, ExampleError> {
    let mut values = Vec::new();
    for_each_field(buf, |field, wire, buf| {
        if field == 1 && wire == WIRE_LEN {
            values.push(read_len_delimited(buf)?);
            Ok(())
        } else {
            skip_field(buf, wire)
        }
    })?;
    Ok(values)
}

fn decode_float_list(buf: Bytes) -> Result<Vec<f32>, ExampleError> {
    let mut values = Vec::new();
    for_each_field(buf, |field, wire, buf| match (field, wire) {
        (1, WIRE_LEN) => {
            let mut packed = read_len_delimited(buf)?;
            if packed.remaining() % 4 != 0 {
                return err("packed float list length is not a multiple of 4");
            }
            while packed.has_remaining() {
                values.push(packed.get_f32_le());
            }
            Ok(())
        }
        (1, WIRE_I32) => {
            if buf.remaining() < 4 {
                return err("truncated float");
            }
            values.push(buf.get_f32_le());
            Ok(())
        }
        _ => skip_field(buf, wire),
    })?;
    Ok(values)
}

fn decode_int64_list(buf: Bytes) -> Result<Vec<i64>, ExampleError> {
    let mut values = Vec::new();
    for_each_field(buf, |field, wire, buf| match (field, wire) {
        (1, WIRE_LEN) => {
            let mut packed = read_len_delimited(buf)?;
            while packed.has_remaining() {
                values.push(read_varint(&mut packed)? as i64);
            }
            Ok(())
        }
        (1, WIRE_VARINT) => {
            values.push(read_varint(buf)? as i64);
            Ok(())
        }
        _ => skip_field(buf, wire),
    })?;
    Ok(values)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_len_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn encode_feature(feature: &Feature) -> Vec<u8> {
    let mut list = Vec::new();
    let field = match feature {
        Feature::Bytes(values) => {
            for v in values {
                put_len_field(&mut list, 1, v);
            }
            1
        }
        Feature::Float(values) => {
            let packed: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            put_len_field(&mut list, 1, &packed);
            2
        }
        Feature::Int64(values) => {
            let mut packed = Vec::new();
            for &v in values {
                put_varint(&mut packed, v as u64);
            }
            put_len_field(&mut list, 1, &packed);
            3
        }
    };
    let mut out = Vec::new();
    put_len_field(&mut out, field, &list);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Example {
        let mut e = Example::default();
        e.features.insert(
            "image/encoded".into(),
            Feature::Bytes(vec![Bytes::from_static(b"\xff\xd8jpeg")]),
        );
        e.features
            .insert("image/class/label".into(), Feature::Int64(vec![-3, 154]));
        e.features
            .insert("weights".into(), Feature::Float(vec![0.5, -1.25]));
        e
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let decoded = Example::decode(Bytes::from(e.encode())).unwrap();
        assert_eq!(decoded, e);
    }

    #[test]
    fn unpacked_numeric_lists_decode() {
        // Int64List { value: 7 } unpacked, FloatList { value: 2.0 } unpacked.
        let mut int_list = Vec::new();
        put_varint(&mut int_list, 1 << 3);
        put_varint(&mut int_list, 7);
        let mut feature = Vec::new();
        put_len_field(&mut feature, 3, &int_list);
        assert_eq!(
            decode_feature(Bytes::from(feature)).unwrap(),
            Feature::Int64(vec![7])
        );
        let mut float_list = vec![(1 << 3) | 5];
        float_list.extend_from_slice(&2.0f32.to_le_bytes());
        let mut feature = Vec::new();
        put_len_field(&mut feature, 2, &float_list);
        assert_eq!(
            decode_feature(Bytes::from(feature)).unwrap(),
            Feature::Float(vec![2.0])
        );
    }

    #[test]
    fn truncations_are_errors_not_panics() {
        let bytes = sample().encode();
        for cut in 1..bytes.len() {
            // Any prefix either fails or decodes to fewer features; it must never panic.
            if let Ok(e) = Example::decode(Bytes::copy_from_slice(&bytes[..cut])) {
                assert!(e != sample());
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Example::decode(Bytes::from(data));
        }
    }
}
