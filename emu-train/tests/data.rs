//! Data sources, pre-tokenisation and VQ training on small inputs.

use emu_tokenizer::sequence::{Role, Sample, TurnLayout};
use emu_tokenizer::text::TextTokenizer;
use emu_tokenizer::vocab::visual_token_name;
use emu_tokenizer::vq::{VqConfig, VqModel};
use emu_train::data::records::{self, Record, WorldData};
use emu_train::data::shards::{Task, TokenStore};
use emu_train::data::tokenize::{TokenizeOptions, tokenize};
use emu_train::pipeline::special_tokens;
use emu_train::vq_train::{PixelSource, VqTrainConfig, train_vq};
use image::{Rgb, RgbImage};
use tch::{Device, Kind, Tensor};

fn img(c: u8) -> RgbImage {
    RgbImage::from_pixel(20, 12, Rgb([c, 100, 50]))
}

#[test]
fn bad_records_are_counted_and_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    img(10).save(dir.path().join("a.png")).unwrap();
    img(200).save(dir.path().join("b.png")).unwrap();
    std::fs::write(dir.path().join("broken.png"), b"garbage").unwrap();
    let lines = [
        r#"{"file": "a.png", "caption": "a red thing"}"#,
        r#"{"file": "broken.png", "caption": "unreadable"}"#,
        r#"{"file": "b.png", "caption": "   "}"#,
        r#"not json"#,
        r#"{"file": "b.png", "caption": "a blue thing", "qa": [["what color?", "blue"]], "reasoning": "a thing"}"#,
        r#"{"file": "missing.png", "caption": "gone"}"#,
    ];
    let captions = dir.path().join("captions.jsonl");
    std::fs::write(&captions, lines.join("\n")).unwrap();
    let (recs, skipped) = records::image_folder_records(dir.path(), &captions, 16).unwrap();
    assert_eq!((recs.len(), skipped), (2, 4));
    match &recs[1] {
        Record::Image { image, caption, qa, reasoning, .. } => {
            assert_eq!(image.dimensions(), (16, 16));
            assert_eq!(caption, "a blue thing");
            assert_eq!(qa.len(), 2, "its own question and the description");
            assert_eq!(reasoning.as_deref(), Some("a thing"));
        }
        _ => panic!("an image record"),
    }

    let vids = tempfile::tempdir().unwrap();
    let good = vids.path().join("clip1");
    std::fs::create_dir_all(&good).unwrap();
    for i in 0..8 {
        img(i * 20).save(good.join(format!("{i:02}.png"))).unwrap();
    }
    std::fs::write(good.join("caption.txt"), "a thing moves right\n").unwrap();
    std::fs::create_dir_all(vids.path().join("clip2")).unwrap();
    img(1).save(vids.path().join("clip2/0.png")).unwrap();
    let (v, skipped) = records::video_folder_records(vids.path(), 16, 8, 8).unwrap();
    assert_eq!((v.len(), skipped), (1, 1));
}

#[test]
fn pre_tokenisation_writes_every_task_of_every_record() {
    let vq = VqModel::new(emu_train::toy::toy_vq_config(), Device::Cpu, Kind::Float).unwrap();
    let codes = vq.config.codebook_size;
    let recs = records::world_records(&WorldData {
        images: 6,
        videos: 2,
        size: 32,
        frames: 4,
        ..Default::default()
    });
    let mut specials = special_tokens();
    specials.extend((0..codes).map(visual_token_name));
    let text = TextTokenizer::train_bpe(&records::corpus(&recs), 300, &specials).unwrap();
    let cfg = emu_train::presets::PipelineConfig::preset("smoke").unwrap();
    let model_cfg =
        emu_train::pipeline::model_config(&cfg, &text, 32, vq.config.spatial_factor()).unwrap();
    let vocab = emu_model::pipeline::layout_for(&model_cfg, Some(codes), |s| {
        text.token_to_id(s).map(i64::from)
    })
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let idx = tokenize(
        &recs,
        &vq,
        &text,
        &vocab,
        out.path(),
        &TokenizeOptions { batch: 4, per_shard: 5, ..Default::default() },
    )
    .unwrap();
    let store = TokenStore::open(out.path()).unwrap();
    let count = |t: Task| store.samples.iter().filter(|(_, k)| *k == t).count();
    // Every image: one text-to-image sample and one per question (2 + the description).
    assert_eq!(count(Task::TextToImage), 6);
    assert_eq!(count(Task::Understanding), 6 * 3);
    assert_eq!(count(Task::TextToVideo), 2);
    assert_eq!(idx.samples, 6 + 18 + 2);
    assert!(idx.shards.len() > 1);
    // Image samples hold a 4x4 grid: 16 codes and 4 EOLs.
    let (s, _) = store.samples.iter().find(|(_, k)| *k == Task::TextToImage).unwrap();
    assert_eq!(s.ids.iter().filter(|&&t| vocab.is_visual(t)).count(), 16);
    assert_eq!(s.ids.iter().filter(|&&t| t == vocab.special.eol).count(), 4);

    // With qa_turns 3 each image's two questions share one sample; the description stays alone.
    // The same 18 answers (one EOS each) come with 12 copies of the image instead of 18.
    let grouped = tempfile::tempdir().unwrap();
    let opts = TokenizeOptions { batch: 4, per_shard: 5, qa_turns: 3, ..Default::default() };
    tokenize(&recs, &vq, &text, &vocab, grouped.path(), &opts).unwrap();
    let store = TokenStore::open(grouped.path()).unwrap();
    let chat: Vec<_> =
        store.samples.iter().filter(|(_, k)| *k == Task::Understanding).map(|(s, _)| s).collect();
    assert_eq!(chat.len(), 6 * 2);
    let tally = |id: i64| -> usize {
        chat.iter().map(|s| s.ids.iter().filter(|&&t| t == id).count()).sum()
    };
    assert_eq!(tally(vocab.special.eos), 18);
    assert_eq!(tally(vocab.special.img), 12);
    assert_eq!(store.index.turn_layout, TurnLayout::Continued);
    // Described last, each image's description joins its questions' sample: the same 18 answers
    // with 6 copies of the image, the description always the last turn.
    let last = tempfile::tempdir().unwrap();
    let last_opts = TokenizeOptions { describe_last: true, ..opts.clone() };
    tokenize(&recs, &vq, &text, &vocab, last.path(), &last_opts).unwrap();
    let last = TokenStore::open(last.path()).unwrap();
    let joined: Vec<_> =
        last.samples.iter().filter(|(_, k)| *k == Task::Understanding).map(|(s, _)| s).collect();
    assert_eq!(joined.len(), 6);
    let eos: usize =
        joined.iter().map(|s| s.ids.iter().filter(|&&t| t == vocab.special.eos).count()).sum();
    assert_eq!(eos, 18);
    for s in &joined {
        let ids: Vec<u32> =
            s.ids.iter().filter(|&&t| !vocab.is_visual(t)).map(|&t| t as u32).collect();
        let words = text.decode(&ids, true).unwrap();
        let at =
            words.rfind(records::DESCRIBE).unwrap_or_else(|| panic!("no description: {words}"));
        assert!(!words[at..].contains('?'), "the description comes last: {words}");
    }
    // Laid out alone, later turns drop the " USER: " that joins a conversation, and the index
    // says so, for the training loop to mask them.
    let alone = tempfile::tempdir().unwrap();
    let alone_opts = TokenizeOptions { turn_layout: TurnLayout::Alone, ..opts.clone() };
    tokenize(&recs, &vq, &text, &vocab, alone.path(), &alone_opts).unwrap();
    let alone = TokenStore::open(alone.path()).unwrap();
    assert_eq!(alone.index.turn_layout, TurnLayout::Alone);
    let alone_chat: Vec<_> =
        alone.samples.iter().filter(|(_, k)| *k == Task::Understanding).map(|(s, _)| s).collect();
    assert_eq!(alone_chat.len(), chat.len());
    for (a, c) in alone_chat.iter().zip(&chat) {
        let ends = |s: &&Sample| s.ids.iter().filter(|&&t| t == vocab.special.eos).count();
        assert_eq!(ends(a), ends(c), "the same turns");
        // (The first words of later questions may tokenize differently without the space.)
        let shorter = if ends(c) > 1 { a.len() < c.len() } else { a.ids == c.ids };
        assert!(shorter, "{:?} against {:?}", a.ids, c.ids);
    }
    let zero = TokenizeOptions { qa_turns: 0, ..opts };
    let err = tokenize(&recs, &vq, &text, &vocab, grouped.path(), &zero).unwrap_err();
    assert!(err.to_string().contains("qa_turns is 0"), "{err}");
}

#[test]
fn planned_generation_samples_carry_their_layout_unless_the_caption_is_dropped() {
    let vq = VqModel::new(emu_train::toy::toy_vq_config(), Device::Cpu, Kind::Float).unwrap();
    let world = WorldData { images: 16, videos: 0, size: 32, plan: true, ..Default::default() };
    let recs = records::world_records(&world);
    let mut specials = special_tokens();
    specials.extend((0..vq.config.codebook_size).map(visual_token_name));
    let text = TextTokenizer::train_bpe(&records::corpus(&recs), 300, &specials).unwrap();
    let cfg = emu_train::presets::PipelineConfig::preset("smoke").unwrap();
    let model_cfg =
        emu_train::pipeline::model_config(&cfg, &text, 32, vq.config.spatial_factor()).unwrap();
    let vocab = emu_model::pipeline::layout_for(&model_cfg, Some(vq.config.codebook_size), |s| {
        text.token_to_id(s).map(i64::from)
    })
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = TokenizeOptions { cfg_dropout: 0.5, ..Default::default() };
    let idx = tokenize(&recs, &vq, &text, &vocab, out.path(), &opts).unwrap();
    assert!(idx.plan, "the index says its generation samples plan");
    let store = TokenStore::open(out.path()).unwrap();
    let (mut planned, mut dropped) = (0, 0);
    for (s, _) in store.samples.iter().filter(|(_, k)| *k == Task::TextToImage) {
        let plan: Vec<i64> = s
            .ids
            .iter()
            .zip(&s.roles)
            .filter(|(_, r)| **r == Role::Plan)
            .map(|(i, _)| *i)
            .collect();
        if s.ids[1] == vocab.special.boi {
            // The unconditional stream: neither caption nor plan.
            assert!(plan.is_empty(), "{:?}", s.ids);
            dropped += 1;
        } else {
            // The plan's text, then the image start that ends it.
            assert_eq!(plan.last(), Some(&vocab.special.boi));
            let words = text
                .decode(&plan[..plan.len() - 1].iter().map(|&t| t as u32).collect::<Vec<_>>(), true)
                .unwrap();
            assert!(
                words.trim().starts_with(':')
                    && (words.contains(" top ") || words.contains(" bottom ")),
                "{words:?}"
            );
            planned += 1;
        }
    }
    assert!(planned > 0 && dropped > 0, "{planned} planned, {dropped} dropped");
    // Chat samples never plan, and a world without plans makes an index that says so.
    let chat_plans = store
        .samples
        .iter()
        .filter(|(_, k)| *k == Task::Understanding)
        .any(|(s, _)| s.roles.contains(&Role::Plan));
    assert!(!chat_plans);
    assert!(!idx.reasoning);
    let plain = records::world_records(&WorldData { plan: false, ..world.clone() });
    let out = tempfile::tempdir().unwrap();
    assert!(!tokenize(&plain, &vq, &text, &vocab, out.path(), &opts).unwrap().plan);
    // A world whose chat samples reason makes an index that says so, for the model folder.
    let reasoned = records::world_records(&WorldData { reasoning: true, ..world });
    let out = tempfile::tempdir().unwrap();
    assert!(tokenize(&reasoned, &vq, &text, &vocab, out.path(), &opts).unwrap().reasoning);
}

struct Squares {
    next: u64,
}

impl PixelSource for Squares {
    fn images(&mut self, b: i64) -> Tensor {
        self.next += 1;
        let x = Tensor::zeros([b, 3, 16, 16], (Kind::Float, Device::Cpu)) - 0.5;
        let _ = x.narrow(2, 4, 8).narrow(3, (self.next % 8) as i64, 8).fill_(0.8);
        x
    }
    fn videos(&mut self, b: i64) -> Tensor {
        self.images(b * 4).view([b, 4, 3, 16, 16])
    }
}

/// A 4× tokenizer small enough to train for a few steps in a test.
fn tiny_vq(codebook_size: i64) -> VqConfig {
    VqConfig {
        codebook_size,
        embed_dim: 4,
        z_channels: 4,
        ch: 32,
        ch_mult: vec![1, 1, 1],
        num_res_blocks: 1,
        attn_resolutions: vec![],
        ..VqConfig::emu3()
    }
}

#[test]
fn vq_training_learns_and_saves_a_loadable_tokenizer() {
    let run = tempfile::tempdir().unwrap();
    let cfg = tiny_vq(32);
    let tc = VqTrainConfig {
        steps: 40,
        batch_size: 4,
        video_every: 10,
        restart_every: 10,
        ..Default::default()
    };
    let mut psnr = Vec::new();
    let vq = train_vq(
        run.path(),
        &run.path().join("vq"),
        &cfg,
        &mut Squares { next: 0 },
        &tc,
        &mut |s| psnr.push(s.psnr),
    )
    .unwrap();
    let first: f64 = psnr[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = psnr[psnr.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last > first + 3.0, "PSNR should rise: {first:.1} -> {last:.1} dB");
    let back = VqModel::load(&run.path().join("vq"), Device::Cpu, Kind::Float).unwrap();
    let x = Squares { next: 3 }.images(2);
    assert!(back.encode_images(&x).equal(&vq.encode_images(&x)));
    assert!(run.path().join("metrics.jsonl").exists());
}

#[test]
fn autoencoder_warmup_trains_unquantized_then_sets_the_codebook_by_kmeans() {
    let run = tempfile::tempdir().unwrap();
    let cfg = tiny_vq(8);
    let tc = VqTrainConfig {
        steps: 6,
        batch_size: 2,
        autoencoder_warmup: 4,
        restart_every: 0,
        log_every: 1,
        // Nothing but the k-means moves the codebook, so its scale tells whether that ran.
        lr: 0.0,
        ..Default::default()
    };
    let train = |tc: &VqTrainConfig| {
        train_vq(
            run.path(),
            &run.path().join("vq"),
            &cfg,
            &mut Squares { next: 0 },
            tc,
            &mut |_| {},
        )
    };
    train(&tc).unwrap();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(run.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let quantized: Vec<bool> = records.iter().filter_map(|r| r["quantized"].as_bool()).collect();
    assert_eq!(quantized, [false, false, false, false, true, true]);
    let kmeans: Vec<_> = records.iter().filter(|r| r.get("kmeans_distortion").is_some()).collect();
    assert_eq!(kmeans.len(), 1, "one k-means, when quantization starts");
    assert_eq!(kmeans[0]["step"], 4);
    // The saved codebook is not the uniform ±1/K initialisation any more.
    let vq = VqModel::load(&run.path().join("vq"), Device::Cpu, Kind::Float).unwrap();
    let largest = vq.quantize.embedding.weight.abs().max().double_value(&[]);
    assert!(largest > 1.0 / 8.0, "codebook still at its initial scale: {largest}");

    let Err(err) = train(&VqTrainConfig { autoencoder_warmup: 6, ..tc }) else {
        panic!("a warmup as long as the training must be refused");
    };
    assert!(format!("{err:#}").contains("autoencoder_warmup is 6"), "{err:#}");
}

#[test]
fn image_steps_leave_the_temporal_layers_at_their_init() {
    let run = tempfile::tempdir().unwrap();
    let cfg = tiny_vq(8);
    let train = |video_every: i64| {
        let tc = VqTrainConfig { steps: 4, batch_size: 2, video_every, ..Default::default() };
        let out = run.path().join(format!("vq{video_every}"));
        train_vq(run.path(), &out, &cfg, &mut Squares { next: 0 }, &tc, &mut |_| {}).unwrap()
    };
    // What the identity init sets regardless of the random seed: the resampling convolutions,
    // the residual branches' last convolutions, and the batch norms' running statistics.
    let init = VqModel::new(cfg.clone(), Device::Cpu, Kind::Float).unwrap();
    init.init_temporal_identity();
    let seedless = |name: &str| !name.contains(".conv1.");
    let changed = |vq: &VqModel| -> Vec<String> {
        vq.temporal_parameters()
            .into_iter()
            .zip(init.temporal_parameters())
            .filter(|((name, a), (_, b))| seedless(name) && !a.equal(b))
            .map(|((name, _), _)| name)
            .collect()
    };
    let images_only = train(0);
    assert_eq!(changed(&images_only), Vec::<String>::new(), "images only");
    // A video step trains them.
    assert!(!changed(&train(2)).is_empty(), "video every other step");
    // The 2D trunk trains on images either way.
    let trunk = |vq: &VqModel| vq.encoder.conv_in.weight.copy();
    assert!(!trunk(&images_only).equal(&trunk(&init)));
}

#[test]
fn fine_tuning_starts_from_a_model_folder_and_keeps_its_tokenizers() {
    let init = tempfile::tempdir().unwrap();
    emu_train::toy::write_toy_model(init.path(), 5).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("ft");
    let mut cfg = emu_train::presets::PipelineConfig::preset("smoke").unwrap();
    cfg.sources = vec![emu_train::presets::Source::World(WorldData {
        images: 8,
        videos: 2,
        size: emu_train::toy::TOY_SIZE,
        frames: 8,
        ..Default::default()
    })];
    cfg.lm_train.steps = 2;
    cfg.lm_train.stage = emu_train::lm::Stage::SftChat;
    cfg.eval_suite = "none".into();
    cfg.eval_every = 0;
    emu_train::pipeline::run(
        &run,
        &cfg,
        Some(init.path()),
        &emu_train::dist::Dist::single(),
        false,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(run.join("tokenizer.json")).unwrap(),
        std::fs::read(init.path().join("tokenizer.json")).unwrap()
    );
    let a = emu_model::Emu3Config::from_file(&init.path().join("config.json")).unwrap();
    let b = emu_model::Emu3Config::from_file(&run.join("model/config.json")).unwrap();
    assert_eq!(a, b);
    emu_model::pipeline::Emu3::load(&run.join("model"), None, Device::Cpu, Kind::Float).unwrap();
}
