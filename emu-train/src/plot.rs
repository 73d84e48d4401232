//! PNG line plots of training curves (loss over steps, eval scores over steps).
//!
//! plotters would need a TrueType font at runtime, which a fresh machine may not have; these
//! plots draw their labels with the same 8×8 bitmap font as the sample grids (emu-eval's grid).
//!
//! Shapes: W×H pixels of the canvas.

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

const W: u32 = 640;
const H: u32 = 360;
const LEFT: u32 = 64;
const BOTTOM: u32 = 32;
const TOP: u32 = 28;
const RIGHT: u32 = 16;
const COLORS: [[u8; 3]; 6] =
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75]];

fn text(img: &mut RgbImage, s: &str, x: u32, y: u32, color: [u8; 3]) {
    emu_eval::bench::grid::draw_text(img, s, x, y, u32::MAX / 2, color);
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, Rgb(color));
        }
    }
}

/// Draws every series (name, points) on shared axes and writes a PNG.
pub fn plot(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let pts =
        series.iter().flat_map(|(_, p)| p.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let sx = |x: f64| LEFT as f64 + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP as f64 + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let axis = [90, 90, 90];
    line(&mut img, (LEFT as f64, TOP as f64), (LEFT as f64, (H - BOTTOM) as f64), axis);
    line(
        &mut img,
        (LEFT as f64, (H - BOTTOM) as f64),
        ((W - RIGHT) as f64, (H - BOTTOM) as f64),
        axis,
    );
    for k in 0..=4 {
        let (fx, fy) = (x0 + (x1 - x0) * k as f64 / 4.0, y0 + (y1 - y0) * k as f64 / 4.0);
        text(&mut img, &format!("{fy:.3}"), 2, sy(fy) as u32 - 4, axis);
        text(&mut img, &format!("{fx:.0}"), sx(fx) as u32 - 8, H - BOTTOM + 6, axis);
        line(&mut img, (LEFT as f64 - 4.0, sy(fy)), (LEFT as f64, sy(fy)), axis);
    }
    text(&mut img, title, LEFT, 6, [0, 0, 0]);
    text(&mut img, x_label, W - RIGHT - 8 * x_label.len() as u32, H - 12, axis);
    for (i, (name, p)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        for w in p.windows(2) {
            line(&mut img, (sx(w[0].0), sy(w[0].1)), (sx(w[1].0), sy(w[1].1)), c);
        }
        if let [only] = p.as_slice() {
            line(&mut img, (sx(only.0) - 2.0, sy(only.1)), (sx(only.0) + 2.0, sy(only.1)), c);
        }
        text(&mut img, name, W - RIGHT - 8 * name.len() as u32 - 4, TOP + 4 + 10 * i as u32, c);
    }
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_draw_the_series_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.png");
        plot(&p, "loss", "step", &[("a".into(), vec![(0.0, 1.0), (10.0, 0.0)])]).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // The series starts at the top-left corner of the plot area and ends at the bottom-right.
        assert_eq!(img.get_pixel(LEFT, TOP).0, COLORS[0]);
        assert_eq!(img.get_pixel(W - RIGHT, H - BOTTOM).0, COLORS[0]);
    }
}
