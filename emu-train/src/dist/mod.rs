//! `dist`: the only module that knows about ranks.
//!
//! It reads the launcher's environment (torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
//! MASTER_PORT; Slurm: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) and, for more than one
//! process, joins torch's own c10d process group (Gloo on CPU, NCCL on CUDA) through the shim in
//! `c10d.rs`. A one-process run takes the same code path with no process group: every
//! collective is then the identity.

pub mod c10d;

use anyhow::{Context, Result, bail};
use std::time::Duration;
use tch::Tensor;

/// Where this process sits in the job.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Topology {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun already serves a TCPStore at MASTER_ADDR:MASTER_PORT
    /// (TORCHELASTIC_USE_AGENT_STORE=True): every rank joins it as a client.
    pub agent_store: bool,
}

impl Topology {
    pub fn single() -> Self {
        Topology {
            rank: 0,
            world: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: 29500,
            agent_store: false,
        }
    }

    /// Reads torchrun's variables, else Slurm's, else a single process.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let num = |k: &str| -> Result<Option<usize>> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .with_context(|| format!("environment variable {k}=`{v}` is not a number")),
            }
        };
        let (rank, world, local) = if let (Some(r), Some(w)) = (num("RANK")?, num("WORLD_SIZE")?) {
            (r, w, num("LOCAL_RANK")?.unwrap_or(r))
        } else if let (Some(r), Some(w)) = (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
            (r, w, num("SLURM_LOCALID")?.unwrap_or(r))
        } else {
            return Ok(Self::single());
        };
        if world == 0 || rank >= world {
            bail!("rank {rank} is not below the world size {world}");
        }
        let master_addr = get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let master_port = match get("MASTER_PORT") {
            Some(p) => p
                .trim()
                .parse::<u16>()
                .with_context(|| format!("MASTER_PORT=`{p}` is not a port number"))?,
            None => 29500,
        };
        let agent_store =
            get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(Topology { rank, world, local_rank: local, master_addr, master_port, agent_store })
    }
}

/// The collectives a training loop needs.
pub struct Dist {
    pub topo: Topology,
    group: Option<c10d::ProcessGroup>,
}

impl Dist {
    /// One process, no group.
    pub fn single() -> Self {
        Dist { topo: Topology::single(), group: None }
    }

    /// Joins the job described by `topo` (rendezvous through a TCPStore on the master). One
    /// process needs no group, except with NCCL, whose one-rank group is how a GPU run checks it.
    pub fn init(topo: Topology, backend: c10d::Backend, timeout: Duration) -> Result<Self> {
        if topo.world == 1 && backend == c10d::Backend::Gloo {
            return Ok(Dist { topo, group: None });
        }
        let group = c10d::ProcessGroup::new(backend, &topo, timeout)?;
        Ok(Dist { topo, group: Some(group) })
    }

    pub fn rank(&self) -> usize {
        self.topo.rank
    }

    pub fn world(&self) -> usize {
        self.topo.world
    }

    pub fn is_main(&self) -> bool {
        self.topo.rank == 0
    }

    /// Sums `t` over ranks, in place.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        match &self.group {
            Some(g) => g.all_reduce(t, c10d::ReduceOp::Sum),
            None => Ok(()),
        }
    }

    /// Averages `t` over ranks, in place.
    pub fn all_reduce_avg(&self, t: &Tensor) -> Result<()> {
        match &self.group {
            Some(g) => g.all_reduce(t, c10d::ReduceOp::Avg),
            None => Ok(()),
        }
    }

    /// Copies rank `root`'s `t` to every rank, in place.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        match &self.group {
            Some(g) => g.broadcast(t, root),
            None => Ok(()),
        }
    }

    /// `out` (`[world·n]`) receives every rank's `input` (`[n]`), in rank order.
    pub fn all_gather(&self, out: &Tensor, input: &Tensor) -> Result<()> {
        match &self.group {
            Some(g) => g.all_gather(out, input),
            None => {
                tch::no_grad(|| out.shallow_clone().copy_(input));
                Ok(())
            }
        }
    }

    /// `out` (`[n]`) receives the sum over ranks of rank-slice `rank` of `input` (`[world·n]`).
    pub fn reduce_scatter_sum(&self, out: &Tensor, input: &Tensor) -> Result<()> {
        match &self.group {
            Some(g) => g.reduce_scatter(out, input),
            None => {
                tch::no_grad(|| out.shallow_clone().copy_(input));
                Ok(())
            }
        }
    }

    pub fn barrier(&self) -> Result<()> {
        match &self.group {
            Some(g) => g.barrier(),
            None => Ok(()),
        }
    }
}

/// Which backends this build offers.
pub fn backends() -> Vec<String> {
    c10d::available_backends()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn topo(vars: &[(&str, &str)]) -> Result<Topology> {
        let m: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Topology::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn reads_torchrun_then_slurm_then_defaults_to_one_process() {
        let t = topo(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap();
        assert_eq!(
            (t.rank, t.world, t.local_rank, t.master_addr.as_str(), t.master_port),
            (3, 4, 1, "node7", 1234)
        );
        let t =
            topo(&[("SLURM_PROCID", "5"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "1")]).unwrap();
        assert_eq!((t.rank, t.world, t.local_rank), (5, 8, 1));
        assert_eq!(topo(&[]).unwrap(), Topology::single());
        assert!(
            format!("{:#}", topo(&[("RANK", "4"), ("WORLD_SIZE", "4")]).unwrap_err())
                .contains("below the world size")
        );
        assert!(
            format!("{:#}", topo(&[("RANK", "x"), ("WORLD_SIZE", "4")]).unwrap_err())
                .contains("RANK=`x`")
        );
    }
}
