//! Bi-CMCI, bi-directional cross-modal interaction per tap level (spec §4): image patches
//! attend to the two state texts and the texts attend to the patches, each a 4-head
//! cross-attention with pre-LayerNorm and a residual. The output projections start at zero,
//! so an untrained Bi-CMCI is the identity.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;

#[derive(Module, Debug)]
pub struct CrossAttention {
    pub ln_q: LayerNorm,
    pub ln_kv: LayerNorm,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub out: Linear,
    pub heads: usize,
}

impl CrossAttention {
    pub fn init(dim: usize, heads: usize, device: &Device) -> Self {
        let lin = || LinearConfig::new(dim, dim).init(device);
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
    pub fn init(dim: usize, heads: usize, device: &Device) -> Self {
        BiCmciLevel {
            image_from_text: CrossAttention::init(dim, heads, device),
            text_from_image: CrossAttention::init(dim, heads, device),
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
