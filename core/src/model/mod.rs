//! The HVQ-Trans reconstruction network: projection + positional embedding, post-norm encoder,
//! hierarchical per-class VQ, level-by-level cross-attending decoder and per-class experts, plus
//! the OT score. Field names mirror the official parameter names.

mod attention;
mod batch_codes;
mod classifier;
mod decoder;
mod encoder;
mod hvq;
mod joined;
mod layers;
mod ot;
mod position;
mod quantizer;
mod sharded;
mod slot_ids;

pub use attention::MultiheadAttention;
pub use batch_codes::BatchCodes;
pub use classifier::Classifier;
pub use decoder::{Decoder, DecoderLayer};
pub use encoder::{Encoder, EncoderLayer};
pub use hvq::{CODE_IN_USE_SHARE, Classes, Encoded, HvqModel, HvqOutput, LevelOutput, Mode};
pub use layers::{Conv1x1, LayerNorm, Linear};
pub use ot::{ot_score, pot_loss};
pub use position::PositionEmbedding;
pub use quantizer::{Codebook, Commitment, QuantizeOutput, quantize, straight_through};
pub use sharded::Shard;
/// An index list as a device tensor, uploaded once and kept ([`slot_ids::slot_ids`]).
pub(crate) use slot_ids::{kept_now, slot_ids as kept_ids};
