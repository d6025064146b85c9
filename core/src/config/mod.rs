//! Configuration is data: every size of the model, the backbone and the scoring lives in these
//! serde structs, which are saved beside the weights. Presets are named constructors.

mod efficientnet_blocks;
mod tiling;

pub use efficientnet_blocks::{BlockSpec, block_specs, stem_channels};
pub use tiling::{MAX_OVERLAP, MAX_TILE, MIN_TILE, Tile, Tiling};

use serde::{Deserialize, Serialize};

use crate::error::{HvqError, Result};

/// Bounds on the sizes a configuration may ask for. Far above any model of the paper (official:
/// C 256, FFN 1024, K 512, 15 classes, 4 layers, a 14×14 grid from 224×224 inputs), far below
/// what would exhaust memory; a config file beyond them is refused before anything is allocated.
pub const MAX_WIDTH: usize = 1 << 14;
/// Encoder/decoder layers.
pub const MAX_LAYERS: usize = 64;
/// Classes in one model.
pub const MAX_CLASSES: usize = 4096;
/// Codes per codebook.
pub const MAX_CODES: usize = 1 << 16;
/// Side of the token grid: attention costs its fourth power.
pub const MAX_FEATURE_SIZE: usize = 64;
/// Pixels of input per feature-grid cell (224 → 14).
pub const FEATURE_STRIDE: usize = 16;
/// Side of the model input.
pub const MIN_INPUT_SIZE: usize = 32;
/// Side of the model input.
pub const MAX_INPUT_SIZE: usize = 4096;
/// Parameters of the reconstruction network (2^31 f32 = 8 GiB).
pub const MAX_PARAMETERS: u128 = 1 << 31;

/// Which EfficientNet variant extracts features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackboneKind {
    /// EfficientNet-B4 (the paper's backbone; lukemelas weights).
    EfficientnetB4,
    /// EfficientNet-Lite0 (the embedded default; Apache-2.0 ImageNet weights).
    EfficientnetLite0,
}

/// Per-channel input normalisation applied to RGB values scaled to [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputNorm {
    /// Subtracted per channel.
    pub mean: [f32; 3],
    /// Divided per channel.
    pub std: [f32; 3],
}

impl InputNorm {
    /// ImageNet mean/std, as the official HVQ-Trans data pipeline uses.
    pub fn imagenet() -> Self {
        Self {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// EfficientNet-Lite's native scaling, (x·255 − 127) / 128.
    pub fn lite() -> Self {
        Self {
            mean: [127.0 / 255.0; 3],
            std: [128.0 / 255.0; 3],
        }
    }
}

/// The frozen feature extractor and its alignment to the token grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackboneConfig {
    /// Architecture.
    pub kind: BackboneKind,
    /// Indices of the blocks whose outputs are tapped (in order).
    pub taps: Vec<usize>,
    /// Input size the TF-"SAME" padding is computed for. The official B4 computes it for 380
    /// even though it runs at 224; `None` computes it from the actual input (true TF SAME).
    pub static_padding_size: Option<usize>,
    /// Side of the square model input (224).
    pub input_size: usize,
    /// Side of the aligned feature grid (14).
    pub feature_size: usize,
    /// Input normalisation.
    pub input_norm: InputNorm,
}

impl BackboneConfig {
    /// EfficientNet-B4 as HVQ-Trans runs it (taps 1/5/9/21, padding for 380, ImageNet norm).
    pub fn efficientnet_b4() -> Self {
        Self {
            kind: BackboneKind::EfficientnetB4,
            taps: vec![1, 5, 9, 21],
            static_padding_size: Some(380),
            input_size: 224,
            feature_size: 14,
            input_norm: InputNorm::imagenet(),
        }
    }

    /// EfficientNet-Lite0 (taps 0/2/4/10, TF SAME padding, its native input scaling).
    pub fn efficientnet_lite0() -> Self {
        Self {
            kind: BackboneKind::EfficientnetLite0,
            taps: vec![0, 2, 4, 10],
            static_padding_size: None,
            input_size: 224,
            feature_size: 14,
            input_norm: InputNorm::lite(),
        }
    }

    /// The same backbone run on `input` × `input` images, with the feature grid at its stride
    /// (`input / 16`: 14 cells for the official 224). A larger input gives a finer grid, each
    /// cell seeing less of the image; the attention's cost grows with the grid's fourth power.
    pub fn with_input_size(mut self, input: usize) -> Result<Self> {
        if !input.is_multiple_of(FEATURE_STRIDE) {
            return Err(HvqError::Config(format!(
                "input size {input}: a multiple of {FEATURE_STRIDE} is needed (the backbone's \
                 feature stride; e.g. 224, 288, 320)"
            )));
        }
        self.input_size = input;
        self.feature_size = input / FEATURE_STRIDE;
        self.validate()?;
        Ok(self)
    }

    /// Check every size before anything is allocated or indexed with it (a config file is
    /// user data): taps that exist and increase, and input and grid sizes the backbone can run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(HvqError::Config(format!("backbone.{m}")));
        let blocks = block_specs(self.kind).len();
        if self.taps.is_empty()
            || self.taps.iter().any(|&t| t >= blocks)
            || self.taps.windows(2).any(|w| w[0] >= w[1])
        {
            return bad(format!(
                "taps {:?}: need increasing block indices below {blocks} ({:?} has {blocks} blocks)",
                self.taps, self.kind
            ));
        }
        if !(MIN_INPUT_SIZE..=MAX_INPUT_SIZE).contains(&self.input_size) {
            return bad(format!(
                "input_size {} is outside {MIN_INPUT_SIZE}..={MAX_INPUT_SIZE}",
                self.input_size
            ));
        }
        if let Some(p) = self.static_padding_size
            && !(1..=MAX_INPUT_SIZE).contains(&p)
        {
            return bad(format!(
                "static_padding_size {p} is outside 1..={MAX_INPUT_SIZE}"
            ));
        }
        if !(1..=MAX_FEATURE_SIZE).contains(&self.feature_size) {
            return bad(format!(
                "feature_size {} is outside 1..={MAX_FEATURE_SIZE}",
                self.feature_size
            ));
        }
        let norm = self.input_norm.mean.iter().chain(&self.input_norm.std);
        if norm.clone().any(|v| !v.is_finite()) || self.input_norm.std.iter().any(|&v| v <= 0.0) {
            return bad(format!(
                "input_norm {:?}: finite means and positive standard deviations needed",
                self.input_norm
            ));
        }
        Ok(())
    }

    /// Channels of each tapped block's output, in tap order.
    pub fn tap_channels(&self) -> Vec<usize> {
        let specs = block_specs(self.kind);
        self.taps.iter().map(|&t| specs[t].out_ch).collect()
    }

    /// Channels of the aligned feature (sum of the tapped blocks' widths).
    pub fn feature_channels(&self) -> usize {
        self.tap_channels().iter().sum()
    }
}

/// The reconstruction network (everything after the backbone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HvqConfig {
    /// Channels of the backbone feature the network reconstructs (272 for B4, 192 for Lite0).
    pub feature_channels: usize,
    /// Encoder width C (256). The decoder runs at 2C.
    pub embed_dim: usize,
    /// Attention heads (8) in encoder and decoder.
    pub heads: usize,
    /// Feed-forward width (1024) in encoder and decoder.
    pub ffn_dim: usize,
    /// Encoder layers (4); the hierarchy has one VQ level per encoder output plus one for src.
    pub enc_layers: usize,
    /// Decoder layers (4), one per memory level.
    pub dec_layers: usize,
    /// Number of classes: one codebook per class per level, one expert per class.
    pub num_classes: usize,
    /// Codes per codebook K (512).
    pub codes: usize,
    /// Side of the token grid (14).
    pub feature_size: usize,
    /// EMA decay of the codebooks (0.99).
    pub ema_decay: f32,
    /// Laplace smoothing of the cluster sizes (1e-5).
    pub ema_eps: f32,
    /// Weight of the commitment term in the loss (0.25 official).
    pub commitment_weight: f32,
    /// Weight of the OT score added to the L2 map (80 official).
    pub ot_weight: f32,
    /// Softmax temperature of the OT score; `None` means K, as the official code does.
    pub ot_temperature: Option<f32>,
    /// Class names, index = class id.
    pub class_names: Vec<String>,
    /// Which parts of the paper's design are on (the ablation switches of its Table 1).
    #[serde(default)]
    pub ablation: Ablation,
    /// Weight α of the POT loss at every VQ level (0 = off, as the released code; paper: 0.01).
    #[serde(default)]
    pub pot_weight: f32,
    /// Softmax temperature τ of the POT plans; `None` = K, like the OT score.
    #[serde(default)]
    pub pot_temperature: Option<f32>,
    /// A classifier head that picks codebooks and expert when the caller gives no class.
    #[serde(default)]
    pub classifier: Option<ClassifierConfig>,
    /// Dropout probability of the transformer layers while training (the reference's
    /// `nn.Dropout` and `nn.MultiheadAttention` dropout: 0.1). Inference never drops. Config
    /// files written before this field existed were trained without dropout: 0.
    #[serde(default)]
    pub dropout: f64,
    /// Dead-code restart threshold τ of the EMA codebooks (0 = off, as the released code). Not in
    /// the paper: with it, after each EMA update a code whose assignment count has fallen below τ
    /// times the codebook's mean count is moved onto a token of the sample that updated it
    /// (`model::quantizer::ema_update`). Without it the codebooks of small trained models
    /// collapse to a handful of codes (docs/quality.md).
    #[serde(default)]
    pub codebook_restart: f32,
}

/// The ablation switches of the paper's appendix Table 1. All on = HVQ-Trans.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ablation {
    /// One VQ level per encoder output plus src (on), or a single VQ layer on the last encoder
    /// output whose codes every decoder layer attends to (off).
    pub hierarchical: bool,
    /// One codebook per class (on) or one shared codebook per level (off).
    pub switch_codebooks: bool,
    /// One expert output layer per class (on) or one shared output layer (off).
    pub switch_experts: bool,
}

impl Default for Ablation {
    fn default() -> Self {
        Self {
            hierarchical: true,
            switch_codebooks: true,
            switch_experts: true,
        }
    }
}

/// The class-predicting head of the paper (its code was never released): an MLP on the
/// spatially pooled backbone feature, trained jointly with cross-entropy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Hidden width of the MLP.
    pub hidden: usize,
    /// Weight of the cross-entropy term in the loss.
    pub weight: f32,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            hidden: 256,
            weight: 1.0,
        }
    }
}

impl HvqConfig {
    /// The official full configuration for a given feature width and class list.
    pub fn official(feature_channels: usize, class_names: Vec<String>) -> Self {
        Self {
            feature_channels,
            embed_dim: 256,
            heads: 8,
            ffn_dim: 1024,
            enc_layers: 4,
            dec_layers: 4,
            num_classes: class_names.len(),
            codes: 512,
            feature_size: 14,
            ema_decay: 0.99,
            ema_eps: 1e-5,
            commitment_weight: 0.25,
            ot_weight: 80.0,
            ot_temperature: None,
            class_names,
            ablation: Ablation::default(),
            pot_weight: 0.0,
            pot_temperature: None,
            classifier: None,
            dropout: 0.1,
            codebook_restart: 0.0,
        }
    }

    /// The paper's objective on top of the official sizes: classifier switching, commitment
    /// β = 0.5, POT loss α = 0.01 at every level.
    pub fn paper(feature_channels: usize, class_names: Vec<String>) -> Self {
        let mut c = Self::official(feature_channels, class_names);
        c.commitment_weight = 0.5;
        c.pot_weight = 0.01;
        c.classifier = Some(ClassifierConfig::default());
        c
    }

    /// Codebooks per level: one per class when switching, else one shared.
    pub fn codebook_slots(&self) -> usize {
        if self.ablation.switch_codebooks {
            self.num_classes
        } else {
            1
        }
    }

    /// Expert output layers: one per class when switching, else one shared.
    pub fn expert_slots(&self) -> usize {
        if self.ablation.switch_experts {
            self.num_classes
        } else {
            1
        }
    }

    /// The POT softmax temperature in use.
    pub fn pot_temperature(&self) -> f32 {
        self.pot_temperature.unwrap_or(self.codes as f32)
    }

    /// The MVTec-AD class list of the released checkpoint, in the official order.
    pub fn mvtec_classes() -> Vec<String> {
        [
            "bottle",
            "cable",
            "capsule",
            "carpet",
            "grid",
            "hazelnut",
            "leather",
            "metal_nut",
            "pill",
            "screw",
            "tile",
            "toothbrush",
            "transistor",
            "wood",
            "zipper",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Number of tokens (14 × 14).
    pub fn tokens(&self) -> usize {
        self.feature_size * self.feature_size
    }

    /// Number of VQ levels (one per encoder output plus src; 1 without the hierarchy).
    pub fn vq_levels(&self) -> usize {
        if self.ablation.hierarchical {
            self.enc_layers + 1
        } else {
            1
        }
    }

    /// The OT softmax temperature in use.
    pub fn ot_temperature(&self) -> f32 {
        self.ot_temperature.unwrap_or(self.codes as f32)
    }

    /// Check the sizes are consistent and sane before anything is allocated with them (a config
    /// file is user data: an absurd width must be an error, not an allocation failure).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(HvqError::Config(format!("hvq.{m}")));
        for (name, value, max) in [
            ("embed_dim", self.embed_dim, MAX_WIDTH),
            ("ffn_dim", self.ffn_dim, MAX_WIDTH),
            ("feature_channels", self.feature_channels, MAX_WIDTH),
            ("heads", self.heads, MAX_WIDTH),
            ("enc_layers", self.enc_layers, MAX_LAYERS),
            ("dec_layers", self.dec_layers, MAX_LAYERS),
            ("num_classes", self.num_classes, MAX_CLASSES),
            ("codes", self.codes, MAX_CODES),
            ("feature_size", self.feature_size, MAX_FEATURE_SIZE),
        ] {
            if !(1..=max).contains(&value) {
                return bad(format!("{name} {value} is outside 1..={max}"));
            }
        }
        if let Some(c) = &self.classifier
            && !(1..=MAX_WIDTH).contains(&c.hidden)
        {
            return bad(format!(
                "classifier.hidden {} is outside 1..={MAX_WIDTH}",
                c.hidden
            ));
        }
        for (name, value) in [
            ("ema_decay", self.ema_decay),
            ("ema_eps", self.ema_eps),
            ("commitment_weight", self.commitment_weight),
            ("ot_weight", self.ot_weight),
            ("pot_weight", self.pot_weight),
        ] {
            if !value.is_finite() || value < 0.0 {
                return bad(format!("{name} {value} must be finite and not negative"));
            }
        }
        if self.ema_decay >= 1.0 {
            return bad(format!("ema_decay {} must be below 1", self.ema_decay));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        if !(0.0..1.0).contains(&self.codebook_restart) {
            return bad(format!(
                "codebook_restart {} must be in [0, 1) (a fraction of the mean code count)",
                self.codebook_restart
            ));
        }
        for (name, t) in [
            ("ot_temperature", self.ot_temperature),
            ("pot_temperature", self.pot_temperature),
        ] {
            if let Some(t) = t
                && !(t.is_finite() && t > 0.0)
            {
                return bad(format!("{name} {t} must be finite and positive"));
            }
        }
        let parameters = self.parameter_estimate();
        if parameters.is_none_or(|p| p > MAX_PARAMETERS) {
            return bad(format!(
                "sizes (embed_dim {}, ffn_dim {}, codes {}, {} classes, {} layers) make about {} \
                 parameters, over the {MAX_PARAMETERS} ({} GiB of f32) this build allows",
                self.embed_dim,
                self.ffn_dim,
                self.codes,
                self.num_classes,
                self.enc_layers,
                parameters.map_or("more than 2^128".into(), |p| p.to_string()),
                (MAX_PARAMETERS * 4) >> 30
            ));
        }
        if self.embed_dim == 0
            || !self.embed_dim.is_multiple_of(self.heads)
            || !self.embed_dim.is_multiple_of(2)
        {
            return bad(format!(
                "embed_dim {} must be even and divisible by heads {}",
                self.embed_dim, self.heads
            ));
        }
        if self.num_classes == 0 || self.class_names.len() != self.num_classes {
            return bad(format!(
                "num_classes {} but {} class names",
                self.num_classes,
                self.class_names.len()
            ));
        }
        if self.dec_layers != self.enc_layers {
            return bad(format!(
                "the decoder attends one memory level per layer: dec_layers {} must equal enc_layers {}",
                self.dec_layers, self.enc_layers
            ));
        }
        if self.codes == 0 || self.feature_channels == 0 || self.feature_size == 0 {
            return bad("codes, feature_channels and feature_size must be positive".into());
        }
        Ok(())
    }

    /// An upper estimate of the network's parameter count (None on overflow): encoder layers at
    /// C, decoder layers at 2C with self- and cross-attention, one codebook per class and level,
    /// one expert per class, the projections and the classifier.
    pub fn parameter_estimate(&self) -> Option<u128> {
        let [c, f, l, k, n, d, h] = [
            self.embed_dim,
            self.ffn_dim,
            self.enc_layers.max(self.dec_layers),
            self.codes,
            self.num_classes,
            self.feature_channels,
            self.classifier.as_ref().map_or(0, |c| c.hidden),
        ]
        .map(|v| v as u128);
        let c2 = c.checked_mul(2)?;
        let encoder = l.checked_mul(c.checked_mul(c)?.checked_mul(4)? + c.checked_mul(f)? * 2)?;
        let decoder = l.checked_mul(
            c2.checked_mul(c2)?.checked_mul(8)? + c2.checked_mul(f)?.checked_mul(2)?,
        )?;
        let codebooks = (l + 1).checked_mul(n)?.checked_mul(k)?.checked_mul(c)?;
        let experts = n.checked_mul(c2)?.checked_mul(d)?;
        let projections = d.checked_mul(c)?.checked_mul(2)?;
        let classifier = d.checked_mul(h)? + h.checked_mul(n)?;
        [decoder, codebooks, experts, projections, classifier]
            .into_iter()
            .try_fold(encoder, |sum, part| sum.checked_add(part))
    }

    /// Class id for a name.
    pub fn class_index(&self, name: &str) -> Result<usize> {
        self.class_names
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| HvqError::UnknownClass {
                given: name.to_string(),
                known: self.class_names.clone(),
            })
    }
}

/// Everything needed to rebuild a model: saved as JSON beside (and inside) the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Feature extractor.
    pub backbone: BackboneConfig,
    /// Reconstruction network.
    pub hvq: HvqConfig,
}

impl ModelConfig {
    /// Check each half, then that they agree.
    pub fn validate(&self) -> Result<()> {
        self.backbone.validate()?;
        self.hvq.validate()?;
        let fc = self.backbone.feature_channels();
        if fc != self.hvq.feature_channels {
            return Err(HvqError::Config(format!(
                "backbone gives {fc} feature channels, the network expects {}",
                self.hvq.feature_channels
            )));
        }
        if self.backbone.feature_size != self.hvq.feature_size {
            return Err(HvqError::Config(
                "backbone and network feature sizes differ".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn official() -> ModelConfig {
        let backbone = BackboneConfig::efficientnet_b4();
        let hvq = HvqConfig::official(backbone.feature_channels(), HvqConfig::mvtec_classes());
        ModelConfig { backbone, hvq }
    }

    fn refused(config: &ModelConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn the_presets_pass_and_their_parameter_count_is_about_right() {
        let c = official();
        c.validate().unwrap();
        // The official network: 4 encoder layers at 256, 4 decoder layers at 512 with two
        // attentions each, 5 levels × 15 classes × 512 codes × 256, 15 experts 512 → 272.
        let p = c.hvq.parameter_estimate().unwrap();
        assert!((20_000_000..40_000_000).contains(&p), "{p}");
        let mut paper = official();
        paper.hvq = HvqConfig::paper(paper.backbone.feature_channels(), vec!["a".into()]);
        paper.validate().unwrap();
    }

    #[test]
    fn absurd_sizes_are_refused_naming_the_field() {
        let mut c = official();
        c.hvq.embed_dim = 1 << 30;
        let e = refused(&c);
        assert!(e.contains("hvq.embed_dim 1073741824"), "{e}");
        // Each within its own bound but together too big: the parameter budget.
        let mut c = official();
        c.hvq.embed_dim = 8192;
        c.hvq.heads = 8;
        c.hvq.codes = 60_000;
        let e = refused(&c);
        assert!(e.contains("parameters"), "{e}");
        let mut c = official();
        c.hvq.heads = 0;
        assert!(refused(&c).contains("hvq.heads 0"));
        let mut c = official();
        c.hvq.ema_decay = f32::NAN;
        assert!(refused(&c).contains("ema_decay"));
        let mut c = official();
        c.hvq.dropout = 1.0;
        assert!(refused(&c).contains("dropout"));
    }

    #[test]
    fn backbone_sizes_are_refused_before_they_index_or_divide() {
        let mut c = official();
        c.backbone.input_size = 0;
        assert!(refused(&c).contains("backbone.input_size 0"));
        let mut c = official();
        c.backbone.taps = vec![1, 5, 99];
        assert!(refused(&c).contains("backbone.taps"));
        let mut c = official();
        c.backbone.taps = vec![5, 1];
        assert!(refused(&c).contains("backbone.taps"));
        let mut c = official();
        c.backbone.input_norm.std[1] = 0.0;
        assert!(refused(&c).contains("backbone.input_norm"));
    }

    #[test]
    fn an_input_size_sets_the_grid_at_the_stride() {
        let lite0 = BackboneConfig::efficientnet_lite0();
        let b = lite0.clone().with_input_size(320).unwrap();
        assert_eq!((b.input_size, b.feature_size), (320, 20));
        assert_eq!(b.taps, lite0.taps);
        let e = lite0.clone().with_input_size(300).unwrap_err().to_string();
        assert!(e.contains("input size 300") && e.contains("16"), "{e}");
        // Past the grid's bound (64 cells): refused by the same check as a config file.
        let e = lite0.with_input_size(2048).unwrap_err().to_string();
        assert!(e.contains("feature_size 128"), "{e}");
    }
}
