//! Hybrid ranking: the sparse (BM25) and dense candidate lists fused into one, here rather than
//! in the index, so that both stores rank alike and the weight is ours. Each list's scores are
//! divided by its best score (BM25 has no upper bound, cosine has one; dividing by the best puts
//! both on 0..1 without stretching a list whose candidates are all alike, as min-max would),
//! then summed with weights; a candidate missing from a list gets nothing from it.
use std::collections::HashMap;

use super::store::Hit;

/// How much each side counts in the fused score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusionWeights {
    pub sparse: f32,
    pub dense: f32,
}

impl FusionWeights {
    /// The dense list at `dense` (0 to 1), BM25 at the rest.
    pub fn dense_share(dense: f32) -> Self {
        Self {
            sparse: 1.0 - dense,
            dense,
        }
    }
}

impl Default for FusionWeights {
    fn default() -> Self {
        Self {
            sparse: 0.5,
            dense: 0.5,
        }
    }
}

/// The two lists fused and sorted best first (ties keep the sparse list's order, then the
/// dense list's).
pub fn fuse(sparse: Vec<Hit>, dense: Vec<Hit>, weights: FusionWeights) -> Vec<Hit> {
    let mut fused: Vec<(f32, usize, Hit)> = Vec::with_capacity(sparse.len() + dense.len());
    let mut at: HashMap<(u64, Option<String>), usize> = HashMap::new();
    for (hits, weight) in [(sparse, weights.sparse), (dense, weights.dense)] {
        let best = hits.iter().map(|h| h.score).fold(0.0f32, f32::max);
        for hit in hits {
            let share = if best > 0.0 {
                weight * hit.score.max(0.0) / best
            } else {
                0.0
            };
            let key = (hit.id, hit.learner.clone());
            match at.get(&key) {
                Some(&idx) => fused[idx].0 += share,
                None => {
                    at.insert(key, fused.len());
                    let order = fused.len();
                    fused.push((share, order, hit));
                }
            }
        }
    }
    fused.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    fused
        .into_iter()
        .map(|(score, _, mut hit)| {
            hit.score = score;
            hit
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::chunk::Chunk;

    fn hit(id: u64, score: f32) -> Hit {
        Hit {
            id,
            score,
            chunk: Chunk {
                source: format!("{id}.md"),
                course: "c".into(),
                chapter: "1".into(),
                chapter_title: "One".into(),
                title: "T".into(),
                heading_path: vec!["T".into()],
                url: format!("/c/{id}"),
                kind: "lesson".into(),
                chunk_idx: 0,
                text: String::new(),
            },
            learner: None,
        }
    }

    fn ids(hits: &[Hit]) -> Vec<u64> {
        hits.iter().map(|h| h.id).collect()
    }

    #[test]
    fn a_candidate_in_both_lists_beats_one_that_tops_only_one() {
        let sparse = vec![hit(1, 12.0), hit(2, 10.0), hit(3, 2.0)];
        let dense = vec![hit(4, 0.80), hit(2, 0.78), hit(5, 0.5)];
        let fused = fuse(sparse, dense, FusionWeights::default());
        assert_eq!(ids(&fused), [2, 1, 4, 5, 3]);
        assert!((fused[0].score - (0.5 * 10.0 / 12.0 + 0.5 * 0.78 / 0.80)).abs() < 1e-6);
    }

    #[test]
    fn the_weights_decide_between_the_two_tops() {
        let sparse = || vec![hit(1, 5.0), hit(2, 1.0)];
        let dense = || vec![hit(3, 0.9), hit(2, 0.1)];
        let toward_dense = FusionWeights {
            sparse: 0.3,
            dense: 0.7,
        };
        assert_eq!(ids(&fuse(sparse(), dense(), toward_dense))[0], 3);
        let toward_sparse = FusionWeights {
            sparse: 0.7,
            dense: 0.3,
        };
        assert_eq!(ids(&fuse(sparse(), dense(), toward_sparse))[0], 1);
    }

    #[test]
    fn one_empty_list_leaves_the_other_in_its_order() {
        let sparse = vec![hit(1, 3.0), hit(2, 2.0)];
        assert_eq!(
            ids(&fuse(sparse, Vec::new(), FusionWeights::default())),
            [1, 2]
        );
        assert!(fuse(Vec::new(), Vec::new(), FusionWeights::default()).is_empty());
    }

    #[test]
    fn the_same_point_of_two_learners_stays_two_hits() {
        let mut mine = hit(7, 1.0);
        mine.learner = Some("ada".into());
        let fused = fuse(vec![hit(7, 2.0)], vec![mine], FusionWeights::default());
        assert_eq!(fused.len(), 2);
    }
}
