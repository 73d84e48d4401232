//! The LM training loop: it learns, it resumes bit-exactly, its checkpoints survive a kill, it
//! refuses to resume a different architecture, and it trains on the tasks it is given.

mod common;

use common::{companions, config, model_cfg, store};
use emu_model::{Emu3Config, Emu3ForCausalLM};
use emu_tokenizer::sequence::TurnLayout;
use emu_train::checkpoint;
use emu_train::data::shards::{Task, TokenStore};
use emu_train::dist::Dist;
use emu_train::lm::{LmTrainConfig, Progress, Stage, train_lm};
use emu_train::optim::AdamWConfig;
use std::sync::{Mutex, MutexGuard};
use tch::{Device, Kind, Tensor};

/// libtorch has one global generator. Run concurrently, one test's draws (a fresh model's init, or
/// the random init that a load then overwrites) can land between another's seed and its init and
/// change that init, so the tests of this file run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn params(lm: &Emu3ForCausalLM) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = lm.vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Trains a fresh model on `st` and returns each step's loss with the model.
fn train_recording_losses(
    run: &std::path::Path,
    st: &TokenStore,
    cfg: &LmTrainConfig,
) -> (Vec<f64>, Emu3ForCausalLM) {
    let mut losses = Vec::new();
    let lm =
        train_lm(run, &model_cfg(), None, st, &companions(run), cfg, &Dist::single(), &mut |p| {
            if let Progress::Step { loss, .. } = p {
                losses.push(loss);
            }
            Ok(())
        })
        .unwrap();
    (losses, lm)
}

#[test]
fn the_tiny_model_overfits_one_batch() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let st = store(4, 1);
    let cfg = LmTrainConfig {
        batch_size: 4,
        micro_batch: 4,
        max_len: 32,
        steps: 80,
        optim: AdamWConfig { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
        ..config(80)
    };
    let (losses, _) = train_recording_losses(dir.path(), &st, &cfg);
    assert!(losses[0] > 3.5, "starts near ln(64): {}", losses[0]);
    assert!(
        *losses.last().unwrap() < 0.3,
        "one repeated batch must be memorised: {:?}",
        &losses[losses.len() - 5..]
    );
}

#[test]
fn resuming_from_a_checkpoint_continues_bit_exactly() {
    let _serial = serial();
    let st = store(30, 2);
    let a = tempfile::tempdir().unwrap();
    let full = train_lm(
        a.path(),
        &model_cfg(),
        None,
        &st,
        &companions(a.path()),
        &config(10),
        &Dist::single(),
        &mut |_| Ok(()),
    )
    .unwrap();

    let b = tempfile::tempdir().unwrap();
    let comp = companions(b.path());
    // Same 10-step schedule, killed right after the checkpoint at step 5.
    let mut first = config(10);
    first.checkpoint_every = 5;
    let r =
        train_lm(
            b.path(),
            &model_cfg(),
            None,
            &st,
            &comp,
            &first,
            &Dist::single(),
            &mut |p| match p {
                Progress::Step { step: 5, .. } => {
                    anyhow::bail!("simulated kill at step 5")
                }
                _ => Ok(()),
            },
        );
    assert!(r.is_err());
    let ck = checkpoint::latest(b.path()).unwrap();
    assert_eq!(checkpoint::read_state(&ck).unwrap().step, 5);
    let resumed = train_lm(
        b.path(),
        &model_cfg(),
        None,
        &st,
        &comp,
        &config(10),
        &Dist::single(),
        &mut |_| Ok(()),
    )
    .unwrap();
    for ((n, x), (_, y)) in params(&full).iter().zip(params(&resumed)) {
        assert!(x.equal(&y), "{n} differs after resume");
    }
}

#[test]
fn a_kill_during_a_checkpoint_write_leaves_a_loadable_run() {
    let _serial = serial();
    let st = store(20, 3);
    let dir = tempfile::tempdir().unwrap();
    let comp = companions(dir.path());
    let mut cfg = config(4);
    cfg.checkpoint_every = 2;
    train_lm(dir.path(), &model_cfg(), None, &st, &comp, &cfg, &Dist::single(), &mut |_| Ok(()))
        .unwrap();
    let run = dir.path();
    // Killed while writing model.new (no COMPLETE marker yet): the old checkpoint stands.
    std::fs::create_dir_all(run.join("model.new")).unwrap();
    std::fs::write(run.join("model.new/model.safetensors"), b"half a file").unwrap();
    assert_eq!(checkpoint::latest(run).unwrap(), run.join("model"));
    // Killed between the two renames: model.old and a complete model.new, no model.
    std::fs::remove_dir_all(run.join("model.new")).unwrap();
    std::fs::rename(run.join("model"), run.join("model.new")).unwrap();
    let latest = checkpoint::latest(run).unwrap();
    assert_eq!(latest, run.join("model.new"));
    Emu3ForCausalLM::load(&latest, Device::Cpu, Kind::Float).unwrap();
    assert!(latest.join("tokenizer.json").exists());
    // Training resumes from it.
    let mut more = config(6);
    more.checkpoint_every = 2;
    train_lm(run, &model_cfg(), None, &st, &comp, &more, &Dist::single(), &mut |_| Ok(())).unwrap();
    assert_eq!(checkpoint::read_state(&checkpoint::latest(run).unwrap()).unwrap().step, 6);
}

#[test]
fn resume_refuses_another_architecture() {
    let _serial = serial();
    let st = store(10, 4);
    let dir = tempfile::tempdir().unwrap();
    let comp = companions(dir.path());
    train_lm(dir.path(), &model_cfg(), None, &st, &comp, &config(2), &Dist::single(), &mut |_| {
        Ok(())
    })
    .unwrap();
    let wider = Emu3Config { intermediate_size: 192, ..model_cfg() };
    let err = train_lm(
        dir.path(),
        &wider,
        None,
        &st,
        &comp,
        &config(4),
        &Dist::single(),
        &mut |_| Ok(()),
    )
    .err()
    .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("intermediate_size") && msg.contains("160") && msg.contains("192"),
        "{msg}"
    );
}

#[test]
fn bf16_autocast_on_cpu_trains_like_f32_and_does_not_leak() {
    let _serial = serial();
    let run = |bf16: bool| {
        let dir = tempfile::tempdir().unwrap();
        train_recording_losses(dir.path(), &store(4, 1), &LmTrainConfig { bf16, ..config(30) })
    };
    let (f32_losses, _) = run(false);
    let (bf16_losses, lm) = run(true);
    // bf16 products round differently from the first step on, so equal losses would mean
    // autocast never ran; the trajectories must still agree closely.
    assert_ne!(f32_losses[0], bf16_losses[0], "autocast changed nothing");
    for (a, b) in f32_losses.iter().zip(&bf16_losses) {
        assert!((a - b).abs() < 0.05 * a.abs() + 0.02, "f32 {f32_losses:?}\nbf16 {bf16_losses:?}");
    }
    assert!(bf16_losses[29] < bf16_losses[0] - 0.5, "bf16 training learns: {bf16_losses:?}");
    assert!(params(&lm).iter().all(|(_, p)| p.kind() == Kind::Float), "weights stay f32");
    let a = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
    assert_eq!(a.matmul(&a).kind(), Kind::Float, "autocast is left on after training");
}

#[test]
fn a_task_list_trains_on_its_tasks_only_and_an_empty_selection_is_an_error() {
    let _serial = serial();
    let st = store(10, 4);
    let dir = tempfile::tempdir().unwrap();
    let only = LmTrainConfig { tasks: vec![Task::Understanding], ..config(1) };
    let (losses, _) = train_recording_losses(dir.path(), &st, &only);
    assert_eq!(losses.len(), 1);
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let pack: serde_json::Value = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["phase"] == "pack")
        .expect("a pack record");
    assert_eq!(pack["samples"], 5, "half of the store's samples are understanding: {pack}");
    // Generation SFT skips understanding, so nothing is left to train on.
    let none = LmTrainConfig { stage: Stage::SftGen, ..only };
    let run = dir.path().join("none");
    let comp = companions(dir.path());
    let err =
        train_lm(&run, &model_cfg(), None, &st, &comp, &none, &Dist::single(), &mut |_| Ok(()));
    let msg = format!("{:#}", err.err().expect("no samples is an error"));
    assert!(
        msg.contains("SftGen") && msg.contains("Understanding") && msg.contains("`tasks`"),
        "{msg}"
    );
}

#[test]
fn turns_laid_out_alone_need_the_document_mask() {
    let _serial = serial();
    let mut st = store(10, 4);
    st.index.turn_layout = TurnLayout::Alone;
    let dir = tempfile::tempdir().unwrap();
    let cfg = LmTrainConfig { doc_mask: false, ..config(1) };
    let comp = companions(dir.path());
    let err = train_lm(
        dir.path(),
        &model_cfg(),
        None,
        &st,
        &comp,
        &cfg,
        &Dist::single(),
        &mut |_| Ok(()),
    );
    let msg = format!("{:#}", err.err().expect("turns alone without the document mask"));
    assert!(msg.contains("`doc_mask`") && msg.contains("alone"), "{msg}");
    // With the mask, the same store trains.
    let (losses, _) = train_recording_losses(dir.path(), &st, &config(1));
    assert!(losses[0].is_finite());
}
