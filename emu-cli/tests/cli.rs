//! The `emu` binary, subcommand by subcommand, on a toy model folder: outputs exist and decode,
//! `--json` parses, and bad input gives a clear error and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn emu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_emu"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("emu runs")
}

fn ok(args: &[&str]) -> String {
    let o = emu(args);
    assert!(o.status.success(), "emu {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr after checking it is an error, not a panic.
fn fails(args: &[&str]) -> String {
    let o = emu(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "emu {args:?} should exit 1:\n{err}");
    assert!(
        err.starts_with("error: ")
            && !err.contains("panicked")
            && !err.contains("internal error")
            && !err.contains("stack backtrace"),
        "{err}"
    );
    err
}

fn toy() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    emu_train::toy::write_toy_model(dir.path(), 3).unwrap();
    let p = dir.path().display().to_string();
    (dir, p)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures/emu3-tiny")
}

#[test]
fn help_lists_every_subcommand_with_one_line() {
    let help = ok(&["--help"]);
    for cmd in [
        "generate",
        "continue",
        "chat",
        "caption",
        "tokenize",
        "detokenize",
        "train",
        "eval",
        "parity",
        "inspect",
        "doctor",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(cmd))
            .unwrap_or_else(|| panic!("no `{cmd}` in --help:\n{help}"));
        assert!(line.split_whitespace().count() > 2, "`{cmd}` has no description: {line}");
    }
}

#[test]
fn generate_images_and_videos_with_sidecars() {
    let (_d, model) = toy();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display().to_string();
    let request = [
        "generate",
        "--model",
        &model,
        "--prompt",
        "a red circle",
        "--prompt",
        "two blue squares",
        "--grid",
        "4x4",
        "--num",
        "2",
        "--seed",
        "5",
    ];
    let v = json(&ok(&[&["--json"], &request[..], &["-o", &o]].concat()));
    assert_eq!(v.as_array().unwrap().len(), 4);
    let png = out.path().join("001_01.png");
    assert_eq!(image::open(&png).unwrap().to_rgb8().dimensions(), (32, 32));
    let side = json(&std::fs::read_to_string(out.path().join("001_01.json")).unwrap());
    assert_eq!(side["prompt"], "two blue squares");
    assert_eq!(side["grid"], serde_json::json!([4, 4]));
    // Same seed, same image.
    let again = tempfile::tempdir().unwrap();
    ok(&[&request[..], &["-o", &again.path().display().to_string()]].concat());
    assert_eq!(
        std::fs::read(&png).unwrap(),
        std::fs::read(again.path().join("001_01.png")).unwrap()
    );
    // A video: GIF and frames.
    ok(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "a green triangle moves right",
        "--grid",
        "4x4",
        "--frames",
        "2",
        "-o",
        &o,
    ]);
    assert!(out.path().join("000_00.gif").exists());
    assert!(out.path().join("000_00_007.png").exists());
    // Continue the video from its first 4 frames.
    let frames = tempfile::tempdir().unwrap();
    for i in 0..4 {
        std::fs::copy(
            out.path().join(format!("000_00_{i:03}.png")),
            frames.path().join(format!("{i}.png")),
        )
        .unwrap();
    }
    let f = frames.path().display().to_string();
    let c = json(&ok(&[
        "--json", "continue", "--model", &model, "--frames", &f, "--total", "2", "--grid", "4x4",
        "-o", &o,
    ]));
    assert!(c.as_array().unwrap().iter().any(|p| p.as_str().unwrap().ends_with("continued.gif")));
}

#[test]
fn chat_caption_tokenize_detokenize() {
    let (_d, model) = toy();
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("scene.png");
    image::RgbImage::from_fn(40, 24, |x, _| image::Rgb([(x * 6) as u8, 90, 200]))
        .save(&img)
        .unwrap();
    let i = img.display().to_string();
    let a = json(&ok(&[
        "--json",
        "chat",
        "--model",
        &model,
        "--image",
        &i,
        "what color is the star?",
        "--max-tokens",
        "4",
    ]));
    assert!(a["answer"].is_string());
    let c =
        json(&ok(&["--json", "caption", "--model", &model, "--image", &i, "--max-tokens", "4"]));
    assert!(c["caption"].is_string());
    let vq = format!("{model}/vision_tokenizer");
    let codes = work.path().join("codes.safetensors").display().to_string();
    let rec = work.path().join("rec").display().to_string();
    let t = json(&ok(&[
        "--json", "tokenize", "--vq", &vq, &i, "--size", "16x32", "-o", &codes, "--recon", &rec,
    ]));
    assert_eq!(t[0]["shape"], serde_json::json!([2, 4]));
    assert!(t[0]["psnr"].as_f64().unwrap().is_finite());
    let out = work.path().join("img").display().to_string();
    ok(&["detokenize", "--vq", &vq, &codes, "-o", &out]);
    assert_eq!(
        image::open(work.path().join("img/000000.png")).unwrap().to_rgb8().dimensions(),
        (32, 16)
    );
}

#[test]
fn eval_parity_inspect_doctor_and_train() {
    let (_d, model) = toy();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display().to_string();
    let r = json(&ok(&["--json", "eval", "--model", &model, "--suite", "smoke", "-o", &o]));
    emu_eval::bench::report::validate(&r).unwrap();
    emu_eval::bench::report::Report::read(&out.path().join("report.json")).unwrap();
    assert!(
        out.path().join("report.md").exists()
            && out.path().join("geneval_single_object.png").exists()
    );

    let p = json(&ok(&["--json", "parity", &fixture().display().to_string()]));
    assert_eq!(p["passed"], true);
    let i = json(&ok(&["--json", "inspect", &model]));
    assert!(i["language_model"]["parameters"].as_i64().unwrap() > 0);
    assert_eq!(i["problems"].as_array().unwrap().len(), 0, "{i}");
    let d = json(&ok(&["--json", "doctor", &model]));
    assert!(d["threads"].as_i64().unwrap() >= 1);

    let runs = tempfile::tempdir().unwrap();
    let r = runs.path().display().to_string();
    let train = ["train", "--preset", "smoke", "--runs", &r, "--steps", "3", "--no-eval"];
    ok(&[&train[..], &["--name", "t", "--chat-steps", "2"]].concat());
    assert!(Path::new(&r).join("t/model/model.safetensors").exists());
    // The smoke preset, like the default, trains a chat model on from the generator.
    let state = std::fs::read_to_string(Path::new(&r).join("t/chat/model/state.json")).unwrap();
    assert_eq!(json(&state)["step"], 2, "{state}");
    ok(&[&train[..], &["--name", "one", "--chat-steps", "0"]].concat());
    assert!(!Path::new(&r).join("one/chat").exists());
}

#[test]
fn eval_judges_understanding_on_the_chat_model() {
    let (_a, gen_model) = toy();
    let chat_dir = tempfile::tempdir().unwrap();
    emu_train::toy::write_toy_model(chat_dir.path(), 4).unwrap();
    let chat = chat_dir.path().display().to_string();
    let run = |model: &str, extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let o = out.path().display().to_string();
        let mut args = vec!["--json", "eval", "vqa", "ppl", "--model", model, "--suite", "smoke"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", &o]);
        json(&ok(&args))
    };
    let metric = |r: &serde_json::Value, bench: &str, m: &str| {
        let b = r["benchmarks"].as_array().unwrap().iter().find(|b| b["name"] == bench).unwrap();
        b["metrics"][m].as_f64().unwrap()
    };
    let pair = run(&gen_model, &["--chat", &chat]);
    let alone_gen = run(&gen_model, &[]);
    let alone_chat = run(&chat, &[]);
    assert!(pair["model"].as_str().unwrap().contains("(understanding)"), "{}", pair["model"]);
    // Answers come from the chat model, image codes' loss from the generator.
    assert_eq!(pair["benchmarks"][0]["details"], alone_chat["benchmarks"][0]["details"]);
    assert_eq!(metric(&pair, "ppl", "loss_text"), metric(&alone_chat, "ppl", "loss_text"));
    assert_eq!(metric(&pair, "ppl", "loss_image"), metric(&alone_gen, "ppl", "loss_image"));
    assert_ne!(metric(&alone_gen, "ppl", "loss_text"), metric(&alone_chat, "ppl", "loss_text"));
}

#[test]
fn bad_input_gives_clear_errors() {
    let (_d, model) = toy();
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    let e = fails(&["generate", "--model", "/nonexistent/model", "--prompt", "x", "-o", &w]);
    assert!(e.contains("/nonexistent/model"), "{e}");
    let bad = work.path().join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let e = fails(&["chat", "--model", &model, "--image", &bad.display().to_string(), "hi"]);
    assert!(e.contains("cannot decode image") && e.contains("bad.png"), "{e}");
    let long = "word ".repeat(400);
    let e = fails(&["generate", "--model", &model, "--prompt", &long, "--grid", "4x4", "-o", &w]);
    assert!(e.contains("positions"), "{e}");
    let e = fails(&["generate", "--model", &model, "--prompt", "x", "--grid", "40x40", "-o", &w]);
    assert!(e.contains("--grid") && e.contains("positions"), "{e}");
    let e = fails(&[
        "generate",
        "--model",
        &format!("{model}/vision_tokenizer"),
        "--prompt",
        "x",
        "-o",
        &w,
    ]);
    assert!(e.contains("language model"), "{e}");
    let e =
        fails(&["--device", "cuda:3", "generate", "--model", &model, "--prompt", "x", "-o", &w]);
    assert!(e.contains("cuda:3"), "{e}");
    let e = fails(&["eval", "vqa", "--model", &model, "--chat", "/nonexistent/chat", "-o", &w]);
    assert!(e.contains("/nonexistent/chat"), "{e}");
    let e = fails(&["eval", "geneval", "--model", &model, "--top-p", "1.5", "-o", &w]);
    assert!(e.contains("top_p must be in (0, 1]") && e.contains("1.5"), "{e}");
    let e = fails(&["train", "--preset", "smoke", "--chat-steps=-1", "--runs", &w]);
    assert!(e.contains("--chat-steps"), "{e}");
    // A misspelt field is an error naming it, never a silently ignored setting.
    let cfg = work.path().join("typo.json");
    for (text, field) in [
        (r#"{"lm_train": {"stpes": 5}}"#, "stpes"),
        (r#"{"sources": [{"kind": "world", "imagse": 5}]}"#, "imagse"),
        (r#"{"chat": {"steps": 5, "taks": ["understanding"]}}"#, "taks"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let e = fails(&["train", "--config", &cfg.display().to_string(), "--runs", &w]);
        assert!(e.contains(&format!("unknown field `{field}`")) && e.contains("typo.json"), "{e}");
    }
    let e = fails(&["parity", &model]);
    assert!(e.contains("fixture.json"), "{e}");
    let o = emu(&["generate", "--model", &model]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2 (clap)");
}
