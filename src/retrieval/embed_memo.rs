//! The dense embedder shared by retrieval and the flag classifier, with a short memory: a
//! learner's question is embedded for the search and read again by the classifier beside the
//! answer, and each used to run the model on it. Texts of a question's size are kept (a few
//! thousand vectors at most); a text being embedded is embedded once, and whoever asks for it
//! meanwhile waits for that result instead of running the model again.
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::try_join_all;
use quick_cache::sync::Cache;

use super::embed::{DenseEmbedder, EmbedError};

/// Texts longer than this (a course chunk, a learner's file) pass straight through: they are
/// embedded once at ingest, never asked for again soon.
const MAX_MEMO_BYTES: usize = 2_000;
/// Batches larger than this (an ingest) pass straight through, batched by the model.
const MAX_MEMO_BATCH: usize = 8;
/// Vectors kept (384 floats each, with their text: about 4 MB at most).
const CAPACITY: usize = 1_024;

pub struct MemoEmbedder {
    inner: Arc<dyn DenseEmbedder>,
    vectors: Cache<String, Arc<Vec<f32>>>,
}

impl MemoEmbedder {
    pub fn new(inner: Arc<dyn DenseEmbedder>) -> Self {
        Self {
            inner,
            vectors: Cache::new(CAPACITY),
        }
    }

    async fn one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        if text.len() > MAX_MEMO_BYTES {
            return self.inner.embed_query(text).await;
        }
        let vector = self
            .vectors
            .get_or_insert_async(text, async {
                self.inner.embed_query(text).await.map(Arc::new)
            })
            .await?;
        Ok(vector.as_ref().clone())
    }
}

#[async_trait]
impl DenseEmbedder for MemoEmbedder {
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    fn id(&self) -> String {
        self.inner.id()
    }

    async fn embed_documents(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.len() > MAX_MEMO_BATCH || texts.iter().any(|t| t.len() > MAX_MEMO_BYTES) {
            return self.inner.embed_documents(texts).await;
        }
        try_join_all(texts.iter().map(|text| self.one(text))).await
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        self.one(text).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Counts the texts it embeds; each takes a while, so that calls overlap.
    #[derive(Default)]
    struct Counting {
        texts: AtomicUsize,
    }

    #[async_trait]
    impl DenseEmbedder for Counting {
        fn dimensions(&self) -> usize {
            2
        }
        fn id(&self) -> String {
            "counting".into()
        }
        async fn embed_documents(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
            let mut out = Vec::new();
            for text in texts {
                out.push(self.embed_query(&text).await?);
            }
            Ok(out)
        }
        async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
            self.texts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if text == "fail" {
                return Err(EmbedError::Embed("scripted".into()));
            }
            Ok(vec![text.len() as f32, 1.0])
        }
    }

    #[tokio::test]
    async fn a_question_read_by_retrieval_and_the_classifier_at_once_is_embedded_once() {
        let counting = Arc::new(Counting::default());
        let memo = MemoEmbedder::new(counting.clone());
        let question = "why does my while loop never stop?";
        let (search, classifier) = tokio::join!(
            memo.embed_query(question),
            memo.embed_documents(vec![question.to_string(), "my while loop".to_string()]),
        );
        let (search, classifier) = (search.unwrap(), classifier.unwrap());
        assert_eq!(search, classifier[0]);
        assert_eq!(classifier[1], vec![13.0, 1.0]);
        assert_eq!(counting.texts.load(Ordering::SeqCst), 2);
        memo.embed_query(question).await.unwrap();
        assert_eq!(counting.texts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn long_texts_and_ingest_batches_pass_through_and_failures_are_not_kept() {
        let counting = Arc::new(Counting::default());
        let memo = MemoEmbedder::new(counting.clone());
        let chunk = "x".repeat(MAX_MEMO_BYTES + 1);
        memo.embed_query(&chunk).await.unwrap();
        memo.embed_query(&chunk).await.unwrap();
        assert_eq!(counting.texts.load(Ordering::SeqCst), 2);
        let batch: Vec<String> = (0..=MAX_MEMO_BATCH).map(|i| format!("chunk {i}")).collect();
        memo.embed_documents(batch.clone()).await.unwrap();
        memo.embed_documents(batch).await.unwrap();
        assert_eq!(
            counting.texts.load(Ordering::SeqCst),
            2 + 2 * (MAX_MEMO_BATCH + 1)
        );
        assert!(memo.embed_query("fail").await.is_err());
        assert!(memo.embed_query("fail").await.is_err());
        assert_eq!(
            counting.texts.load(Ordering::SeqCst),
            4 + 2 * (MAX_MEMO_BATCH + 1)
        );
    }
}
