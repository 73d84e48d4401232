//! The VQ tokenizer's building blocks, one struct per reference module, fields named like the
//! original checkpoint's key segments (`norm1`, `conv1`, `nin_shortcut`, `q`, `proj_out`, ...).
//!
//! Shapes: B batch (frames folded in for 2D blocks), C channels, T time, H/W spatial;
//! Z the channels of the quantized latent that conditions the decoder's SpatialNorm.

use crate::nn::{BatchNorm3d, Conv2d, Conv3d, GroupNorm, Params, swish};
use tch::Tensor;

/// A 3D convolution that pads spatially "same" and always pads 2 frames in front, never behind:
/// the reference's causal convolution, whatever the temporal kernel size.
pub struct CausalConv3d {
    pub conv: Conv3d,
    /// F.pad order: (w_left, w_right, h_top, h_bottom, t_front, t_back).
    padding: [i64; 6],
}

impl CausalConv3d {
    pub fn new(p: &Params<'_>, cin: i64, cout: i64, k: [i64; 3], stride: [i64; 3]) -> Self {
        let (ph, pw) = (k[1] - stride[1], k[2] - stride[2]);
        let padding = [pw / 2 + pw % 2, pw / 2, ph / 2 + ph % 2, ph / 2, 2, 0];
        CausalConv3d { conv: Conv3d::new(&p.sub("conv"), cin, cout, k, stride), padding }
    }

    /// `[B,Cin,T,H,W] -> [B,Cout,T',H,W]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(&x.constant_pad_nd(self.padding))
    }

    /// Sets the kernel to copy each output frame's newest input frame at the same pixel (the
    /// last temporal tap, spatial centre, channel to itself), plus `shift` as the bias.
    fn init_copy_newest_frame(&self, shift: f64) {
        let [cout, cin, kt, kh, kw] = self.conv.weight.size()[..] else {
            panic!("a 3D kernel has five dimensions, got {:?}", self.conv.weight.size());
        };
        assert_eq!(cout, cin, "a frame-copying kernel needs as many outputs as inputs");
        tch::no_grad(|| {
            let mut w = self.conv.weight.shallow_clone();
            let _ = w.zero_();
            for c in 0..cout {
                let _ = w.get(c).get(c).get(kt - 1).get(kh / 2).get(kw / 2).fill_(1.0);
            }
            let _ = self.conv.bias.shallow_clone().fill_(shift);
        });
    }

    /// Zeroes every temporal tap but the newest, leaving that one as it is: output frame t then
    /// depends on input frame t alone.
    pub fn zero_older_taps(&self) {
        let kt = self.conv.weight.size()[2];
        tch::no_grad(|| {
            let _ = self.conv.weight.narrow(2, 0, kt - 1).zero_();
        });
    }

    fn init_zero(&self) {
        tch::no_grad(|| {
            let _ = self.conv.weight.shallow_clone().zero_();
            let _ = self.conv.bias.shallow_clone().zero_();
        });
    }
}

/// GroupNorm whose output is modulated by the quantized latent: the decoder's norm.
pub struct SpatialNorm {
    pub norm_layer: GroupNorm,
    pub conv_y: Conv2d,
    pub conv_b: Conv2d,
}

impl SpatialNorm {
    /// Starts as the identity modulation (scale 1, shift 0, small dependence on zq): with zero
    /// scale every SpatialNorm would silence the decoder until training found its way out.
    pub fn new(p: &Params<'_>, channels: i64, zq_channels: i64) -> Self {
        let small = tch::nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        SpatialNorm {
            norm_layer: GroupNorm::new(&p.sub("norm_layer"), channels),
            conv_y: Conv2d::with_init(&p.sub("conv_y"), zq_channels, channels, 1, 1, 0, small, 1.0),
            conv_b: Conv2d::with_init(&p.sub("conv_b"), zq_channels, channels, 1, 1, 0, small, 0.0),
        }
    }

    /// `x: [B,C,H,W]`, `zq: [B,Z,h,w]` (nearest-resized to H×W).
    pub fn forward(&self, x: &Tensor, zq: &Tensor) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        let zq = zq.upsample_nearest2d([h, w], None, None);
        self.norm_layer.forward(x) * self.conv_y.forward(&zq) + self.conv_b.forward(&zq)
    }
}

/// The encoder's plain GroupNorm or the decoder's SpatialNorm.
pub enum Norm {
    Group(GroupNorm),
    Spatial(SpatialNorm),
}

impl Norm {
    pub fn new(p: &Params<'_>, channels: i64, zq_channels: Option<i64>) -> Self {
        match zq_channels {
            None => Norm::Group(GroupNorm::new(p, channels)),
            Some(z) => Norm::Spatial(SpatialNorm::new(p, channels, z)),
        }
    }

    pub fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Tensor {
        match self {
            Norm::Group(n) => n.forward(x),
            Norm::Spatial(n) => n.forward(x, zq.expect("SpatialNorm needs the quantized latent")),
        }
    }
}

/// 2D residual block; `[B,Cin,H,W] -> [B,Cout,H,W]`.
pub struct ResnetBlock {
    pub norm1: Norm,
    pub conv1: Conv2d,
    pub norm2: Norm,
    pub conv2: Conv2d,
    pub nin_shortcut: Option<Conv2d>,
    dropout: f64,
}

impl ResnetBlock {
    /// conv2 starts at zero, so a fresh block is the identity (its shortcut): deep stacks of
    /// them then train from a shallow network outwards, which converges far faster.
    pub fn new(p: &Params<'_>, cin: i64, cout: i64, zq: Option<i64>, dropout: f64) -> Self {
        ResnetBlock {
            norm1: Norm::new(&p.sub("norm1"), cin, zq),
            conv1: Conv2d::new(&p.sub("conv1"), cin, cout, 3, 1, 1),
            norm2: Norm::new(&p.sub("norm2"), cout, zq),
            conv2: Conv2d::with_init(
                &p.sub("conv2"),
                cout,
                cout,
                3,
                1,
                1,
                tch::nn::Init::Const(0.0),
                0.0,
            ),
            nin_shortcut: (cin != cout)
                .then(|| Conv2d::new(&p.sub("nin_shortcut"), cin, cout, 1, 1, 0)),
            dropout,
        }
    }

    pub fn forward(&self, x: &Tensor, zq: Option<&Tensor>, train: bool) -> Tensor {
        let h = self.conv1.forward(&swish(&self.norm1.forward(x, zq)));
        let h = swish(&self.norm2.forward(&h, zq)).dropout(self.dropout, train);
        let h = self.conv2.forward(&h);
        match &self.nin_shortcut {
            Some(s) => s.forward(x) + h,
            None => x + h,
        }
    }
}

/// Single-head self-attention over the H·W positions, with 1×1-conv projections (the original
/// layout stores them as `[C,C,1,1]`); residual included. `[B,C,H,W] -> [B,C,H,W]`.
pub struct AttnBlock {
    pub norm: Norm,
    pub q: Conv2d,
    pub k: Conv2d,
    pub v: Conv2d,
    pub proj_out: Conv2d,
}

impl AttnBlock {
    pub fn new(p: &Params<'_>, c: i64, zq: Option<i64>) -> Self {
        AttnBlock {
            norm: Norm::new(&p.sub("norm"), c, zq),
            q: Conv2d::new(&p.sub("q"), c, c, 1, 1, 0),
            k: Conv2d::new(&p.sub("k"), c, c, 1, 1, 0),
            v: Conv2d::new(&p.sub("v"), c, c, 1, 1, 0),
            // Zero output projection: a fresh attention block is the identity too.
            proj_out: Conv2d::with_init(
                &p.sub("proj_out"),
                c,
                c,
                1,
                1,
                0,
                tch::nn::Init::Const(0.0),
                0.0,
            ),
        }
    }

    pub fn forward(&self, x: &Tensor, zq: Option<&Tensor>) -> Tensor {
        let (b, c, h, w) = x.size4().expect("AttnBlock takes [B,C,H,W]");
        let nx = self.norm.forward(x, zq);
        // [B,C,H,W] -> [B,1,HW,C]: one head whose width is all channels.
        let seq = |t: Tensor| t.reshape([b, c, h * w]).transpose(1, 2).unsqueeze(1);
        let (q, k, v) =
            (seq(self.q.forward(&nx)), seq(self.k.forward(&nx)), seq(self.v.forward(&nx)));
        let a = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, false, None, false,
        );
        let a = a.squeeze_dim(1).transpose(1, 2).reshape([b, c, h, w]);
        x + self.proj_out.forward(&a)
    }
}

/// Stride-2 3×3 convolution after padding one pixel right and bottom; `[B,C,H,W] -> [B,C,H/2,W/2]`.
pub struct Downsample {
    pub conv: Conv2d,
}

impl Downsample {
    pub fn new(p: &Params<'_>, c: i64) -> Self {
        Downsample { conv: Conv2d::new(&p.sub("conv"), c, c, 3, 2, 0) }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]))
    }
}

/// Nearest 2× upsampling then a 3×3 convolution; `[B,C,H,W] -> [B,C,2H,2W]`.
pub struct Upsample {
    pub conv: Conv2d,
}

impl Upsample {
    pub fn new(p: &Params<'_>, c: i64) -> Self {
        Upsample { conv: Conv2d::new(&p.sub("conv"), c, c, 3, 1, 1) }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        self.conv.forward(&x.upsample_nearest2d([2 * h, 2 * w], None, None))
    }
}

/// Temporal residual block with BatchNorm3d; `[B,C,T,H,W] -> [B,C,T,H,W]`.
pub struct TemporalResnetBlock {
    pub norm1: BatchNorm3d,
    pub conv1: CausalConv3d,
    pub norm2: BatchNorm3d,
    pub conv2: CausalConv3d,
    dropout: f64,
}

impl TemporalResnetBlock {
    pub fn new(p: &Params<'_>, c: i64, dropout: f64) -> Self {
        TemporalResnetBlock {
            norm1: BatchNorm3d::new(&p.sub("norm1"), c),
            conv1: CausalConv3d::new(&p.sub("conv1"), c, c, [3, 3, 3], [1, 1, 1]),
            norm2: BatchNorm3d::new(&p.sub("norm2"), c),
            conv2: CausalConv3d::new(&p.sub("conv2"), c, c, [3, 3, 3], [1, 1, 1]),
            dropout,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.conv1.forward(&swish(&self.norm1.forward(x, train)));
        let h = swish(&self.norm2.forward(&h, train)).dropout(self.dropout, train);
        x + self.conv2.forward(&h)
    }

    /// Starts the block as the identity: its residual branch's last convolution at zero.
    pub fn init_identity(&self) {
        self.conv2.init_zero();
    }
}

/// Halves time with a (4,3,3) causal convolution of stride (2,1,1); `[B,C,T,H,W] -> [B,C,T/2,H,W]`.
pub struct TemporalDownsample {
    pub conv: CausalConv3d,
}

impl TemporalDownsample {
    pub fn new(p: &Params<'_>, c: i64) -> Self {
        TemporalDownsample { conv: CausalConv3d::new(&p.sub("conv"), c, c, [4, 3, 3], [2, 1, 1]) }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(x)
    }

    /// Starts as frame selection: output frame t is input frame 2t + 1 (the newest it sees),
    /// plus `shift`.
    pub fn init_identity(&self, shift: f64) {
        self.conv.init_copy_newest_frame(shift);
    }
}

/// Doubles time by repeating each frame (nearest interpolation), then a (3,3,3) causal
/// convolution; `[B,C,T,H,W] -> [B,C,2T,H,W]`.
pub struct TemporalUpsample {
    pub conv: CausalConv3d,
}

impl TemporalUpsample {
    pub fn new(p: &Params<'_>, c: i64) -> Self {
        TemporalUpsample { conv: CausalConv3d::new(&p.sub("conv"), c, c, [3, 3, 3], [1, 1, 1]) }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.conv.forward(&x.repeat_interleave_self_int(2, 2, None))
    }

    /// Starts as plain frame repetition: output frame t is input frame t / 2, plus `shift`.
    pub fn init_identity(&self, shift: f64) {
        self.conv.init_copy_newest_frame(shift);
    }
}
