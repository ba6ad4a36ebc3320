//! Bi-CMCI, bi-directional cross-modal interaction per tap level (spec §4): image patches
//! attend to the two state texts and the texts attend to the patches, each a 4-head
//! cross-attention with pre-LayerNorm and a residual. The output projections start at zero,
//! so an untrained Bi-CMCI is the identity.

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;

/// One direction of Bi-CMCI: pre-LayerNorm multi-head cross-attention with a zero-initialised output projection.
#[derive(Module, Debug)]
pub struct CrossAttention {
    /// LayerNorm of the queries.
    pub ln_q: LayerNorm,
    /// LayerNorm of the keys and values.
    pub ln_kv: LayerNorm,
    /// Query projection.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Output projection.
    pub out: Linear,
    /// Attention heads.
    pub heads: usize,
}

impl CrossAttention {
    /// A fresh cross-attention: q, k, v drawn at random, the output projection at zero.
    pub fn init(dim: usize, heads: usize, device: &Device) -> Self {
        Self::init_with(dim, heads, false, device)
    }

    /// With `zeroed`, every weight starts at zero and nothing is drawn from the device's
    /// random generator (a template that a file then fills).
    pub(crate) fn init_with(dim: usize, heads: usize, zeroed: bool, device: &Device) -> Self {
        let lin = || {
            let c = LinearConfig::new(dim, dim);
            if zeroed {
                c.with_initializer(Initializer::Zeros).init(device)
            } else {
                c.init(device)
            }
        };
        let mut out = lin();
        out.weight = Param::from_tensor(Tensor::zeros([dim, dim], device));
        out.bias = Some(Param::from_tensor(Tensor::zeros([dim], device)));
        CrossAttention {
            ln_q: LayerNormConfig::new(dim).init(device),
            ln_kv: LayerNormConfig::new(dim).init(device),
            q: lin(),
            k: lin(),
            v: lin(),
            out,
            heads,
        }
    }

    /// `out(MHA(q(LN_q(x)), k(LN_kv(ctx)), v(LN_kv(ctx))))`, without the residual.
    pub fn forward(&self, x: Tensor<3>, ctx: Tensor<3>) -> Tensor<3> {
        let [b, nq, d] = x.dims();
        let [_, nk, _] = ctx.dims();
        let hd = d / self.heads;
        let split = |t: Tensor<3>, n: usize| t.reshape([b, n, self.heads, hd]).swap_dims(1, 2);
        let ctx = self.ln_kv.forward(ctx);
        let q = split(self.q.forward(self.ln_q.forward(x)), nq);
        let k = split(self.k.forward(ctx.clone()), nk);
        let v = split(self.v.forward(ctx), nk);
        let att = softmax(
            q.matmul(k.swap_dims(2, 3))
                .mul_scalar((hd as f64).powf(-0.5)),
            3,
        );
        self.out
            .forward(att.matmul(v).swap_dims(1, 2).reshape([b, nq, d]))
    }
}

/// One tap level's pair of cross-attentions.
#[derive(Module, Debug)]
pub struct BiCmciLevel {
    /// `P' = P + XAttn(q = P, kv = T)`.
    pub image_from_text: CrossAttention,
    /// `T' = T + XAttn(q = T, kv = P)`.
    pub text_from_image: CrossAttention,
}

impl BiCmciLevel {
    /// A fresh level, the identity until trained (see [`CrossAttention::init`]).
    pub fn init(dim: usize, heads: usize, device: &Device) -> Self {
        Self::init_with(dim, heads, false, device)
    }

    pub(crate) fn init_with(dim: usize, heads: usize, zeroed: bool, device: &Device) -> Self {
        BiCmciLevel {
            image_from_text: CrossAttention::init_with(dim, heads, zeroed, device),
            text_from_image: CrossAttention::init_with(dim, heads, zeroed, device),
        }
    }

    /// Patches `[B, N, D]` and texts `[B, 2, D]` to `(P', T')`. Both directions read the
    /// level's original `P` and `T`, as the spec's formulas do.
    pub fn forward(&self, patches: Tensor<3>, text: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let p = patches.clone() + self.image_from_text.forward(patches.clone(), text.clone());
        let t = text.clone() + self.text_from_image.forward(text, patches);
        (p, t)
    }
}
