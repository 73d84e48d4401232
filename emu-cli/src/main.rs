//! `emu`: the command-line front end. Each subcommand is one library call; no tensor code here.

mod chat;
mod common;
mod doctor;
mod eval;
mod generate;
mod inspect;
mod parity;
mod progress;
mod tokenize;
mod train;

use clap::{Parser, Subcommand};
use common::Global;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "emu",
    version,
    about = "Emu3-style multimodal models: one transformer, one vocabulary, next-token prediction"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images or videos from text (CFG, seeded sampling, structural constraints).
    Generate(generate::GenerateArgs),
    /// Continue a video from its first frames.
    Continue(generate::ContinueArgs),
    /// Answer questions about an image (interactive without a question).
    Chat(chat::ChatArgs),
    /// Describe an image in one sentence.
    Caption(chat::ChatArgs),
    /// Train a vision tokenizer and a multimodal model (the whole pipeline, or one stage of it).
    Train(train::TrainArgs),
    /// Run the benchmark suite (geneval, vqa, video, recon, ppl) and write a report.
    Eval(eval::EvalArgs),
    /// Images or videos -> VQ code grids (safetensors); --recon also writes reconstructions and PSNR.
    Tokenize(tokenize::TokenizeArgs),
    /// VQ code grids -> images (PNG) or videos (GIF and frames).
    Detokenize(tokenize::DetokenizeArgs),
    /// Check this implementation against a reference fixture folder, tensor by tensor.
    Parity(parity::ParityArgs),
    /// Describe a model folder: layout, config, size, dtype, tokenizer, and what is wrong with it.
    Inspect(inspect::InspectArgs),
    /// Check the installation: libtorch, threads, devices, distributed backends, model folders.
    Doctor(doctor::DoctorArgs),
}

fn main() -> ExitCode {
    // Bad input is reported as errors; a panic would be a bug, so say so without a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()));
        // libtorch's messages carry a C++ backtrace after the first line; keep the first line.
        let msg = msg.unwrap_or_default();
        eprintln!(
            "error: internal error: {} (please report this)",
            msg.lines().next().unwrap_or("")
        );
    }));
    let cli = Cli::parse();
    cli.global.apply_threads();
    let g = &cli.global;
    let result = match &cli.command {
        Command::Generate(a) => generate::generate(g, a),
        Command::Continue(a) => generate::continue_video(g, a),
        Command::Chat(a) => chat::chat(g, a),
        Command::Caption(a) => chat::caption(g, a),
        Command::Train(a) => train::run(g, a),
        Command::Eval(a) => eval::run(g, a),
        Command::Tokenize(a) => tokenize::tokenize(g, a),
        Command::Detokenize(a) => tokenize::detokenize(g, a),
        Command::Parity(a) => parity::run(g, a),
        Command::Inspect(a) => inspect::run(g, a),
        Command::Doctor(a) => doctor::run(g, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
