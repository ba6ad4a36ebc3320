//! The Conv-Adapter (spec §5): the last tap's patch grid through
//! conv1×1(D→r) → GELU → conv3×3(r→r) → GELU → conv1×1(r→D), global-average pooled and added
//! to the global feature, `g' = g + α · pooled`. The last conv starts at zero.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::gelu;

/// The Conv-Adapter of spec §5.
#[derive(Module, Debug)]
pub struct ConvAdapter {
    /// 1×1, D → r.
    pub c1: Conv2d,
    /// 3×3, r → r.
    pub c2: Conv2d,
    /// 1×1, r → D (starts at zero).
    pub c3: Conv2d,
}

impl ConvAdapter {
    /// A fresh adapter: the first two convs drawn at random, the last at zero (so the
    /// untrained adapter adds nothing).
    pub fn init(dim: usize, reduction: usize, device: &Device) -> Self {
        Self::init_with(dim, reduction, false, device)
    }

    /// With `zeroed`, every weight starts at zero and nothing is drawn at random.
    pub(crate) fn init_with(dim: usize, reduction: usize, zeroed: bool, device: &Device) -> Self {
        let r = dim / reduction;
        let conv = |c: Conv2dConfig| {
            if zeroed {
                c.with_initializer(Initializer::Zeros).init(device)
            } else {
                c.init(device)
            }
        };
        let mut c3 = conv(Conv2dConfig::new([r, dim], [1, 1]));
        c3.weight = Param::from_tensor(Tensor::zeros([dim, r, 1, 1], device));
        c3.bias = Some(Param::from_tensor(Tensor::zeros([dim], device)));
        ConvAdapter {
            c1: conv(Conv2dConfig::new([dim, r], [1, 1])),
            c2: conv(
                Conv2dConfig::new([r, r], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            ),
            c3,
        }
    }

    /// Patch tokens `[B, N = grid², D]` to the pooled adapter output `[B, D]`.
    pub fn forward(&self, patches: Tensor<3>, grid: usize) -> Tensor<2> {
        let [b, _, d] = patches.dims();
        let x = patches.swap_dims(1, 2).reshape([b, d, grid, grid]);
        let x = gelu(self.c1.forward(x));
        let x = gelu(self.c2.forward(x));
        let x = self.c3.forward(x);
        x.reshape([b, d, grid * grid]).mean_dim(2).reshape([b, d])
    }
}
