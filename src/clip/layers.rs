//! The transformer pieces both CLIP towers share: pre-LN residual blocks with a fused
//! in_proj multi-head attention and an MLP, plus the V-V attention of CLIP-VV (spec §2).

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::config::Activation;

/// A Burn [`Linear`] from a contiguous `[in, out]` weight (see
/// [`crate::tensor_io::WeightReader::tensor_t`]) and a bias.
pub fn linear(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Linear {
    Linear {
        weight: Param::from_tensor(weight),
        bias: bias.map(Param::from_tensor),
    }
}

/// `layer.forward(x)`: on the CPU backend one gemm that accumulates onto the bias
/// ([`crate::cpu::linear`]); Burn's matmul and broadcast add elsewhere.
pub fn dense<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    return crate::cpu::linear(layer, x, |x| layer.forward(x));
    #[cfg(not(feature = "flex"))]
    layer.forward(x)
}

/// A LayerNorm with the given affine parameters.
pub fn layer_norm(gamma: Tensor<1>, beta: Tensor<1>, eps: f64) -> LayerNorm {
    let [d] = gamma.dims();
    let mut ln = LayerNormConfig::new(d)
        .with_epsilon(eps)
        .init(&gamma.device());
    ln.gamma = Param::from_tensor(gamma);
    ln.beta = Some(Param::from_tensor(beta));
    ln
}

/// Multi-head self-attention with PyTorch's fused `in_proj` (`[3W, W]`, q then k then v).
#[derive(Module, Debug)]
pub struct Attention {
    pub in_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

/// Per-head query, key and value, each `[batch, heads, tokens, head_dim]`.
pub struct Qkv {
    pub q: Tensor<4>,
    pub k: Tensor<4>,
    pub v: Tensor<4>,
}

impl Attention {
    pub fn qkv(&self, x: Tensor<3>) -> Qkv {
        self.split(dense(&self.in_proj, x))
    }

    /// The fused `in_proj` output `[b, t, 3W]` as per-head q, k, v.
    fn split(&self, fused: Tensor<3>) -> Qkv {
        let [b, t, w3] = fused.dims();
        let w = w3 / 3;
        let hd = w / self.heads;
        let split = |y: Tensor<3>| y.reshape([b, t, self.heads, hd]).swap_dims(1, 2);
        Qkv {
            q: split(fused.clone().narrow(2, 0, w)),
            k: split(fused.clone().narrow(2, w, w)),
            v: split(fused.narrow(2, 2 * w, w)),
        }
    }

    /// `out_proj(softmax(q kᵀ s + mask) v)`, with `s = head_dim^-0.5`.
    ///
    /// Unmasked on the CPU backend (burn-flex) this is Burn's fused attention op: one
    /// parallel job per head, scores kept in a per-thread buffer, scale and softmax in one
    /// pass over them. Everywhere else it is written out. Burn's op on the GPU backends
    /// would take a flash kernel only through `autotune`, which these builds leave off
    /// (see `Cargo.toml`), and otherwise its decomposition, which guards its softmax
    /// against rows masked entirely: two compare-and-fill passes over the scores that an
    /// unmasked vision block never needs. The written-out form is the same arithmetic
    /// without them (#22: a B/16 detect on wgpu with fusion went from 850 kernel launches
    /// to 745); the text tower's causal mask is added to the scores the same way.
    pub fn attend(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<&Tensor<2>>,
    ) -> Tensor<3> {
        let [b, h, t, hd] = q.dims();
        let out = if mask.is_none() && fused_attention_op(&q) {
            attention(q, k, v, None, None, AttentionModuleOptions::default())
        } else {
            let scale = (hd as f64).powf(-0.5);
            let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
            let scores = match mask {
                Some(mask) => scores + mask.clone().unsqueeze::<4>(),
                None => scores,
            };
            softmax(scores, 3).matmul(v)
        };
        dense(&self.out_proj, out.swap_dims(1, 2).reshape([b, t, h * hd]))
    }

    /// Unmasked self-attention from the fused `in_proj` output: `(q, k, v)`, or CLIP-VV's
    /// `(v, v, v)` when `vv`. On the CPU backend, one fused kernel ([`crate::cpu::attend`]:
    /// heads read in place, no layout copies); elsewhere [`Attention::attend`].
    pub fn attend_fused(&self, fused: &Tensor<3>, vv: bool) -> Tensor<3> {
        #[cfg(feature = "flex")]
        if let Some(out) = crate::cpu::attend(fused, self.heads, vv) {
            return dense(&self.out_proj, out);
        }
        let Qkv { q, k, v } = self.split(fused.clone());
        if vv {
            self.attend(v.clone(), v.clone(), v, None)
        } else {
            self.attend(q, k, v, None)
        }
    }

    pub fn forward(&self, x: Tensor<3>, mask: Option<&Tensor<2>>) -> Tensor<3> {
        match mask {
            None => self.attend_fused(&dense(&self.in_proj, x), false),
            Some(_) => {
                let Qkv { q, k, v } = self.qkv(x);
                self.attend(q, k, v, mask)
            }
        }
    }
}

/// Whether `x` lives where Burn's own attention op is the fast path: plain f32 tensors on
/// the CPU backend.
fn fused_attention_op(x: &Tensor<4>) -> bool {
    #[cfg(feature = "flex")]
    if crate::cpu::is_flex(x) {
        return true;
    }
    let _ = x;
    false
}

/// `c_fc → activation → c_proj`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
    pub quick_gelu: bool,
}

impl Mlp {
    pub fn new(c_fc: Linear, c_proj: Linear, act: Activation) -> Self {
        Self {
            c_fc,
            c_proj,
            quick_gelu: act == Activation::QuickGelu,
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = dense(&self.c_fc, x);
        let x = if self.quick_gelu {
            let generic = |x: Tensor<3>| x.clone() * sigmoid(x.mul_scalar(1.702));
            // One in-place pass on the CPU backend; Burn's three ops elsewhere.
            #[cfg(feature = "flex")]
            let x = crate::cpu::quick_gelu(x, generic);
            #[cfg(not(feature = "flex"))]
            let x = generic(x);
            x
        } else {
            gelu(x)
        };
        dense(&self.c_proj, x)
    }
}

/// A pre-LN residual block: `x + attn(ln_1 x)`, then `x + mlp(ln_2 x)`.
#[derive(Module, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    pub fn forward(&self, x: Tensor<3>, mask: Option<&Tensor<2>>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), mask);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }

    /// One CLIP-VV dual block (spec §2). Both paths share this block's attention weights and
    /// its input `ln_1(h_ori)`; the V-V path takes `softmax(v vᵀ s) v` and skips the MLP.
    /// Returns new tensors: nothing is updated in place, so earlier taps stay distinct.
    pub fn forward_dual(&self, h_ori: Tensor<3>, h_vv: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let fused = dense(&self.attn.in_proj, self.ln_1.forward(h_ori.clone()));
        let a_vv = self.attn.attend_fused(&fused, true);
        let a_ori = self.attn.attend_fused(&fused, false);
        let h_ori = h_ori + a_ori;
        let h_ori = h_ori.clone() + self.mlp.forward(self.ln_2.forward(h_ori));
        (h_ori, h_vv + a_vv)
    }
}
