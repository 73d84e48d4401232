//! Anti-aliased rasterisation of scenes: shape geometry, background fill and 4×4 supersampled
//! coverage. Coordinates are pixels (x right, y down, pixel (i, j) covers [i, i+1)×[j, j+1));
//! everything scales with the image side so any size renders the same scene.

use image::{Rgb, RgbImage};

use super::scene::{Background, Scene, Shape};

/// Supersamples per pixel side when rendering scenes.
const SUPERSAMPLE: u32 = 4;
/// Star inner/outer radius ratio: deep enough that star points survive blur at 64².
const STAR_INNER: f32 = 0.45;
/// Triangle circumradius relative to the nominal radius (its base sits above the centre's
/// horizontal extent, so it is drawn a little larger to carry comparable area).
const TRIANGLE_R: f32 = 1.05;
const CIRCLE_R: f32 = 0.92;
const SQUARE_HALF: f32 = 0.8;
const DIAMOND_HALF_WIDTH: f32 = 0.7;

/// Whether the offset (dx, dy) from a shape's centre lies inside it, for nominal radius 1.
/// Every shape's centroid is at its centre, which lets the detector align templates by centroid.
pub fn inside_unit(shape: Shape, dx: f32, dy: f32) -> bool {
    match shape {
        Shape::Circle => dx * dx + dy * dy <= CIRCLE_R * CIRCLE_R,
        Shape::Square => dx.abs() <= SQUARE_HALF && dy.abs() <= SQUARE_HALF,
        Shape::Diamond => dx.abs() / DIAMOND_HALF_WIDTH + dy.abs() <= 1.0,
        Shape::Triangle => {
            // Equilateral, apex up; the half-width grows linearly from the apex at y = -R.
            dy <= 0.5 * TRIANGLE_R && dx.abs() <= (dy + TRIANGLE_R) / 3f32.sqrt()
        }
        Shape::Star => inside_star(dx, dy),
    }
}

fn inside_star(dx: f32, dy: f32) -> bool {
    let rho = (dx * dx + dy * dy).sqrt();
    if rho > 1.0 {
        return false;
    }
    // Fold the angle from "up" into the half-sector between a tip (0°) and an inner vertex (36°).
    let sector = 72f32.to_radians();
    let theta = dx.atan2(-dy).rem_euclid(sector);
    let phi = theta.min(sector - theta);
    let (qx, qy) = (rho * phi.cos(), rho * phi.sin());
    let (tx, ty) = (1.0, 0.0);
    let (ix, iy) = (STAR_INNER * 36f32.to_radians().cos(), STAR_INNER * 36f32.to_radians().sin());
    // Inside when q is on the origin's side of the tip→inner-vertex edge.
    let cross = |px: f32, py: f32| (ix - tx) * (py - ty) - (iy - ty) * (px - tx);
    cross(qx, qy) * cross(0.0, 0.0) >= 0.0
}

/// Area of each shape at nominal radius 1 (exact, from the geometry above).
pub fn unit_area(shape: Shape) -> f32 {
    match shape {
        Shape::Circle => std::f32::consts::PI * CIRCLE_R * CIRCLE_R,
        Shape::Square => 4.0 * SQUARE_HALF * SQUARE_HALF,
        Shape::Diamond => 2.0 * DIAMOND_HALF_WIDTH,
        Shape::Triangle => 3.0 * 3f32.sqrt() / 4.0 * TRIANGLE_R * TRIANGLE_R,
        Shape::Star => 5.0 * STAR_INNER * 36f32.to_radians().sin(),
    }
}

/// Half-extent of the bounding box around the centre (largest |dx| or |dy|) at radius 1.
pub fn unit_extent(shape: Shape) -> f32 {
    match shape {
        Shape::Circle => CIRCLE_R,
        Shape::Square => SQUARE_HALF,
        Shape::Diamond | Shape::Star => 1.0,
        Shape::Triangle => TRIANGLE_R,
    }
}

/// Fraction of pixel (px, py) covered by `shape` centred at (cx, cy) with radius `r` (pixels),
/// estimated with `ss`×`ss` samples.
pub fn coverage(shape: Shape, cx: f32, cy: f32, r: f32, px: u32, py: u32, ss: u32) -> f32 {
    let step = 1.0 / ss as f32;
    let mut hits = 0u32;
    for sy in 0..ss {
        let y = py as f32 + (sy as f32 + 0.5) * step;
        for sx in 0..ss {
            let x = px as f32 + (sx as f32 + 0.5) * step;
            hits += u32::from(inside_unit(shape, (x - cx) / r, (y - cy) / r));
        }
    }
    hits as f32 / (ss * ss) as f32
}

/// Background colour at pixel (x, y) of a `w`×`h` image.
pub fn background_pixel(bg: &Background, x: u32, y: u32, w: u32, h: u32) -> [u8; 3] {
    let side = w.min(h) as f32;
    let offset = match *bg {
        Background::Plain { .. } => 0.0,
        Background::Stripes { vertical, period, contrast, .. } => {
            let t = if vertical { x as f32 + 0.5 } else { y as f32 + 0.5 };
            f32::from(contrast) * (std::f32::consts::TAU * t / (period * side)).sin()
        }
        Background::Checker { blocks, contrast, seed, .. } => {
            let b = u64::from(blocks.max(1));
            let (bx, by) = (u64::from(x) * b / u64::from(w), u64::from(y) * b / u64::from(h));
            let u = (mix(seed ^ (bx << 32) ^ by) >> 11) as f32 / (1u64 << 53) as f32;
            f32::from(contrast) * (2.0 * u - 1.0)
        }
    };
    bg.base().map(|c| (f32::from(c) + offset).round().clamp(0.0, 255.0) as u8)
}

/// SplitMix64 finaliser: a cheap, well-mixed hash for per-block texture levels.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills an image with the background.
pub fn render_background(bg: &Background, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb(background_pixel(bg, x, y, w, h)))
}

/// Blends one shape into `img`. `center` is in fractions of the image side and `radius` is the
/// nominal radius in fractions of the side; parts outside the image are clipped.
pub fn draw_shape(img: &mut RgbImage, shape: Shape, rgb: [u8; 3], center: [f32; 2], radius: f32) {
    let (w, h) = img.dimensions();
    let side = w.min(h) as f32;
    let (cx, cy, r) = (center[0] * side, center[1] * side, radius * side);
    let ext = unit_extent(shape) * r + 1.0;
    let lo = |c: f32| (c - ext).floor().max(0.0) as u32;
    let hi = |c: f32, n: u32| ((c + ext).ceil().max(0.0) as u32).min(n);
    for py in lo(cy)..hi(cy, h) {
        for px in lo(cx)..hi(cx, w) {
            let a = coverage(shape, cx, cy, r, px, py, SUPERSAMPLE);
            if a > 0.0 {
                let p = img.get_pixel_mut(px, py);
                for ch in 0..3 {
                    let v = f32::from(p.0[ch]) * (1.0 - a) + f32::from(rgb[ch]) * a;
                    p.0[ch] = v.round() as u8;
                }
            }
        }
    }
}

/// Renders a scene at `size`×`size`.
pub fn render(scene: &Scene, size: u32) -> RgbImage {
    assert!(size >= 8, "render size {size} is too small to show shapes");
    let mut img = render_background(&scene.background, size, size);
    for o in &scene.objects {
        draw_shape(&mut img, o.shape, o.color.rgb(), o.center(), o.size.radius());
    }
    img
}

#[cfg(test)]
mod tests {
    use super::super::scene::{Cell, Color, Object, Size};
    use super::*;

    #[test]
    fn unit_areas_match_sampling() {
        for shape in Shape::ALL {
            let n = 800;
            let mut hits = 0;
            for i in 0..n {
                for j in 0..n {
                    let x = -1.1 + 2.2 * (i as f32 + 0.5) / n as f32;
                    let y = -1.1 + 2.2 * (j as f32 + 0.5) / n as f32;
                    hits += usize::from(inside_unit(shape, x, y));
                }
            }
            let sampled = hits as f32 * (2.2f32 * 2.2) / (n * n) as f32;
            let exact = unit_area(shape);
            assert!((sampled - exact).abs() < 0.01, "{shape:?}: {sampled} vs {exact}");
        }
        // Hand-computed: star = 5 · 0.45 · sin 36° ≈ 1.3225, triangle = 3√3/4 · 1.05² ≈ 1.4323.
        assert!((unit_area(Shape::Star) - 1.3225).abs() < 1e-3);
        assert!((unit_area(Shape::Triangle) - 1.4323).abs() < 1e-3);
    }

    #[test]
    fn shapes_are_centred_on_their_centroid() {
        for shape in Shape::ALL {
            let (mut sx, mut sy, mut n) = (0.0f64, 0.0f64, 0.0f64);
            for i in 0..600 {
                for j in 0..600 {
                    let x = -1.1 + 2.2 * (i as f32 + 0.5) / 600.0;
                    let y = -1.1 + 2.2 * (j as f32 + 0.5) / 600.0;
                    if inside_unit(shape, x, y) {
                        (sx, sy, n) = (sx + f64::from(x), sy + f64::from(y), n + 1.0);
                    }
                }
            }
            assert!((sx / n).abs() < 0.01 && (sy / n).abs() < 0.01, "{shape:?} centroid off");
        }
    }

    #[test]
    fn render_draws_exact_colours_and_scales() {
        let obj = Object {
            shape: Shape::Square,
            color: Color::Blue,
            size: Size::Large,
            cell: Cell::new(1, 1),
            jitter: [0.0, 0.0],
        };
        let scene = Scene::new(vec![obj], Background::Plain { base: [128, 128, 128] });
        for size in [32, 64, 128] {
            let img = render(&scene, size);
            let c = size * 3 / 4;
            assert_eq!(img.get_pixel(c, c).0, Color::Blue.rgb());
            assert_eq!(img.get_pixel(0, 0).0, [128, 128, 128]);
            // Square half-side is 0.8 · 0.20 = 0.16 of the side around the cell centre 0.75, so
            // its left edge is at 0.59: the first whole pixel right of it is blue, the last whole
            // pixel left of it grey.
            let edge = 0.59 * size as f32;
            assert_eq!(img.get_pixel(edge.ceil() as u32, c).0, Color::Blue.rgb());
            assert_eq!(img.get_pixel(edge.floor() as u32 - 1, c).0, [128, 128, 128]);
        }
        // The square spans x in [37.76, 58.24]; 4×4 samples (at quarter-pixel centres) see 1/4 of
        // each edge pixel, so the sampled side is 20.5 px and the blue mass 420.25 px².
        let img = render(&scene, 64);
        let blue: f32 = img
            .pixels()
            .map(|p| (128.0 - f32::from(p.0[0])) / (128.0 - f32::from(Color::Blue.rgb()[0])))
            .sum();
        assert!((blue - 420.25).abs() < 0.5, "blue mass {blue}");
    }

    #[test]
    fn textures_are_low_contrast() {
        for seed in 0..50 {
            let scene = Scene::random(seed);
            let img = render_background(&scene.background, 64, 64);
            let base = scene.background.base();
            for p in img.pixels() {
                for ch in 0..3 {
                    assert!((i32::from(p.0[ch]) - i32::from(base[ch])).abs() <= 9);
                }
            }
        }
    }
}
