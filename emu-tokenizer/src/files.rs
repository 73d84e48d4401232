//! Images and videos on disk <-> code grids: what `emu tokenize` / `emu detokenize` do.
//!
//! A videos is a GIF or a folder of frames (sorted by name). Code files are safetensors with
//! one tensor per input: `[h,w]` for an image, `[T',h,w]` for a video, named by the input's
//! position (`000000`, `000001`, ...), and the source paths in the metadata.
//!
//! Shapes: T frames, T' = T / 4 latent frames, H/W pixels, h/w code grid.

use crate::image::{ImageProcessor, load_image, psnr, resize, to_image, to_tensor};
use crate::vq::{VqModel, pad_frames};
use anyhow::{Context, Result, bail, ensure};
use image::RgbImage;
use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::{AnimationDecoder, Delay, Frame};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// The tokenizer folder's image processor (preprocessor_config.json), else Emu3's default with
/// the tokenizer's spatial factor.
pub fn processor_for(dir: &Path, vq: &VqModel) -> Result<ImageProcessor> {
    let p = dir.join("preprocessor_config.json");
    let mut proc = if p.exists() {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not valid JSON", p.display()))?;
        let get = |k: &str, d: i64| v.get(k).and_then(|x| x.as_i64()).unwrap_or(d);
        let def = ImageProcessor::default();
        ImageProcessor {
            min_pixels: get("min_pixels", def.min_pixels),
            max_pixels: get("max_pixels", def.max_pixels),
            spatial_factor: 8,
        }
    } else {
        ImageProcessor::default()
    };
    proc.spatial_factor = vq.config.spatial_factor();
    Ok(proc)
}

fn is_image_file(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "gif" | "webp" | "bmp"))
}

/// Reads a video: a GIF file or a folder of image frames (other files, like a caption, are
/// ignored).
pub fn load_video(path: &Path) -> Result<Vec<RgbImage>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        files.sort();
        ensure!(
            !files.is_empty(),
            "video folder {} holds no frames (png, jpg, gif, webp, bmp)",
            path.display()
        );
        let frames = files.iter().map(|f| load_image(f)).collect::<Result<Vec<_>>>()?;
        let (w, h) = frames[0].dimensions();
        for (f, img) in files.iter().zip(&frames) {
            ensure!(
                img.dimensions() == (w, h),
                "frame {} is {:?}, but the first frame is {w}x{h}",
                f.display(),
                img.dimensions()
            );
        }
        return Ok(frames);
    }
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read video {}", path.display()))?;
    let decoder = GifDecoder::new(std::io::BufReader::new(file))
        .with_context(|| format!("{} is neither a GIF nor a folder of frames", path.display()))?;
    let frames: Vec<RgbImage> = decoder
        .into_frames()
        .collect_frames()
        .with_context(|| format!("decoding {}", path.display()))?
        .into_iter()
        .map(|f| image::DynamicImage::ImageRgba8(f.into_buffer()).to_rgb8())
        .collect();
    ensure!(!frames.is_empty(), "{} has no frames", path.display());
    Ok(frames)
}

/// Writes frames as an animated GIF at `fps`.
pub fn save_gif(frames: &[RgbImage], path: &Path, fps: u32) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = GifEncoder::new_with_speed(file, 10);
    enc.set_repeat(Repeat::Infinite)?;
    let delay = Delay::from_numer_denom_ms(1000, fps.max(1));
    for f in frames {
        let rgba = image::DynamicImage::ImageRgb8(f.clone()).to_rgba8();
        enc.encode_frame(Frame::from_parts(rgba, 0, 0, delay))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One tokenized input.
pub struct Tokenized {
    pub source: PathBuf,
    /// `[h,w]` (image) or `[T',h,w]` (video), i64 on CPU.
    pub codes: Tensor,
    /// The pixels that were encoded, for reconstruction checks.
    pub frames: Vec<RgbImage>,
}

/// Tokenizes an image file at the processor's size (or at `size` = (H, W) if given).
pub fn tokenize_image(
    vq: &VqModel,
    proc: &ImageProcessor,
    path: &Path,
    size: Option<(u32, u32)>,
) -> Result<Tokenized> {
    let img = load_image(path)?;
    let (h, w) = match size {
        Some(s) => s,
        None => {
            let (h, w) =
                proc.target_size(&img).with_context(|| format!("image {}", path.display()))?;
            (h as u32, w as u32)
        }
    };
    let f = vq.config.spatial_factor() as u32;
    ensure!(h % f == 0 && w % f == 0, "size {h}x{w} must be a multiple of {f}");
    let img = resize(&img, h, w);
    let codes = vq
        .encode_images(&to_tensor(&img).unsqueeze(0).to_device(vq.device()))
        .squeeze_dim(0)
        .to_device(Device::Cpu);
    Ok(Tokenized { source: path.to_path_buf(), codes, frames: vec![img] })
}

/// Tokenizes a video (GIF or frame folder); its frames are padded to a multiple of 4 by
/// repeating the last one.
pub fn tokenize_video(
    vq: &VqModel,
    proc: &ImageProcessor,
    path: &Path,
    size: Option<(u32, u32)>,
) -> Result<Tokenized> {
    let frames = load_video(path)?;
    let (h, w) = match size {
        Some(s) => s,
        None => {
            let (h, w) = proc
                .target_size(&frames[0])
                .with_context(|| format!("video {}", path.display()))?;
            (h as u32, w as u32)
        }
    };
    let frames: Vec<RgbImage> = frames.iter().map(|f| resize(f, h, w)).collect();
    let clip = Tensor::stack(&frames.iter().map(to_tensor).collect::<Vec<_>>(), 0).unsqueeze(0);
    let clip = pad_frames(&clip, vq.config.temporal_downsample_factor);
    let codes =
        vq.encode_video(&clip.to_device(vq.device()))?.squeeze_dim(0).to_device(Device::Cpu);
    Ok(Tokenized { source: path.to_path_buf(), codes, frames })
}

/// Decodes `[h,w]` or `[T',h,w]` codes to frames.
pub fn decode_codes(vq: &VqModel, codes: &Tensor) -> Result<Vec<RgbImage>> {
    let k = vq.config.codebook_size;
    let (lo, hi) = (codes.min().int64_value(&[]), codes.max().int64_value(&[]));
    ensure!(
        lo >= 0 && hi < k,
        "codes lie in [{lo}, {hi}], outside this tokenizer's codebook of {k}"
    );
    let codes = codes.to_device(vq.device());
    let pixels = match codes.dim() {
        2 => vq.decode_images(&codes.unsqueeze(0)),
        3 => vq.decode_video(&codes.unsqueeze(0)).squeeze_dim(0),
        d => bail!("codes must be [h,w] or [T',h,w], got {d} dimensions"),
    };
    let pixels = if pixels.dim() == 4 { pixels } else { pixels.unsqueeze(0) };
    Ok((0..pixels.size()[0]).map(|i| to_image(&pixels.get(i))).collect())
}

/// Mean PSNR of reconstructed frames against the originals (only as many as both have).
pub fn mean_psnr(original: &[RgbImage], recon: &[RgbImage]) -> f64 {
    let n = original.len().min(recon.len());
    original.iter().zip(recon).take(n).map(|(a, b)| psnr(a, b).min(100.0)).sum::<f64>()
        / n.max(1) as f64
}

/// Writes code grids to one safetensors file.
pub fn save_codes(items: &[Tokenized], path: &Path) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = items
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("{i:06}"), t.codes.shallow_clone()))
        .collect();
    let sources: Vec<String> = items.iter().map(|t| t.source.display().to_string()).collect();
    crate::checkpoint::save_atomic(&tensors, path)?;
    std::fs::write(path.with_extension("sources.json"), serde_json::to_string_pretty(&sources)?)
        .with_context(|| format!("writing the sources beside {}", path.display()))
}

/// Reads code grids written by [`save_codes`] (or any safetensors of i64 grids), in name order.
pub fn load_codes(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let ckpt = crate::checkpoint::Checkpoint::open(path)?;
    let mut out = Vec::new();
    for name in ckpt.names() {
        let t = ckpt.tensor(name, Device::Cpu)?;
        ensure!(
            t.kind() == tch::Kind::Int64,
            "{}: `{name}` is {:?}, expected int64 codes",
            path.display(),
            t.kind()
        );
        ensure!(
            matches!(t.dim(), 2 | 3),
            "{}: `{name}` has shape {:?}, expected [h,w] or [T',h,w]",
            path.display(),
            t.size()
        );
        out.push((name.to_string(), t));
    }
    ensure!(!out.is_empty(), "{} holds no code grids", path.display());
    Ok(out)
}
