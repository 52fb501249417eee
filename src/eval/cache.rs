//! A dense embedder that remembers document vectors across eval runs, in a file under the data
//! directory keyed by the model's id and each text's hash: re-scoring after a change to BM25,
//! fusion or ranking then embeds only the questions, not every chunk again.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::Digest;

use crate::retrieval::embed::{DenseEmbedder, EmbedError};

pub struct CachedEmbedder {
    inner: Arc<dyn DenseEmbedder>,
    path: PathBuf,
    vectors: Mutex<HashMap<[u8; 16], Vec<f32>>>,
}

fn key(text: &str) -> [u8; 16] {
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

impl CachedEmbedder {
    /// Wraps `inner`, reading what an earlier run left in `dir` (a missing or unreadable file is
    /// an empty cache).
    pub fn open(inner: Arc<dyn DenseEmbedder>, dir: &std::path::Path) -> Self {
        let name: String = inner
            .id()
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '-' })
            .collect();
        let path = dir.join(format!("eval-vectors-{name}.bin"));
        let vectors = read(&path, inner.dimensions()).unwrap_or_default();
        Self {
            inner,
            path,
            vectors: Mutex::new(vectors),
        }
    }

    /// Writes the vectors back for the next run.
    pub fn save(&self) -> std::io::Result<()> {
        let vectors = self.vectors.lock().expect("cache lock").clone();
        let mut out = Vec::with_capacity(vectors.len() * (16 + 4 * self.inner.dimensions()));
        for (k, v) in &vectors {
            out.extend_from_slice(k);
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        std::fs::File::create(&self.path)?.write_all(&out)
    }
}

fn read(path: &std::path::Path, dim: usize) -> std::io::Result<HashMap<[u8; 16], Vec<f32>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let record = 16 + 4 * dim;
    let mut vectors = HashMap::new();
    for chunk in bytes.chunks_exact(record) {
        let mut k = [0u8; 16];
        k.copy_from_slice(&chunk[..16]);
        let v = chunk[16..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        vectors.insert(k, v);
    }
    Ok(vectors)
}

#[async_trait]
impl DenseEmbedder for CachedEmbedder {
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    fn id(&self) -> String {
        self.inner.id()
    }

    async fn embed_documents(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let missing: Vec<String> = {
            let cache = self.vectors.lock().expect("cache lock");
            texts
                .iter()
                .filter(|t| !cache.contains_key(&key(t)))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let fresh = self.inner.embed_documents(missing.clone()).await?;
            let mut cache = self.vectors.lock().expect("cache lock");
            for (text, vector) in missing.iter().zip(fresh) {
                cache.insert(key(text), vector);
            }
        }
        let cache = self.vectors.lock().expect("cache lock");
        Ok(texts.iter().map(|t| cache[&key(t)].clone()).collect())
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.inner.embed_query(text).await
    }
}
