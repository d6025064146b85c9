//! The full HVQ-Trans network (`HVQ_TR_switch_OT` without its backbone).

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::decoder::Decoder;
use super::encoder::Encoder;
use super::layers::{Conv1x1, Linear};
use super::ot::ot_score;
use super::position::PositionEmbedding;
use super::quantizer::{Codebook, QuantizeOutput, quantize, straight_through};
use crate::config::HvqConfig;
use crate::error::{HvqError, Result};
use crate::weights::TensorMap;

/// Training or evaluation behaviour of the codebooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Codebooks are read only; the batch is quantised in one go.
    Eval,
    /// Codebooks follow the EMA, updated sample by sample in batch order.
    Train,
}

/// One VQ level's results.
pub type LevelOutput = QuantizeOutput;

/// Everything the forward pass produces (tokens are batch-first `[B, L, ·]`).
#[derive(Clone, Debug)]
pub struct HvqOutput {
    /// Projected tokens `[B, L, C]` (without positional embedding).
    pub src: Tensor<3>,
    /// Encoder outputs h1..hN, each `[B, L, C]`.
    pub hidden: Vec<Tensor<3>>,
    /// VQ results; index 0 is level 1 (input src), the last is the top level (input hN).
    pub levels: Vec<LevelOutput>,
    /// Input of level 1 (`concat(src, q_top)`), which the OT score uses.
    pub level1_input: Tensor<3>,
    /// Decoder output after the final LayerNorm, `[B, L, 2C]`.
    pub decoded: Tensor<3>,
    /// Reconstructed feature `[B, F, H, W]`.
    pub rec: Tensor<4>,
    /// Σ over levels of the batch-mean commitment, `[1]`.
    pub latent: Tensor<1>,
}

/// The reconstruction network. Field names are the official parameter names, except the
/// codebooks: `quantize_lists.{n-1}.{class}` holds `quantize_list_{n}.{class}`.
#[derive(Module, Debug)]
pub struct HvqModel {
    /// Input projection (1×1 conv, feature channels → C).
    pub quantize_conv_t: Conv1x1,
    /// Learned positional embedding.
    pub pos_embed: PositionEmbedding,
    /// Transformer encoder.
    pub encoder: Encoder,
    /// Codebooks per level (index 0 = level 1) and per class.
    pub quantize_lists: Vec<Vec<Codebook>>,
    /// Transformer decoder at 2C.
    pub decoder: Decoder,
    /// One expert output layer per class (2C → feature channels).
    pub output_proj_list: Vec<Linear>,
    #[module(skip)]
    config: HvqConfig,
}

impl HvqModel {
    /// Random init from a configuration.
    pub fn new(config: &HvqConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let c = config.embed_dim;
        let levels = config.vq_levels();
        let quantize_lists = (0..levels)
            .map(|level| {
                // The top level quantises hN (C wide); the others concat(h, q_top) (2C wide).
                let dim = if level == levels - 1 { c } else { 2 * c };
                (0..config.num_classes)
                    .map(|_| Codebook::new(dim, config.codes, device))
                    .collect()
            })
            .collect();
        Ok(Self {
            quantize_conv_t: Conv1x1::new(config.feature_channels, c, device),
            pos_embed: PositionEmbedding::new(config.feature_size, c, device),
            encoder: Encoder::new(config.enc_layers, c, config.heads, config.ffn_dim, device),
            quantize_lists,
            decoder: Decoder::new(
                config.dec_layers,
                2 * c,
                config.heads,
                config.ffn_dim,
                device,
            ),
            output_proj_list: (0..config.num_classes)
                .map(|_| Linear::new(2 * c, config.feature_channels, device))
                .collect(),
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HvqConfig {
        &self.config
    }

    fn check_classes(&self, classes: &[usize], batch: usize) -> Result<()> {
        if classes.len() != batch {
            return Err(HvqError::Config(format!(
                "{} class ids for a batch of {batch}",
                classes.len()
            )));
        }
        if let Some(&c) = classes.iter().find(|&&c| c >= self.config.num_classes) {
            return Err(HvqError::UnknownClass {
                given: c.to_string(),
                known: self.config.class_names.clone(),
            });
        }
        Ok(())
    }

    fn class_tensor(classes: &[usize], device: &Device) -> Tensor<1, Int> {
        let ids: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
        Tensor::from_data(TensorData::new(ids, [classes.len()]), device)
    }

    /// Codebooks of `level` for each sample: `[B, D, K]`.
    fn embeds_for(books: &[Codebook], classes: &Tensor<1, Int>) -> Tensor<3> {
        let all: Vec<Tensor<2>> = books.iter().map(|b| b.embed.val()).collect();
        Tensor::stack::<3>(all, 0).select(0, classes.clone())
    }

    /// Run the network on aligned features `[B, F, H, W]` with one class id per sample.
    ///
    /// In [`Mode::Train`] the codebooks are updated (EMA, sample by sample in batch order) as a
    /// side effect, exactly as the reference does; use [`Mode::Eval`] for inference.
    pub fn forward(
        &mut self,
        feature: Tensor<4>,
        classes: &[usize],
        mode: Mode,
    ) -> Result<HvqOutput> {
        match mode {
            Mode::Eval => self.forward_eval(feature, classes),
            Mode::Train => self.forward_train(feature, classes),
        }
    }

    /// Inference forward: codebooks read only, the whole batch quantised at once.
    pub fn forward_eval(&self, feature: Tensor<4>, classes: &[usize]) -> Result<HvqOutput> {
        let [b, _, _, _] = feature.dims();
        self.check_classes(classes, b)?;
        let class_ids = Self::class_tensor(classes, &feature.device());
        let books = &self.quantize_lists;
        Ok(self.forward_with(feature, &class_ids, |level, x| {
            quantize(x, Self::embeds_for(&books[level], &class_ids))
        }))
    }

    /// Training forward: the codebooks follow the EMA, sample by sample in batch order, so a later
    /// sample of the same class sees the codebook already updated by an earlier one (as the
    /// reference does).
    pub fn forward_train(&mut self, feature: Tensor<4>, classes: &[usize]) -> Result<HvqOutput> {
        let [b, _, _, _] = feature.dims();
        self.check_classes(classes, b)?;
        let class_ids = Self::class_tensor(classes, &feature.device());
        let mut books = std::mem::take(&mut self.quantize_lists);
        let decay = self.config.ema_decay;
        let eps = self.config.ema_eps;
        let out = self.forward_with(feature, &class_ids, |level, x| {
            // The sequential part (nearest codes, EMA) needs no gradient: run it on plain tensors,
            // then form the straight-through output and commitment for the batch in one go.
            let plain = x.clone().detach().without_autodiff();
            let mut codes = Vec::with_capacity(classes.len());
            let mut indices = Vec::with_capacity(classes.len());
            for (i, &c) in classes.iter().enumerate() {
                let xi = plain.clone().narrow(0, i, 1);
                let embed = books[level][c]
                    .embed
                    .val()
                    .without_autodiff()
                    .unsqueeze_dim(0);
                let out = quantize(xi.clone(), embed);
                let [_, l, d] = xi.dims();
                books[level][c].ema_update(
                    xi.reshape([l, d]),
                    out.indices.clone().reshape([l]),
                    decay,
                    eps,
                );
                codes.push(out.codes);
                indices.push(out.indices);
            }
            let q = Tensor::cat(codes, 0);
            let q = if x.is_autodiff() { q.autodiff() } else { q };
            let (quantized, diff) = straight_through(x, q.clone());
            QuantizeOutput {
                quantized,
                diff,
                indices: Tensor::cat(indices, 0),
                codes: q,
            }
        });
        self.quantize_lists = books;
        Ok(out)
    }

    /// Load every parameter and codebook from official names (`quantize_list_{n}.{c}.embed`, …).
    /// Tensors the model does not use (`input_proj.*`) are ignored.
    pub fn load_native(self, map: &TensorMap) -> Result<Self> {
        let mut ours = TensorMap::new(map.source());
        for name in map.names() {
            ours.insert(native_to_ours(name), map.get(name).expect("listed").clone());
        }
        ours.load_into(self)
    }

    /// Every parameter and codebook under its official name.
    pub fn to_native(&self) -> TensorMap {
        let ours = TensorMap::from_module(self, "hvq model");
        let mut native = TensorMap::new("hvq model");
        for name in ours.names() {
            native.insert(
                ours_to_native(name),
                ours.get(name).expect("listed").clone(),
            );
        }
        native
    }

    fn forward_with(
        &self,
        feature: Tensor<4>,
        class_ids: &Tensor<1, Int>,
        mut quant: impl FnMut(usize, Tensor<3>) -> QuantizeOutput,
    ) -> HvqOutput {
        let [b, f, h, w] = feature.dims();
        let src = self.quantize_conv_t.tokens(feature);
        let pos: Tensor<3> = self.pos_embed.forward().unsqueeze_dim(0);
        let hidden = self.encoder.forward(src.clone(), pos.clone());
        let levels_n = self.config.vq_levels();

        let mut levels: Vec<Option<QuantizeOutput>> = vec![None; levels_n];
        let top = quant(levels_n - 1, hidden[levels_n - 2].clone());
        let q_top = top.quantized.clone();
        levels[levels_n - 1] = Some(top);
        let mut level1_input = None;
        for level in (0..levels_n - 1).rev() {
            let below = if level == 0 {
                src.clone()
            } else {
                hidden[level - 1].clone()
            };
            let input = Tensor::cat(vec![below, q_top.clone()], 2);
            if level == 0 {
                level1_input = Some(input.clone());
            }
            levels[level] = Some(quant(level, input));
        }
        let levels: Vec<QuantizeOutput> = levels
            .into_iter()
            .map(|l| l.expect("every level ran"))
            .collect();

        // Memories from the level just under the top down to level 1.
        let memories: Vec<Tensor<3>> = (0..levels_n - 1)
            .rev()
            .map(|l| levels[l].quantized.clone())
            .collect();
        let pos2 = Tensor::cat(vec![pos.clone(), pos], 2);
        let decoded = self.decoder.forward(&memories, pos2);

        // Per-class expert, applied as one batched product.
        let weights: Vec<Tensor<2>> = self
            .output_proj_list
            .iter()
            .map(|e| e.weight.val())
            .collect();
        let biases: Vec<Tensor<1>> = self.output_proj_list.iter().map(|e| e.bias.val()).collect();
        let w_b = Tensor::stack::<3>(weights, 0).select(0, class_ids.clone()); // [B, F, 2C]
        let b_b: Tensor<3> = Tensor::stack::<2>(biases, 0)
            .select(0, class_ids.clone())
            .unsqueeze_dim(1); // [B, 1, F]
        let rec_tokens = decoded.clone().matmul(w_b.swap_dims(1, 2)) + b_b; // [B, L, F]
        let rec = rec_tokens.swap_dims(1, 2).reshape([b, f, h, w]);

        let latent = levels
            .iter()
            .map(|l| l.diff.clone().mean())
            .reduce(|a, b| a + b)
            .expect("at least one level");

        HvqOutput {
            src,
            hidden,
            levels,
            level1_input: level1_input.expect("level 1 ran"),
            decoded,
            rec,
            latent,
        }
    }

    /// OT score `[B, L]` of level 1 for the samples' classes.
    pub fn ot(&self, out: &HvqOutput, classes: &[usize]) -> Tensor<2> {
        let device = out.rec.device();
        let ids = Self::class_tensor(classes, &device);
        let embeds = Self::embeds_for(&self.quantize_lists[0], &ids);
        ot_score(
            out.level1_input.clone(),
            embeds,
            self.config.ot_temperature(),
        )
    }

    /// Replace one codebook tensor (used by tests and weight import).
    pub fn codebook_mut(&mut self, level: usize, class: usize) -> &mut Codebook {
        &mut self.quantize_lists[level][class]
    }

    /// Set a parameter-free buffer from host data.
    pub fn set_buffer<const D: usize>(slot: &mut Param<Tensor<D>>, value: Tensor<D>) {
        *slot = Param::from_tensor(value).set_require_grad(false);
    }
}

/// `quantize_list_{n}.rest` → `quantize_lists.{n-1}.rest`; other names unchanged.
fn native_to_ours(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("quantize_list_") {
        if let Some((n, tail)) = rest.split_once('.') {
            if let Ok(n) = n.parse::<usize>() {
                if n >= 1 {
                    return format!("quantize_lists.{}.{tail}", n - 1);
                }
            }
        }
    }
    name.to_string()
}

/// Inverse of [`native_to_ours`].
fn ours_to_native(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("quantize_lists.") {
        if let Some((n, tail)) = rest.split_once('.') {
            if let Ok(n) = n.parse::<usize>() {
                return format!("quantize_list_{}.{tail}", n + 1);
            }
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codebook_names_round_trip() {
        assert_eq!(
            native_to_ours("quantize_list_5.14.embed"),
            "quantize_lists.4.14.embed"
        );
        assert_eq!(
            ours_to_native("quantize_lists.0.2.cluster_size"),
            "quantize_list_1.2.cluster_size"
        );
        assert_eq!(
            native_to_ours("encoder.layers.0.norm1.weight"),
            "encoder.layers.0.norm1.weight"
        );
    }
}
