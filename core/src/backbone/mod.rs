//! Frozen feature extractors behind one [`Backbone`] (today EfficientNet-B4 and -Lite0, one
//! implementation) and the step that aligns their tapped outputs to the token grid.

mod align;
mod efficientnet;
mod extractor;
mod train_mode;

pub use align::align_features;
pub use efficientnet::{BatchNorm, EfficientNet, MbConvBlock};
pub use extractor::Backbone;
pub use train_mode::{BackboneMode, BackboneTraining, drop_connect};
