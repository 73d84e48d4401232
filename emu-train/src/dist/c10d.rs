//! Safe Rust over the C++ shim (csrc/c10d_shim.cpp) to torch's c10d: a process group joined
//! through a TCPStore, and its collectives on tch tensors. Every C++ exception arrives as an
//! error carrying its message; a failed collective also says which peer died or hung.
//!
//! Shapes: `[n]` flat buffers; gathers and scatters use `[world·n]`.

#![allow(unsafe_code)]

use super::Topology;
use anyhow::{Result, anyhow, bail};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::time::Duration;
use tch::Tensor;

unsafe extern "C" {
    fn emu_free_str(s: *mut c_char);
    fn emu_nccl_available() -> c_int;
    fn emu_autocast_bf16();
    fn emu_cpu_autocast(enabled: c_int);
    fn emu_pg_new(
        addr: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: c_int,
        backend: c_int,
        serve: c_int,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    fn emu_pg_free(pg: *mut c_void);
    fn emu_pg_all_reduce(
        pg: *mut c_void,
        t: *const c_void,
        op: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    fn emu_pg_broadcast(
        pg: *mut c_void,
        t: *const c_void,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    fn emu_pg_all_gather(
        pg: *mut c_void,
        out: *const c_void,
        input: *const c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    fn emu_pg_reduce_scatter(
        pg: *mut c_void,
        out: *const c_void,
        input: *const c_void,
        err: *mut *mut c_char,
    ) -> c_int;
    fn emu_pg_barrier(pg: *mut c_void, err: *mut *mut c_char) -> c_int;
    fn emu_pg_health(
        pg: *mut c_void,
        beat_age_ms: *mut i64,
        seqs: *mut i64,
        n: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    fn emu_pg_seq(pg: *mut c_void) -> i64;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            other => bail!("unknown distributed backend `{other}`; expected gloo or nccl"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum ReduceOp {
    Sum,
    Avg,
}

/// Runs `f` under bf16 autocast on `device` when `enabled`: tch's on CUDA, libtorch's own on CPU
/// (matrix products in bf16, reductions and the loss in f32).
pub fn bf16_autocast<T>(device: tch::Device, enabled: bool, f: impl FnOnce() -> T) -> T {
    if !enabled {
        return f();
    }
    if device.is_cuda() {
        // SAFETY: sets a libtorch global; no arguments. tch's autocast would otherwise run fp16.
        unsafe { emu_autocast_bf16() };
        return tch::autocast(true, f);
    }
    // SAFETY: toggles a thread-local libtorch flag; no pointers cross.
    unsafe { emu_cpu_autocast(1) };
    let out = f();
    // SAFETY: as above.
    unsafe { emu_cpu_autocast(0) };
    out
}

pub fn available_backends() -> Vec<String> {
    let mut v = vec!["gloo".to_string()];
    // SAFETY: a plain query with no arguments.
    if unsafe { emu_nccl_available() } != 0 {
        v.push("nccl".into());
    }
    v
}

/// Takes ownership of a C string from the shim.
fn take(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'd string, freed right after copying.
    let s = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { emu_free_str(err) };
    s
}

/// A joined process group. Collectives block until every rank has joined them.
pub struct ProcessGroup {
    ptr: *mut c_void,
    rank: usize,
    world: usize,
    timeout: Duration,
}

impl ProcessGroup {
    pub fn new(backend: Backend, topo: &Topology, timeout: Duration) -> Result<Self> {
        let addr = CString::new(topo.master_addr.clone())
            .map_err(|_| anyhow!("MASTER_ADDR contains a NUL byte"))?;
        let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
        let b = match backend {
            Backend::Gloo => 0,
            Backend::Nccl => 1,
        };
        let mut err = std::ptr::null_mut();
        // Rank 0 hosts the store, unless torchrun's agent already does.
        let serve = c_int::from(topo.rank == 0 && !topo.agent_store);
        // SAFETY: arguments are valid for the call; the shim returns null and sets err on failure.
        let ptr = unsafe {
            emu_pg_new(
                addr.as_ptr(),
                topo.master_port as c_int,
                topo.rank as c_int,
                topo.world as c_int,
                ms,
                b,
                serve,
                &mut err,
            )
        };
        if ptr.is_null() {
            bail!("{}", take(err));
        }
        Ok(ProcessGroup { ptr, rank: topo.rank, world: topo.world, timeout })
    }

    fn check(&self, what: &str, rc: c_int, err: *mut c_char) -> Result<()> {
        if rc == 0 {
            return Ok(());
        }
        let msg = take(err);
        let msg = msg.lines().next().unwrap_or("").to_string();
        let closed = msg.contains("Connection closed")
            || msg.contains("Connection reset")
            || msg.contains("Broken pipe");
        Err(anyhow!("{what} failed on rank {}: {}: {msg}", self.rank, self.diagnose(closed)))
    }

    /// Names the peer(s) that stopped: no heartbeat for a while (dead), or behind in collectives
    /// (hung). If the store itself is gone, the master (rank 0) died.
    /// `closed`: the transport saw a peer's connection close, so a peer that fell behind died.
    fn diagnose(&self, closed: bool) -> String {
        let n = self.world;
        let mut ages = vec![0i64; n];
        let mut seqs = vec![0i64; n];
        let mut err = std::ptr::null_mut();
        // SAFETY: buffers hold `n` entries each.
        let rc = unsafe {
            emu_pg_health(self.ptr, ages.as_mut_ptr(), seqs.as_mut_ptr(), n as c_int, &mut err)
        };
        if rc != 0 {
            let _ = take(err);
            return "the master (rank 0) is unreachable".into();
        }
        // SAFETY: plain read of the shim's counter.
        let mine = unsafe { emu_pg_seq(self.ptr) };
        let stale = (self.timeout.as_millis() as i64 / 2).clamp(1500, 5000);
        let mut dead = Vec::new();
        let mut hung = Vec::new();
        for r in (0..n).filter(|&r| r != self.rank) {
            if ages[r] < 0 {
                if r == 0 {
                    return "the master (rank 0) is unreachable: it died".into();
                }
                dead.push(format!("rank {r} (no heartbeat)"));
            } else if ages[r] > stale {
                dead.push(format!(
                    "rank {r} died (last heartbeat {:.1} s ago)",
                    ages[r] as f64 / 1000.0
                ));
            } else if seqs[r] >= 0 && seqs[r] < mine && closed {
                dead.push(format!(
                    "rank {r} died (its connection closed at collective #{})",
                    seqs[r]
                ));
            } else if seqs[r] >= 0 && seqs[r] < mine {
                hung.push(format!(
                    "rank {r} hung (it is at collective #{} while rank {} waits in #{mine})",
                    seqs[r], self.rank
                ));
            }
        }
        match (dead.is_empty(), hung.is_empty()) {
            (true, true) => "a peer failed".into(),
            _ => dead.into_iter().chain(hung).collect::<Vec<_>>().join("; "),
        }
    }

    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<()> {
        let mut err = std::ptr::null_mut();
        let op = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Avg => 1,
        };
        // SAFETY: t is a live tensor for the duration of the blocking call.
        let rc = unsafe { emu_pg_all_reduce(self.ptr, t.as_ptr() as *const c_void, op, &mut err) };
        self.check("all_reduce", rc, err)
    }

    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe {
            emu_pg_broadcast(self.ptr, t.as_ptr() as *const c_void, root as c_int, &mut err)
        };
        self.check("broadcast", rc, err)
    }

    pub fn all_gather(&self, out: &Tensor, input: &Tensor) -> Result<()> {
        anyhow::ensure!(
            out.numel() == input.numel() * self.world,
            "all_gather: output must hold world × input elements"
        );
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe {
            emu_pg_all_gather(
                self.ptr,
                out.as_ptr() as *const c_void,
                input.as_ptr() as *const c_void,
                &mut err,
            )
        };
        self.check("all_gather", rc, err)
    }

    pub fn reduce_scatter(&self, out: &Tensor, input: &Tensor) -> Result<()> {
        anyhow::ensure!(
            input.numel() == out.numel() * self.world,
            "reduce_scatter: input must hold world × output elements"
        );
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe {
            emu_pg_reduce_scatter(
                self.ptr,
                out.as_ptr() as *const c_void,
                input.as_ptr() as *const c_void,
                &mut err,
            )
        };
        self.check("reduce_scatter", rc, err)
    }

    pub fn barrier(&self) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: plain call on a live group.
        let rc = unsafe { emu_pg_barrier(self.ptr, &mut err) };
        self.check("barrier", rc, err)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: ptr came from emu_pg_new and is freed once.
        unsafe { emu_pg_free(self.ptr) }
    }
}
