//! The training forward of one batch split into shards, each run by its own replica of the
//! network (data-parallel training, possibly on several devices).
//!
//! The codebooks are the one part of the forward that couples samples: they follow an EMA
//! sample by sample in batch order, so a sample is quantised with the codebook that every
//! earlier sample of its class in the batch has already moved. Across shards that order is kept
//! exactly: the batch is the concatenation of the shards (shard 0 first), the samples go in
//! rounds (round r holds the r-th sample of every codebook, see `sample_rounds`), and after each
//! round the tokens and chosen codes of all shards are gathered on the first replica, whose
//! codebooks make the one EMA update of that round. So N shards of B samples move the codebooks
//! exactly as one batch of N·B samples would, whatever the classes in it; the other replicas'
//! codebooks are neither read nor changed here (the trainer copies the first replica's state to
//! them after the optimiser step).

use burn::tensor::kind::Basic;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::batch_codes::BatchCodes;
use super::hvq::{HvqModel, HvqOutput, quantize_levels_sharded, sample_rounds};
use super::joined::{concat, stack};
use super::quantizer::{
    Codebook, Commitment, QuantizeOutput, Restart, ema_update, quantize, straight_through,
};
use super::slot_ids::Slots;
use crate::error::{HvqError, Result};

/// One shard of a training batch: aligned features `[B, F, H, W]` on its replica's device and
/// one class id per sample.
#[derive(Clone, Debug)]
pub struct Shard {
    /// Aligned features of the shard's samples.
    pub feature: Tensor<4>,
    /// Class id per sample.
    pub classes: Vec<usize>,
}

impl HvqModel {
    /// Training forward of one batch split into shards: `models[r]` runs `shards[r]` (on the
    /// device its parameters live on) and the codebooks of `models[0]` follow the EMA over the
    /// whole batch in shard order (module docs). Returns one output per shard. The replicas
    /// must hold the same parameters; their dropout masks come from their own devices'
    /// generators.
    pub fn forward_train_sharded(
        models: &mut [HvqModel],
        shards: Vec<Shard>,
    ) -> Result<Vec<HvqOutput>> {
        if models.is_empty() || models.len() != shards.len() {
            return Err(HvqError::Training(format!(
                "{} shards for {} replicas",
                shards.len(),
                models.len()
            )));
        }
        for (model, shard) in models.iter().zip(&shards) {
            let [b, _, _, _] = shard.feature.dims();
            if b == 0 {
                return Err(HvqError::Training("an empty shard".into()));
            }
            model.check_classes(&shard.classes, b)?;
        }
        let mut books = std::mem::take(&mut models[0].quantize_lists);
        let outputs = forward_shards(models, &mut books, shards);
        models[0].quantize_lists = books;
        Ok(outputs)
    }
}

/// [`HvqModel::forward_train_sharded`] once the EMA codebooks are out of the first replica (the
/// replicas are only read while the codebooks change).
fn forward_shards(
    models: &[HvqModel],
    books: &mut [Vec<Codebook>],
    shards: Vec<Shard>,
) -> Vec<HvqOutput> {
    let config = models[0].config().clone();
    let dropout = config.dropout;
    let slots: Vec<Vec<usize>> = models
        .iter()
        .zip(&shards)
        .map(|(m, s)| m.codebook_slots(&s.classes))
        .collect();
    let class_logits: Vec<Option<Tensor<2>>> = models
        .iter()
        .zip(&shards)
        .map(|(m, s)| m.classify(s.feature.clone()))
        .collect();
    let encoded: Vec<_> = models
        .iter()
        .zip(&shards)
        .map(|(m, s)| m.encode_with(s.feature.clone(), dropout))
        .collect();
    let encoded_refs: Vec<_> = encoded.iter().collect();
    let quantized = quantize_levels_sharded(&encoded_refs, config.vq_levels(), |level, xs| {
        quantize_rounds(
            &mut books[level],
            &slots,
            xs,
            config.ema_decay,
            config.ema_eps,
            config.codebook_restart,
        )
    });
    quantized
        .into_iter()
        .zip(encoded)
        .zip(models.iter().zip(shards).zip(class_logits))
        .map(
            |(((levels, inputs), encoded), ((model, shard), class_logits))| {
                model.decode_output(
                    encoded,
                    levels,
                    inputs,
                    &Slots::Listed(model.expert_slots(&shard.classes)),
                    shard.feature.dims(),
                    dropout,
                    class_logits,
                )
            },
        )
        .collect()
}

/// Quantise one level of every shard (`xs[r]` `[B_r, L, D]`, codebook slots `slots[r]`) with
/// the EMA codebooks `books` (on the first shard's device), round by round in batch order
/// (module docs). Each shard's codes are chosen on its own device; the EMA runs once per round on
/// the gathered tokens, exactly as for one batch holding all the shards.
fn quantize_rounds(
    books: &mut [Codebook],
    slots: &[Vec<usize>],
    xs: Vec<Tensor<3>>,
    decay: f32,
    eps: f32,
    restart: f32,
) -> Vec<QuantizeOutput> {
    // The sequential part (nearest codes, EMA) needs no gradient: run it on plain tensors, then
    // form the straight-through output and commitment of each shard in one go.
    let plain: Vec<Tensor<3>> = xs
        .iter()
        .map(|x| x.clone().detach().without_autodiff())
        .collect();
    let home = plain[0].device();
    // The batch: shard-major, (shard, row within the shard).
    let batch: Vec<(usize, usize)> = slots
        .iter()
        .enumerate()
        .flat_map(|(r, s)| (0..s.len()).map(move |i| (r, i)))
        .collect();
    let batch_slots: Vec<usize> = batch.iter().map(|&(r, i)| slots[r][i]).collect();
    let n = slots.len();
    let mut codes: Vec<Vec<Tensor<3>>> = vec![Vec::new(); n];
    let mut indices: Vec<Vec<Tensor<2, Int>>> = vec![Vec::new(); n];
    let mut prototypes: Vec<Vec<Tensor<3>>> = vec![Vec::new(); n];
    // Rows of each shard in the order they come out, round by round.
    let mut rows_out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for round in sample_rounds(&batch_slots) {
        let round_slots: Vec<usize> = round.iter().map(|&i| batch_slots[i]).collect();
        // A round's samples use distinct codebooks (`sample_rounds`), stacked one per sample,
        // as plain tensors like the rest of the round.
        let round_codes: Vec<Tensor<2>> = round_slots
            .iter()
            .map(|&s| books[s].embed.val().without_autodiff())
            .collect();
        let embeds = BatchCodes::from_columns(stack(round_codes));
        let (mut gathered_x, mut gathered_codes, mut gathered_errors) =
            (Vec::new(), Vec::new(), Vec::new());
        // A round lists samples in batch order, so each shard's members are one contiguous run.
        let mut start = 0;
        while start < round.len() {
            let r = batch[round[start]].0;
            let len = round[start..]
                .iter()
                .take_while(|&&i| batch[i].0 == r)
                .count();
            let rows: Vec<usize> = round[start..start + len]
                .iter()
                .map(|&i| batch[i].1)
                .collect();
            let device = plain[r].device();
            let x = plain[r].clone().select(0, row_ids(&rows, &device));
            let e = embeds.narrow(start, len).to_device(&device);
            let out = quantize(x.clone(), e.clone());
            if restart > 0.0 {
                // Each token's squared distance to its code: where dead codes restart.
                let [rows_n, tokens, _] = x.dims();
                let error = (x.clone() - out.codes.clone())
                    .powi_scalar(2)
                    .sum_dim(2)
                    .reshape([rows_n, tokens]);
                gathered_errors.push(error.to_device(&home));
            }
            gathered_x.push(x.to_device(&home));
            gathered_codes.push(out.indices.clone().to_device(&home));
            codes[r].push(out.codes);
            indices[r].push(out.indices);
            prototypes[r].push(e.per_sample_columns(len));
            rows_out[r].extend(rows);
            start += len;
        }
        let restart = (restart > 0.0).then(|| Restart {
            threshold: restart,
            errors: concat(gathered_errors),
        });
        ema_update(
            books,
            &round_slots,
            concat(gathered_x),
            concat(gathered_codes),
            decay,
            eps,
            restart,
        );
    }
    xs.into_iter()
        .enumerate()
        .map(|(r, x)| {
            // Rows came out round by round; put them back in the shard's order (nothing to do
            // when they came out in it, as with one round).
            let mut position = vec![0; rows_out[r].len()];
            for (out_row, &row) in rows_out[r].iter().enumerate() {
                position[row] = out_row;
            }
            let in_order = position.iter().enumerate().all(|(i, &p)| i == p);
            let back = (!in_order).then(|| row_ids(&position, &plain[r].device()));
            let q = in_shard_order(std::mem::take(&mut codes[r]), back.as_ref());
            let q = if x.is_autodiff() { q.autodiff() } else { q };
            let (quantized, diff) = straight_through(x, q.clone());
            QuantizeOutput {
                quantized,
                diff: Commitment::PerSample(diff),
                indices: in_shard_order(std::mem::take(&mut indices[r]), back.as_ref()),
                codes: q,
                prototypes: in_shard_order(std::mem::take(&mut prototypes[r]), back.as_ref()),
            }
        })
        .collect()
}

/// A shard's per-round outputs `parts` as one tensor in the shard's row order: rows picked by
/// `back` when they came out in another order.
fn in_shard_order<const D: usize, K: Basic>(
    parts: Vec<Tensor<D, K>>,
    back: Option<&Tensor<1, Int>>,
) -> Tensor<D, K> {
    let rows = concat(parts);
    match back {
        Some(back) => rows.select(0, back.clone()),
        None => rows,
    }
}

/// Row numbers as an index tensor on `device`.
fn row_ids(rows: &[usize], device: &Device) -> Tensor<1, Int> {
    let rows: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
    let n = rows.len();
    Tensor::from_data(TensorData::new(rows, [n]), device)
}
