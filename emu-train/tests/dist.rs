//! torch's c10d engine from Rust: two processes on loopback (Gloo). Each test re-runs this test
//! binary once per rank, with the rank in the environment.

use emu_train::dist::c10d::Backend;
use emu_train::dist::{Dist, Topology};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs test `name` in `world` child processes; returns their outputs in rank order.
fn spawn(name: &str, world: usize, port: u16) -> Vec<Output> {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .args([name, "--exact", "--nocapture", "--test-threads=1"])
                .env("EMU_TEST_RANK", rank.to_string())
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                // Captured, so children's own test summaries do not mix with this one's.
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

fn child() -> Option<usize> {
    std::env::var("EMU_TEST_RANK").ok().map(|r| r.parse().unwrap())
}

fn join(timeout_s: u64) -> Dist {
    Dist::init(Topology::from_env().unwrap(), Backend::Gloo, Duration::from_secs(timeout_s))
        .unwrap()
}

#[test]
fn collectives_compute_the_right_values() {
    if let Some(rank) = child() {
        let d = join(20);
        let r = rank as f32;
        let t = Tensor::from_slice(&[r + 1.0, 10.0 * r]);
        d.all_reduce_sum(&t).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![3.0, 10.0]);
        let t = Tensor::from_slice(&[r + 1.0, 10.0 * r]);
        d.all_reduce_avg(&t).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![1.5, 5.0]);
        let t = if rank == 1 {
            Tensor::from_slice(&[7.0f32, 8.0])
        } else {
            Tensor::zeros([2], (Kind::Float, tch::Device::Cpu))
        };
        d.broadcast(&t, 1).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![7.0, 8.0]);
        let out = Tensor::zeros([4], (Kind::Float, tch::Device::Cpu));
        d.all_gather(&out, &Tensor::from_slice(&[r, r + 0.5])).unwrap();
        assert_eq!(Vec::<f32>::try_from(&out).unwrap(), vec![0.0, 0.5, 1.0, 1.5]);
        let out = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
        d.reduce_scatter_sum(
            &out,
            &Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).g_mul_scalar((r + 1.0) as f64),
        )
        .unwrap();
        let want = if rank == 0 { vec![3.0, 6.0] } else { vec![9.0, 12.0] };
        assert_eq!(Vec::<f32>::try_from(&out).unwrap(), want);
        d.barrier().unwrap();
        return;
    }
    let outs = spawn("collectives_compute_the_right_values", 2, free_port());
    for (r, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "rank {r} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn a_dead_rank_is_named_within_the_timeout() {
    if let Some(rank) = child() {
        let d = join(5);
        if rank == 1 {
            std::process::exit(0); // dies without joining the collective
        }
        let start = Instant::now();
        let err =
            d.all_reduce_sum(&Tensor::ones([4], (Kind::Float, tch::Device::Cpu))).unwrap_err();
        let msg = format!("{err:#}");
        eprintln!("rank 0 saw: {msg}");
        assert!(start.elapsed() < Duration::from_secs(8), "took {:?}", start.elapsed());
        assert!(msg.contains("rank 1") && msg.contains("died"), "{msg}");
        std::process::exit(3);
    }
    let start = Instant::now();
    let outs = spawn("a_dead_rank_is_named_within_the_timeout", 2, free_port());
    assert_eq!(outs[0].status.code(), Some(3), "rank 0 must report the error and exit");
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_hung_rank_is_named_within_the_timeout() {
    if let Some(rank) = child() {
        let d = join(3);
        if rank == 1 {
            std::thread::sleep(Duration::from_secs(8)); // alive, but never joins
            std::process::exit(0);
        }
        let start = Instant::now();
        let msg = format!("{:#}", d.barrier().unwrap_err());
        eprintln!("rank 0 saw: {msg}");
        assert!(start.elapsed() < Duration::from_secs(6), "took {:?}", start.elapsed());
        assert!(msg.contains("rank 1") && msg.contains("hung"), "{msg}");
        std::process::exit(3);
    }
    let outs = spawn("a_hung_rank_is_named_within_the_timeout", 2, free_port());
    assert_eq!(outs[0].status.code(), Some(3));
}

#[test]
fn a_failed_rendezvous_names_the_address_and_port() {
    let port = free_port();
    let topo = Topology {
        rank: 1,
        world: 2,
        local_rank: 1,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
    };
    let err = Dist::init(topo, Backend::Gloo, Duration::from_secs(2))
        .err()
        .expect("nobody listens there");
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}
