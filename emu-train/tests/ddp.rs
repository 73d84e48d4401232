//! Data-parallel training over two processes (Gloo on loopback) equals one process with the same
//! global batch; ZeRO-1 equals DDP; a 2-process checkpoint resumes in 1 process.

mod common;

use common::{companions, config, model_cfg, store};
use emu_model::Emu3ForCausalLM;
use emu_train::checkpoint;
use emu_train::dist::c10d::Backend;
use emu_train::dist::{Dist, Topology};
use emu_train::lm::train_lm;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tch::{Device, Kind};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// In a child: train into EMU_TEST_RUN with ZeRO-1 if EMU_TEST_ZERO1 is set.
fn child() -> bool {
    let Ok(run) = std::env::var("EMU_TEST_RUN") else { return false };
    let dist =
        Dist::init(Topology::from_env().unwrap(), Backend::Gloo, Duration::from_secs(30)).unwrap();
    let mut cfg = config(6);
    cfg.zero1 = std::env::var("EMU_TEST_ZERO1").is_ok();
    let run = Path::new(&run);
    train_lm(
        run,
        &model_cfg(),
        None,
        &store(40, 9),
        &companions(run),
        &cfg,
        &dist,
        &mut |_| Ok(()),
    )
    .unwrap();
    true
}

fn two_ranks(test: &str, run: &Path, zero1: bool) {
    let exe = std::env::current_exe().unwrap();
    let port = free_port();
    let kids: Vec<_> = (0..2)
        .map(|r| {
            let mut c = Command::new(&exe);
            c.args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env("EMU_TEST_RUN", run)
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string());
            if zero1 {
                c.env("EMU_TEST_ZERO1", "1");
            }
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (r, k) in kids.into_iter().enumerate() {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "rank {r} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

fn max_diff(a: &Emu3ForCausalLM, b: &Emu3ForCausalLM) -> f64 {
    let bv = b.vs.variables();
    a.vs.variables()
        .iter()
        .map(|(n, t)| (t - &bv[n]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

#[test]
fn ddp_and_zero1_equal_one_process() {
    if child() {
        return;
    }
    let single = tempfile::tempdir().unwrap();
    let one = train_lm(
        single.path(),
        &model_cfg(),
        None,
        &store(40, 9),
        &companions(single.path()),
        &config(6),
        &Dist::single(),
        &mut |_| Ok(()),
    )
    .unwrap();
    let ddp = tempfile::tempdir().unwrap();
    two_ranks("ddp_and_zero1_equal_one_process", ddp.path(), false);
    let zero = tempfile::tempdir().unwrap();
    two_ranks("ddp_and_zero1_equal_one_process", zero.path(), true);
    let load = |p: &Path| {
        Emu3ForCausalLM::load(&checkpoint::latest(p).unwrap(), Device::Cpu, Kind::Float).unwrap()
    };
    let (d, z) = (load(ddp.path()), load(zero.path()));
    let dd = max_diff(&one, &d);
    let dz = max_diff(&d, &z);
    println!("max |param diff|: DDP vs 1 process {dd:.3e}, ZeRO-1 vs DDP {dz:.3e}");
    assert!(dd < 1e-5, "DDP vs one process: {dd}");
    assert!(dz < 1e-5, "ZeRO-1 vs DDP: {dz}");

    // The ZeRO-1 checkpoint (optimizer state gathered) resumes in one process, and continues as
    // the one-process run would.
    let mut more = config(8);
    more.zero1 = false;
    let resumed = train_lm(
        zero.path(),
        &model_cfg(),
        None,
        &store(40, 9),
        &companions(zero.path()),
        &more,
        &Dist::single(),
        &mut |_| Ok(()),
    )
    .unwrap();
    let cont = train_lm(
        single.path(),
        &model_cfg(),
        None,
        &store(40, 9),
        &companions(single.path()),
        &more,
        &Dist::single(),
        &mut |_| Ok(()),
    )
    .unwrap();
    let dr = max_diff(&resumed, &cont);
    println!("resumed in 1 process vs continued: {dr:.3e}");
    assert!(dr < 1e-5, "{dr}");
}
