//! AdamW exactly as `torch.optim.AdamW` computes it, preceded by `clip_grad_norm_` over all
//! parameters together (burn's built-in clipping is per parameter, which is not what the
//! reference does). State is keyed by parameter name so it can be checkpointed and resumed.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Gradients;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::kernels::{AdamWScalars, gather_flat};
use crate::weights::{HostTensor, TensorMap};

/// Hyper-parameters (the official values are the defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Learning rate (1e-4).
    pub lr: f64,
    /// β1 (0.9).
    pub beta1: f64,
    /// β2 (0.999).
    pub beta2: f64,
    /// ε (1e-8).
    pub eps: f64,
    /// Decoupled weight decay (1e-4), applied to every parameter that gets a gradient.
    pub weight_decay: f64,
    /// Maximum total gradient norm (0.1); `None` disables clipping.
    pub clip_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
            clip_norm: Some(0.1),
        }
    }
}

/// Optimiser state: step count and the two moments per parameter name.
#[derive(Debug, Default)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Steps taken so far.
    pub step: u64,
    moments: HashMap<String, (Tensor<1>, Tensor<1>)>,
    /// The moments of the last step that updated its parameters together (GPU backends), as
    /// two flat buffers; `moments` holds none of these names meanwhile.
    together: Option<TogetherMoments>,
    /// Run the update as tensor operations, parameter by parameter, even where the CPU kernel or
    /// the update of all parameters together would run (tests compare them).
    composed_only: bool,
}

/// Moments kept as one flat buffer each, parameters in `layout` order (name, length).
#[derive(Debug)]
struct TogetherMoments {
    layout: Vec<(String, usize)>,
    m: Tensor<1>,
    v: Tensor<1>,
    /// The updated parameters as one flat buffer, and each parameter's part of it as handed to
    /// the module (flat): while the module still holds exactly those, the next step starts
    /// from the buffer instead of gathering the parameters again.
    params: Option<(Tensor<1>, Vec<Tensor<1>>)>,
}

impl TogetherMoments {
    /// Each parameter's part of the two buffers.
    fn split(self) -> impl Iterator<Item = (String, (Tensor<1>, Tensor<1>))> {
        let (offsets, _) = segments(&self.layout);
        self.layout
            .into_iter()
            .zip(offsets)
            .map(move |((name, n), offset)| {
                let range = offset..offset + n;
                (
                    name,
                    (
                        self.m.clone().slice(range.clone()),
                        self.v.clone().slice(range),
                    ),
                )
            })
    }
}

/// Each parameter's segment in the flat buffers of [`AdamW::step_together`] is padded to a multiple
/// of this many elements (1 KiB of f32). burn's GPU backends take a part of a buffer as a view only
/// when both its ends fall on the device's memory alignment, and copy it otherwise; with every
/// segment starting on a boundary, a parameter whose length is a multiple of the alignment (most
/// weights and biases) is a view into the updated buffer. Unpadded, one odd length early in the
/// order shifts every later parameter off the boundary (the default model's 131 parameters were
/// all copied out, one kernel each). The padding is zero in every buffer and stays zero (a zero
/// gradient and zero moments update a zero parameter to zero).
const SEGMENT: usize = 256;

/// Where each parameter of `layout` starts in the flat buffers, and their length.
fn segments(layout: &[(String, usize)]) -> (Vec<usize>, usize) {
    let mut total = 0;
    let offsets = layout
        .iter()
        .map(|(_, n)| {
            let offset = total;
            total += n.div_ceil(SEGMENT) * SEGMENT;
            offset
        })
        .collect();
    (offsets, total)
}

/// What one step measured.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Total gradient norm before clipping, `[1]`, on the parameters' device. Left there so a
    /// step queues its whole update without waiting for the device: reading it back
    /// ([`StepReport::grad_norm_value`]) waits for the gradients.
    pub grad_norm: Tensor<1>,
}

impl StepReport {
    /// The gradient norm read back (waits for the step's gradients).
    pub fn grad_norm_value(&self) -> crate::Result<f32> {
        Ok(crate::device::read_back(self.grad_norm.clone())?[0])
    }
}

impl AdamW {
    /// A fresh optimiser.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            moments: HashMap::new(),
            together: None,
            composed_only: false,
        }
    }

    /// Raw gradients of every parameter that received one, by parameter path.
    pub fn gradients<M: Module>(module: &M, grads: &Gradients) -> BTreeMap<String, Tensor<1>> {
        let mut v = GradVisitor {
            grads,
            path: Vec::new(),
            path_ids: BTreeMap::new(),
        };
        module.visit(&mut v);
        v.path_ids.into_iter().map(|(k, (_, g))| (k, g)).collect()
    }

    /// Clip the gradients globally and apply one AdamW update to `module` (learning rate `lr`).
    pub fn step<M: Module>(&mut self, module: M, grads: &Gradients, lr: f64) -> (M, StepReport) {
        let named = Self::gradients(&module, grads);
        self.step_named(module, named, lr)
    }

    /// As [`AdamW::step`], with the raw gradients given by parameter path (flattened). Parameters
    /// without an entry are left untouched (no weight decay either, as in PyTorch).
    pub fn step_named<M: Module>(
        &mut self,
        module: M,
        grads: BTreeMap<String, Tensor<1>>,
        lr: f64,
    ) -> (M, StepReport) {
        // Off the CPU kernel's backend, all parameters are updated together (`step_together`),
        // which needs their values as well as their ids.
        let together = !self.composed_only && !grads.values().all(crate::kernels::adamw_fuses);
        let mut ids = IdVisitor {
            path: Vec::new(),
            ids: HashMap::new(),
            values: together.then(HashMap::new),
        };
        module.visit(&mut ids);
        let by_id: HashMap<ParamId, (String, Tensor<1>)> = grads
            .into_iter()
            .filter_map(|(name, g)| ids.ids.get(&name).map(|id| (*id, (name, g))))
            .collect();

        // Global norm over all gradients, on the device (no host read: the update below is
        // queued without waiting for the gradients). Summed in parameter-name order: a hash-map
        // order would change the float rounding from run to run.
        let mut named: Vec<&(String, Tensor<1>)> = by_id.values().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(values) = ids.values.filter(|_| !named.is_empty()) {
            let named: Vec<(String, Tensor<1>)> = named
                .into_iter()
                .map(|(n, g)| (n.clone(), g.clone()))
                .collect();
            return self.step_together(module, named, values, ids.ids, lr);
        }
        self.spill_together();
        let sq: Vec<Tensor<1>> = named
            .iter()
            .map(|(_, g)| g.clone().powi_scalar(2).sum())
            .collect();
        let device = named
            .first()
            .map(|(_, g)| g.device())
            .or_else(|| module.devices().into_iter().next())
            .unwrap_or_default();
        let total_norm: Tensor<1> = if sq.is_empty() {
            Tensor::zeros([1], &device)
        } else {
            Tensor::cat(sq, 0).sum().sqrt()
        };
        // clip_grad_norm_: coefficient max/(norm + 1e-6), clamped to 1 (a `[1]` tensor).
        let clip = self.config.clip_norm.map(|max| {
            Tensor::<1>::full([1], max, &device)
                .div(total_norm.clone().add_scalar(1e-6))
                .clamp_max(1.0)
        });
        self.step += 1;
        let mut mapper = UpdateMapper {
            opt: self,
            grads: by_id,
            clip,
            clip_value: None,
            lr,
        };
        let module = module.map(&mut mapper);
        (
            module,
            StepReport {
                grad_norm: total_norm,
            },
        )
    }

    /// [`AdamW::step_named`] on a GPU backend: every parameter with a gradient updated at once,
    /// as one flat buffer per quantity. Launched one parameter at a time the update is some
    /// twenty kernels per parameter (the norm's square and sum, the clip, two moments, the bias
    /// corrections, the step, the decay): ~2,500 launches a step for the official network,
    /// each a few microseconds of host time on CUDA, for work the GPU does in far less. Here:
    /// the gradients and parameters are concatenated (a few launches for all of them,
    /// [`gather_flat`]), the norm runs once over the whole, the update is one kernel
    /// ([`crate::kernels::adamw_update_on_gpu`]; composed where it does not apply), and the new
    /// parameters are parts of the result (views where the device's alignment allows,
    /// [`SEGMENT`]). The element-wise operations are those of the parameter-by-parameter form,
    /// in the same order (the kernel's compiler may fuse a multiply and an add); the norm is
    /// summed over the whole rather than per parameter, which moves it by float rounding.
    fn step_together<M: Module>(
        &mut self,
        module: M,
        named: Vec<(String, Tensor<1>)>,
        mut values: HashMap<String, Tensor<1>>,
        id_of: HashMap<String, ParamId>,
        lr: f64,
    ) -> (M, StepReport) {
        let layout: Vec<(String, usize)> = named
            .iter()
            .map(|(name, g)| (name.clone(), g.dims()[0]))
            .collect();
        let device = named[0].1.device();
        let (offsets, total) = segments(&layout);
        let grads = gather_flat(
            offsets
                .iter()
                .copied()
                .zip(named.into_iter().map(|(_, g)| g)),
            total,
            &device,
        );
        let values: Vec<Tensor<1>> = layout
            .iter()
            .map(|(name, _)| {
                values
                    .remove(name)
                    .expect("every gradient has its parameter")
            })
            .collect();
        // The last step's buffer when the module holds just what that step handed it (same
        // layout, every parameter the same device storage: nothing replaced it since).
        let kept = match &self.together {
            Some(TogetherMoments {
                layout: kept_layout,
                params: Some((flat, parts)),
                ..
            }) if *kept_layout == layout
                && values
                    .iter()
                    .zip(parts)
                    .all(|(value, part)| crate::kernels::same_storage(value, part)) =>
            {
                Some(flat.clone())
            }
            _ => None,
        };
        let params = kept
            .unwrap_or_else(|| gather_flat(offsets.iter().copied().zip(values), total, &device));
        let total_norm = grads.clone().powi_scalar(2).sum().sqrt();
        let clip = self.config.clip_norm.map(|max| {
            Tensor::<1>::full([1], max, &device)
                .div(total_norm.clone().add_scalar(1e-6))
                .clamp_max(1.0)
        });
        // The moments in this layout: kept from the last step when it had the same one.
        let (m, v) = match self.together.take() {
            Some(kept) if kept.layout == layout => (kept.m, kept.v),
            kept => {
                if let Some(kept) = kept {
                    self.moments.extend(kept.split());
                }
                // A parameter without moments yet starts from zeros, as the buffers do.
                let (ms, vs): (Vec<_>, Vec<_>) = layout
                    .iter()
                    .zip(&offsets)
                    .filter_map(|((name, _), &offset)| {
                        let (m, v) = self.moments.remove(name)?;
                        Some(((offset, m), (offset, v)))
                    })
                    .unzip();
                (
                    gather_flat(ms, total, &device),
                    gather_flat(vs, total, &device),
                )
            }
        };
        self.step += 1;
        // One kernel on a GPU backend, the clip read on the device; the composed form otherwise.
        let clip_or_one = clip
            .clone()
            .unwrap_or_else(|| Tensor::<1>::ones([1], &device));
        let fused = crate::kernels::adamw_update_on_gpu(
            &params,
            &grads,
            &m,
            &v,
            &clip_or_one,
            scalars(&self.config, self.step, lr, 1.0),
        );
        let (params, m, v) = match fused {
            Some(updated) => updated,
            None => update_composed(
                &self.config,
                self.step,
                lr,
                clip.as_ref(),
                params,
                grads,
                m,
                v,
            ),
        };
        let parts: Vec<Tensor<1>> = layout
            .iter()
            .zip(&offsets)
            .map(|((_, n), &offset)| params.clone().slice(offset..offset + n))
            .collect();
        let new: HashMap<ParamId, Tensor<1>> = layout
            .iter()
            .zip(&parts)
            .map(|((name, _), part)| (id_of[name], part.clone()))
            .collect();
        self.together = Some(TogetherMoments {
            layout,
            m,
            v,
            params: Some((params, parts)),
        });
        let module = module.map(&mut Replace { new });
        (
            module,
            StepReport {
                grad_norm: total_norm,
            },
        )
    }

    /// Back to one pair of moments per name (before a parameter-by-parameter step).
    fn spill_together(&mut self) {
        if let Some(kept) = self.together.take() {
            self.moments.extend(kept.split());
        }
    }

    /// The moments as named host tensors (for checkpoints): `{name}.exp_avg`, `{name}.exp_avg_sq`.
    pub fn state(&self) -> TensorMap {
        let mut map = TensorMap::new("optimizer state");
        let together = self.together.as_ref().map(|t| {
            TogetherMoments {
                layout: t.layout.clone(),
                m: t.m.clone(),
                v: t.v.clone(),
                params: None,
            }
            .split()
            .collect::<Vec<_>>()
        });
        let together = together.iter().flatten().map(|(name, mv)| (name, mv));
        for (name, (m, v)) in self.moments.iter().chain(together) {
            map.insert(format!("{name}.exp_avg"), HostTensor::from_tensor(m));
            map.insert(format!("{name}.exp_avg_sq"), HostTensor::from_tensor(v));
        }
        map
    }

    /// Restore moments saved by [`AdamW::state`].
    pub fn load_state(&mut self, map: &TensorMap, step: u64, device: &burn::tensor::Device) {
        self.step = step;
        self.moments.clear();
        self.together = None;
        for name in map.names() {
            if let Some(base) = name.strip_suffix(".exp_avg")
                && let Some(v) = map.get(&format!("{base}.exp_avg_sq"))
            {
                let m = map.get(name).expect("listed");
                let flat = |t: &HostTensor| HostTensor::new(vec![t.data.len()], t.data.clone());
                // Plain tensors, like the moments a step makes (they never need a gradient), even
                // when `device` is an autodiff device.
                self.moments.insert(
                    base.to_string(),
                    (
                        flat(m).to_tensor(device).inner(),
                        flat(v).to_tensor(device).inner(),
                    ),
                );
            }
        }
    }
}

struct GradVisitor<'a> {
    grads: &'a Gradients,
    path: Vec<String>,
    path_ids: BTreeMap<String, (ParamId, Tensor<1>)>,
}

impl ModuleVisitor for GradVisitor<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let n = g.shape().num_elements();
            self.path_ids
                .insert(self.path.join("."), (param.id, g.reshape([n])));
        }
    }
}

struct IdVisitor {
    path: Vec<String>,
    ids: HashMap<String, ParamId>,
    /// Each parameter flattened, without autodiff tracking, when asked for.
    values: Option<HashMap<String, Tensor<1>>>,
}

/// Puts the given flat tensors in place of the parameters with these ids (others untouched).
struct Replace {
    new: HashMap<ParamId, Tensor<1>>,
}

impl ModuleMapper for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(flat) = self.new.remove(&param.id) else {
            return param;
        };
        param.map(|p| {
            let updated: Tensor<D> = flat.reshape(p.dims());
            updated.autodiff().require_grad()
        })
    }
}

impl ModuleVisitor for IdVisitor {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self.path.join(".");
        if let Some(values) = &mut self.values {
            let value = param.val().inner();
            let n = value.shape().num_elements();
            values.insert(name.clone(), value.reshape([n]));
        }
        self.ids.insert(name, param.id);
    }
}

struct UpdateMapper<'a> {
    opt: &'a mut AdamW,
    grads: HashMap<ParamId, (String, Tensor<1>)>,
    /// The clipping coefficient, `[1]` on the device; none without clipping.
    clip: Option<Tensor<1>>,
    /// `clip` read back, once, by the first update that runs the CPU kernel.
    clip_value: Option<f32>,
    lr: f64,
}

impl UpdateMapper<'_> {
    /// The scalars of this step for the CPU kernel; the clipping coefficient is read back once
    /// (on the CPU backend the gradient norm is already computed when it is asked for).
    fn scalars(&mut self) -> AdamWScalars {
        let clip = match (&self.clip, self.clip_value) {
            (Some(_), Some(value)) => value,
            (Some(clip), None) => {
                let value = clip.clone().into_scalar();
                self.clip_value = Some(value);
                value
            }
            (None, _) => 1.0,
        };
        scalars(&self.opt.config, self.opt.step, self.lr, clip)
    }

    /// The update written out in tensor operations (every backend): new flat parameter and
    /// moments.
    fn composed(
        &self,
        param: Tensor<1>,
        grad: Tensor<1>,
        m: Tensor<1>,
        v: Tensor<1>,
    ) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
        update_composed(
            &self.opt.config,
            self.opt.step,
            self.lr,
            self.clip.as_ref(),
            param,
            grad,
            m,
            v,
        )
    }
}

/// The scalars of step `step` (from 1) at learning rate `lr` with clipping coefficient `clip`,
/// in f32 as the composed form applies them.
fn scalars(c: &AdamWConfig, step: u64, lr: f64, clip: f32) -> AdamWScalars {
    let t = step as i32;
    AdamWScalars {
        clip,
        beta1: c.beta1 as f32,
        one_minus_beta1: (1.0 - c.beta1) as f32,
        beta2: c.beta2 as f32,
        one_minus_beta2: (1.0 - c.beta2) as f32,
        sqrt_bias2: (1.0 - c.beta2.powi(t)).sqrt() as f32,
        eps: c.eps as f32,
        step_size: (lr / (1.0 - c.beta1.powi(t))) as f32,
        decay: (1.0 - lr * c.weight_decay) as f32,
    }
}

/// One AdamW update written out in tensor operations (every backend), on flat tensors of one
/// length (one parameter, or all of them together): new parameter and moments. `step` counts
/// from 1; `clip` is the clipping coefficient, `[1]` on the device.
#[allow(clippy::too_many_arguments)]
fn update_composed(
    c: &AdamWConfig,
    step: u64,
    lr: f64,
    clip: Option<&Tensor<1>>,
    param: Tensor<1>,
    grad: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let t = step as i32;
    let grad = match clip {
        Some(clip) => {
            let n = grad.dims()[0];
            grad.mul(clip.clone().expand([n]))
        }
        None => grad,
    };
    let m = m.mul_scalar(c.beta1) + grad.clone().mul_scalar(1.0 - c.beta1);
    let v = v.mul_scalar(c.beta2) + grad.powi_scalar(2).mul_scalar(1.0 - c.beta2);
    let bc1 = 1.0 - c.beta1.powi(t);
    let bc2 = 1.0 - c.beta2.powi(t);
    let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(c.eps);
    let update = m.clone().div(denom).mul_scalar(lr / bc1);
    let decayed = param.mul_scalar(1.0 - lr * c.weight_decay);
    (decayed - update, m, v)
}

impl ModuleMapper for UpdateMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((name, grad)) = self.grads.remove(&param.id) else {
            return param;
        };
        let (m, v) = match self.opt.moments.remove(&name) {
            Some((m, v)) => (m, v),
            None => (grad.zeros_like(), grad.zeros_like()),
        };
        let mut moments = None;
        let param = param.map(|p| {
            let dims = p.dims();
            let n: usize = dims.iter().product();
            let flat = p.inner().reshape([n]);
            // One pass per parameter on the CPU; tensor operations elsewhere.
            let fuses = [&flat, &grad, &m, &v]
                .into_iter()
                .all(crate::kernels::adamw_fuses);
            let (updated, m, v) = if fuses && !self.opt.composed_only {
                let scalars = self.scalars();
                crate::kernels::adamw_update(flat, grad, m, v, scalars)
            } else {
                self.composed(flat, grad, m, v)
            };
            moments = Some((m, v));
            let updated: Tensor<D> = updated.reshape(dims);
            updated.autodiff().require_grad()
        });
        self.opt
            .moments
            .insert(name, moments.expect("Param::map calls its function once"));
        param
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[derive(Module, Debug)]
    struct Two {
        a: Param<Tensor<1>>,
        b: Param<Tensor<1>>,
    }

    fn values(t: &Tensor<1>) -> Vec<f32> {
        t.to_data().try_into_vec_as::<f32>().unwrap()
    }

    /// `n` values uniform in ±scale/2 from a linear congruential generator seeded with `seed`
    /// (the same on every device, independent of burn's generator).
    fn seeded(seed: u64, n: usize, scale: f32, device: &Device) -> Tensor<1> {
        let mut state = seed;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect();
        Tensor::<1>::from_data(TensorData::new(v, [n]), device)
    }

    /// Two steps against a plain f64 re-implementation of torch.optim.AdamW with a large weight
    /// decay (so the decoupled decay is visible), and a clip that is active.
    #[test]
    fn matches_a_plain_adamw_with_global_clipping() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        let t = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
        let mut m = Two {
            a: Param::from_tensor(t(&[1.0, -2.0])),
            b: Param::from_tensor(t(&[0.5])),
        };
        let cfg = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            clip_norm: Some(1.0),
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(cfg.clone());
        let grads = [[3.0f64, 4.0, 12.0], [0.1, -0.2, 0.05]];
        let mut p = [1.0f64, -2.0, 0.5];
        let (mut mm, mut vv) = ([0.0f64; 3], [0.0f64; 3]);
        for (step, g) in grads.iter().enumerate() {
            let mut named = BTreeMap::new();
            named.insert("a".to_string(), t(&[g[0] as f32, g[1] as f32]));
            named.insert("b".to_string(), t(&[g[2] as f32]));
            let (m2, report) = opt.step_named(m, named, cfg.lr);
            m = m2;
            // Reference.
            let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((report.grad_norm_value().unwrap() as f64 - norm).abs() < 1e-5);
            let coef = (1.0 / (norm + 1e-6)).min(1.0);
            let k = (step + 1) as i32;
            for i in 0..3 {
                let gi = g[i] * coef;
                p[i] *= 1.0 - cfg.lr * cfg.weight_decay;
                mm[i] = 0.9 * mm[i] + 0.1 * gi;
                vv[i] = 0.999 * vv[i] + 0.001 * gi * gi;
                let denom = (vv[i] / (1.0 - 0.999f64.powi(k))).sqrt() + cfg.eps;
                p[i] -= cfg.lr / (1.0 - 0.9f64.powi(k)) * mm[i] / denom;
            }
            let got: Vec<f32> = values(&m.a.val())
                .into_iter()
                .chain(values(&m.b.val()))
                .collect();
            for i in 0..3 {
                assert!(
                    (got[i] as f64 - p[i]).abs() < 1e-6,
                    "step {k} param {i}: {} vs {}",
                    got[i],
                    p[i]
                );
            }
        }
    }

    /// The CPU kernel against the update written out in tensor operations (what every other
    /// backend runs), over three steps with an active clip and a parameter large enough to be
    /// split across threads: the same f32 operations in the same order, so the same bits.
    #[test]
    fn the_cpu_kernel_equals_the_composed_update_bit_for_bit() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        let n = 70_001;
        let random = |seed: u64, scale: f32| seeded(seed, n, scale, &device);
        assert!(crate::kernels::adamw_fuses(&random(1, 1.0)));
        let cfg = AdamWConfig {
            clip_norm: Some(0.1),
            weight_decay: 0.01,
            ..AdamWConfig::default()
        };
        let run = |composed_only: bool| {
            let mut m = Two {
                a: Param::from_tensor(random(1, 2.0)),
                b: Param::from_tensor(random(2, 0.5)),
            };
            let mut opt = AdamW::new(cfg.clone());
            opt.composed_only = composed_only;
            for step in 0..3u64 {
                let mut named = BTreeMap::new();
                named.insert("a".to_string(), random(10 + step, 3.0));
                named.insert("b".to_string(), random(20 + step, 0.01));
                m = opt.step_named(m, named, 1e-3).0;
            }
            let moments: Vec<Vec<f32>> = ["a", "b"]
                .iter()
                .flat_map(|k| {
                    let (m1, m2) = &opt.moments[*k];
                    [values(m1), values(m2)]
                })
                .collect();
            (values(&m.a.val()), values(&m.b.val()), moments)
        };
        let fused = run(false);
        let composed = run(true);
        assert!(
            fused
                .0
                .iter()
                .zip(&composed.0)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
        assert!(
            fused
                .1
                .iter()
                .zip(&composed.1)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
        for (a, b) in fused.2.iter().zip(&composed.2) {
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        // And the parameters moved (the comparison is not between two untouched copies).
        assert!(
            fused
                .0
                .iter()
                .zip(values(&random(1, 2.0)))
                .any(|(x, y)| *x != y)
        );
    }

    /// On a GPU backend (wgpu here) the parameters are updated together
    /// ([`AdamW::step_together`]); against the parameter-by-parameter form on the same device
    /// over four steps, one of which leaves a parameter without a gradient (the flat moments
    /// are split back per name and rebuilt): without clipping the same bits (the update kernel
    /// runs the composed form's element-wise operations in its order, and lavapipe's compiler
    /// fuses none of them); with an active clip the norm is summed in
    /// another order, so the clip coefficient, and through it the moments, differ by at most the
    /// f32 rounding of a 1,007-term sum (n·2⁻²⁴ ≈ 6e-5 relative), the parameters by far less.
    /// The moments a checkpoint saves (`state`) agree the same way.
    #[cfg(feature = "wgpu")]
    #[test]
    fn updating_together_on_a_gpu_equals_the_update_one_by_one() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let random = |seed: u64, n: usize, scale: f32| seeded(seed, n, scale, &device);
        let run = |clip_norm: Option<f64>, composed_only: bool| {
            let mut m = Two {
                a: Param::from_tensor(random(1, 1000, 2.0)),
                b: Param::from_tensor(random(2, 7, 0.5)),
            };
            let mut opt = AdamW::new(AdamWConfig {
                clip_norm,
                weight_decay: 0.01,
                ..AdamWConfig::default()
            });
            opt.composed_only = composed_only;
            for step in 0..4u64 {
                let mut named = BTreeMap::new();
                named.insert("a".to_string(), random(10 + step, 1000, 3.0));
                if step != 1 {
                    named.insert("b".to_string(), random(20 + step, 7, 0.01));
                }
                m = opt.step_named(m, named, 1e-3).0;
            }
            assert_eq!(opt.together.is_some(), !composed_only);
            let state = opt.state();
            let mut saved: Vec<(String, Vec<f32>)> = state
                .names()
                .map(|n| (n.to_string(), state.get(n).unwrap().data.clone()))
                .collect();
            saved.sort_by(|x, y| x.0.cmp(&y.0));
            (values(&m.a.val()), values(&m.b.val()), saved)
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();

        let (together, one_by_one) = (run(None, false), run(None, true));
        assert_eq!(bits(&together.0), bits(&one_by_one.0));
        assert_eq!(bits(&together.1), bits(&one_by_one.1));
        assert_eq!(together.2.len(), 4);
        for ((name, a), (other, b)) in together.2.iter().zip(&one_by_one.2) {
            assert_eq!(name, other);
            assert_eq!(bits(a), bits(b), "{name}");
        }

        let (together, one_by_one) = (run(Some(0.1), false), run(Some(0.1), true));
        let close = |a: &[f32], b: &[f32], rel: f32, what: &str| {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= rel * x.abs().max(y.abs()) + 1e-12,
                    "{what}: {x} vs {y}"
                );
            }
        };
        close(&together.0, &one_by_one.0, 1e-6, "a");
        close(&together.1, &one_by_one.1, 1e-6, "b");
        for ((name, a), (_, b)) in together.2.iter().zip(&one_by_one.2) {
            close(a, b, 1e-4, name);
        }
        // The clip was active (the parameters moved differently from the run without it).
        assert_ne!(bits(&together.0), bits(&run(None, false).0));
    }

    #[cfg(feature = "wgpu")]
    #[derive(Module, Debug)]
    struct Three {
        a: Param<Tensor<1>>,
        b: Param<Tensor<1>>,
        c: Param<Tensor<1>>,
    }

    /// A 7-element parameter then two of 1024 on `device`, and a constant gradient for each.
    #[cfg(feature = "wgpu")]
    fn three_on_wgpu(device: &Device) -> (Three, impl Fn() -> BTreeMap<String, Tensor<1>> + '_) {
        let t = move |n: usize, v: f32| Tensor::<1>::full([n], v, device);
        let m = Three {
            a: Param::from_tensor(t(7, 0.5)),
            b: Param::from_tensor(t(1024, -0.5)),
            c: Param::from_tensor(t(1024, 0.25)),
        };
        let grads = move || {
            BTreeMap::from([
                ("a".to_string(), t(7, 0.1)),
                ("b".to_string(), t(1024, 0.2)),
                ("c".to_string(), t(1024, -0.2)),
            ])
        };
        (m, grads)
    }

    /// The parameters' parts of the updated buffer are views where the device allows: with a
    /// 7-element parameter first, the two 1024-element ones after it start on segment boundaries,
    /// so on wgpu a step copies out at most the odd one. Unpadded, both long ones start off the
    /// boundary and are copied (two copies: the test fails with `SEGMENT = 1`).
    #[cfg(feature = "wgpu")]
    #[test]
    fn together_the_parameters_are_views_into_the_update() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let (mut m, grads) = three_on_wgpu(&device);
        let mut opt = AdamW::new(AdamWConfig::default());
        // Compile the kernels first.
        m = opt.step_named(m, grads(), 1e-3).0;
        let _ = values(&m.b.val());
        let profiler = crate::device::kernel_profile::KernelProfiler::start("step");
        m = opt.step_named(m, grads(), 1e-3).0;
        let profile = profiler.finish();
        let copies: usize = profile.stages[0]
            .kernels
            .iter()
            .filter(|k| k.name == "SliceKernel")
            .map(|k| k.launches)
            .sum();
        assert!(copies <= 1, "{:#?}", profile.stages[0].kernels);
        assert!(values(&m.b.val()).iter().all(|v| *v < -0.5));
        assert!(values(&m.c.val()).iter().all(|v| *v > 0.25));
    }

    /// On wgpu, a step after a step starts from the last step's parameter buffer: one gather
    /// launch (the gradients) instead of two. A parameter replaced in between (a different
    /// tensor in the module) is gathered again, and its new value is the one updated.
    #[cfg(feature = "wgpu")]
    #[test]
    fn together_the_next_step_starts_from_the_updated_buffer() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let t = |n: usize, v: f32| Tensor::<1>::full([n], v, &device);
        let (mut m, grads) = three_on_wgpu(&device);
        let mut opt = AdamW::new(AdamWConfig::default());
        let gathers = |profile: crate::device::kernel_profile::KernelProfile| -> usize {
            profile.stages[0]
                .kernels
                .iter()
                .filter(|k| k.name == "GatherKernel")
                .map(|k| k.launches)
                .sum()
        };
        m = opt.step_named(m, grads(), 1e-3).0;
        let _ = values(&m.b.val());
        let profiler = crate::device::kernel_profile::KernelProfiler::start("step");
        m = opt.step_named(m, grads(), 1e-3).0;
        assert_eq!(gathers(profiler.finish()), 1, "the gradients only");
        let after_two = values(&m.b.val());
        assert!(after_two.iter().all(|v| *v < -0.5));

        m.a = Param::from_tensor(t(7, 3.0));
        let profiler = crate::device::kernel_profile::KernelProfiler::start("step");
        m = opt.step_named(m, grads(), 1e-3).0;
        assert_eq!(
            gathers(profiler.finish()),
            2,
            "the parameters gathered again"
        );
        // A positive gradient moves the new value down by about the learning rate.
        assert!(values(&m.a.val()).iter().all(|v| *v < 3.0 && *v > 2.99));
        let after_three = values(&m.b.val());
        assert!(after_three.iter().zip(&after_two).all(|(a, b)| a < b));
    }
}
