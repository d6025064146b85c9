//! LayerNorm over the last axis as one autodiff operation on the CPU backend.
//!
//! burn 0.22's autodiff has no layer-norm operation of its own: a tracked `layer_norm` is
//! recorded as its decomposition (mean, subtract, square, mean, add ε, square root, divide, scale,
//! shift), each step with its own backward, about twenty passes over the activations per norm.
//! The official network has 21 of them (two per encoder layer at width C, three per decoder layer
//! and the final one at 2C). Here the forward is one pass per row that also keeps the normalised
//! values x̂ = (x − μ)/σ and 1/σ, and the backward one pass per row:
//!
//! `∂x = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ` with `g = ∂y ⊙ γ`, `∂γ = Σ_rows ∂y ⊙ x̂`,
//! `∂β = Σ_rows ∂y`.
//!
//! Rows are split into fixed blocks of [`ROWS_PER_TASK`] whatever the thread count; ∂γ and ∂β
//! are summed over rows in f64 (block partials added in block order) and rounded once, so they
//! do not depend on the machine's threads and hardly on how a batch is split across replicas. Applies where the fused softmax does (f32 tracked by autodiff on flex,
//! no gradient checkpointing). Plain f32 tensors on a GPU backend (inference) take one CubeCL
//! kernel (`gpu_layer_norm`), tracked ones the same formulas as one autodiff operation of three
//! CubeCL kernels (`gpu_layer_norm_autodiff`); everywhere else burn's own `layer_norm` runs (on
//! the CPU without autodiff that is burn-flex's fused kernel).

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType, Shape, Tensor};

/// Rows per parallel task (and per partial sum of ∂γ, ∂β).
const ROWS_PER_TASK: usize = 32;

/// `LayerNorm(x) = (x − mean)/√(var + eps) · gamma + beta` over the last axis of `x` (biased
/// variance), `gamma` and `beta` of the last axis' length. One fused autodiff operation on the
/// CPU backend under autodiff (module docs); burn's `layer_norm` elsewhere.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    // On a GPU backend, inference: one kernel (`gpu_layer_norm`); training: one autodiff
    // operation of three kernels (`gpu_layer_norm_autodiff`).
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(y) = super::gpu_layer_norm::layer_norm(&x, &gamma, &beta, eps)
        .or_else(|| super::gpu_layer_norm_autodiff::layer_norm(&x, &gamma, &beta, eps))
    {
        return y;
    }
    let row = x.dims()[D - 1];
    let fits = row > 0 && gamma.dims() == [row] && beta.dims() == [row];
    if !(fits && x.is_autodiff() && super::softmax_autodiff::applies(&x)) {
        return burn::tensor::module::layer_norm(x, gamma, Some(beta), eps);
    }
    let shape = x.shape();
    let [(x, xn), (gamma, gn), (beta, bn)] = [
        into_parts(x),
        into_parts(gamma.unsqueeze::<D>()),
        into_parts(beta.unsqueeze::<D>()),
    ];
    let gamma = values(&gamma);
    let beta = values(&beta);
    let input = x.to_contiguous();
    let xs = super::elements(&input);
    let mut y = vec![0f32; xs.len()];
    let mut xhat = vec![0f32; xs.len()];
    let mut rstd = vec![0f32; xs.len() / row];
    forward(
        xs, &mut y, &mut xhat, &mut rstd, &gamma, &beta, row, eps as f32,
    );
    drop(input);
    let out = FlexTensor::new(
        Bytes::from_elems(y),
        Layout::contiguous(shape.clone()),
        DType::F32,
    );
    let op = LayerNormOp { row };
    let out = match op
        .prepare::<NoCheckpointing>([xn, gn, bn])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            Saved {
                xhat,
                rstd,
                gamma,
                shape,
            },
            out,
        ),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive::<Autodiff<Flex, NoCheckpointing>>(out)
}

/// The tracked tensor's CPU value and its autodiff node.
fn into_parts<const D: usize>(t: Tensor<D>) -> (FlexTensor, NodeGuard) {
    match t.try_into_primitive::<Autodiff<Flex, NoCheckpointing>>() {
        Ok(t) => t.into_parts(),
        // `applies` checked the device; a mismatch here is a bug in that check.
        Err(e) => panic!("kernels: tracked CPU tensor expected: {e:?}"),
    }
}

/// A small tensor's values in logical order.
fn values(t: &FlexTensor) -> Vec<f32> {
    super::elements(&t.to_contiguous()).to_vec()
}

/// The autodiff node: parents x, γ, β (the last two broadcast to x's rank).
#[derive(Debug)]
struct LayerNormOp {
    row: usize,
}

/// What the backward needs: x̂, 1/σ per row, γ, and x's shape.
#[derive(Clone, Debug)]
struct Saved {
    xhat: Vec<f32>,
    rstd: Vec<f32>,
    gamma: Vec<f32>,
    shape: Shape,
}

impl Backward<Flex, 3> for LayerNormOp {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        let row = self.row;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let dy = super::elements(&grad);
        let mut dx = vec![0f32; dy.len()];
        let (dgamma, dbeta) = backward(dy, &saved, &mut dx, row);
        let rank = saved.shape.num_dims();
        let param_shape = Shape::from(
            (0..rank)
                .map(|i| if i + 1 == rank { row } else { 1 })
                .collect::<Vec<_>>(),
        );
        let tensor = |v: Vec<f32>, shape: Shape| {
            FlexTensor::new(Bytes::from_elems(v), Layout::contiguous(shape), DType::F32)
        };
        let [px, pg, pb] = ops.parents;
        if let Some(node) = px {
            grads.register::<Flex>(node.id, tensor(dx, saved.shape.clone()));
        }
        if let Some(node) = pg {
            grads.register::<Flex>(node.id, tensor(dgamma, param_shape.clone()));
        }
        if let Some(node) = pb {
            grads.register::<Flex>(node.id, tensor(dbeta, param_shape));
        }
    }
}

/// One block of the forward: `((x, y), (x̂, 1/σ))`.
type ForwardBlock<'a> = ((&'a [f32], &'a mut [f32]), (&'a mut [f32], &'a mut [f32]));
/// One block of the backward: `((∂y, ∂x), (x̂, 1/σ))`.
type BackwardBlock<'a> = ((&'a [f32], &'a mut [f32]), (&'a [f32], &'a [f32]));

/// The forward over all rows, in blocks across the thread pool.
#[allow(clippy::too_many_arguments)]
fn forward(
    x: &[f32],
    y: &mut [f32],
    xhat: &mut [f32],
    rstd: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    row: usize,
    eps: f32,
) {
    let block = ROWS_PER_TASK * row;
    let task = |((x, y), (xhat, rstd)): ForwardBlock| {
        isa::forward_rows(x, y, xhat, rstd, gamma, beta, row, eps)
    };
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        x.par_chunks(block)
            .zip(y.par_chunks_mut(block))
            .zip(
                xhat.par_chunks_mut(block)
                    .zip(rstd.par_chunks_mut(ROWS_PER_TASK)),
            )
            .for_each(task);
    }
    #[cfg(not(feature = "parallel"))]
    x.chunks(block)
        .zip(y.chunks_mut(block))
        .zip(xhat.chunks_mut(block).zip(rstd.chunks_mut(ROWS_PER_TASK)))
        .for_each(task);
}

/// `∂x` into `dx`; returns `(∂γ, ∂β)`: f64 sums over rows (the blocks' partials added in block
/// order), rounded once.
fn backward(dy: &[f32], saved: &Saved, dx: &mut [f32], row: usize) -> (Vec<f32>, Vec<f32>) {
    let block = ROWS_PER_TASK * row;
    let gamma = &saved.gamma;
    let task = |((dy, dx), (xhat, rstd)): BackwardBlock| {
        let mut partial = vec![0f64; 2 * row];
        let (dgamma, dbeta) = partial.split_at_mut(row);
        isa::backward_rows(dy, xhat, rstd, gamma, dx, dgamma, dbeta, row);
        partial
    };
    #[cfg(feature = "parallel")]
    let partials: Vec<Vec<f64>> = {
        use rayon::prelude::*;
        dy.par_chunks(block)
            .zip(dx.par_chunks_mut(block))
            .zip(
                saved
                    .xhat
                    .par_chunks(block)
                    .zip(saved.rstd.par_chunks(ROWS_PER_TASK)),
            )
            .map(task)
            .collect()
    };
    #[cfg(not(feature = "parallel"))]
    let partials: Vec<Vec<f64>> = dy
        .chunks(block)
        .zip(dx.chunks_mut(block))
        .zip(
            saved
                .xhat
                .chunks(block)
                .zip(saved.rstd.chunks(ROWS_PER_TASK)),
        )
        .map(task)
        .collect();
    let mut total = vec![0f64; 2 * row];
    for partial in &partials {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += p;
        }
    }
    let total: Vec<f32> = total.into_iter().map(|v| v as f32).collect();
    let (dgamma, dbeta) = total.split_at(row);
    (dgamma.to_vec(), dbeta.to_vec())
}

/// The row kernels compiled per instruction set and chosen at run time, like the other kernels
/// (`isa_dispatch!` in `super`).
mod isa {
    isa_dispatch!(pub(super) fn forward_rows(
        x: &[f32], y: &mut [f32], xhat: &mut [f32], rstd: &mut [f32], gamma: &[f32],
        beta: &[f32], row: usize, eps: f32
    ) => super::rows::forward);
    isa_dispatch!(pub(super) fn backward_rows(
        dy: &[f32], xhat: &[f32], rstd: &[f32], gamma: &[f32], dx: &mut [f32],
        dgamma: &mut [f64], dbeta: &mut [f64], row: usize
    ) => super::rows::backward);
}

/// Plain loops the compiler vectorises (independent accumulator lanes, no branches).
mod rows {
    const LANES: usize = 16;

    /// `Σ f(i)` over `0..n` in [`LANES`] independent partial sums.
    #[inline(always)]
    fn sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
        let mut acc = [0f32; LANES];
        let whole = n / LANES * LANES;
        for base in (0..whole).step_by(LANES) {
            for (lane, a) in acc.iter_mut().enumerate() {
                *a += f(base + lane);
            }
        }
        let mut total = 0f32;
        for i in whole..n {
            total += f(i);
        }
        total + acc.iter().sum::<f32>()
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        x: &[f32],
        y: &mut [f32],
        xhat: &mut [f32],
        rstd: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
        row: usize,
        eps: f32,
    ) {
        let (gamma, beta) = (&gamma[..row], &beta[..row]);
        for (((x, y), h), r) in x
            .chunks_exact(row)
            .zip(y.chunks_exact_mut(row))
            .zip(xhat.chunks_exact_mut(row))
            .zip(rstd.iter_mut())
        {
            let n = row as f32;
            let mean = sum(row, |i| x[i]) / n;
            let var = sum(row, |i| (x[i] - mean) * (x[i] - mean)) / n;
            let inv = 1.0 / (var + eps).sqrt();
            *r = inv;
            for i in 0..row {
                let v = (x[i] - mean) * inv;
                h[i] = v;
                y[i] = v * gamma[i] + beta[i];
            }
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        dy: &[f32],
        xhat: &[f32],
        rstd: &[f32],
        gamma: &[f32],
        dx: &mut [f32],
        dgamma: &mut [f64],
        dbeta: &mut [f64],
        row: usize,
    ) {
        let (gamma, dgamma, dbeta) = (&gamma[..row], &mut dgamma[..row], &mut dbeta[..row]);
        for (((dy, h), dx), &inv) in dy
            .chunks_exact(row)
            .zip(xhat.chunks_exact(row))
            .zip(dx.chunks_exact_mut(row))
            .zip(rstd)
        {
            let n = row as f32;
            let mean_g = sum(row, |i| dy[i] * gamma[i]) / n;
            let mean_gh = sum(row, |i| dy[i] * gamma[i] * h[i]) / n;
            for i in 0..row {
                let g = dy[i] * gamma[i];
                dx[i] = (g - mean_g - h[i] * mean_gh) * inv;
                dgamma[i] += (dy[i] * h[i]) as f64;
                dbeta[i] += dy[i] as f64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    /// LayerNorm in f64 on the host: the value and the gradients of `Σ y ⊙ w` for a fixed
    /// weighting `w`, from the textbook formulas (independent of both burn and the kernel).
    fn reference(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        w: &[f32],
        row: usize,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mut y, mut dx) = (vec![0f64; x.len()], vec![0f64; x.len()]);
        let (mut dg, mut db) = (vec![0f64; row], vec![0f64; row]);
        for r in 0..x.len() / row {
            let xs: Vec<f64> = x[r * row..(r + 1) * row]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let n = row as f64;
            let mean = xs.iter().sum::<f64>() / n;
            let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            let inv = 1.0 / (var + 1e-5).sqrt();
            let h: Vec<f64> = xs.iter().map(|v| (v - mean) * inv).collect();
            let dy: Vec<f64> = w[r * row..(r + 1) * row]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let g: Vec<f64> = (0..row).map(|i| dy[i] * gamma[i] as f64).collect();
            let mg = g.iter().sum::<f64>() / n;
            let mgh = (0..row).map(|i| g[i] * h[i]).sum::<f64>() / n;
            for i in 0..row {
                y[r * row + i] = h[i] * gamma[i] as f64 + beta[i] as f64;
                dx[r * row + i] = (g[i] - mg - h[i] * mgh) * inv;
                dg[i] += dy[i] * h[i];
                db[i] += dy[i];
            }
        }
        (y, dx, dg, db)
    }

    fn host(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn worst(got: &[f32], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(&g, &w)| (g as f64 - w).abs() / (1.0 + w.abs()))
            .fold(0.0, f64::max)
    }

    /// The devices the fused operation runs on: the CPU backend and, in a build with it, wgpu
    /// (`gpu_layer_norm_autodiff`), both under autodiff.
    fn devices() -> Vec<Device> {
        #[cfg_attr(not(feature = "wgpu"), allow(unused_mut))] // wgpu's device is pushed below
        let mut devices = vec![Device::flex().autodiff()];
        #[cfg(feature = "wgpu")]
        devices.push(
            crate::device::create(crate::device::DeviceChoice::Wgpu)
                .unwrap()
                .autodiff(),
        );
        devices
    }

    /// The fused operation's value and all three gradients against the f64 formulas, and against
    /// burn's decomposed layer norm under autodiff (what ran before), on rows that do not fill
    /// a task block or the vector lanes (37 rows of 70), on the CPU and on wgpu. On wgpu the
    /// forward is one kernel launch and the backward two.
    #[test]
    fn fused_layer_norm_matches_the_formulas_and_burns_decomposition() {
        // Rows wider than the GPU kernels' cube of 64 threads and not a multiple of it, the
        // decoder's 512, and narrower than the cube.
        for ad in devices() {
            for (rows, row) in [(37, 70), (3, 512), (5, 24)] {
                fused_layer_norm_matches_on(ad.clone(), rows, row);
            }
        }
    }

    fn fused_layer_norm_matches_on(ad: Device, rows: usize, row: usize) {
        let x = Tensor::<3>::random([1, rows, row], Distribution::Normal(0.5, 2.0), &ad);
        let gamma = Tensor::<1>::random([row], Distribution::Normal(1.0, 0.5), &ad);
        let beta = Tensor::<1>::random([row], Distribution::Normal(0.0, 0.5), &ad);
        let w = Tensor::<3>::random([1, rows, row], Distribution::Normal(0.0, 1.0), &ad);
        let flat = |t: &Tensor<3>| host(t.clone().reshape([rows * row]));
        let (want_y, want_dx, want_dg, want_db) = reference(
            &flat(&x),
            &host(gamma.clone()),
            &host(beta.clone()),
            &flat(&w),
            row,
        );

        let on_gpu = !matches!(
            ad.clone().inner().as_dispatch(),
            burn::backend::DispatchDevice::Flex(_)
        );
        let run = |fused: bool| {
            let (x, gamma, beta) = (
                x.clone().require_grad(),
                gamma.clone().require_grad(),
                beta.clone().require_grad(),
            );
            let ((y, weighted), forward) =
                crate::device::kernel_profile::profile("forward", || {
                    let y = if fused {
                        super::layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5)
                    } else {
                        burn::tensor::module::layer_norm(
                            x.clone(),
                            gamma.clone(),
                            Some(beta.clone()),
                            1e-5,
                        )
                    };
                    let weighted = y.clone() * w.clone();
                    (y, weighted)
                });
            let (grads, backward) =
                crate::device::kernel_profile::profile("backward", || weighted.sum().backward());
            if fused && on_gpu {
                // The norm's kernel and the weighting's multiply; the backward's two kernels
                // besides the sum's and the multiply's own.
                assert_eq!(forward.stages[0].launches, 2, "{forward:#?}");
                let names = backward.stages[0].names();
                assert!(
                    names.contains(&"InputGradientKernel")
                        && names.contains(&"ParameterGradientKernel"),
                    "{names:?}"
                );
            }
            let dx = x.grad(&grads).expect("x tracked");
            let dg = gamma.grad(&grads).expect("gamma tracked");
            let db = beta.grad(&grads).expect("beta tracked");
            (
                host(y.inner().reshape([rows * row])),
                host(dx.reshape([rows * row])),
                host(dg),
                host(db),
            )
        };
        let fused = run(true);
        let composed = run(false);
        // f32 against f64, measured worst (relative to 1 + |value|): y 1.8e−7, ∂x 1.2e−7,
        // ∂γ 4.3e−7, ∂β 7.0e−7 (sums over 37 rows); a wrong term in any formula is off by 1e−2
        // and more.
        let tol = 5e-6;
        for (name, got, want) in [
            ("y", &fused.0, &want_y),
            ("dx", &fused.1, &want_dx),
            ("dgamma", &fused.2, &want_dg),
            ("dbeta", &fused.3, &want_db),
        ] {
            let e = worst(got, want);
            println!("fused {name}: worst relative error against f64 {e:e}");
            assert!(e < tol, "fused {name}: worst relative error {e:e}");
        }
        // burn's decomposition is no more exact than the fused form (same tolerance), so the two
        // agree to twice it.
        for (name, a, b) in [
            ("y", &fused.0, &composed.0),
            ("dx", &fused.1, &composed.1),
            ("dgamma", &fused.2, &composed.2),
            ("dbeta", &fused.3, &composed.3),
        ] {
            let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            let e = worst(a, &b64);
            println!("fused vs decomposed {name}: {e:e}");
            assert!(e < 2.0 * tol, "fused vs decomposed {name}: {e:e}");
        }
    }

    /// Only x tracked (frozen γ, β), and a batch whose rows span several task blocks: ∂x still
    /// equals the formula and the untracked parameters get no gradient. Also for more rows than
    /// a GPU launches cubes along one axis (65,535: the GPU kernels' cube per row spreads over
    /// two), where a row past the first axis' cubes would be left unwritten.
    #[test]
    fn frozen_scale_and_shift_get_no_gradient() {
        for ad in devices() {
            for (rows, row) in [(100, 48), (66_000, 6)] {
                frozen_on(ad.clone(), rows, row);
            }
        }
    }

    fn frozen_on(ad: Device, rows: usize, row: usize) {
        let x =
            Tensor::<2>::random([rows, row], Distribution::Normal(0.0, 1.0), &ad).require_grad();
        let gamma = Tensor::<1>::random([row], Distribution::Normal(1.0, 0.5), &ad);
        let beta = Tensor::<1>::zeros([row], &ad);
        let w = Tensor::<2>::random([rows, row], Distribution::Normal(0.0, 1.0), &ad);
        let y = super::layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5);
        let grads = (y * w.clone()).sum().backward();
        assert!(gamma.grad(&grads).is_none() && beta.grad(&grads).is_none());
        let dx = host(x.grad(&grads).expect("x tracked").reshape([rows * row]));
        let flat = |t: Tensor<2>| host(t.reshape([rows * row]));
        let (_, want_dx, _, _) = reference(
            &flat(x.clone().inner()),
            &host(gamma),
            &host(beta),
            &flat(w),
            row,
        );
        let e = worst(&dx, &want_dx);
        assert!(e < 5e-6, "dx: worst relative error {e:e}");
    }
}
