//! Tensors as they leave the pipeline: a dtype, a shape and little-endian bytes in a shared
//! buffer (so an element moves from the decoder to the socket without copies).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Element types of output tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    #[serde(alias = "u8")]
    Uint8,
    #[serde(alias = "i64")]
    Int64,
    #[serde(alias = "f32")]
    Float32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::Uint8 => 1,
            DType::Int64 => 8,
            DType::Float32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::Uint8 => "uint8",
            DType::Int64 => "int64",
            DType::Float32 => "float32",
        }
    }

    /// Stable numeric code used by wire and cache formats.
    pub fn code(self) -> u32 {
        match self {
            DType::Uint8 => 1,
            DType::Int64 => 2,
            DType::Float32 => 3,
        }
    }

    pub fn from_code(code: u32) -> Option<DType> {
        match code {
            1 => Some(DType::Uint8),
            2 => Some(DType::Int64),
            3 => Some(DType::Float32),
            _ => None,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dense tensor: `data` holds `shape.iter().product() * dtype.size()` little-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Bytes,
}

/// Why bytes do not form a tensor of the claimed type and shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor of {dtype} {shape:?} needs {expected} bytes, got {actual}")]
pub struct TensorSizeError {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub expected: usize,
    pub actual: usize,
}

impl Tensor {
    /// Builds a tensor, checking that the bytes match dtype and shape.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Bytes) -> Result<Tensor, TensorSizeError> {
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX);
        if expected != data.len() {
            return Err(TensorSizeError {
                dtype,
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor { dtype, shape, data })
    }

    pub fn from_i64(values: &[i64], shape: Vec<usize>) -> Tensor {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor {
            dtype: DType::Int64,
            shape,
            data: Bytes::from(data),
        }
    }

    pub fn from_f32(values: &[f32], shape: Vec<usize>) -> Tensor {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor {
            dtype: DType::Float32,
            shape,
            data: Bytes::from(data),
        }
    }

    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Stacks tensors of equal dtype and shape along a new leading dimension.
    pub fn stack(parts: &[&Tensor]) -> Result<Tensor, String> {
        let Some(first) = parts.first() else {
            return Err("cannot stack zero tensors".into());
        };
        let mut data = Vec::with_capacity(first.data.len() * parts.len());
        for t in parts {
            if t.dtype != first.dtype || t.shape != first.shape {
                return Err(format!(
                    "cannot batch a {} {:?} tensor with a {} {:?} one",
                    t.dtype, t.shape, first.dtype, first.shape
                ));
            }
            data.extend_from_slice(&t.data);
        }
        let mut shape = Vec::with_capacity(first.shape.len() + 1);
        shape.push(parts.len());
        shape.extend_from_slice(&first.shape);
        Ok(Tensor {
            dtype: first.dtype,
            shape,
            data: Bytes::from(data),
        })
    }

    /// Bytes of row `i` of a batched tensor (its slice along the leading dimension).
    pub fn row(&self, i: usize) -> Option<Bytes> {
        let rows = *self.shape.first()?;
        if rows == 0 || i >= rows {
            return None;
        }
        let row_len = self.data.len() / rows;
        let start = i * row_len;
        Some(self.data.slice(start..start + row_len))
    }
}
