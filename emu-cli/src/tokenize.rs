//! `emu tokenize` / `emu detokenize`: images and videos <-> code grids.

use crate::common::{Global, emit};
use anyhow::{Context, Result, ensure};
use clap::Args;
use emu_tokenizer::files::{self, Tokenized};
use emu_tokenizer::vq::VqModel;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// The vision-tokenizer folder (or a model folder with a `vision_tokenizer/` inside).
    #[arg(long)]
    pub vq: PathBuf,
    /// Image files, or with --video GIFs / folders of frames.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the code grids (safetensors).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Treat inputs as videos.
    #[arg(long)]
    pub video: bool,
    /// Resize to HxW pixels instead of the tokenizer's own rule (e.g. 64x64).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Also decode the codes and write reconstructions (PNG) here, and report PSNR.
    #[arg(long)]
    pub recon: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DetokenizeArgs {
    #[arg(long)]
    pub vq: PathBuf,
    /// A code file written by `emu tokenize` (or any safetensors of int64 grids).
    pub codes: PathBuf,
    /// Output folder for PNGs (and GIFs for videos).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Frames per second of written GIFs.
    #[arg(long, default_value_t = 8)]
    pub fps: u32,
}

pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (h, w) = s.split_once('x').ok_or_else(|| format!("`{s}` is not HxW (e.g. 64x64)"))?;
    let p =
        |v: &str| v.parse::<u32>().map_err(|_| format!("`{s}` is not HxW with positive integers"));
    Ok((p(h)?, p(w)?))
}

pub fn vq_dir(path: &std::path::Path) -> PathBuf {
    let sub = path.join("vision_tokenizer");
    if sub.join("config.json").exists() { sub } else { path.to_path_buf() }
}

#[derive(serde::Serialize)]
struct Row {
    source: String,
    shape: Vec<i64>,
    psnr: Option<f64>,
}

pub fn tokenize(g: &Global, a: &TokenizeArgs) -> Result<()> {
    let dir = vq_dir(&a.vq);
    let vq = VqModel::load(&dir, g.device()?, g.kind()?)?;
    let proc = files::processor_for(&dir, &vq)?;
    let bar = crate::progress::bar(a.inputs.len() as u64, "tokenizing");
    let mut items: Vec<Tokenized> = Vec::new();
    for input in &a.inputs {
        let t = if a.video {
            files::tokenize_video(&vq, &proc, input, a.size)?
        } else {
            files::tokenize_image(&vq, &proc, input, a.size)?
        };
        items.push(t);
        bar.inc(1);
    }
    bar.finish_and_clear();
    files::save_codes(&items, &a.out)?;
    let mut rows = Vec::new();
    for (i, t) in items.iter().enumerate() {
        let psnr = match &a.recon {
            Some(out) => {
                std::fs::create_dir_all(out)
                    .with_context(|| format!("creating {}", out.display()))?;
                let frames = files::decode_codes(&vq, &t.codes)?;
                for (f, img) in frames.iter().enumerate() {
                    let p = out.join(format!("{i:06}_{f:03}.png"));
                    img.save(&p).with_context(|| format!("writing {}", p.display()))?;
                }
                Some(files::mean_psnr(&t.frames, &frames))
            }
            None => None,
        };
        rows.push(Row { source: t.source.display().to_string(), shape: t.codes.size(), psnr });
    }
    emit(g, &rows, || {
        let mut s = String::new();
        for r in &rows {
            s.push_str(&format!("{}: codes {:?}", r.source, r.shape));
            if let Some(p) = r.psnr {
                s.push_str(&format!(", reconstruction PSNR {p:.2} dB"));
            }
            s.push('\n');
        }
        s.push_str(&format!("wrote {}\n", a.out.display()));
        s
    })
}

pub fn detokenize(g: &Global, a: &DetokenizeArgs) -> Result<()> {
    let vq = VqModel::load(&vq_dir(&a.vq), g.device()?, g.kind()?)?;
    let grids = files::load_codes(&a.codes)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut written = Vec::new();
    for (name, codes) in &grids {
        ensure!(codes.numel() > 0, "{}: `{name}` is empty", a.codes.display());
        let frames = files::decode_codes(&vq, codes)?;
        if codes.dim() == 2 {
            let p = a.out.join(format!("{name}.png"));
            frames[0].save(&p).with_context(|| format!("writing {}", p.display()))?;
            written.push(p);
        } else {
            for (f, img) in frames.iter().enumerate() {
                let p = a.out.join(format!("{name}_{f:03}.png"));
                img.save(&p).with_context(|| format!("writing {}", p.display()))?;
            }
            let p = a.out.join(format!("{name}.gif"));
            files::save_gif(&frames, &p, a.fps)?;
            written.push(p);
        }
    }
    emit(g, &written, || written.iter().map(|p| format!("wrote {}\n", p.display())).collect())
}
