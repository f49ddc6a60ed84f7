//! A small GGUF (v2/v3) reader: metadata, tensor directory, and dequantization
//! of the tensor types SmolLM2's file uses (F32, F16, Q4_1, Q8_0) — plus a
//! writer, so tests can build small files of their own.
//!
//! Layout (little endian): `"GGUF"`, version `u32`, tensor count `u64`,
//! metadata count `u64`, the metadata key/values, the tensor infos (name,
//! dims with the contiguous dimension first, type, offset), then the tensor
//! data at `general.alignment` (default 32).

use std::collections::BTreeMap;
use std::path::Path;

use half::f16;

/// What can go wrong reading a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file (magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// A GGUF version this reader does not know.
    #[error("unsupported GGUF version {0}")]
    UnsupportedVersion(u32),
    /// The file ends before a header field or tensor's data.
    #[error("truncated GGUF file: {0}")]
    Truncated(String),
    /// A metadata value type tag outside the specification.
    #[error("unknown metadata value type {0}")]
    UnknownValueType(u32),
    /// A tensor type this reader cannot dequantize.
    #[error("tensor {name}: unsupported ggml type {ty}")]
    UnsupportedTensorType {
        /// Tensor name.
        name: String,
        /// The ggml type id.
        ty: u32,
    },
    /// A string that is not UTF-8, a count that cannot be right, and such.
    #[error("malformed GGUF file: {0}")]
    Malformed(String),
    /// A tensor or metadata key the caller needs is absent.
    #[error("missing {0}")]
    Missing(String),
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, if it is one of the integer types.
    pub fn as_u64(&self) -> Option<u64> {
        Some(match *self {
            Value::U8(v) => v as u64,
            Value::U16(v) => v as u64,
            Value::U32(v) => v as u64,
            Value::U64(v) => v,
            Value::I8(v) if v >= 0 => v as u64,
            Value::I16(v) if v >= 0 => v as u64,
            Value::I32(v) if v >= 0 => v as u64,
            Value::I64(v) if v >= 0 => v as u64,
            _ => return None,
        })
    }
    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The ggml tensor types this crate handles; others are read as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// 32-value blocks: f16 scale `d`, f16 min `m`, 16 bytes of 4-bit values; `x = q·d + m`.
    Q4_1,
    /// 32-value blocks: f16 scale `d`, 32 signed bytes; `x = q·d`.
    Q8_0,
    /// Any other type id (not dequantizable here).
    Other(u32),
}

impl GgmlType {
    /// From the ggml type id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            other => Self::Other(other),
        }
    }
    /// The ggml type id.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_1 => 3,
            Self::Q8_0 => 8,
            Self::Other(id) => id,
        }
    }
    /// (values per block, bytes per block), or `None` for unknown types.
    pub fn block(self) -> Option<(usize, usize)> {
        match self {
            Self::F32 => Some((1, 4)),
            Self::F16 => Some((1, 2)),
            Self::Q4_1 => Some((32, 20)),
            Self::Q8_0 => Some((32, 34)),
            Self::Other(_) => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, contiguous first (ggml `ne`): a `[out, in]` matrix is `[in, out]`.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
    /// True for a tensor without elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Size of the data in bytes, if the type is known.
    pub fn byte_len(&self) -> Option<usize> {
        let (vals, bytes) = self.ty.block()?;
        Some(self.len() / vals * bytes)
    }
}

/// A parsed GGUF file held in memory.
#[derive(Debug)]
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor directory, in file order.
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| GgufError::Truncated(format!("{what} at byte {}", self.pos)))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N, what)?.try_into().expect("length checked"))
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.b.len())
            .ok_or_else(|| GgufError::Truncated(format!("{what}: string of {len} bytes")))?;
        let s = self.take(len, what)?;
        String::from_utf8(s.to_vec())
            .map_err(|_| GgufError::Malformed(format!("{what}: string is not UTF-8")))
    }
    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>(what)?[0]),
            1 => Value::I8(self.arr::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.arr(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(what)?)),
            7 => Value::Bool(self.arr::<1>(what)?[0] != 0),
            8 => Value::String(self.string(what)?),
            9 => {
                if depth > 4 {
                    return Err(GgufError::Malformed(format!(
                        "{what}: arrays nested too deep"
                    )));
                }
                let ety = self.u32(what)?;
                let n = self.u64(what)?;
                // Every element takes at least one byte: a count beyond the
                // file's size is a lie, not a reason to allocate.
                if n > (self.b.len() - self.pos) as u64 {
                    return Err(GgufError::Truncated(format!("{what}: array of {n}")));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, what, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(what)?)),
            other => return Err(GgufError::UnknownValueType(other)),
        })
    }
}

impl GgufFile {
    /// Reads and parses a file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| GgufError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(bytes)
    }

    /// Parses a file already in memory.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, GgufError> {
        let mut c = Cursor { b: &bytes, pos: 0 };
        let magic = c.arr::<4>("magic")?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        if n_tensors > bytes.len() as u64 || n_kv > bytes.len() as u64 {
            return Err(GgufError::Truncated(format!(
                "{n_tensors} tensors / {n_kv} metadata entries in {} bytes",
                bytes.len()
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let nd = c.u32(&name)?;
            if nd > 8 {
                return Err(GgufError::Malformed(format!("{name}: {nd} dimensions")));
            }
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                dims.push(c.u64(&name)?);
            }
            let ty = GgmlType::from_id(c.u32(&name)?);
            let offset = c.u64(&name)?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let align = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32)
            .max(1) as usize;
        let data_start = c.pos.div_ceil(align) * align;
        let file = Self {
            version,
            metadata,
            tensors,
            bytes,
            data_start,
        };
        // Every tensor of a known type must lie inside the file.
        for t in &file.tensors {
            if t.dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .is_none()
            {
                return Err(GgufError::Malformed(format!(
                    "{}: dimensions overflow",
                    t.name
                )));
            }
            if let Some((vals, _)) = t.ty.block() {
                if t.len() % vals != 0 {
                    return Err(GgufError::Malformed(format!(
                        "{}: {} values is not a whole number of blocks",
                        t.name,
                        t.len()
                    )));
                }
                file.raw(t)?;
            }
        }
        Ok(file)
    }

    /// A tensor's directory entry.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required integer metadata value.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| GgufError::Missing(format!("metadata {key}")))
    }

    /// A required float metadata value.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| GgufError::Missing(format!("metadata {key}")))
    }

    /// A tensor's raw (still quantized) bytes.
    pub fn raw(&self, t: &TensorInfo) -> Result<&[u8], GgufError> {
        let len = t
            .byte_len()
            .ok_or_else(|| GgufError::UnsupportedTensorType {
                name: t.name.clone(),
                ty: t.ty.id(),
            })?;
        let start = usize::try_from(t.offset)
            .ok()
            .and_then(|o| o.checked_add(self.data_start))
            .ok_or_else(|| GgufError::Truncated(format!("tensor {}", t.name)))?;
        start
            .checked_add(len)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or_else(|| {
                GgufError::Truncated(format!(
                    "tensor {} ({len} bytes at {start}, file has {})",
                    t.name,
                    self.bytes.len()
                ))
            })
    }

    /// A tensor dequantized to f32, in ggml order (contiguous dimension first).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let t = self
            .tensor(name)
            .ok_or_else(|| GgufError::Missing(format!("tensor {name}")))?;
        let raw = self.raw(t)?;
        let mut out = vec![0.0; t.len()];
        dequantize_into(t.ty, raw, &mut out).map_err(|()| GgufError::UnsupportedTensorType {
            name: t.name.clone(),
            ty: t.ty.id(),
        })?;
        Ok(out)
    }

    /// Total size of the tensor data in bytes.
    pub fn data_len(&self) -> usize {
        self.bytes.len() - self.data_start
    }
}

/// Dequantizes `raw` (whole blocks of `ty`) into `out`; `Err` for types this
/// module does not know. `out.len()` must be the number of values.
#[allow(clippy::result_unit_err)]
#[inline(always)]
pub fn dequantize_into(ty: GgmlType, raw: &[u8], out: &mut [f32]) -> Result<(), ()> {
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(raw.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(raw.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(32).zip(raw.chunks_exact(20)) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
                for j in 0..16 {
                    o[j] = (b[4 + j] & 0x0f) as f32 * d + m;
                    o[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(raw.chunks_exact(34)) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                for j in 0..32 {
                    o[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
        }
        GgmlType::Other(_) => return Err(()),
    }
    Ok(())
}

/// Quantizes f32 values (a multiple of 32) to Q8_0 blocks, as ggml does.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for blk in x.chunks_exact(32) {
        let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(blk.iter().map(|v| ((v * id).round() as i8) as u8));
    }
    out
}

/// Quantizes f32 values (a multiple of 32) to Q4_1 blocks, as ggml does.
pub fn quantize_q4_1(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 20);
    for blk in x.chunks_exact(32) {
        let min = blk.iter().copied().fold(f32::INFINITY, f32::min);
        let max = blk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        for j in 0..16 {
            let lo = (((blk[j] - min) * id + 0.5) as u8).min(15);
            let hi = (((blk[j + 16] - min) * id + 0.5) as u8).min(15);
            out.push(lo | (hi << 4));
        }
    }
    out
}

/// Builds GGUF v3 files in memory (for tests and fixtures).
#[derive(Debug, Default)]
pub struct GgufWriter {
    kv: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a metadata entry.
    pub fn kv(mut self, key: &str, v: Value) -> Self {
        self.kv.push((key.to_string(), v));
        self
    }
    /// Adds a tensor with raw data already in `ty`'s encoding.
    pub fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, raw: Vec<u8>) -> Self {
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, raw));
        self
    }
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn s(out: &mut Vec<u8>, v: &str) {
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        fn tag(v: &Value) -> u32 {
            match v {
                Value::U8(_) => 0,
                Value::I8(_) => 1,
                Value::U16(_) => 2,
                Value::I16(_) => 3,
                Value::U32(_) => 4,
                Value::I32(_) => 5,
                Value::F32(_) => 6,
                Value::Bool(_) => 7,
                Value::String(_) => 8,
                Value::Array(_) => 9,
                Value::U64(_) => 10,
                Value::I64(_) => 11,
                Value::F64(_) => 12,
            }
        }
        fn val(out: &mut Vec<u8>, v: &Value) {
            match v {
                Value::U8(x) => out.push(*x),
                Value::I8(x) => out.push(*x as u8),
                Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::Bool(x) => out.push(*x as u8),
                Value::String(x) => s(out, x),
                Value::Array(a) => {
                    let et = a.first().map(tag).unwrap_or(4);
                    out.extend_from_slice(&et.to_le_bytes());
                    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
                    for e in a {
                        val(out, e);
                    }
                }
                Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            s(&mut out, k);
            out.extend_from_slice(&tag(v).to_le_bytes());
            val(&mut out, v);
        }
        let mut offset = 0u64;
        for (name, dims, ty, raw) in &self.tensors {
            s(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += (raw.len() as u64).div_ceil(32) * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        for (i, (_, _, _, raw)) in self.tensors.iter().enumerate() {
            out.extend_from_slice(raw);
            if i + 1 < self.tensors.len() {
                out.resize(out.len().div_ceil(32) * 32, 0);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_known_block() {
        // d = 0.5, m = -1: value = q * 0.5 - 1; low nibbles are values 0..16,
        // high nibbles 16..32.
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(0.5));
        b.extend_from_slice(&f16b(-1.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let mut out = [0f32; 32];
        dequantize_into(GgmlType::Q4_1, &b, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], j as f32 * 0.5 - 1.0);
            assert_eq!(out[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q8_0_known_block() {
        let mut b = Vec::new();
        b.extend_from_slice(&f16b(0.25));
        for j in 0..32i32 {
            b.push(((j - 16) * 4) as i8 as u8);
        }
        let mut out = [0f32; 32];
        dequantize_into(GgmlType::Q8_0, &b, &mut out).unwrap();
        for (j, o) in out.iter().enumerate() {
            assert_eq!(*o, (j as f32 - 16.0) * 4.0 * 0.25);
        }
    }

    #[test]
    fn f16_and_f32_known_values() {
        let vals = [0.0f32, 1.0, -2.5, 65504.0, 1.0e-3];
        let raw16: Vec<u8> = vals.iter().flat_map(|v| f16b(*v)).collect();
        let mut out = [0f32; 5];
        dequantize_into(GgmlType::F16, &raw16, &mut out).unwrap();
        for (o, v) in out.iter().zip(vals) {
            assert!((o - v).abs() <= v.abs() * 1e-3, "{o} vs {v}");
        }
        let raw32: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        dequantize_into(GgmlType::F32, &raw32, &mut out).unwrap();
        assert_eq!(out, vals);
    }

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
            .collect()
    }

    #[test]
    fn quantize_round_trip_within_step() {
        let x = ramp(256);
        let mut out = vec![0f32; 256];
        dequantize_into(GgmlType::Q8_0, &quantize_q8_0(&x), &mut out).unwrap();
        for (blk, ob) in x.chunks(32).zip(out.chunks(32)) {
            let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (a, b) in blk.iter().zip(ob) {
                assert!((a - b).abs() <= amax / 127.0 * 0.51 + 1e-3, "{a} {b}");
            }
        }
        dequantize_into(GgmlType::Q4_1, &quantize_q4_1(&x), &mut out).unwrap();
        for (blk, ob) in x.chunks(32).zip(out.chunks(32)) {
            let lo = blk.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = blk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for (a, b) in blk.iter().zip(ob) {
                assert!((a - b).abs() <= (hi - lo) / 15.0 * 0.51 + 1e-2, "{a} {b}");
            }
        }
    }

    fn sample_file() -> Vec<u8> {
        let x = ramp(64);
        GgufWriter::new()
            .kv("general.architecture", Value::String("llama".into()))
            .kv("llama.block_count", Value::U32(2))
            .kv(
                "tokenizer.ggml.tokens",
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            )
            .tensor("q8", &[32, 2], GgmlType::Q8_0, quantize_q8_0(&x))
            .tensor("q41", &[64], GgmlType::Q4_1, quantize_q4_1(&x))
            .tensor(
                "f32",
                &[4],
                GgmlType::F32,
                [1f32, 2.0, 3.0, 4.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            )
            .to_bytes()
    }

    #[test]
    fn parse_written_file() {
        let f = GgufFile::parse(sample_file()).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.get_u64("llama.block_count").unwrap(), 2);
        assert_eq!(
            f.get("general.architecture").and_then(Value::as_str),
            Some("llama")
        );
        assert_eq!(
            f.get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(f.tensor("q8").unwrap().dims, vec![32, 2]);
        assert_eq!(f.dequantize("f32").unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        let x = ramp(64);
        let q = f.dequantize("q41").unwrap();
        assert!(x.iter().zip(&q).all(|(a, b)| (a - b).abs() < 0.3));
        assert!(matches!(f.dequantize("nope"), Err(GgufError::Missing(_))));
    }

    #[test]
    fn bad_magic() {
        let mut b = sample_file();
        b[0] = b'X';
        assert!(matches!(GgufFile::parse(b), Err(GgufError::BadMagic(_))));
        assert!(matches!(
            GgufFile::parse(vec![]),
            Err(GgufError::Truncated(_))
        ));
    }

    #[test]
    fn bad_version() {
        let mut b = sample_file();
        b[4] = 9;
        assert!(matches!(
            GgufFile::parse(b),
            Err(GgufError::UnsupportedVersion(9))
        ));
    }

    #[test]
    fn truncated_anywhere() {
        let b = sample_file();
        // Cut inside the header, the tensor directory and the data.
        for cut in [3, 10, 30, 60, 150, b.len() - 20, b.len() - 1] {
            let r = GgufFile::parse(b[..cut].to_vec());
            assert!(
                matches!(r, Err(GgufError::Truncated(_))),
                "cut {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn unknown_tensor_type() {
        let b = GgufWriter::new()
            .tensor("q5k", &[256], GgmlType::Other(13), vec![0; 176])
            .to_bytes();
        let f = GgufFile::parse(b).unwrap();
        assert!(matches!(
            f.dequantize("q5k"),
            Err(GgufError::UnsupportedTensorType { ty: 13, .. })
        ));
    }

    #[test]
    fn unknown_value_type() {
        let mut b = GgufWriter::new().kv("k", Value::U32(1)).to_bytes();
        // The value type tag follows magic(4)+version(4)+counts(16)+key(8+1).
        b[33..37].copy_from_slice(&99u32.to_le_bytes());
        assert!(matches!(
            GgufFile::parse(b),
            Err(GgufError::UnknownValueType(99))
        ));
    }
}
