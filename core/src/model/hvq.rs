//! The full HVQ-Trans network (`HVQ_TR_switch_OT` without its backbone), with the paper's
//! additions behind switches: a class-predicting head, the POT loss and the ablations of its
//! Table 1 (single VQ layer, shared codebooks, shared expert).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use super::batch_codes::BatchCodes;
use super::classifier::Classifier;
use super::decoder::Decoder;
use super::encoder::Encoder;
use super::layers::{Conv1x1, Linear};
use super::ot::ot_score;
use super::position::PositionEmbedding;
use super::quantizer::{Codebook, QuantizeOutput, quantize};
use super::sharded::Shard;
use super::slot_ids::Slots;
use crate::config::HvqConfig;
use crate::error::{HvqError, Result};
use crate::weights::{DerivedCache, TensorMap};

/// Training or evaluation behaviour of the codebooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Codebooks are read only; the batch is quantised in one go.
    Eval,
    /// Codebooks follow the EMA, updated sample by sample in batch order.
    Train,
}

/// The class of each sample of a batch at inference: listed by the caller, or chosen on the
/// device (the classifier's prediction, `Detector::score_resolved`) and read by the model
/// there, so that nothing is read back between the classifier and the scores.
#[derive(Clone, Debug)]
pub enum Classes {
    /// One class per sample.
    Listed(Vec<usize>),
    /// One class per sample as a device index tensor `[B]`, each below the model's class count.
    OnDevice(Box<Tensor<1, Int>>),
}

/// One VQ level's results.
pub type LevelOutput = QuantizeOutput;

/// Output of the encoder stage.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// Projected tokens `[B, L, C]`.
    pub src: Tensor<3>,
    /// Positional embedding `[1, L, C]`.
    pub pos: Tensor<3>,
    /// The positional embedding twice side by side, `[1, L, 2C]` (the decoder's).
    pub pos_doubled: Tensor<3>,
    /// Encoder outputs h1..hN.
    pub hidden: Vec<Tensor<3>>,
}

/// The share of its codebook's mean EMA count a code needs to count as in use
/// ([`HvqModel::codes_in_use`]).
pub const CODE_IN_USE_SHARE: f32 = 0.01;

/// Everything the forward pass produces (tokens are batch-first `[B, L, ·]`).
#[derive(Clone, Debug)]
pub struct HvqOutput {
    /// Projected tokens `[B, L, C]` (without positional embedding).
    pub src: Tensor<3>,
    /// Encoder outputs h1..hN, each `[B, L, C]`.
    pub hidden: Vec<Tensor<3>>,
    /// VQ results; index 0 is level 1 (input src), the last is the top level (input hN).
    pub levels: Vec<LevelOutput>,
    /// Each level's input (index as `levels`); the OT score and the POT loss use them.
    pub inputs: Vec<Tensor<3>>,
    /// Input of level 1 (`concat(src, q_top)`), which the OT score uses.
    pub level1_input: Tensor<3>,
    /// Decoder output after the final LayerNorm, `[B, L, 2C]`.
    pub decoded: Tensor<3>,
    /// Reconstructed feature `[B, F, H, W]`.
    pub rec: Tensor<4>,
    /// Class logits `[B, classes]` when the model has a classifier and the forward trains it
    /// (the classifier's loss needs them); `None` at inference, where the scores do not use them
    /// and a caller that wants the prediction asks [`HvqModel::classify`].
    pub class_logits: Option<Tensor<2>>,
    /// At inference, the codebooks level 1 was quantised with, which the OT score reads
    /// ([`HvqModel::ot_for`]: a batch whose codebooks were selected by class, listed or chosen
    /// on the device, does not select them again); `None` in training.
    pub level1_codes: Option<BatchCodes>,
}

impl HvqOutput {
    /// Σ over levels of the batch-mean commitment, `[1]` (the latent loss). Computed when asked:
    /// at inference nothing reads it, and its reductions kept the device busy after the map was
    /// read. In training on a GPU each mean is one autodiff operation whose backward is one
    /// launch ([`crate::kernels::mean_trained`]; burn's: three).
    pub fn latent(&self) -> Tensor<1> {
        self.levels
            .iter()
            .map(|l| l.diff.per_sample())
            .map(|diff| crate::kernels::mean_trained(&diff).unwrap_or_else(|| diff.mean()))
            .reduce(|a, b| a + b)
            .expect("at least one level")
    }
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
    /// Codebooks per level (index 0 = level 1) and per class (one shared without switching).
    pub quantize_lists: Vec<Vec<Codebook>>,
    /// Transformer decoder at 2C.
    pub decoder: Decoder,
    /// One expert output layer per class (2C → feature channels); one shared without switching.
    pub output_proj_list: Vec<Linear>,
    /// The paper's class-predicting head (absent in the released model).
    pub classifier: Option<Classifier>,
    /// At inference, every expert's weights `[E, F, 2C]` and biases `[E, 1, F]` stacked, from
    /// the first batch that mixes experts on (not a parameter; emptied when the weights change:
    /// burn's parameter mapping, loading, device moves).
    stacked_experts: DerivedCache<(Tensor<3>, Tensor<3>)>,
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
                // The top level (or the single level) quantises hN, C wide; the others
                // concat(h, q_top), 2C wide.
                let dim = if level == levels - 1 { c } else { 2 * c };
                (0..config.codebook_slots())
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
            output_proj_list: (0..config.expert_slots())
                .map(|_| Linear::new(2 * c, config.feature_channels, device))
                .collect(),
            classifier: config.classifier.as_ref().map(|k| {
                Classifier::new(
                    config.feature_channels,
                    k.hidden,
                    config.num_classes,
                    device,
                )
            }),
            stacked_experts: DerivedCache::default(),
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HvqConfig {
        &self.config
    }

    pub(super) fn check_classes(&self, classes: &[usize], batch: usize) -> Result<()> {
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

    /// The slot of each of `classes`: its class when the model keeps one codebook or expert
    /// per class (`switch`), else the shared slot 0.
    fn listed_slots(classes: &[usize], switch: bool) -> Vec<usize> {
        classes
            .iter()
            .map(|&c| if switch { c } else { 0 })
            .collect()
    }

    /// The codebook slot each of `classes` is quantised with (and whose EMA it moves).
    pub fn codebook_slots(&self, classes: &[usize]) -> Vec<usize> {
        Self::listed_slots(classes, self.config.ablation.switch_codebooks)
    }

    /// Expert slot per sample (its class, or 0 when the expert is shared).
    pub(super) fn expert_slots(&self, classes: &[usize]) -> Vec<usize> {
        Self::listed_slots(classes, self.config.ablation.switch_experts)
    }

    /// Class logits from aligned features `[B, F, H, W]` (spatially pooled), if the model has a
    /// classifier.
    pub fn classify(&self, feature: Tensor<4>) -> Option<Tensor<2>> {
        self.classifier.as_ref().map(|c| c.forward(feature))
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
        self.forward_eval_staged(feature, classes, &mut |_| {})
    }

    /// [`HvqModel::forward_eval`], calling `stage(name)` after each stage ("encoder", "vq",
    /// "decoder") so a benchmark can synchronise and time it.
    pub fn forward_eval_staged(
        &self,
        feature: Tensor<4>,
        classes: &[usize],
        stage: &mut dyn FnMut(&'static str),
    ) -> Result<HvqOutput> {
        self.forward_eval_for(feature, &Classes::Listed(classes.to_vec()), stage)
    }

    /// [`HvqModel::forward_eval_staged`] for classes listed or chosen on the device. Classes
    /// chosen on the device select the samples' codebooks and experts from their stacks (as a
    /// batch mixing listed classes does): the same values, bit for bit, as the classes listed.
    pub fn forward_eval_for(
        &self,
        feature: Tensor<4>,
        classes: &Classes,
        stage: &mut dyn FnMut(&'static str),
    ) -> Result<HvqOutput> {
        let [b, _, _, _] = feature.dims();
        match classes {
            Classes::Listed(classes) => self.check_classes(classes, b)?,
            Classes::OnDevice(ids) if ids.dims()[0] != b => {
                return Err(HvqError::Config(format!(
                    "{} class ids for a batch of {b}",
                    ids.dims()[0]
                )));
            }
            Classes::OnDevice(_) => {}
        }
        let book_slots = self.slots_for(classes, self.config.ablation.switch_codebooks);
        let expert_slots = self.slots_for(classes, self.config.ablation.switch_experts);
        let books = &self.quantize_lists;
        let mut level1_codes = None;
        let quantize_level = |level: usize, x| {
            let codes = BatchCodes::for_batch(&books[level], &book_slots);
            if level == 0 {
                level1_codes = Some(codes.clone());
            }
            quantize(x, codes)
        };
        let mut out = self.forward_with(feature, &expert_slots, 0.0, quantize_level, stage);
        out.level1_codes = level1_codes;
        Ok(out)
    }

    /// The codebook or expert slot of each of `classes`: its class when the model keeps one
    /// per class (`switch`), else the shared slot 0 (known to the host whatever the classes).
    fn slots_for(&self, classes: &Classes, switch: bool) -> Slots {
        match (classes, switch) {
            (Classes::Listed(classes), _) => Slots::Listed(Self::listed_slots(classes, switch)),
            (Classes::OnDevice(ids), true) => Slots::OnDevice(ids.clone()),
            (Classes::OnDevice(ids), false) => Slots::Listed(vec![0; ids.dims()[0]]),
        }
    }

    /// Training forward: the codebooks follow the EMA, sample by sample in batch order, so a later
    /// sample of the same class sees the codebook already updated by an earlier one (as the
    /// reference does). The one-shard case of [`HvqModel::forward_train_sharded`].
    pub fn forward_train(&mut self, feature: Tensor<4>, classes: &[usize]) -> Result<HvqOutput> {
        let shard = Shard {
            feature,
            classes: classes.to_vec(),
        };
        let mut outputs = Self::forward_train_sharded(std::slice::from_mut(self), vec![shard])?;
        Ok(outputs.pop().expect("one output per shard"))
    }

    fn forward_with(
        &self,
        feature: Tensor<4>,
        expert_slots: &Slots,
        dropout: f64,
        quant: impl FnMut(usize, Tensor<3>) -> QuantizeOutput,
        stage: &mut dyn FnMut(&'static str),
    ) -> HvqOutput {
        let [b, f, h, w] = feature.dims();
        // Inference: the classifier's logits are nobody's input here (the scores do not use
        // them; `Detector::predicted_classes` runs the classifier itself when the class is left
        // to the model), and computing them anyway kept the device busy after the map was read.
        let class_logits = None;
        let encoded = self.encode_with(feature, dropout);
        stage("encoder");
        let (levels, inputs) = self.quantize_levels(&encoded, quant);
        stage("vq");
        let out = self.decode_output(
            encoded,
            levels,
            inputs,
            expert_slots,
            [b, f, h, w],
            dropout,
            class_logits,
        );
        stage("decoder");
        out
    }

    /// Stage 3 and the output: the decoder over the quantised `levels` (with their `inputs`),
    /// and everything gathered in one [`HvqOutput`] (the training and inference forwards, one
    /// shard or many, end here).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decode_output(
        &self,
        encoded: Encoded,
        levels: Vec<QuantizeOutput>,
        inputs: Vec<Tensor<3>>,
        expert_slots: &Slots,
        dims: [usize; 4],
        dropout: f64,
        class_logits: Option<Tensor<2>>,
    ) -> HvqOutput {
        let (decoded, rec) =
            self.decode_with(&levels, &encoded.pos_doubled, expert_slots, dims, dropout);
        HvqOutput {
            src: encoded.src,
            hidden: encoded.hidden,
            levels,
            level1_input: inputs[0].clone(),
            inputs,
            decoded,
            rec,
            class_logits,
            level1_codes: None,
        }
    }

    /// Stage 1: 1×1 projection to tokens and the encoder (inference: no dropout).
    pub fn encode(&self, feature: Tensor<4>) -> Encoded {
        self.encode_with(feature, 0.0)
    }

    pub(super) fn encode_with(&self, feature: Tensor<4>, dropout: f64) -> Encoded {
        let src = self.quantize_conv_t.tokens(feature);
        let (pos, pos_doubled) = self.pos_embed.tables();
        let hidden = self.encoder.forward(src.clone(), pos.clone(), dropout);
        Encoded {
            src,
            pos,
            pos_doubled,
            hidden,
        }
    }

    /// Stage 2: the hierarchy, top level first; `quant(level, input)` quantises one level.
    /// Returns the levels and their inputs (index 0 = level 1). Without the hierarchy there is
    /// one level, on hN.
    pub fn quantize_levels(
        &self,
        encoded: &Encoded,
        mut quant: impl FnMut(usize, Tensor<3>) -> QuantizeOutput,
    ) -> (Vec<QuantizeOutput>, Vec<Tensor<3>>) {
        let mut shards =
            quantize_levels_sharded(&[encoded], self.config.vq_levels(), |level, xs| {
                xs.into_iter().map(|x| quant(level, x)).collect()
            });
        shards.pop().expect("one shard")
    }

    /// Eval-mode quantisation of every level for the samples' classes.
    pub fn quantize_eval(
        &self,
        encoded: &Encoded,
        classes: &[usize],
    ) -> (Vec<QuantizeOutput>, Vec<Tensor<3>>) {
        let ids = self.codebook_slots(classes);
        let books = &self.quantize_lists;
        self.quantize_levels(encoded, |level, x| {
            quantize(x, BatchCodes::for_slots(&books[level], &ids))
        })
    }

    /// Stage 3: the decoder over the memories (level N−1 down to 1; the single level's codes,
    /// duplicated to 2C, in every layer without the hierarchy) and the experts, with the
    /// positional embedding doubled to 2C ([`Encoded::pos_doubled`]).
    /// Returns the decoder output `[B, L, 2C]` and the reconstruction `[B, F, H, W]`.
    pub fn decode(
        &self,
        levels: &[QuantizeOutput],
        pos_doubled: &Tensor<3>,
        expert_slots: &[usize],
        dims: [usize; 4],
    ) -> (Tensor<3>, Tensor<4>) {
        let slots = Slots::Listed(expert_slots.to_vec());
        self.decode_with(levels, pos_doubled, &slots, dims, 0.0)
    }

    pub(super) fn decode_with(
        &self,
        levels: &[QuantizeOutput],
        pos_doubled: &Tensor<3>,
        expert_slots: &Slots,
        [b, f, h, w]: [usize; 4],
        dropout: f64,
    ) -> (Tensor<3>, Tensor<4>) {
        let memories: Vec<Tensor<3>> = if self.config.ablation.hierarchical {
            (0..levels.len() - 1)
                .rev()
                .map(|l| levels[l].quantized.clone())
                .collect()
        } else {
            let q = levels[0].quantized.clone();
            vec![Tensor::cat(vec![q.clone(), q], 2); self.config.dec_layers]
        };
        let decoded = self
            .decoder
            .forward(&memories, pos_doubled.clone(), dropout);

        // Per-sample expert, applied as one batched product.
        let (w_b, b_b) = self.batch_experts(expert_slots); // [B, F, 2C], [B, 1, F]
        let rec_tokens = decoded.clone().matmul(w_b.swap_dims(1, 2)) + b_b; // [B, L, F]
        let rec = rec_tokens.swap_dims(1, 2).reshape([b, f, h, w]);
        (decoded, rec)
    }

    /// Each sample's expert (`slots`, one per sample) as weights `[B, F, 2C]` and biases
    /// `[B, 1, F]`. A batch of one expert reads it in place (a broadcast view); at inference a
    /// mixed batch, or one whose slots the device chose, selects its experts from all of them
    /// stacked once (two launches, not two copies per sample); in training the batch's experts
    /// are stacked as they always were (each copy's gradient added into its expert's: the
    /// training numbers stay as they are).
    fn batch_experts(&self, slots: &Slots) -> (Tensor<3>, Tensor<3>) {
        let tracked = self.output_proj_list[0].weight.val().is_autodiff();
        let stacked = || {
            if tracked {
                return Self::stack_experts(self.output_proj_list.iter());
            }
            self.stacked_experts
                .get_or_compute(|| Self::stack_experts(self.output_proj_list.iter()))
        };
        let listed = match slots {
            Slots::Listed(listed) => listed,
            Slots::OnDevice(ids) => {
                let (weights, biases) = stacked();
                let ids = (**ids).clone();
                return (weights.select(0, ids.clone()), biases.select(0, ids));
            }
        };
        let b = listed.len();
        let first = &self.output_proj_list[listed[0]];
        let [f, c2] = first.weight.dims();
        if !tracked && listed.windows(2).all(|w| w[0] == w[1]) {
            return (
                first.weight.val().unsqueeze::<3>().expand([b, f, c2]),
                first.bias.val().reshape([1, 1, f]).expand([b, 1, f]),
            );
        }
        if !tracked {
            let (weights, biases) = stacked();
            let ids = super::slot_ids::slot_ids(listed, &weights.device());
            return (weights.select(0, ids.clone()), biases.select(0, ids));
        }
        Self::stack_experts(listed.iter().map(|&s| &self.output_proj_list[s]))
    }

    /// `experts`' weights stacked `[E, F, 2C]` and biases `[E, 1, F]`.
    fn stack_experts<'a>(experts: impl Iterator<Item = &'a Linear>) -> (Tensor<3>, Tensor<3>) {
        let (weights, biases): (Vec<_>, Vec<_>) =
            experts.map(|e| (e.weight.val(), e.bias.val())).unzip();
        (
            Tensor::stack::<3>(weights, 0),
            Tensor::stack::<2>(biases, 0).unsqueeze_dim(1),
        )
    }

    /// Expert slot per sample for the samples' classes.
    pub fn experts_for(&self, classes: &[usize]) -> Vec<usize> {
        self.expert_slots(classes)
    }

    /// Codes in use per VQ level (level 1 first), averaged over the level's codebooks: codes
    /// whose EMA assignment count is at least [`CODE_IN_USE_SHARE`] of their codebook's mean
    /// count. An unused code's count shrinks by the EMA decay at each update, so a code unused
    /// for a few hundred updates drops out. Reads the counts back (a few KiB).
    pub fn codes_in_use(&self) -> Result<Vec<f64>> {
        self.quantize_lists
            .iter()
            .map(|books| {
                let mut in_use = 0usize;
                for book in books {
                    let counts = crate::device::read_back(book.cluster_size.val())?;
                    let mean = counts.iter().sum::<f32>() / counts.len().max(1) as f32;
                    in_use += counts
                        .iter()
                        .filter(|&&c| c > 0.0 && c >= CODE_IN_USE_SHARE * mean)
                        .count();
                }
                Ok(in_use as f64 / books.len().max(1) as f64)
            })
            .collect()
    }

    /// OT score `[B, L]` of level 1 for the samples' classes.
    pub fn ot(&self, out: &HvqOutput, classes: &[usize]) -> Tensor<2> {
        self.ot_for(out, &Classes::Listed(classes.to_vec()))
    }

    /// [`HvqModel::ot`] for classes listed or chosen on the device: those of the forward that
    /// gave `out`, whose level-1 codebooks it reads when it kept them (inference), instead of
    /// selecting them again.
    pub fn ot_for(&self, out: &HvqOutput, classes: &Classes) -> Tensor<2> {
        let selected;
        let codes = match &out.level1_codes {
            Some(codes) => codes,
            None => {
                let slots = self.slots_for(classes, self.config.ablation.switch_codebooks);
                selected = BatchCodes::for_batch(&self.quantize_lists[0], &slots);
                &selected
            }
        };
        ot_score(
            out.level1_input.clone(),
            codes,
            self.config.ot_temperature(),
        )
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
}

/// The hierarchy for several shards of a batch at once, level by level (top first), so that
/// `quant(level, inputs)` sees every shard's input of a level together (data-parallel training
/// quantises a level across replicas in one sample order). Per shard: the levels and their
/// inputs (index 0 = level 1).
pub(super) fn quantize_levels_sharded(
    encoded: &[&Encoded],
    levels_n: usize,
    mut quant: impl FnMut(usize, Vec<Tensor<3>>) -> Vec<QuantizeOutput>,
) -> Vec<(Vec<QuantizeOutput>, Vec<Tensor<3>>)> {
    let top_inputs: Vec<Tensor<3>> = encoded
        .iter()
        .map(|e| e.hidden[e.hidden.len() - 1].clone())
        .collect();
    let tops = quant(levels_n - 1, top_inputs.clone());
    let q_tops: Vec<Tensor<3>> = tops.iter().map(|t| t.quantized.clone()).collect();
    let mut levels: Vec<Vec<Option<QuantizeOutput>>> = vec![vec![None; levels_n]; encoded.len()];
    let mut inputs: Vec<Vec<Option<Tensor<3>>>> = vec![vec![None; levels_n]; encoded.len()];
    for (r, (top, input)) in tops.into_iter().zip(top_inputs).enumerate() {
        levels[r][levels_n - 1] = Some(top);
        inputs[r][levels_n - 1] = Some(input);
    }
    for level in (0..levels_n - 1).rev() {
        let level_inputs: Vec<Tensor<3>> = encoded
            .iter()
            .zip(&q_tops)
            .map(|(e, q_top)| {
                let below = if level == 0 {
                    e.src.clone()
                } else {
                    e.hidden[level - 1].clone()
                };
                Tensor::cat(vec![below, q_top.clone()], 2)
            })
            .collect();
        let outs = quant(level, level_inputs.clone());
        for (r, (out, input)) in outs.into_iter().zip(level_inputs).enumerate() {
            levels[r][level] = Some(out);
            inputs[r][level] = Some(input);
        }
    }
    levels
        .into_iter()
        .zip(inputs)
        .map(|(l, i)| {
            (
                l.into_iter().map(|l| l.expect("every level ran")).collect(),
                i.into_iter().map(|i| i.expect("every level ran")).collect(),
            )
        })
        .collect()
}

/// Batch positions grouped into rounds: round r holds, in batch order, the r-th sample of every
/// codebook slot that has at least r + 1 samples. Within a round no slot repeats.
pub(super) fn sample_rounds(slots: &[usize]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for (i, &s) in slots.iter().enumerate() {
        let r = seen.entry(s).or_insert(0);
        if rounds.len() <= *r {
            rounds.push(Vec::new());
        }
        rounds[*r].push(i);
        *r += 1;
    }
    rounds
}

/// `quantize_list_{n}.rest` → `quantize_lists.{n-1}.rest`; other names unchanged.
fn native_to_ours(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("quantize_list_")
        && let Some((n, tail)) = rest.split_once('.')
        && let Ok(n) = n.parse::<usize>()
        && n >= 1
    {
        return format!("quantize_lists.{}.{tail}", n - 1);
    }
    name.to_string()
}

/// Inverse of [`native_to_ours`].
fn ours_to_native(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("quantize_lists.")
        && let Some((n, tail)) = rest.split_once('.')
        && let Ok(n) = n.parse::<usize>()
    {
        return format!("quantize_list_{}.{tail}", n + 1);
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_keep_each_codebooks_sample_order_and_never_repeat_a_codebook() {
        let _generator = crate::test_rng::lock();
        assert_eq!(
            sample_rounds(&[0, 2, 1, 2, 2, 0]),
            vec![vec![0, 1, 2], vec![3, 5], vec![4]]
        );
        assert_eq!(sample_rounds(&[3, 3, 3]), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(sample_rounds(&[]), Vec::<Vec<usize>>::new());
    }

    /// The OT score reads the codebooks level 1 was quantised with: for a batch mixing classes,
    /// listed or chosen on the device, no selection of its own on wgpu; for a batch of one class
    /// the norms its codebook keeps (no reduction); and the values of the OT over the codebooks
    /// selected, norms computed, afresh (bit for bit: the same operations on the same codes).
    #[cfg(feature = "wgpu")]
    #[test]
    fn the_ot_reads_the_codebooks_level_1_was_quantised_with() {
        use crate::device::kernel_profile::KernelProfiler;
        use burn::tensor::{Distribution, TensorData};

        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let mut config = HvqConfig::official(24, vec!["a".into(), "b".into(), "c".into()]);
        (config.embed_dim, config.heads, config.ffn_dim) = (16, 2, 32);
        (config.enc_layers, config.dec_layers, config.codes) = (1, 1, 8);
        config.feature_size = 4;
        let model = HvqModel::new(&config, &device).unwrap();
        let feature = Tensor::<4>::random([3, 24, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let listed = [2usize, 0, 2];
        let ids = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 0, 2], [3]), &device);
        let read = |t: Tensor<2>| crate::device::read_back(t).unwrap();
        let fresh = |out: &HvqOutput, listed: &[usize]| {
            let codes = if listed == [1, 1, 1] {
                let book = &model.quantize_lists[0][1];
                BatchCodes::from_columns(book.embed.val().unsqueeze::<3>())
            } else {
                BatchCodes::for_slots(&model.quantize_lists[0], listed)
            };
            read(ot_score(
                out.level1_input.clone(),
                &codes,
                config.ot_temperature(),
            ))
        };
        for (classes, slots) in [
            (Classes::Listed(listed.to_vec()), listed),
            (Classes::OnDevice(Box::new(ids)), listed),
            (Classes::Listed(vec![1; 3]), [1; 3]),
        ] {
            let out = model
                .forward_eval_for(feature.clone(), &classes, &mut |_| {})
                .unwrap();
            let profiler = KernelProfiler::start("ot");
            let ot = read(model.ot_for(&out, &classes));
            let profile = profiler.finish();
            let names = profile.stages[0].names();
            assert!(
                !names.iter().any(|n| n.contains("Select")),
                "{classes:?}: {names:?}"
            );
            if slots == [1; 3] {
                assert!(
                    !names.iter().any(|n| n.contains("Reduce")),
                    "{classes:?}: {names:?}"
                );
            }
            let want = fresh(&out, &slots);
            assert!(
                ot.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{classes:?}: {ot:?} against {want:?}"
            );
        }
    }

    /// Inference runs no classifier (its logits are nobody's input there): on wgpu, scoring a
    /// model with a classifier launches exactly what the same model without one does, and the
    /// output carries no logits; the classifier still answers when asked.
    #[cfg(feature = "wgpu")]
    #[test]
    fn inference_runs_no_classifier() {
        use crate::config::ClassifierConfig;
        use crate::device::kernel_profile::KernelProfiler;
        use burn::tensor::Distribution;

        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let mut config = HvqConfig::official(24, vec!["a".into(), "b".into()]);
        (config.embed_dim, config.heads, config.ffn_dim) = (16, 2, 32);
        (config.enc_layers, config.dec_layers, config.codes) = (1, 1, 8);
        config.feature_size = 4;
        let with = {
            let mut c = config.clone();
            c.classifier = Some(ClassifierConfig::default());
            HvqModel::new(&c, &device).unwrap()
        };
        let without = HvqModel::new(&config, &device).unwrap();
        let feature = Tensor::<4>::random([2, 24, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let launches = |model: &HvqModel| {
            // Once unprofiled: cached codebook rows and the like are made on first use.
            let _ =
                crate::device::read_back(model.forward_eval(feature.clone(), &[0, 1]).unwrap().rec);
            let profiler = KernelProfiler::start("score");
            let out = model.forward_eval(feature.clone(), &[0, 1]).unwrap();
            let _ = crate::device::read_back(out.rec.clone());
            (profiler.finish().stages[0].launches, out)
        };
        let (with_launches, out) = launches(&with);
        let (without_launches, _) = launches(&without);
        assert!(out.class_logits.is_none());
        assert_eq!(with_launches, without_launches);
        assert_eq!(with.classify(feature).unwrap().dims(), [2, 2]);
    }

    /// At inference a batch's experts are the stacked copies the batch used to make, bit for
    /// bit: one expert as a view, several selected from all of them stacked once and kept
    /// (kept until the weights change: loading others gives theirs), on the CPU and on wgpu.
    /// Tracked weights (training) are stacked per batch as before.
    #[test]
    fn a_batch_gets_its_samples_experts() {
        let _generator = crate::test_rng::lock();
        experts_on(Device::flex());
        #[cfg(feature = "wgpu")]
        experts_on(crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap());
    }

    fn experts_on(device: Device) {
        device.seed(23);
        let mut config = HvqConfig::official(24, vec!["a".into(), "b".into(), "c".into()]);
        (config.embed_dim, config.heads, config.ffn_dim) = (16, 2, 32);
        (config.enc_layers, config.dec_layers, config.codes) = (1, 1, 8);
        config.feature_size = 4;
        let read = |t: Tensor<3>| crate::device::read_back(t).unwrap();
        let stacked = |model: &HvqModel, slots: &[usize]| {
            let experts: Vec<&Linear> = slots.iter().map(|&s| &model.output_proj_list[s]).collect();
            (
                read(Tensor::stack::<3>(
                    experts.iter().map(|e| e.weight.val()).collect(),
                    0,
                )),
                read(
                    Tensor::stack::<2>(experts.iter().map(|e| e.bias.val()).collect(), 0)
                        .unsqueeze_dim(1),
                ),
            )
        };
        let got = |model: &HvqModel, slots: &[usize]| {
            let (w, b) = model.batch_experts(&Slots::Listed(slots.to_vec()));
            (read(w), read(b))
        };
        let mut model = HvqModel::new(&config, &device).unwrap();
        for slots in [&[1, 1, 1][..], &[2, 0, 2, 1], &[0], &[2, 0, 2, 1]] {
            assert_eq!(
                got(&model, slots),
                stacked(&model, slots),
                "{slots:?} {device:?}"
            );
        }
        assert!(model.stacked_experts.is_filled());
        let slots = [2, 0, 2, 1];
        let before = got(&model, &slots);
        let other = HvqModel::new(&config, &device).unwrap();
        model = model.load_native(&other.to_native()).unwrap();
        assert!(!model.stacked_experts.is_filled());
        assert_eq!(got(&model, &slots), stacked(&other, &slots), "{device:?}");
        assert_ne!(stacked(&other, &slots), before);
        let tracked = HvqModel::new(&config, &device.clone().autodiff()).unwrap();
        let (w, _) = tracked.batch_experts(&Slots::Listed(slots.to_vec()));
        assert!(w.is_autodiff());
        assert!(!tracked.stacked_experts.is_filled());
        assert_eq!(read(w), stacked(&tracked, &slots).0);
    }

    #[test]
    fn codebook_names_round_trip() {
        let _generator = crate::test_rng::lock();
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
