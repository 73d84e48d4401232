//! Distributed figures, measured side by side in one run (two processes over loopback, Gloo):
//! gradient all-reduce bandwidth by message size, and the DDP step time against a single process
//! doing the same per-rank work (both with one libtorch thread per process).
//!
//! Shapes: `[n]` f32 messages; the LM step uses B = 8 sequences of L = 128 tokens per rank.

use emu_model::{Emu3Config, Emu3ForCausalLM};
use emu_train::ddp::Updater;
use emu_train::dist::c10d::Backend;
use emu_train::dist::{Dist, Topology};
use emu_train::optim::AdamWConfig;
use std::process::Command;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

const SIZES_MB: [usize; 3] = [1, 16, 64];
const STEPS: usize = 6;

fn lm_step_time(dist: &Dist) -> f64 {
    tch::manual_seed(0);
    let cfg = Emu3Config { vocab_size: 1024, max_position_embeddings: 256, ..Emu3Config::small() };
    let lm = Emu3ForCausalLM::new(&cfg, Device::Cpu, Kind::Float).unwrap();
    let mut params: Vec<(String, Tensor)> = lm.vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut up = Updater::new(params, |_| true, AdamWConfig::default(), false, dist);
    let ids = Tensor::randint(1024, [8, 128], (Kind::Int64, Device::Cpu));
    let mut times = Vec::new();
    for i in 0..STEPS + 1 {
        let t = Instant::now();
        let out = lm.forward_train(&ids, &ids, None, None, true, false);
        out.loss.backward();
        up.step(dist, 1e-3, 1.0).unwrap();
        up.zero_grad();
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn rank_main(rank: usize) {
    tch::set_num_threads(1);
    let dist =
        Dist::init(Topology::from_env().unwrap(), Backend::Gloo, Duration::from_secs(120)).unwrap();
    for mb in SIZES_MB {
        let t = Tensor::ones([(mb * 1024 * 1024 / 4) as i64], (Kind::Float, Device::Cpu));
        dist.all_reduce_sum(&t).unwrap();
        let n = 5;
        let start = Instant::now();
        for _ in 0..n {
            dist.all_reduce_sum(&t).unwrap();
        }
        let secs = start.elapsed().as_secs_f64() / n as f64;
        if rank == 0 {
            // Bus bandwidth of a ring all-reduce: 2(n-1)/n times the message per rank.
            let bus =
                2.0 * (dist.world() as f64 - 1.0) / dist.world() as f64 * mb as f64 / 1024.0 / secs;
            println!("all_reduce {mb:>3} MB: {:>7.2} ms, bus bandwidth {bus:.2} GB/s", secs * 1e3);
        }
    }
    let t = lm_step_time(&dist);
    if rank == 0 {
        println!("DDP step (2 ranks, small LM, 8x128 tokens per rank): {:.1} ms", t * 1e3);
    }
}

fn main() {
    if let Ok(r) = std::env::var("EMU_BENCH_RANK") {
        rank_main(r.parse().unwrap());
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    tch::set_num_threads(1);
    let single = lm_step_time(&Dist::single());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let exe = std::env::current_exe().unwrap();
    let kids: Vec<_> = (0..2)
        .map(|r| {
            Command::new(&exe)
                .env("EMU_BENCH_RANK", r.to_string())
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Both ranks must run at once (they rendezvous), so spawn both before waiting on either.
    let outputs: Vec<_> = kids.into_iter().map(|k| k.wait_with_output().unwrap()).collect();
    for (rank, o) in outputs.iter().enumerate() {
        assert!(o.status.success(), "bench rank {rank} failed: {}", o.status);
    }
    let out = String::from_utf8_lossy(&outputs[0].stdout).into_owned();
    print!("{out}");
    println!("single-process step (same work, 1 thread): {:.1} ms", single * 1e3);
    if let Some(ddp) = out
        .lines()
        .find_map(|l| l.strip_prefix("DDP step (2 ranks, small LM, 8x128 tokens per rank): "))
        .and_then(|v| v.trim_end_matches(" ms").parse::<f64>().ok())
    {
        println!("DDP overhead: {:.2}x the single-process step", ddp / (single * 1e3));
    }
}
