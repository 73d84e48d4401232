//! The world's object detector: turns pixels back into (shape, colour, size, position) so that
//! generated images can be scored without learned weights. H/W are pixels; positions returned
//! are fractions of the image side.
//!
//! Every pixel is modelled as a mix `bg + alpha · (colour − bg)` of the (estimated) background
//! and one palette colour, which explains anti-aliased and blurred edges instead of fighting
//! them. Pixels that are mostly object (alpha ≥ 0.5) seed connected components per colour; each
//! component then grows into its soft edge, and its alpha map is matched against every shape's
//! template at the same mass and centroid (optionally blurred), which is what decides the shape.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::degrade::{REFERENCE_SIDE, gaussian_blur};
use super::render::{coverage, unit_area, unit_extent};
use super::scene::{Cell, Color, Scene, Shape, Size};

/// Alpha above which a pixel is trusted to carry its object's colour.
const CORE_ALPHA: f32 = 0.5;
/// Alpha above which an edge pixel still counts towards its object's mass.
const EDGE_ALPHA: f32 = 0.15;
/// Largest residual from the background→colour line, relative to that line's length, for a
/// pixel to count as that colour at all (rejects colours outside the palette).
const MAX_RESIDUAL: f32 = 0.7;
/// Largest mixing coefficient accepted when fitting a pixel to a palette colour.
const MAX_ALPHA_FIT: f32 = 1.6;
/// Largest RGB distance from an object's mean core colour to its palette colour; off-palette
/// blobs (brown, black, white) are not world objects, while shifts of a few % stay well inside.
const MAX_COLOR_DISTANCE: f32 = 80.0;
/// Smallest core (in fractions of the image area) that can be an object rather than noise.
const MIN_CORE: f32 = 0.002;
/// Smallest object mass, fraction of the image area; the smallest world object is ~0.013.
const MIN_AREA: f32 = 0.004;
/// How far (fraction of the side) an object's edge may extend beyond its core.
const GROW: f32 = 0.06;
/// Template blurs tried, in pixels at a 64-pixel side; the best one wins, so the detector
/// needs no blur estimate.
const TEMPLATE_SIGMAS: [f32; 3] = [0.0, 0.7, 1.2];
const TEMPLATE_SUPERSAMPLE: u32 = 4;
/// Smallest template match (soft IoU) for a blob to count as an object. World objects score ≥ 0.79
/// even under the `strong` degradation (≥ 0.92 clean), while the blobs that pixel noise or a
/// broken generator's speckle produce score about 0.5: without this, an untrained model's noise
/// "contains" a dozen objects and passes GenEval's presence checks.
const MIN_CONFIDENCE: f32 = 0.7;

/// An object found in an image.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectedObject {
    pub shape: Shape,
    pub color: Color,
    pub size: Size,
    /// Centroid, fractions of the image side (x right, y down).
    pub center: [f32; 2],
    pub cell: Cell,
    /// Object mass as a fraction of the image area.
    pub area: f32,
    /// Soft IoU of the object with its best shape template, in [0, 1].
    pub confidence: f32,
}

/// Per-channel median, which is the background as long as objects cover under half the image
/// (at most ~30% in this world); medians also ignore texture and noise.
pub fn estimate_background(img: &RgbImage) -> [f32; 3] {
    let mut hist = [[0u32; 256]; 3];
    for p in img.pixels() {
        for c in 0..3 {
            hist[c][usize::from(p.0[c])] += 1;
        }
    }
    let half = (img.width() * img.height()).div_ceil(2);
    hist.map(|h| {
        let mut acc = 0;
        h.iter()
            .position(|&n| {
                acc += n;
                acc >= half
            })
            .unwrap_or(0) as f32
    })
}

/// Mixing coefficient of `v = p − bg` along direction `d`, clamped to [0, 1].
fn alpha_along(v: [f32; 3], d: [f32; 3], inv_norm2: f32) -> f32 {
    ((v[0] * d[0] + v[1] * d[1] + v[2] * d[2]) * inv_norm2).clamp(0.0, 1.0)
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn norm2(v: [f32; 3]) -> f32 {
    v[0] * v[0] + v[1] * v[1] + v[2] * v[2]
}

/// Best palette colour for one pixel: (colour index, alpha), if it is an object core pixel.
/// The colour whose background→colour segment passes nearest to the pixel wins; only then is
/// the residual judged relative to that segment's length.
fn classify_core(v: [f32; 3], dirs: &[([f32; 3], f32); 8]) -> Option<(u8, f32)> {
    let mut best = (f32::MAX, 0u8, 0.0f32, 0.0f32);
    for (k, &(d, inv)) in dirs.iter().enumerate() {
        // A global colour shift can move the background towards an object colour, making the
        // object look more than "fully" that colour; allow for it before judging the residual.
        let a = ((v[0] * d[0] + v[1] * d[1] + v[2] * d[2]) * inv).clamp(0.0, MAX_ALPHA_FIT);
        let res = norm2([v[0] - a * d[0], v[1] - a * d[1], v[2] - a * d[2]]);
        if res < best.0 {
            best = (res, k as u8, a, inv);
        }
    }
    let (res, k, a, inv) = best;
    (a >= CORE_ALPHA && res * inv <= MAX_RESIDUAL * MAX_RESIDUAL).then_some((k, a))
}

/// 4-connected components of equal labels (`None` pixels excluded).
fn components(labels: &[Option<(u8, f32)>], w: usize, h: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![false; labels.len()];
    let mut comps = Vec::new();
    for start in 0..labels.len() {
        let Some((k, _)) = labels[start] else { continue };
        if seen[start] {
            continue;
        }
        seen[start] = true;
        let (mut stack, mut comp) = (vec![start], Vec::new());
        while let Some(i) = stack.pop() {
            comp.push(i);
            for j in neighbours(i, w, h) {
                if !seen[j] && labels[j].is_some_and(|(kj, _)| kj == k) {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        comps.push(comp);
    }
    comps
}

fn neighbours(i: usize, w: usize, h: usize) -> impl Iterator<Item = usize> {
    let (x, y) = (i % w, i / w);
    [
        (x > 0).then(|| i - 1),
        (x + 1 < w).then(|| i + 1),
        (y > 0).then(|| i - w),
        (y + 1 < h).then(|| i + w),
    ]
    .into_iter()
    .flatten()
}

/// One grown component: its colour direction from the background and its owned pixels.
struct Blob {
    color_rgb: [f32; 3],
    dir: [f32; 3],
    inv_norm2: f32,
    pixels: Vec<usize>,
}

/// Finds every object in an image.
pub fn detect(img: &RgbImage) -> Vec<DetectedObject> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let px: Vec<[f32; 3]> = img.pixels().map(|p| p.0.map(f32::from)).collect();
    let bg = estimate_background(img);
    let dirs: [([f32; 3], f32); 8] = Color::ALL.map(|c| {
        let d = sub(c.rgb().map(f32::from), bg);
        (d, 1.0 / norm2(d).max(1.0))
    });
    let labels: Vec<Option<(u8, f32)>> =
        px.iter().map(|&p| classify_core(sub(p, bg), &dirs)).collect();
    let min_core = (MIN_CORE * n as f32).max(3.0) as usize;

    let mut owner = vec![usize::MAX; n];
    let mut blobs: Vec<Blob> = Vec::new();
    for comp in components(&labels, w, h) {
        if comp.len() < min_core {
            continue;
        }
        // The observed colour comes from the most saturated half of the core, which is free of
        // edge mixing, so colour shifts of the whole image are measured rather than assumed.
        let mut by_alpha: Vec<(f32, usize)> =
            comp.iter().map(|&i| (labels[i].map_or(0.0, |l| l.1), i)).collect();
        by_alpha.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top = &by_alpha[..by_alpha.len().div_ceil(2)];
        let mut mean = [0.0f32; 3];
        for &(_, i) in top {
            for c in 0..3 {
                mean[c] += px[i][c] / top.len() as f32;
            }
        }
        let dir = sub(mean, bg);
        let id = blobs.len();
        for &i in &comp {
            owner[i] = id;
        }
        blobs.push(Blob {
            color_rgb: mean,
            dir,
            inv_norm2: 1.0 / norm2(dir).max(1.0),
            pixels: comp,
        });
    }

    // Grow all blobs together, one ring per round, so contested edge pixels go to the nearer one.
    let rounds = (GROW * w.min(h) as f32).ceil() as usize;
    let mut frontier: Vec<(usize, usize)> = blobs
        .iter()
        .enumerate()
        .flat_map(|(b, blob)| blob.pixels.iter().map(move |&i| (b, i)))
        .collect();
    for _ in 0..rounds {
        let mut next = Vec::new();
        for &(b, i) in &frontier {
            for j in neighbours(i, w, h) {
                let blob = &blobs[b];
                if owner[j] == usize::MAX
                    && alpha_along(sub(px[j], bg), blob.dir, blob.inv_norm2) >= EDGE_ALPHA
                {
                    owner[j] = b;
                    next.push((b, j));
                }
            }
        }
        for &(b, j) in &next {
            blobs[b].pixels.push(j);
        }
        frontier = next;
    }

    let side = w.min(h) as f32;
    let mut found: Vec<DetectedObject> =
        blobs.iter().filter_map(|blob| measure(blob, &px, bg, w, h, side)).collect();
    found.sort_by(|a, b| {
        (a.cell.row, a.cell.col)
            .cmp(&(b.cell.row, b.cell.col))
            .then(a.center[0].total_cmp(&b.center[0]))
    });
    found
}

/// Mass, centroid, colour, shape and size of one blob; `None` if it is too small to be an object.
fn measure(
    blob: &Blob,
    px: &[[f32; 3]],
    bg: [f32; 3],
    w: usize,
    h: usize,
    side: f32,
) -> Option<DetectedObject> {
    let alpha = |i: usize| alpha_along(sub(px[i], bg), blob.dir, blob.inv_norm2);
    let (mut mass, mut sx, mut sy) = (0.0f32, 0.0f32, 0.0f32);
    for &i in &blob.pixels {
        let a = alpha(i);
        mass += a;
        sx += a * ((i % w) as f32 + 0.5);
        sy += a * ((i / w) as f32 + 0.5);
    }
    if mass < MIN_AREA * (w * h) as f32 {
        return None;
    }
    let (cx, cy) = (sx / mass, sy / mass);
    let (color, color_distance) = Color::nearest(blob.color_rgb);
    if color_distance > MAX_COLOR_DISTANCE {
        return None;
    }

    // Observed alpha map in a window big enough for every candidate template plus blur tails.
    let sigma_scale = side / REFERENCE_SIDE;
    let radius = |s: Shape| (mass / unit_area(s)).sqrt();
    let reach = Shape::ALL.iter().map(|&s| unit_extent(s) * radius(s)).fold(0.0, f32::max)
        + 3.0 * TEMPLATE_SIGMAS[TEMPLATE_SIGMAS.len() - 1] * sigma_scale
        + 2.0;
    let x0 = (cx - reach).floor().max(0.0) as usize;
    let y0 = (cy - reach).floor().max(0.0) as usize;
    let x1 = ((cx + reach).ceil() as usize).min(w);
    let y1 = ((cy + reach).ceil() as usize).min(h);
    let (ww, wh) = (x1 - x0, y1 - y0);
    let mut observed = vec![0.0f32; ww * wh];
    for &i in &blob.pixels {
        let (x, y) = (i % w, i / w);
        if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
            observed[(y - y0) * ww + (x - x0)] = alpha(i);
        }
    }

    let mut best = (Shape::Circle, -1.0f32);
    for shape in Shape::ALL {
        let r = radius(shape);
        let mut template = vec![[0.0f32; 1]; ww * wh];
        for y in 0..wh {
            for x in 0..ww {
                let a = coverage(
                    shape,
                    cx,
                    cy,
                    r,
                    (x + x0) as u32,
                    (y + y0) as u32,
                    TEMPLATE_SUPERSAMPLE,
                );
                template[y * ww + x] = [a];
            }
        }
        for sigma in TEMPLATE_SIGMAS {
            let mut t = template.clone();
            if sigma > 0.0 {
                gaussian_blur(&mut t, ww, wh, sigma * sigma_scale);
            }
            let score = soft_iou(&observed, &t);
            if score > best.1 {
                best = (shape, score);
            }
        }
    }
    let (shape, confidence) = best;
    if confidence < MIN_CONFIDENCE {
        return None;
    }
    let center = [cx / w as f32, cy / h as f32];
    Some(DetectedObject {
        shape,
        color,
        size: Size::from_radius(radius(shape) / side),
        center,
        cell: Cell::from_point(center),
        area: mass / (w * h) as f32,
        confidence,
    })
}

/// What a perfect detector would report for a scene (for chance levels and oracle checks).
pub fn perfect_detection(scene: &Scene) -> Vec<DetectedObject> {
    scene
        .objects
        .iter()
        .map(|o| DetectedObject {
            shape: o.shape,
            color: o.color,
            size: o.size,
            center: o.center(),
            cell: o.cell,
            area: unit_area(o.shape) * o.size.radius().powi(2),
            confidence: 1.0,
        })
        .collect()
}

/// Σ min / Σ max of two soft masks: 1 for identical masks, 0 for disjoint ones.
fn soft_iou(a: &[f32], b: &[[f32; 1]]) -> f32 {
    let (mut inter, mut union) = (0.0f32, 0.0f32);
    for (&x, &[y]) in a.iter().zip(b) {
        // Edge pixels fainter than EDGE_ALPHA never reach the observed map, so the template
        // must not be credited or blamed for them either.
        let y = if y < EDGE_ALPHA { 0.0 } else { y };
        inter += x.min(y);
        union += x.max(y);
    }
    if union > 0.0 { inter / union } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::super::render::render;
    use super::super::scene::{Background, Object};
    use super::*;

    fn single(shape: Shape, color: Color, size: Size, cell: Cell) -> Scene {
        let o = Object { shape, color, size, cell, jitter: [0.004, -0.003] };
        Scene::new(vec![o], Background::Plain { base: [128, 128, 128] })
    }

    #[test]
    fn reads_back_every_shape_colour_and_size() {
        for shape in Shape::ALL {
            for color in Color::ALL {
                for size in Size::ALL {
                    let scene = single(shape, color, size, Cell::new(1, 0));
                    let found = detect(&render(&scene, 64));
                    assert_eq!(found.len(), 1, "{shape:?} {color:?} {size:?}: {found:?}");
                    let d = found[0];
                    assert_eq!(
                        (d.shape, d.color, d.size, d.cell),
                        (shape, color, size, Cell::new(1, 0))
                    );
                    let c = scene.objects[0].center();
                    assert!(
                        (d.center[0] - c[0]).abs() < 0.005 && (d.center[1] - c[1]).abs() < 0.005
                    );
                    assert!(d.confidence > 0.9, "{shape:?} confidence {}", d.confidence);
                }
            }
        }
    }

    #[test]
    fn area_matches_geometry() {
        // Large circle: π · (0.92 · 0.20)² ≈ 0.1064 of the image.
        let scene = single(Shape::Circle, Color::Red, Size::Large, Cell::new(1, 1));
        let d = detect(&render(&scene, 128))[0];
        assert!((d.area - 0.1064).abs() < 0.001, "area {}", d.area);
    }

    #[test]
    fn pixel_noise_is_not_a_scene_of_objects() {
        // Uniform RGB noise holds a dozen palette-coloured speckle blobs per image; none of them
        // matches a shape template well, so next to no objects come back (an untrained model's
        // samples look like this and must not pass presence checks).
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut total = 0;
        for _ in 0..40 {
            let img = RgbImage::from_fn(32, 32, |_, _| image::Rgb(rng.random()));
            let n = detect(&img).len();
            assert!(n <= super::super::scene::MAX_OBJECTS, "{n} objects in noise");
            total += n;
        }
        assert!(total <= 40, "{total} objects in 40 noise images");
    }

    #[test]
    fn empty_and_foreign_images_have_no_objects() {
        let bg = Background::Checker { base: [142, 134, 118], blocks: 8, contrast: 9, seed: 4 };
        assert!(detect(&super::super::render::render_background(&bg, 64, 64)).is_empty());
        // A brown blob is off-palette: too far from every background→colour line.
        let mut img = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
        for y in 20..40 {
            for x in 20..40 {
                img.put_pixel(x, y, image::Rgb([90, 50, 20]));
            }
        }
        assert!(detect(&img).is_empty(), "{:?}", detect(&img));
    }

    #[test]
    fn background_is_the_median() {
        let mut img = RgbImage::from_pixel(10, 10, image::Rgb([100, 150, 200]));
        for x in 0..10 {
            for y in 0..4 {
                img.put_pixel(x, y, image::Rgb([0, 0, 0]));
            }
        }
        assert_eq!(estimate_background(&img), [100.0, 150.0, 200.0]);
    }
}
