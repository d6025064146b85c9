//! Learned row/column positional embedding (`pos_embed.row_embed`, `pos_embed.col_embed`).

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};

use crate::weights::DerivedCache;

/// Wrapper so the parameter path is `row_embed.weight` like `nn.Embedding`.
#[derive(Module, Debug)]
pub struct EmbeddingTable {
    /// `(n, d)`.
    pub weight: Param<Tensor<2>>,
}

/// `pos[l = h·W + w] = concat(col[w], row[h])`.
#[derive(Module, Debug)]
pub struct PositionEmbedding {
    /// Indexed by h.
    pub row_embed: EmbeddingTable,
    /// Indexed by w.
    pub col_embed: EmbeddingTable,
    /// At inference (weights not tracked by autodiff), [`PositionEmbedding::tables`], made at
    /// the first forward and kept (not a parameter; emptied when the weights change: burn's
    /// parameter mapping, loading, device moves). They depend on the weights alone, and making
    /// them was four launches per batch.
    tables: DerivedCache<(Tensor<3>, Tensor<3>)>,
}

impl PositionEmbedding {
    /// U[0,1) init, as the reference.
    pub fn new(side: usize, dim: usize, device: &Device) -> Self {
        let table = || EmbeddingTable {
            weight: Param::from_tensor(Tensor::random(
                [side, dim / 2],
                Distribution::Uniform(0.0, 1.0),
                device,
            )),
        };
        Self {
            row_embed: table(),
            col_embed: table(),
            tables: DerivedCache::default(),
        }
    }

    /// The table as the network adds it, `[1, H·W, dim]`, and twice side by side,
    /// `[1, H·W, 2·dim]` (the decoder's width): kept at inference, made afresh in training (the
    /// gradient flows through the same operations as ever).
    pub fn tables(&self) -> (Tensor<3>, Tensor<3>) {
        let make = || {
            let pos: Tensor<3> = self.forward().unsqueeze_dim(0);
            let doubled = Tensor::cat(vec![pos.clone(), pos.clone()], 2);
            (pos, doubled)
        };
        if self.row_embed.weight.val().is_autodiff() {
            make()
        } else {
            self.tables.get_or_compute(make)
        }
    }

    /// The `[H·W, dim]` table.
    pub fn forward(&self) -> Tensor<2> {
        let row = self.row_embed.weight.val(); // [H, d/2]
        let col = self.col_embed.weight.val(); // [W, d/2]
        let [h, half] = row.dims();
        let [w, _] = col.dims();
        let col = col.unsqueeze_dim::<3>(0).expand([h, w, half]);
        let row = row.unsqueeze_dim::<3>(1).expand([h, w, half]);
        Tensor::cat(vec![col, row], 2).reshape([h * w, 2 * half])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::TensorMap;

    /// At inference the tables are kept: bit for bit the composed table and its doubled form,
    /// the same at the next call; loading other weights drops them (the next call gives the
    /// new weights' tables). Weights tracked by autodiff (training) are never kept.
    #[test]
    fn kept_tables_follow_the_weights() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        device.seed(29);
        let read = |t: Tensor<3>| crate::device::read_back(t).unwrap();
        let composed = |p: &PositionEmbedding| {
            let pos = p.forward().unsqueeze_dim::<3>(0);
            (
                read(pos.clone()),
                read(Tensor::cat(vec![pos.clone(), pos], 2)),
            )
        };
        let kept = |p: &PositionEmbedding| {
            let (pos, doubled) = p.tables();
            (read(pos), read(doubled))
        };
        let mut embedding = PositionEmbedding::new(3, 8, &device);
        assert!(!embedding.tables.is_filled());
        let first = kept(&embedding);
        assert!(embedding.tables.is_filled());
        assert_eq!(first, composed(&embedding));
        assert_eq!(kept(&embedding), first);
        let other = PositionEmbedding::new(3, 8, &device);
        embedding = TensorMap::from_module(&other, "other")
            .load_into(embedding)
            .unwrap();
        assert!(!embedding.tables.is_filled());
        assert_eq!(kept(&embedding), composed(&other));
        assert_ne!(kept(&embedding), first);
        let tracked = PositionEmbedding::new(3, 8, &device.autodiff());
        let (pos, _) = tracked.tables();
        assert!(pos.is_autodiff() && !tracked.tables.is_filled());
    }
}
