//! Image pre- and post-processing as the reference does it: `smart_resize` to multiples of the
//! spatial factor within a pixel budget (Python's half-to-even rounding), bicubic resampling,
//! normalisation to [-1,1], and truncating conversion back to 8-bit.
//!
//! Shapes: C = 3 channels, H/W pixels.

use anyhow::{Context, Result, bail, ensure};
use image::{RgbImage, imageops::FilterType};
use std::path::Path;
use tch::{Kind, Tensor};

/// The reference's resizing rule. Returns (height, width), both multiples of `factor`, with
/// `min_pixels <= h·w <= max_pixels` where possible and the aspect ratio kept as well as can be.
pub fn smart_resize(
    height: i64,
    width: i64,
    factor: i64,
    min_pixels: i64,
    max_pixels: i64,
) -> Result<(i64, i64)> {
    ensure!(
        height >= factor && width >= factor,
        "image is {width}x{height}; both sides must be at least {factor} pixels"
    );
    let ratio = height.max(width) as f64 / height.min(width) as f64;
    ensure!(
        ratio <= 5.0,
        "image is {width}x{height}: aspect ratio {ratio:.2} exceeds the supported 5:1"
    );
    let f = factor as f64;
    let (hf, wf) = (height as f64, width as f64);
    // Python's round() rounds half to even; so must we, for the same sizes.
    let mut h = (hf / f).round_ties_even() as i64 * factor;
    let mut w = (wf / f).round_ties_even() as i64 * factor;
    if h * w > max_pixels {
        let beta = (hf * wf / max_pixels as f64).sqrt();
        h = (hf / beta / f).floor() as i64 * factor;
        w = (wf / beta / f).floor() as i64 * factor;
    } else if h * w < min_pixels {
        let beta = (min_pixels as f64 / (hf * wf)).sqrt();
        h = (hf * beta / f).ceil() as i64 * factor;
        w = (wf * beta / f).ceil() as i64 * factor;
    }
    Ok((h, w))
}

/// The reference image processor's settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageProcessor {
    pub min_pixels: i64,
    pub max_pixels: i64,
    pub spatial_factor: i64,
}

impl Default for ImageProcessor {
    /// Emu3-VisionTokenizer's preprocessor_config.json.
    fn default() -> Self {
        ImageProcessor { min_pixels: 512 * 512, max_pixels: 1024 * 1024, spatial_factor: 8 }
    }
}

impl ImageProcessor {
    /// The target size of an image.
    pub fn target_size(&self, img: &RgbImage) -> Result<(i64, i64)> {
        smart_resize(
            img.height() as i64,
            img.width() as i64,
            self.spatial_factor,
            self.min_pixels,
            self.max_pixels,
        )
    }

    /// Resizes (bicubic) to the target size and normalises: `[3,H,W]` f32 in [-1,1].
    pub fn preprocess(&self, img: &RgbImage) -> Result<Tensor> {
        let (h, w) = self.target_size(img)?;
        Ok(to_tensor(&resize(img, h as u32, w as u32)))
    }
}

/// Bicubic (Catmull-Rom, a = -0.5, as PIL's BICUBIC) resize; a no-op at the same size.
pub fn resize(img: &RgbImage, height: u32, width: u32) -> RgbImage {
    if img.height() == height && img.width() == width {
        return img.clone();
    }
    image::imageops::resize(img, width, height, FilterType::CatmullRom)
}

/// 8-bit RGB -> `[3,H,W]` f32 in [-1,1].
pub fn to_tensor(img: &RgbImage) -> Tensor {
    let (w, h) = img.dimensions();
    let t = Tensor::from_slice(img.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Float);
    (t / 255.0 - 0.5) / 0.5
}

/// `[3,H,W]` in about [-1,1] -> 8-bit RGB, clipped and truncated like the reference's
/// `clip(0, 255).astype(uint8)`.
pub fn to_image(t: &Tensor) -> RgbImage {
    let (c, h, w) = t.size3().expect("to_image takes [3,H,W]");
    assert_eq!(c, 3, "to_image takes 3 channels, got {c}");
    let px = ((t.to_kind(Kind::Float).to_device(tch::Device::Cpu) + 1.0) / 2.0 * 255.0)
        .clamp(0.0, 255.0);
    let bytes: Vec<u8> =
        Vec::try_from(px.permute([1, 2, 0]).contiguous().to_kind(Kind::Uint8).flatten(0, -1))
            .expect("a uint8 tensor converts to bytes");
    RgbImage::from_raw(w as u32, h as u32, bytes).expect("sizes agree")
}

/// Reads an image file as RGB, with errors that say what is wrong with it.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read image {}", path.display()))?;
    if meta.len() == 0 {
        bail!("image {} is empty (0 bytes)", path.display());
    }
    let img = image::open(path)
        .with_context(|| {
            format!("cannot decode image {} (supported: PNG, JPEG, GIF, WebP, BMP)", path.display())
        })?
        .to_rgb8();
    ensure!(img.width() > 0 && img.height() > 0, "image {} has no pixels", path.display());
    Ok(img)
}

/// Peak signal-to-noise ratio in dB between two 8-bit images of one size.
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions(), "psnr needs images of the same size");
    let mse = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.as_raw().len() as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0 * 255.0 / mse).log10() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_the_reference_including_half_to_even() {
        // Values computed with the reference's Python smart_resize.
        assert_eq!(smart_resize(512, 512, 8, 512 * 512, 1024 * 1024).unwrap(), (512, 512));
        assert_eq!(smart_resize(300, 451, 8, 512 * 512, 1024 * 1024).unwrap(), (424, 632));
        assert_eq!(smart_resize(2000, 3000, 8, 512 * 512, 1024 * 1024).unwrap(), (832, 1248));
        // 20/8 = 2.5 rounds to 2 (even), 28/8 = 3.5 rounds to 4 (even).
        assert_eq!(smart_resize(20, 28, 8, 1, 1 << 30).unwrap(), (16, 32));
        assert_eq!(smart_resize(40, 40, 8, 1600, 1600).unwrap(), (40, 40));
        let e = format!("{:#}", smart_resize(4, 100, 8, 1, 1 << 30).unwrap_err());
        assert!(e.contains("at least 8"), "{e}");
        let e = format!("{:#}", smart_resize(16, 100, 8, 1, 1 << 30).unwrap_err());
        assert!(e.contains("aspect ratio"), "{e}");
    }

    #[test]
    fn round_trip_through_tensors_is_within_one_level_and_truncates() {
        let img =
            RgbImage::from_fn(5, 3, |x, y| image::Rgb([(x * 50) as u8, (y * 100) as u8, 255]));
        let back = to_image(&to_tensor(&img));
        // Truncation after f32 arithmetic can land one level low (50 -> 49.99998 -> 49), exactly
        // as the reference's numpy round trip does; 0 and 255 survive exactly.
        for (a, b) in img.as_raw().iter().zip(back.as_raw()) {
            assert!(a - b <= 1 && b <= a, "{a} -> {b}");
        }
        assert_eq!(back.get_pixel(0, 0).0, [0, 0, 255]);
        // 0.999 of a level truncates down, as astype(uint8) does.
        let t = Tensor::from_slice(&[(200.999f32 / 255.0) * 2.0 - 1.0; 3]).view([3, 1, 1]);
        assert_eq!(to_image(&t).get_pixel(0, 0).0, [200, 200, 200]);
        let t = Tensor::from_slice(&[-3f32, 5., 0.]).view([3, 1, 1]);
        assert_eq!(to_image(&t).get_pixel(0, 0).0, [0, 255, 127]);
    }

    #[test]
    fn bad_image_files_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        assert!(format!("{:#}", load_image(&empty).unwrap_err()).contains("empty"));
        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"not an image").unwrap();
        assert!(format!("{:#}", load_image(&junk).unwrap_err()).contains("cannot decode image"));
        let missing = dir.path().join("missing.png");
        assert!(format!("{:#}", load_image(&missing).unwrap_err()).contains("missing.png"));
        let tiny = RgbImage::new(4, 4);
        let e = format!("{:#}", ImageProcessor::default().preprocess(&tiny).unwrap_err());
        assert!(e.contains("at least 8"), "{e}");
    }
}
