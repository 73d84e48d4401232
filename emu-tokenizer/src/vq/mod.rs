//! The Emu3 vision tokenizer (SBER-MoVQGAN with temporal layers): pixels <-> code grids.
//!
//! An image is encoded as a clip of `temporal_downsample_factor` copies of itself, exactly as the
//! reference does, but cheaply: the per-frame 2D trunk runs once and its output is tiled in time;
//! decoding an image runs the 2D trunk on frame 0 only. Both shortcuts compute the same arithmetic
//! because the 2D trunk sees one frame at a time: codes are identical, and pixels differ only by
//! libtorch's batch-size-dependent summation order (the same clip alone or in a batch of 4 differs
//! as much).
//!
//! Shapes: B batch, T frames, T' = T / temporal factor, Z latent channels, E embed_dim,
//! H/W pixels, h/w = H/8, W/8 the code grid.

/// The bias the identity init gives the first temporal convolution of each stack: swish's slope
/// lies within 10% of 1 from 2 upwards, so latents within ±2 pass through almost linearly.
pub const TEMPORAL_INIT_SHIFT: f64 = 4.0;

pub mod blocks;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod layout;
pub mod quantize;

use crate::checkpoint::{self, Checkpoint};
use crate::nn::Params;
use anyhow::{Result, ensure};
use blocks::CausalConv3d;
pub use config::VqConfig;
use decoder::Decoder;
use encoder::Encoder;
pub use layout::VqLayout;
use quantize::{Quantized, Quantizer};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn::VarStore};

pub struct VqModel {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quantize: Quantizer,
    pub quant_conv: CausalConv3d,
    pub post_quant_conv: CausalConv3d,
    pub config: VqConfig,
    pub vs: VarStore,
    /// Most clips per forward pass; larger batches are split (bounds memory).
    pub batch_size: i64,
}

/// What a training forward pass returns.
pub struct VqForward {
    /// `[B,T,3,H,W]` (images: `[B,1,3,H,W]`, frame 0 only).
    pub recon: Tensor,
    pub quantized: Quantized,
    /// `[B,T',E,h,w]` before quantization, for codebook statistics and restarts.
    pub z: Tensor,
}

impl VqModel {
    /// A randomly initialised tokenizer.
    pub fn new(config: VqConfig, device: Device, kind: Kind) -> Result<Self> {
        config.validate()?;
        let vs = VarStore::new(device);
        let model = Self::build(&Params::new(&vs, kind), config);
        Ok(VqModel { vs, ..model })
    }

    /// Re-initialises the temporal layers as the identity, up to the activation after each
    /// temporal resampling: temporal convolutions copy frames and temporal residual branches
    /// start at zero. For training from scratch. With the random default init, every latent,
    /// even an image's, first passes through a random mix of the narrow Z-channel bottleneck in
    /// both encoder and decoder, and the 2D trunks must learn around it. After 600 steps on the
    /// 32-pixel world of the time (a 3×3 grid of small shapes; 4x, 8x8 codes) this init gives
    /// 27.3 dB instead of 26.1, and a detector reads colours and places back from 93% of
    /// reconstructions instead of 70%; at 24 pixels and 8x (3x3 codes), 26.1 dB instead of
    /// 21.7, and 72% instead of 5%.
    ///
    /// Each temporal resampling is followed by swish, which squashes negative latents towards 0,
    /// so the first temporal convolution of each stack adds [`TEMPORAL_INIT_SHIFT`]: latents
    /// enter swish where it is nearly linear and keep their sign. With the temporal layers held
    /// at this init (as training holds them on image batches), a detector reads 52% of shapes
    /// back after 600 steps on that world, against 39% without the shift and 54% with the
    /// swishes removed altogether.
    ///
    /// `quant_conv` and `post_quant_conv` are temporal too (3 taps). An image is one latent frame
    /// behind two frames of causal zero padding, so it meets only their newest tap, and image
    /// training never moves the older two: left random, they mixed each later latent frame of a
    /// video with random projections of the one before, and a still clip's second latent frame
    /// came out as codes unlike its first (none equal in an 8-frame clip). They start at zero.
    pub fn init_temporal_identity(&self) {
        self.quant_conv.zero_older_taps();
        self.post_quant_conv.zero_older_taps();
        let shift = |i: usize| if i == 0 { TEMPORAL_INIT_SHIFT } else { 0.0 };
        for (i, t) in self.encoder.time_conv.iter().enumerate() {
            t.init_identity(shift(i));
        }
        for (i, t) in self.decoder.time_conv.iter().enumerate() {
            t.init_identity(shift(i));
        }
        for b in self.encoder.time_res_stack.iter().chain(&self.decoder.time_res_stack) {
            b.init_identity();
        }
    }

    /// The temporal layers' tensors (both stacks' resampling convolutions and residual blocks,
    /// batch-norm statistics included), with their checkpoint names.
    pub fn temporal_parameters(&self) -> Vec<(String, Tensor)> {
        let mut params: Vec<_> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(name, _)| name.contains(".time_conv.") || name.contains(".time_res_stack."))
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        params
    }

    /// Names and shapes only (zero-stride parameters, no memory): for inspecting checkpoints.
    pub fn shape_only(config: VqConfig) -> Self {
        let vs = VarStore::new(Device::Cpu);
        let model = Self::build(&Params::shape_only(&vs), config);
        VqModel { vs, ..model }
    }

    fn build(p: &Params<'_>, config: VqConfig) -> Self {
        let (z, e) = (config.z_channels, config.embed_dim);
        VqModel {
            encoder: Encoder::new(&p.sub("encoder"), &config),
            decoder: Decoder::new(&p.sub("decoder"), &config),
            quantize: Quantizer::new(&p.sub("quantize"), config.codebook_size, e),
            quant_conv: CausalConv3d::new(&p.sub("quant_conv"), z, e, [3, 1, 1], [1, 1, 1]),
            post_quant_conv: CausalConv3d::new(
                &p.sub("post_quant_conv"),
                e,
                z,
                [3, 1, 1],
                [1, 1, 1],
            ),
            config,
            vs: VarStore::new(Device::Cpu),
            batch_size: 16,
        }
    }

    /// Loads a tokenizer folder (config.json + weights) in either layout; a transformers Emu3
    /// folder works too (its `vq_config` and `vqmodel.*` tensors are used).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let config = VqConfig::from_file(&dir.join("config.json"))?;
        let ckpt = Checkpoint::open(dir)?;
        let mut model = Self::new(config, device, kind)?;
        model.load_weights(&ckpt)?;
        Ok(model)
    }

    /// Copies weights from `ckpt` (layout auto-detected), checking coverage both ways.
    pub fn load_weights(&mut self, ckpt: &Checkpoint) -> Result<VqLayout> {
        let layout = VqLayout::detect(ckpt)?;
        checkpoint::load_into(&self.vs.variables(), ckpt, &layout, "VQ tokenizer")?;
        Ok(layout)
    }

    /// Writes a tokenizer folder in BAAI's original layout: config.json and model.safetensors.
    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save_model_folder(
            dir,
            &self.config,
            "Emu3VisionVQModel",
            "Emu3VisionVQ",
            &self.vs.variables(),
        )
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    fn temporal(&self) -> i64 {
        self.config.temporal_downsample_factor
    }

    /// Runs `f` over `x` in slices of `batch_size` along dim 0.
    fn chunked(&self, x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
        let n = x.size()[0];
        if n <= self.batch_size {
            return f(x);
        }
        let parts: Vec<Tensor> = x.split(self.batch_size, 0).iter().map(f).collect();
        Tensor::cat(&parts, 0)
    }

    fn check_pixels(&self, x: &Tensor, what: &str) {
        let s = x.size();
        let f = self.config.spatial_factor();
        let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
        assert!(
            s[s.len() - 3] == self.config.in_channels && h % f == 0 && w % f == 0 && h > 0 && w > 0,
            "{what}: expected {} channels and H, W multiples of {f}, got shape {s:?}",
            self.config.in_channels
        );
    }

    /// `[B,Z,T',h,w]`-style conv on `[B,T',C,h,w]` tensors.
    fn time_conv(conv: &CausalConv3d, x: &Tensor) -> Tensor {
        conv.forward(&x.permute([0, 2, 1, 3, 4])).permute([0, 2, 1, 3, 4])
    }

    /// Encoder output before `quant_conv`: `[B,3,H,W] -> [B,T',Z,h,w]` (fast image path).
    pub fn image_latents(&self, x: &Tensor) -> Tensor {
        assert_eq!(x.dim(), 4, "image_latents takes [B,3,H,W], got {:?}", x.size());
        self.check_pixels(x, "image_latents");
        tch::no_grad(|| self.chunked(x, |x| self.encoder.forward_image(x, self.temporal(), false)))
    }

    /// Encoder output before `quant_conv`: `[B,T,3,H,W] -> [B,T',Z,h,w]`.
    pub fn video_latents(&self, x: &Tensor) -> Result<Tensor> {
        ensure!(x.dim() == 5, "video_latents takes [B,T,3,H,W], got {:?}", x.size());
        let t = x.size()[1];
        ensure!(
            t > 0 && t % self.temporal() == 0,
            "a video must have a multiple of {} frames, got {t}: the tokenizer turns each {} frames into one \
             latent frame and the reference silently drops the rest\nhint: trim the clip, or pad it by repeating \
             its last frame (emu_tokenizer::vq::pad_frames)",
            self.temporal(),
            self.temporal()
        );
        self.check_pixels(x, "video_latents");
        Ok(tch::no_grad(|| self.chunked(x, |x| self.encoder.forward(x, false))))
    }

    /// `[B,3,H,W]` in [-1,1] -> codes `[B,h,w]`.
    pub fn encode_images(&self, x: &Tensor) -> Tensor {
        let z = self.image_latents(x);
        tch::no_grad(|| self.quantize.codes(&Self::time_conv(&self.quant_conv, &z))).squeeze_dim(1)
    }

    /// `[B,T,3,H,W]` in [-1,1] (T a multiple of the temporal factor) -> codes `[B,T',h,w]`.
    pub fn encode_video(&self, x: &Tensor) -> Result<Tensor> {
        let z = self.video_latents(x)?;
        Ok(tch::no_grad(|| self.quantize.codes(&Self::time_conv(&self.quant_conv, &z))))
    }

    /// The reference's literal image path: repeat the image in time and run the whole encoder.
    pub fn encode_images_clip(&self, x: &Tensor) -> Tensor {
        let clip = x.unsqueeze(1).repeat([1, self.temporal(), 1, 1, 1]);
        self.encode_video(&clip).expect("a repeated image has the right frame count").squeeze_dim(1)
    }

    fn decode(&self, codes: &Tensor, first_frame_only: bool) -> Tensor {
        let k = self.config.codebook_size;
        let (lo, hi) = (codes.min().int64_value(&[]), codes.max().int64_value(&[]));
        assert!(lo >= 0 && hi < k, "codes must lie in [0, {k}), got values in [{lo}, {hi}]");
        let codes = codes.to_device(self.device());
        tch::no_grad(|| {
            self.chunked(&codes, |c| {
                let zq = self.quantize.lookup(c);
                let z = Self::time_conv(&self.post_quant_conv, &zq);
                self.decoder.forward(&z, &zq, first_frame_only, false)
            })
        })
    }

    /// Codes `[B,h,w]` -> images `[B,3,H,W]` in about [-1,1] (frame 0 of the decoded clip).
    pub fn decode_images(&self, codes: &Tensor) -> Tensor {
        assert_eq!(codes.dim(), 3, "decode_images takes codes [B,h,w], got {:?}", codes.size());
        self.decode(&codes.unsqueeze(1), true).squeeze_dim(1)
    }

    /// Codes `[B,T',h,w]` -> video `[B,T,3,H,W]`.
    pub fn decode_video(&self, codes: &Tensor) -> Tensor {
        assert_eq!(codes.dim(), 4, "decode_video takes codes [B,T',h,w], got {:?}", codes.size());
        self.decode(codes, false)
    }

    /// The reference's literal image path: decode every frame, keep frame 0.
    pub fn decode_images_clip(&self, codes: &Tensor) -> Tensor {
        self.decode(&codes.unsqueeze(1), false).select(1, 0)
    }

    /// Decodes the quantized latent vectors `[B,T',E,h,w]` directly (no code lookup).
    pub fn decode_latents(&self, zq: &Tensor, first_frame_only: bool) -> Tensor {
        tch::no_grad(|| {
            let z = Self::time_conv(&self.post_quant_conv, zq);
            self.decoder.forward(&z, zq, first_frame_only, false)
        })
    }

    /// Training forward with gradients: `[B,T,3,H,W]` clips, or `[B,3,H,W]` images (encoded as
    /// clips of themselves, frame 0 reconstructed).
    pub fn forward_train(&self, x: &Tensor) -> VqForward {
        self.forward_with(x, true)
    }

    /// `forward_train` as a continuous autoencoder: the decoder reads the encoder's latents
    /// directly (the codes are still reported, and both VQ losses are zero). Training starts this
    /// way so the encoder learns what to tell apart before a codebook has to hold it.
    pub fn forward_continuous(&self, x: &Tensor) -> VqForward {
        self.forward_with(x, false)
    }

    fn forward_with(&self, x: &Tensor, quantize: bool) -> VqForward {
        let image = x.dim() == 4;
        let latent = if image {
            self.encoder.forward_image(x, self.temporal(), true)
        } else {
            self.encoder.forward(x, true)
        };
        let z = Self::time_conv(&self.quant_conv, &latent);
        let quantized = if quantize {
            self.quantize.quantize(&z)
        } else {
            let zero = Tensor::zeros([], (Kind::Float, z.device()));
            let codes = self.quantize.codes(&z.detach());
            Quantized {
                z_q: z.shallow_clone(),
                codes,
                codebook_loss: zero.copy(),
                commitment_loss: zero,
            }
        };
        let post = Self::time_conv(&self.post_quant_conv, &quantized.z_q);
        let recon = self.decoder.forward(&post, &quantized.z_q, image, true);
        VqForward { recon, quantized, z }
    }

    pub fn num_parameters(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}

/// Pads a `[B,T,C,H,W]` clip to a multiple of `factor` frames by repeating its last frame.
pub fn pad_frames(x: &Tensor, factor: i64) -> Tensor {
    let t = x.size()[1];
    let pad = (factor - t % factor) % factor;
    if pad == 0 {
        return x.shallow_clone();
    }
    let last = x.narrow(1, t - 1, 1).expand([-1, pad, -1, -1, -1], false);
    Tensor::cat(&[x, &last], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::swish;

    fn close(a: &Tensor, b: &Tensor) -> bool {
        a.allclose(b, 1e-6, 1e-6, false)
    }

    #[test]
    fn temporal_identity_init_passes_frames_through() {
        tch::manual_seed(0);
        let vq = VqModel::new(VqConfig::small(), Device::Cpu, Kind::Float).unwrap();
        let z = vq.config.z_channels;
        let clip = Tensor::randn([2, z, 4, 3, 3], (Kind::Float, Device::Cpu));
        let before = vq.encoder.temporal(&clip, false);
        vq.init_temporal_identity();
        // Encoder: two stride-2 levels, each keeping the newest of the frames it sees, each
        // followed by swish; the residual block adds nothing.
        let enc = vq.encoder.temporal(&clip, false);
        assert_eq!(enc.size(), [2, z, 1, 3, 3]);
        let want = swish(&swish(&(clip.narrow(2, 3, 1) + TEMPORAL_INIT_SHIFT)));
        assert!(close(&enc, &want), "encoder tail is not newest-frame selection");
        // Shifted into swish's near-linear range, latents within ±2 come out as themselves plus
        // a smooth offset: the map keeps a slope near 1 (plain swish's is 0.1 at -2).
        let grid = Tensor::linspace(-2.0, 2.0, 41, (Kind::Float, Device::Cpu));
        let through = swish(&swish(&(&grid + TEMPORAL_INIT_SHIFT)));
        let slope = (through.narrow(0, 1, 40) - through.narrow(0, 0, 40)) / 0.1;
        let (lo, hi) = (slope.min().double_value(&[]), slope.max().double_value(&[]));
        assert!(lo > 0.95 && hi < 1.25, "slope of the shifted tail in [{lo}, {hi}]");
        assert!(!close(&before, &want), "the default init must not already be the identity");
        // Decoder: two nearest-repeat levels, so each latent frame becomes 4 equal frames.
        let lat = Tensor::randn([2, 2, z, 3, 3], (Kind::Float, Device::Cpu));
        let (h, hq) = vq.decoder.temporal(&lat, &lat, false);
        assert_eq!(h.size(), [2, 8, z, 3, 3]);
        for t in 0..8 {
            let want = swish(&swish(&(lat.select(1, t / 4) + TEMPORAL_INIT_SHIFT)));
            assert!(
                close(&h.select(1, t), &want),
                "decoder frame {t} is not latent frame {}",
                t / 4
            );
            assert!(close(&hq.select(1, t), &want), "conditioning frame {t} differs");
        }
    }

    #[test]
    fn after_the_identity_init_each_latent_frame_of_a_video_encodes_its_own_newest_frame() {
        tch::manual_seed(0);
        let vq = VqModel::new(VqConfig::small(), Device::Cpu, Kind::Float).unwrap();
        let clip = Tensor::rand([1, 8, 3, 16, 16], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let still = clip.narrow(1, 0, 1).expand([1, 8, 3, 16, 16], false).contiguous();
        let latents = |v: &Tensor| {
            let z = vq.video_latents(v).unwrap();
            VqModel::time_conv(&vq.quant_conv, &z)
        };
        let mixed = latents(&still);
        assert!(
            !close(&mixed.select(1, 0), &mixed.select(1, 1)),
            "random older taps should make a still clip's latent frames differ"
        );
        vq.init_temporal_identity();
        let z = latents(&still);
        assert!(close(&z.select(1, 0), &z.select(1, 1)), "a still clip's latent frames differ");
        // Latent frame 1 of a moving clip is its frame 7 encoded as an image.
        let moving = latents(&clip).select(1, 1);
        let image = VqModel::time_conv(&vq.quant_conv, &vq.image_latents(&clip.select(1, 7)));
        let diff = (&moving - image.select(1, 0)).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "latent frame 1 is not frame 7's: they differ by up to {diff}");
        // And the decoder turns a code grid into the same frames wherever it stands in the clip.
        let codes = vq.encode_video(&clip).unwrap();
        let swapped = Tensor::stack(&[codes.select(1, 1), codes.select(1, 0)], 1);
        let (a, b) = (vq.decode_video(&codes), vq.decode_video(&swapped));
        assert!(
            a.narrow(1, 4, 4).allclose(&b.narrow(1, 0, 4), 1e-4, 1e-4, false),
            "latent frame 1 decodes differently in second place"
        );
    }
}
