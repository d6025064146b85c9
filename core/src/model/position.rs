//! Learned row/column positional embedding (`pos_embed.row_embed`, `pos_embed.col_embed`).

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};

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
