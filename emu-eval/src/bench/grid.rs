//! Sample grids: images in rows, each with its prompt written above it in an 8×8 bitmap font.
//!
//! Shapes: H/W pixels of each cell image.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

const PAD: u32 = 4;
const LINE: u32 = 10;

/// Draws `text` at (x, y) in the 8×8 bitmap font and `color`, clipped to `width` pixels and to
/// the canvas.
pub fn draw_text(canvas: &mut RgbImage, text: &str, x: u32, y: u32, width: u32, color: [u8; 3]) {
    for (i, ch) in text.chars().enumerate() {
        let cx = x + 8 * i as u32;
        if cx + 8 > x + width {
            break;
        }
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                let (px, py) = (cx + col, y + row as u32);
                if bits >> col & 1 == 1 && px < canvas.width() && py < canvas.height() {
                    canvas.put_pixel(px, py, Rgb(color));
                }
            }
        }
    }
}

/// Splits text into lines of at most `chars` characters at spaces.
fn wrap(text: &str, chars: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let cur = lines.last_mut().expect("one line at least");
        if !cur.is_empty() && cur.len() + 1 + word.len() > chars {
            lines.push(word.to_string());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    lines
}

/// A grid of `cols` columns; each cell is an image scaled by `scale` with its label above.
pub fn grid(items: &[(String, RgbImage)], cols: usize, scale: u32) -> RgbImage {
    assert!(!items.is_empty(), "a grid needs images");
    let (w, h) = (items[0].1.width() * scale, items[0].1.height() * scale);
    let cell_w = w.max(8 * 12) + 2 * PAD;
    let chars = (cell_w / 8) as usize;
    let label_lines = items.iter().map(|(t, _)| wrap(t, chars).len()).max().unwrap_or(1) as u32;
    let cell_h = h + label_lines * LINE + 2 * PAD;
    let rows = items.len().div_ceil(cols) as u32;
    let mut canvas =
        RgbImage::from_pixel(cols as u32 * cell_w, rows * cell_h, Rgb([255, 255, 255]));
    for (i, (label, img)) in items.iter().enumerate() {
        let (cx, cy) = ((i % cols) as u32 * cell_w, (i / cols) as u32 * cell_h);
        for (l, line) in wrap(label, chars).iter().enumerate() {
            draw_text(
                &mut canvas,
                line,
                cx + PAD,
                cy + PAD + l as u32 * LINE,
                cell_w - 2 * PAD,
                [20, 20, 20],
            );
        }
        let big = image::imageops::resize(img, w, h, image::imageops::FilterType::Nearest);
        image::imageops::overlay(
            &mut canvas,
            &big,
            (cx + PAD) as i64,
            (cy + PAD + label_lines * LINE) as i64,
        );
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_have_the_right_size_and_draw_labels() {
        let img = RgbImage::from_pixel(16, 16, Rgb([200, 0, 0]));
        let items: Vec<(String, RgbImage)> =
            (0..5).map(|i| (format!("prompt {i}"), img.clone())).collect();
        let g = grid(&items, 3, 2);
        let cell_w = (8 * 12) + 2 * PAD;
        assert_eq!(g.width(), 3 * cell_w);
        assert_eq!(g.height(), 2 * (32 + LINE + 2 * PAD));
        // Some label pixels are dark, and the scaled image is there.
        assert!(g.pixels().any(|p| p.0 == [20, 20, 20]));
        assert_eq!(g.get_pixel(PAD + 1, PAD + LINE + 1).0, [200, 0, 0]);
        assert_eq!(wrap("a b cc ddd", 4), vec!["a b", "cc", "ddd"]);
    }
}
