//! Prefill: the prompts of sequences that join the batch, run from scratch after their prefixes.
//! Sequences admitted together are prefilled together, left-padded to the longest, so that a
//! debate round's agents (or a benchmark's batch) take one forward pass instead of one each:
//! at 24 prompts this is the difference between 24 small matrix products per projection and
//! one large one.
use std::ops::Range;

use tch::{Kind, Tensor};

use super::request::Prefix;
use super::state::Active;
use crate::models::{KvCache, Transformer};

/// Most positions (padding included) in one batched prefill: bounds the activations of a pass.
const MAX_PREFILL_POSITIONS: usize = 4096;

/// One prefill row: a sequence and the tokens to run after its prefix.
pub(super) struct Row<'r> {
    pub seq: &'r Active,
    pub tokens: &'r [u32],
}

impl Row<'_> {
    fn prefix_len(&self) -> usize {
        self.seq.request.prefix.as_ref().map_or(0, |p| p.len() as usize)
    }

    /// Positions this row adds to the pass (a key/value prefix is already in its cache).
    fn len(&self) -> usize {
        match &self.seq.request.prefix {
            Some(Prefix::Embeddings(_)) => self.prefix_len() + self.tokens.len(),
            _ => self.tokens.len(),
        }
    }

    fn has_key_value_prefix(&self) -> bool {
        matches!(self.seq.request.prefix, Some(Prefix::KeyValues(_)))
    }
}

/// The outcome of one pass: the rows' cache (left-padded), the logits of each row's last position
/// `[B, vocab]` and the hidden states of `layers` there, one `[B, hidden]` tensor per layer.
pub(super) struct Prefilled {
    pub cache: KvCache,
    pub logits: Tensor,
    pub layers: Vec<usize>,
    pub states: Vec<Tensor>,
}

impl Prefilled {
    /// Row `row`'s states of `wanted` layers (each `[hidden]`), in that order.
    pub fn row_states(&self, wanted: &[usize], row: i64) -> Vec<Tensor> {
        wanted
            .iter()
            .filter_map(|l| self.layers.iter().position(|x| x == l).map(|j| self.states[j].get(row)))
            .collect()
    }
}

/// Splits sequences joining the batch (their prompts to run) into consecutive groups
/// prefilled together (see `ranges`).
pub(super) fn groups(seqs: &[Active]) -> Vec<Range<usize>> {
    let rows = seqs.iter().map(|seq| Row { seq, tokens: &seq.request.prompt });
    ranges(&rows.map(|r| (r.len(), r.has_key_value_prefix())).collect::<Vec<_>>())
}

/// Consecutive groups of rows given as (positions, alone): a row marked alone (a key/value
/// prefix starts a cache of its own) is a group by itself; a group stops before it exceeds
/// `MAX_PREFILL_POSITIONS` padded positions or before padding would be more than half of them
/// (a long prompt among short ones).
fn ranges(rows: &[(usize, bool)]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        if !rows[start].1 {
            let (mut longest, mut real) = (rows[start].0, rows[start].0);
            while let Some(&(len, _)) = rows.get(end).filter(|r| !r.1) {
                let (l, r) = (longest.max(len), real + len);
                let padded = l * (end + 1 - start);
                if padded > MAX_PREFILL_POSITIONS || padded > 2 * r {
                    break;
                }
                (longest, real) = (l, r);
                end += 1;
            }
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// Runs `rows` (one group of `groups`) in one forward pass, capturing `layers`.
pub(super) fn run(net: &Transformer, rows: &[Row], layers: &[usize]) -> Prefilled {
    let device = net.device();
    let longest = rows.iter().map(Row::len).max().unwrap_or(0) as i64;
    let mut cache = net.new_cache();
    let mut embeds = Vec::with_capacity(rows.len());
    let mut positions = Vec::with_capacity(rows.len());
    for row in rows {
        let ids: Vec<i64> = row.tokens.iter().map(|&t| i64::from(t)).collect();
        let mut e = net.embed(&Tensor::from_slice(&ids).to_device(device).unsqueeze(0)).squeeze_dim(0);
        let mut start = 0;
        match &row.seq.request.prefix {
            Some(Prefix::Embeddings(p)) => e = Tensor::cat(&[p.to_device(device).to_kind(net.kind()), e], 0),
            Some(Prefix::KeyValues(kv)) => {
                // `groups` puts such a row alone, so its cache is the pass's cache.
                let kv = kv.iter().map(|(k, v)| (to_net(net, k).unsqueeze(0), to_net(net, v).unsqueeze(0))).collect();
                cache = KvCache::with_prefix(kv);
                start = row.prefix_len() as i64;
            }
            None => {}
        }
        let len = e.size()[0];
        let pad = longest - len;
        if pad > 0 {
            e = Tensor::cat(&[Tensor::zeros([pad, e.size()[1]], (e.kind(), device)), e], 0);
        }
        let real = Tensor::arange_start(start, start + len, (Kind::Int64, device));
        positions.push(Tensor::cat(&[Tensor::full([pad], -1, (Kind::Int64, device)), real], 0));
        embeds.push(e);
    }
    let (hidden, states) = net.forward_embeds(&Tensor::stack(&embeds, 0), &Tensor::stack(&positions, 0), &mut cache, layers);
    let last = |t: &Tensor| t.select(1, -1);
    let logits = net.logits(&last(&hidden));
    Prefilled { cache, logits, layers: layers.to_vec(), states: states.iter().map(last).collect() }
}

fn to_net(net: &Transformer, t: &Tensor) -> Tensor {
    t.to_device(net.device()).to_kind(net.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lens: &[usize]) -> Vec<(usize, bool)> {
        lens.iter().map(|&l| (l, false)).collect()
    }

    #[test]
    fn similar_prompts_go_together() {
        assert_eq!(ranges(&plain(&[30, 32, 31, 40, 35])), vec![0..5]);
        assert_eq!(ranges(&plain(&[7])), vec![0..1]);
        assert!(ranges(&[]).is_empty());
    }

    #[test]
    fn a_long_prompt_among_short_ones_starts_a_group() {
        // [10, 10, 100]: 300 padded positions for 120 real ones.
        assert_eq!(ranges(&plain(&[10, 10, 100, 90])), vec![0..2, 2..4]);
        // At most half of the positions padding: [20, 20, 50] is 150 padded for 90 real ones.
        assert_eq!(ranges(&plain(&[20, 20, 50])), vec![0..3]);
        assert_eq!(ranges(&plain(&[10, 10, 50])), vec![0..2, 2..3]);
        // Two rows never pad more than half.
        assert_eq!(ranges(&plain(&[1, 100])), vec![0..2]);
    }

    #[test]
    fn key_value_prefixes_go_alone() {
        let rows = [(5, false), (5, true), (5, false), (5, false), (5, true)];
        assert_eq!(ranges(&rows), vec![0..1, 1..2, 2..4, 4..5]);
    }

    #[test]
    fn groups_stay_within_the_position_cap() {
        let rows = plain(&[1000; 10]);
        let got = ranges(&rows);
        assert_eq!(got, vec![0..4, 4..8, 8..10]);
        for g in &got {
            assert!(g.len() * 1000 <= MAX_PREFILL_POSITIONS);
        }
        // A prompt longer than the cap still runs, alone.
        assert_eq!(ranges(&plain(&[5000, 10])), vec![0..1, 1..2]);
    }
}
