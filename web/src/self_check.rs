//! The page's backend self-check: the same photo through the model on the page's device and on a
//! CPU copy of the same weights, compared stage by stage. A GPU driver or shader compiler that
//! computes wrongly shows up here as the first stage that differs.

use burn::tensor::{Device, Tensor};
use hvq::device::read_back_async;
use hvq::{Detector, Result};
use serde::Serialize;

/// One stage's comparison.
#[derive(Debug, Serialize)]
pub struct StageDiff {
    /// Stage name.
    pub stage: String,
    /// Largest |device − CPU|.
    pub max_abs_diff: f32,
    /// Largest |CPU| (the scale the difference is relative to).
    pub max_abs: f32,
}

async fn diff<const D: usize>(stage: String, a: Tensor<D>, b: Tensor<D>) -> Result<StageDiff> {
    let a = read_back_async(a).await?;
    let b = read_back_async(b).await?;
    let max_abs_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let max_abs = b.iter().map(|y| y.abs()).fold(0.0f32, f32::max);
    Ok(StageDiff {
        stage,
        max_abs_diff,
        max_abs,
    })
}

/// Run `input` (a normalised `[1, 3, S, S]` image on the host) through `gpu` and `cpu` for
/// class `class`, comparing every backbone block, the aligned features, the encoder layers,
/// each VQ level and the reconstruction.
pub async fn compare(
    gpu: &Detector,
    cpu: &Detector,
    input: &[f32],
    size: usize,
    class: usize,
) -> Result<Vec<StageDiff>> {
    let on = |d: &Device| {
        Tensor::<4>::from_data(
            burn::tensor::TensorData::new(input.to_vec(), [1, 3, size, size]),
            d,
        )
    };
    let (xg, xc) = (on(&gpu.device()), on(&cpu.device()));
    let mut out = Vec::new();
    let blocks_g = gpu.backbone.all_stages(xg.clone());
    let blocks_c = cpu.backbone.all_stages(xc.clone());
    let last = gpu.config.backbone.taps.iter().copied().max().unwrap_or(0);
    for (i, (g, c)) in blocks_g
        .into_iter()
        .zip(blocks_c)
        .enumerate()
        .take(last + 2)
    {
        let name = if i == 0 {
            "backbone stem (BN)".to_string()
        } else {
            format!("backbone block {}", i - 1)
        };
        out.push(diff(name, g, c).await?);
    }
    let (fg, fc) = (gpu.features(xg), cpu.features(xc));
    out.push(diff("aligned features".into(), fg.clone(), fc.clone()).await?);
    // The model's forward, as inference runs it; its intermediate outputs are compared.
    let (og, sg) = gpu.score(fg.clone(), &[class])?;
    let (oc, sc) = cpu.score(fc.clone(), &[class])?;
    out.push(diff("input projection".into(), og.src.clone(), oc.src.clone()).await?);
    for (i, (g, c)) in og.hidden.iter().zip(&oc.hidden).enumerate() {
        out.push(diff(format!("encoder layer {}", i + 1), g.clone(), c.clone()).await?);
    }
    for (i, (g, c)) in og.levels.iter().zip(&oc.levels).enumerate() {
        out.push(
            diff(
                format!("VQ level {} indices", i + 1),
                g.indices.clone().float(),
                c.indices.clone().float(),
            )
            .await?,
        );
    }
    out.push(diff("decoder".into(), og.decoded.clone(), oc.decoded.clone()).await?);
    out.push(diff("reconstruction".into(), og.rec.clone(), oc.rec.clone()).await?);
    out.push(
        diff(
            "L2 map".into(),
            hvq::map::l2_map(og.rec.clone(), fg),
            hvq::map::l2_map(oc.rec.clone(), fc),
        )
        .await?,
    );
    out.push(
        diff(
            "OT score".into(),
            gpu.hvq.ot(&og, &[class]),
            cpu.hvq.ot(&oc, &[class]),
        )
        .await?,
    );
    out.push(diff("map 14×14".into(), sg.map14, sc.map14).await?);
    out.push(diff("image score".into(), sg.image, sc.image).await?);
    Ok(out)
}
