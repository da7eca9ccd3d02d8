//! Nearest neighbours of a word in the teacher's own word-piece input embeddings: the word's
//! pieces are mean-pooled, and the candidates are the whole-word vocabulary entries ranked by
//! cosine similarity. TinyBERT's reference uses GloVe vectors here; no GloVe table is available
//! offline, so the teacher's embedding table stands in for it.

use crate::error::Result;
use crate::teacher::{top_k, MlmTeacher};

/// The candidate table: unit-length embeddings of the whole-word vocabulary entries.
pub struct Neighbours {
    dim: usize,
    table: Vec<f32>,
    ids: Vec<u32>,
    unit: Vec<f32>,
}

impl Neighbours {
    /// Builds the table from `teacher`'s input embeddings over the entries that
    /// [`MlmTeacher::is_neighbour_candidate`] accepts.
    pub fn new(teacher: &MlmTeacher) -> Result<Self> {
        let (table, dim) = teacher.word_embeddings()?;
        let vocab = table.len() / dim.max(1);
        let ids: Vec<u32> = (0..vocab as u32)
            .filter(|&id| teacher.is_neighbour_candidate(id))
            .collect();
        let mut unit = Vec::with_capacity(ids.len() * dim);
        for &id in &ids {
            let row = &table[id as usize * dim..(id as usize + 1) * dim];
            unit.extend(normalized(row));
        }
        Ok(Neighbours {
            dim,
            table,
            ids,
            unit,
        })
    }

    /// Number of candidate entries.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `k` candidates most similar (cosine) to the mean embedding of `pieces`, most similar
    /// first, leaving out those `skip` rejects (the word itself).
    pub fn nearest(&self, pieces: &[u32], k: usize, skip: impl Fn(u32) -> bool) -> Vec<u32> {
        let d = self.dim;
        let mut mean = vec![0f32; d];
        for &p in pieces {
            let row = &self.table[p as usize * d..(p as usize + 1) * d];
            mean.iter_mut().zip(row).for_each(|(m, r)| *m += r);
        }
        let q = normalized(&mean);
        let scores: Vec<f32> = (self.ids.iter().enumerate())
            .map(|(i, &id)| {
                if skip(id) {
                    f32::NEG_INFINITY
                } else {
                    dot(&q, &self.unit[i * d..(i + 1) * d])
                }
            })
            .collect();
        top_k(&scores, k)
            .into_iter()
            .filter(|&i| scores[i as usize].is_finite())
            .map(|i| self.ids[i as usize])
            .collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let n = dot(v, v).sqrt();
    let s = if n > 0.0 { 1.0 / n } else { 0.0 };
    v.iter().map(|x| x * s).collect()
}
