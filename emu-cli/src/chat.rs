//! `emu chat` and `emu caption`: image understanding, streaming the answer; `chat` without a
//! question reads questions from the terminal until an empty line or end of input.

use crate::common::{Global, emit};
use crate::generate::SamplingArgs;
use anyhow::{Result, ensure};
use clap::Args;
use emu_model::generate::SamplingConfig;
use emu_model::pipeline::Emu3;
use emu_tokenizer::image::load_image;
use emu_tokenizer::sequence::generate_size;
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// The image to talk about.
    #[arg(long)]
    pub image: PathBuf,
    /// The question; without it, an interactive session.
    pub question: Option<String>,
    /// Sample instead of answering greedily.
    #[arg(long)]
    pub sample: bool,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: i64,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[arg(long)]
    pub vq: Option<PathBuf>,
}

fn session(g: &Global, a: &ChatArgs) -> Result<(Emu3, image::RgbImage, (i64, i64))> {
    let img = load_image(&a.image)?;
    let model = Emu3::load(&a.model, a.vq.as_deref(), g.device()?, g.kind()?)?;
    let f = model.vq.as_ref().map(|v| v.config.spatial_factor());
    ensure!(
        f.is_some(),
        "{} has no vision tokenizer, so it cannot see images; pass --vq DIR",
        a.model.display()
    );
    let grid = generate_size("1:1", model.lm.config.image_area, f.unwrap_or(8))?;
    Ok((model, img, grid))
}

fn ask(
    model: &Emu3,
    img: &image::RgbImage,
    grid: (i64, i64),
    q: &str,
    a: &ChatArgs,
    stream: bool,
) -> Result<String> {
    let mut cfg = a.sampling.config(a.max_tokens, model);
    if !a.sample {
        cfg.sampling = SamplingConfig::greedy();
    }
    let out = model.answer(img, grid, q, &cfg, &mut |piece| {
        if stream {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        }
    })?;
    if stream {
        println!();
    }
    Ok(out)
}

pub fn chat(g: &Global, a: &ChatArgs) -> Result<()> {
    let (model, img, grid) = session(g, a)?;
    if let Some(q) = &a.question {
        let answer = ask(&model, &img, grid, q, a, !g.json)?;
        if g.json {
            println!("{}", serde_json::json!({"question": q, "answer": answer}));
        }
        return Ok(());
    }
    eprintln!("ask about {} (empty line to quit)", a.image.display());
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let answer = ask(&model, &img, grid, line.trim(), a, !g.json)?;
        if g.json {
            println!("{}", serde_json::json!({"question": line.trim(), "answer": answer}));
        }
    }
    Ok(())
}

pub fn caption(g: &Global, a: &ChatArgs) -> Result<()> {
    let (model, img, grid) = session(g, a)?;
    let q = a.question.clone().unwrap_or_else(|| "describe the image".into());
    let answer = ask(&model, &img, grid, &q, a, false)?;
    emit(g, &serde_json::json!({"image": a.image, "caption": answer}), || format!("{answer}\n"))
}
