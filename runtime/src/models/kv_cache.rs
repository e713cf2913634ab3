//! Per-layer keys and values for a batch of sequences, with the position of every cached key
//! (-1 for padding). Sequences of different lengths share one batch by left-padding; rows are
//! merged when sequences join and selected away when they leave.
use tch::{Kind, Tensor};

pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    key_positions: Option<Tensor>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache { layers: (0..num_layers).map(|_| None).collect(), key_positions: None }
    }

    /// A cache that starts with given per-layer keys and values `[B, kv_heads, m, head_dim]`
    /// at positions `0..m` (prefix-tuning's learned key/value prefixes).
    pub fn with_prefix(kv: Vec<(Tensor, Tensor)>) -> Self {
        let positions = kv.first().map(|(k, _)| {
            let (b, m) = (k.size()[0], k.size()[2]);
            Tensor::arange(m, (Kind::Int64, k.device())).unsqueeze(0).repeat([b, 1])
        });
        KvCache { layers: kv.into_iter().map(Some).collect(), key_positions: positions }
    }

    /// Number of cached positions (padding included).
    pub fn len(&self) -> i64 {
        self.key_positions.as_ref().map_or(0, |p| p.size()[1])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn batch_size(&self) -> i64 {
        self.key_positions.as_ref().map_or(0, |p| p.size()[0])
    }

    /// Positions of all keys after appending `positions` `[B, T]` (not stored until the forward
    /// pass completes).
    pub(crate) fn extend_positions(&self, positions: &Tensor) -> Tensor {
        match &self.key_positions {
            Some(prev) => Tensor::cat(&[prev, positions], 1),
            None => positions.shallow_clone(),
        }
    }

    pub(crate) fn set_positions(&mut self, positions: Tensor) {
        self.key_positions = Some(positions);
    }

    pub(crate) fn layer_mut(&mut self, i: usize) -> &mut Option<(Tensor, Tensor)> {
        &mut self.layers[i]
    }

    /// Keys and values `[B, kv_heads, len, head_dim]` cached for layer `i` (rope already applied
    /// to the keys), e.g. to reuse them as a `Prefix::KeyValues`. None before the first forward.
    pub fn layer(&self, i: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(i).and_then(Option::as_ref)
    }

    /// The largest cached position of each row `[B]` (-1 for an empty row).
    pub fn max_positions(&self) -> Option<Tensor> {
        self.key_positions.as_ref().map(|p| p.amax(1, false))
    }

    /// Stacks caches of single or several rows into one batch, left-padding shorter ones.
    pub fn merge(caches: Vec<KvCache>) -> KvCache {
        let target = caches.iter().map(KvCache::len).max().unwrap_or(0);
        let num_layers = caches.first().map_or(0, |c| c.layers.len());
        let padded: Vec<KvCache> = caches.into_iter().map(|c| c.left_pad(target)).collect();
        let positions: Vec<&Tensor> = padded.iter().filter_map(|c| c.key_positions.as_ref()).collect();
        let key_positions = (!positions.is_empty()).then(|| Tensor::cat(&positions, 0));
        let layers = (0..num_layers)
            .map(|l| {
                let ks: Vec<&Tensor> = padded.iter().filter_map(|c| c.layers[l].as_ref().map(|(k, _)| k)).collect();
                let vs: Vec<&Tensor> = padded.iter().filter_map(|c| c.layers[l].as_ref().map(|(_, v)| v)).collect();
                (!ks.is_empty()).then(|| (Tensor::cat(&ks, 0), Tensor::cat(&vs, 0)))
            })
            .collect();
        KvCache { layers, key_positions }
    }

    /// Keeps the rows `rows` (in that order).
    pub fn select(&self, rows: &[i64]) -> KvCache {
        let Some(pos) = &self.key_positions else {
            return KvCache::new(self.layers.len());
        };
        let index = Tensor::from_slice(rows).to_device(pos.device());
        let layers = self
            .layers
            .iter()
            .map(|l| l.as_ref().map(|(k, v)| (k.index_select(0, &index), v.index_select(0, &index))))
            .collect();
        let mut out = KvCache { layers, key_positions: Some(pos.index_select(0, &index)) };
        out.trim_padding();
        out
    }

    /// Drops leading columns that are padding in every row (left after a long row leaves).
    pub fn trim_padding(&mut self) {
        let Some(pos) = &self.key_positions else { return };
        let any_real = pos.ge(0).any_dims(0, false);
        let first_real = any_real.to_kind(Kind::Int64).argmax(0, false).int64_value(&[]);
        let has_real = any_real.any().int64_value(&[]) != 0;
        let drop = if has_real { first_real } else { 0 };
        if drop == 0 {
            return;
        }
        let keep = pos.size()[1] - drop;
        self.key_positions = Some(pos.narrow(1, drop, keep));
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.narrow(2, drop, keep);
            *v = v.narrow(2, drop, keep);
        }
    }

    fn left_pad(self, target: i64) -> KvCache {
        let pad = target - self.len();
        if pad <= 0 {
            return self;
        }
        let Some(pos) = self.key_positions else { return self };
        let filler = Tensor::full([pos.size()[0], pad], -1, (Kind::Int64, pos.device()));
        let key_positions = Some(Tensor::cat(&[filler, pos], 1));
        let layers = self
            .layers
            .into_iter()
            .map(|l| {
                l.map(|(k, v)| {
                    let s = k.size();
                    let zeros = Tensor::zeros([s[0], s[1], pad, s[3]], (k.kind(), k.device()));
                    (Tensor::cat(&[&zeros, &k], 2), Tensor::cat(&[&zeros, &v], 2))
                })
            })
            .collect();
        KvCache { layers, key_positions }
    }
}
