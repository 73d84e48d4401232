//! The VQ encoder: a 2D trunk applied to every frame, then temporal downsampling over frames.
//!
//! Shapes: B batch, T frames, C channels, H/W pixels; h/w = H/8, W/8 (Emu3), T' = T/4.

use super::blocks::{AttnBlock, Downsample, ResnetBlock, TemporalDownsample, TemporalResnetBlock};
use super::config::VqConfig;
use crate::nn::{Conv2d, GroupNorm, Params, swish};
use tch::Tensor;

/// One resolution level of the encoder.
pub struct DownLevel {
    pub block: Vec<ResnetBlock>,
    pub attn: Vec<AttnBlock>,
    pub downsample: Option<Downsample>,
}

/// The middle of either trunk: block, attention, block.
pub struct Mid {
    pub block_1: ResnetBlock,
    pub attn_1: AttnBlock,
    pub block_2: ResnetBlock,
}

impl Mid {
    pub fn new(p: &Params<'_>, c: i64, zq: Option<i64>, dropout: f64) -> Self {
        Mid {
            block_1: ResnetBlock::new(&p.sub("block_1"), c, c, zq, dropout),
            attn_1: AttnBlock::new(&p.sub("attn_1"), c, zq),
            block_2: ResnetBlock::new(&p.sub("block_2"), c, c, zq, dropout),
        }
    }

    pub fn forward(&self, x: &Tensor, zq: Option<&Tensor>, train: bool) -> Tensor {
        let h = self.block_1.forward(x, zq, train);
        let h = self.attn_1.forward(&h, zq);
        self.block_2.forward(&h, zq, train)
    }
}

pub struct Encoder {
    pub conv_in: Conv2d,
    pub down: Vec<DownLevel>,
    pub mid: Mid,
    pub norm_out: GroupNorm,
    pub conv_out: Conv2d,
    pub time_conv: Vec<TemporalDownsample>,
    pub time_res_stack: Vec<TemporalResnetBlock>,
}

impl Encoder {
    pub fn new(p: &Params<'_>, cfg: &VqConfig) -> Self {
        let levels = cfg.ch_mult.len();
        let mut block_in = cfg.ch;
        let mut down = Vec::with_capacity(levels);
        for (i, &mult) in cfg.ch_mult.iter().enumerate() {
            let lp = p.sub("down").sub(i);
            let block_out = cfg.ch * mult;
            let mut block = Vec::new();
            let mut attn = Vec::new();
            for j in 0..cfg.num_res_blocks {
                block.push(ResnetBlock::new(
                    &lp.sub("block").sub(j),
                    block_in,
                    block_out,
                    None,
                    cfg.dropout,
                ));
                block_in = block_out;
                if cfg.attn_resolutions.contains(&(i as i64)) {
                    attn.push(AttnBlock::new(&lp.sub("attn").sub(j), block_in, None));
                }
            }
            let downsample =
                (i + 1 != levels).then(|| Downsample::new(&lp.sub("downsample"), block_in));
            down.push(DownLevel { block, attn, downsample });
        }
        let z = cfg.encoder_out_channels();
        let time_levels = cfg.temporal_downsample_factor.trailing_zeros() as i64;
        Encoder {
            conv_in: Conv2d::new(&p.sub("conv_in"), cfg.in_channels, cfg.ch, 3, 1, 1),
            down,
            mid: Mid::new(&p.sub("mid"), block_in, None, cfg.dropout),
            norm_out: GroupNorm::new(&p.sub("norm_out"), block_in),
            conv_out: Conv2d::new(&p.sub("conv_out"), block_in, z, 3, 1, 1),
            time_conv: (0..time_levels)
                .map(|i| TemporalDownsample::new(&p.sub("time_conv").sub(i), z))
                .collect(),
            time_res_stack: (0..cfg.num_res_blocks)
                .map(|i| TemporalResnetBlock::new(&p.sub("time_res_stack").sub(i), z, cfg.dropout))
                .collect(),
        }
    }

    /// The per-frame 2D trunk; `[N,3,H,W] -> [N,Z,h,w]` (N = frames of every clip).
    pub fn spatial(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = self.conv_in.forward(x);
        for level in &self.down {
            for (j, block) in level.block.iter().enumerate() {
                h = block.forward(&h, None, train);
                if let Some(a) = level.attn.get(j) {
                    h = a.forward(&h, None);
                }
            }
            if let Some(d) = &level.downsample {
                h = d.forward(&h);
            }
        }
        let h = self.mid.forward(&h, None, train);
        self.conv_out.forward(&swish(&self.norm_out.forward(&h)))
    }

    /// The temporal tail; `[B,Z,T,h,w] -> [B,Z,T',h,w]`.
    pub fn temporal(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for conv in &self.time_conv {
            h = swish(&conv.forward(&h));
        }
        for block in &self.time_res_stack {
            h = block.forward(&h, train);
        }
        h
    }

    /// `[B,T,3,H,W] -> [B,T',Z,h,w]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let frames = self.spatial(&x.flatten(0, 1), train);
        let s = frames.size();
        let clip = frames.reshape([b, t, s[1], s[2], s[3]]).permute([0, 2, 1, 3, 4]);
        self.temporal(&clip, train).permute([0, 2, 1, 3, 4])
    }

    /// An image as a `t`-frame clip of itself, with the 2D trunk run once instead of `t` times:
    /// `[B,3,H,W] -> [B,T',Z,h,w]`, equal to `forward` on the repeated clip. `train` applies to
    /// the 2D trunk only: an image says nothing about time, so the temporal layers always run in
    /// inference mode here and their batch norms keep statistics drawn from videos.
    pub fn forward_image(&self, x: &Tensor, t: i64, train: bool) -> Tensor {
        let frame = self.spatial(x, train);
        let clip = frame.unsqueeze(2).expand([-1, -1, t, -1, -1], false);
        self.temporal(&clip, false).permute([0, 2, 1, 3, 4])
    }
}
