//! The VQ decoder: temporal upsampling of the latent (and of the quantized latent that
//! conditions every SpatialNorm), then a 2D trunk per frame.
//!
//! Shapes: B batch, T' latent frames, T = 4T' frames, Z latent channels, h/w latent grid,
//! H/W pixels.

use super::blocks::{
    AttnBlock, ResnetBlock, SpatialNorm, TemporalResnetBlock, TemporalUpsample, Upsample,
};
use super::config::VqConfig;
use super::encoder::Mid;
use crate::nn::{Conv2d, Params, swish};
use tch::Tensor;

/// One resolution level of the decoder; `up[i]` works at the resolution of `encoder.down[i]`.
pub struct UpLevel {
    pub block: Vec<ResnetBlock>,
    pub attn: Vec<AttnBlock>,
    pub upsample: Option<Upsample>,
}

pub struct Decoder {
    pub time_res_stack: Vec<TemporalResnetBlock>,
    pub time_conv: Vec<TemporalUpsample>,
    pub conv_in: Conv2d,
    pub mid: Mid,
    pub up: Vec<UpLevel>,
    pub norm_out: SpatialNorm,
    pub conv_out: Conv2d,
}

impl Decoder {
    pub fn new(p: &Params<'_>, cfg: &VqConfig) -> Self {
        let zq = Some(cfg.embed_dim);
        let levels = cfg.ch_mult.len();
        let mut block_in = cfg.block_channels();
        let mut up: Vec<Option<UpLevel>> = (0..levels).map(|_| None).collect();
        for i in (0..levels).rev() {
            let lp = p.sub("up").sub(i);
            let block_out = cfg.ch * cfg.ch_mult[i];
            let mut block = Vec::new();
            let mut attn = Vec::new();
            for j in 0..=cfg.num_res_blocks {
                block.push(ResnetBlock::new(
                    &lp.sub("block").sub(j),
                    block_in,
                    block_out,
                    zq,
                    cfg.dropout,
                ));
                block_in = block_out;
                if cfg.attn_resolutions.contains(&(i as i64)) {
                    attn.push(AttnBlock::new(&lp.sub("attn").sub(j), block_in, zq));
                }
            }
            let upsample = (i != 0).then(|| Upsample::new(&lp.sub("upsample"), block_in));
            up[i] = Some(UpLevel { block, attn, upsample });
        }
        let z = cfg.z_channels;
        let time_levels = cfg.temporal_downsample_factor.trailing_zeros() as i64;
        Decoder {
            time_res_stack: (0..cfg.num_res_blocks)
                .map(|i| TemporalResnetBlock::new(&p.sub("time_res_stack").sub(i), z, cfg.dropout))
                .collect(),
            time_conv: (0..time_levels)
                .map(|i| TemporalUpsample::new(&p.sub("time_conv").sub(i), z))
                .collect(),
            conv_in: Conv2d::new(&p.sub("conv_in"), z, cfg.block_channels(), 3, 1, 1),
            mid: Mid::new(&p.sub("mid"), cfg.block_channels(), zq, cfg.dropout),
            up: up.into_iter().map(|l| l.expect("every level is built")).collect(),
            norm_out: SpatialNorm::new(&p.sub("norm_out"), block_in, cfg.embed_dim),
            conv_out: Conv2d::new(&p.sub("conv_out"), block_in, cfg.out_channels, 3, 1, 1),
        }
    }

    /// Temporal part, applied to the post-quant latent and the quantized latent together (the
    /// reference concatenates them along the batch). `[B,T',Z,h,w]` twice -> `[B,T,Z,h,w]` twice.
    pub fn temporal(&self, z: &Tensor, zq: &Tensor, train: bool) -> (Tensor, Tensor) {
        let b = z.size()[0];
        let mut h = Tensor::cat(&[z, zq], 0).permute([0, 2, 1, 3, 4]);
        for block in &self.time_res_stack {
            h = block.forward(&h, train);
        }
        for conv in &self.time_conv {
            h = swish(&conv.forward(&h));
        }
        let h = h.permute([0, 2, 1, 3, 4]);
        (h.narrow(0, 0, b), h.narrow(0, b, b))
    }

    /// The per-frame 2D trunk; `[N,Z,h,w]`, `[N,E,h,w]` -> `[N,3,H,W]`.
    pub fn spatial(&self, z: &Tensor, zq: &Tensor, train: bool) -> Tensor {
        let mut h = self.conv_in.forward(z);
        h = self.mid.forward(&h, Some(zq), train);
        for level in self.up.iter().rev() {
            for (j, block) in level.block.iter().enumerate() {
                h = block.forward(&h, Some(zq), train);
                if let Some(a) = level.attn.get(j) {
                    h = a.forward(&h, Some(zq));
                }
            }
            if let Some(u) = &level.upsample {
                h = u.forward(&h);
            }
        }
        self.conv_out.forward(&swish(&self.norm_out.forward(&h, zq)))
    }

    /// `[B,T',Z,h,w]` (post-quant) and `[B,T',E,h,w]` (quantized) -> `[B,T,3,H,W]`.
    /// With `first_frame_only` (an image), only frame 0 goes through the 2D trunk:
    /// `[B,1,3,H,W]`, and `train` applies to the 2D trunk only, as in `Encoder::forward_image`.
    pub fn forward(&self, z: &Tensor, zq: &Tensor, first_frame_only: bool, train: bool) -> Tensor {
        let (z, zq) = self.temporal(z, zq, train && !first_frame_only);
        let (z, zq) =
            if first_frame_only { (z.narrow(1, 0, 1), zq.narrow(1, 0, 1)) } else { (z, zq) };
        let (b, t) = (z.size()[0], z.size()[1]);
        let frames = self.spatial(&z.flatten(0, 1), &zq.flatten(0, 1), train);
        let s = frames.size();
        frames.reshape([b, t, s[1], s[2], s[3]])
    }
}
