// c10d shim: torch's own distributed engine (TCPStore rendezvous, ProcessGroupGloo, and
// ProcessGroupNCCL when built against a CUDA libtorch) behind a small C interface for Rust.
//
// Every entry point catches C++ exceptions and returns their message through `err` (freed by
// emu_free_str). Tensors are passed as the `at::Tensor*` that tch's C_tensor handles are.
// A heartbeat thread and a per-rank collective counter in the store let a failing rank name the
// peer that died or hung.

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#ifdef EMU_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <ATen/autocast_mode.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

char* dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<uint8_t> encode(int64_t v) {
  auto s = std::to_string(v);
  return std::vector<uint8_t>(s.begin(), s.end());
}

int64_t decode(const std::vector<uint8_t>& v) {
  return std::stoll(std::string(v.begin(), v.end()));
}

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank = 0;
  int world = 1;
  std::chrono::milliseconds timeout{0};
  int64_t seq = 0;
  // Heartbeats go through their own store connection: store clients are not shared across threads.
  c10::intrusive_ptr<c10d::Store> beat_store;
  std::thread beat;
  std::atomic<bool> stop{false};
};

c10d::TCPStoreOptions store_options(int port, bool server, int world, int timeout_ms) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(port);
  o.isServer = server;
  // No worker counting: the process group's own rendezvous (every rank publishing its address
  // under the store) already waits for everyone, and bounds it by the timeout.
  (void)world;
  o.waitWorkers = false;
  o.timeout = std::chrono::milliseconds(timeout_ms);
  o.useLibUV = false;
  return o;
}

template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    *err = dup(e.what());
  } catch (...) {
    *err = dup("unknown C++ exception");
  }
  return 1;
}

void wait(Group* g, c10::intrusive_ptr<c10d::Work> work) {
  if (!work->wait(g->timeout)) {
    throw std::runtime_error("collective timed out after " + std::to_string(g->timeout.count()) + " ms");
  }
}

// Counts collectives in the store so that peers can tell who fell behind.
void mark(Group* g) {
  g->seq += 1;
  g->store->set("emu/seq/" + std::to_string(g->rank), encode(g->seq));
}

}  // namespace

extern "C" {

void emu_free_str(char* s) { std::free(s); }

// CUDA autocast in bf16 rather than its fp16 default (tch only toggles autocast on and off).
void emu_autocast_bf16() { at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16); }

// libtorch's CPU autocast, which tch does not reach. Leaving it clears the cache of bf16 weight
// copies, because the optimizer changes the weights before the next forward.
void emu_cpu_autocast(int enabled) {
  if (enabled) {
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCPU, true);
  } else {
    at::autocast::set_autocast_enabled(at::kCPU, false);
    at::autocast::clear_cache();
  }
}

int emu_nccl_available() {
#ifdef EMU_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// backend: 0 = gloo, 1 = nccl.
// serve: this rank hosts the TCPStore (rank 0, unless torchrun's agent already serves one).
void* emu_pg_new(const char* addr, int port, int rank, int world, int timeout_ms, int backend, int serve, char** err) {
  Group* g = new Group();
  int rc = guarded(err, [&] {
    g->rank = rank;
    g->world = world;
    g->timeout = std::chrono::milliseconds(timeout_ms);
    std::string host(addr);
    c10::intrusive_ptr<c10d::Store> tcp;
    try {
      tcp = c10::make_intrusive<c10d::TCPStore>(host, store_options(port, serve != 0, world, timeout_ms));
    } catch (const std::exception& e) {
      throw std::runtime_error("rendezvous with the master at " + host + ":" + std::to_string(port) +
                               " failed (rank " + std::to_string(rank) + " of " + std::to_string(world) +
                               "): " + e.what());
    }
    g->store = c10::make_intrusive<c10d::PrefixStore>("emu", tcp);
    g->beat_store = c10::make_intrusive<c10d::PrefixStore>(
        "emu", c10::make_intrusive<c10d::TCPStore>(host, store_options(port, false, world, timeout_ms)));
    if (backend == 1) {
#ifdef EMU_WITH_NCCL
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = g->timeout;
      g->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(g->store, rank, world, opts);
#else
      throw std::runtime_error("this build has no NCCL: build against a CUDA libtorch (LIBTORCH_USE_PYTORCH=1)");
#endif
    } else {
      auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname != nullptr) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (host == "127.0.0.1" || host == "localhost") {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      g->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, rank, world, opts);
    }
    g->beat_store->set("beat/" + std::to_string(rank), encode(now_ms()));
    g->beat = std::thread([g] {
      while (!g->stop.load()) {
        try {
          g->beat_store->set("beat/" + std::to_string(g->rank), encode(now_ms()));
        } catch (...) {
          return;  // the master is gone; collectives will report it
        }
        for (int i = 0; i < 5 && !g->stop.load(); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    });
  });
  if (rc != 0) {
    delete g;
    return nullptr;
  }
  return g;
}

void emu_pg_free(void* p) {
  Group* g = static_cast<Group*>(p);
  g->stop.store(true);
  if (g->beat.joinable()) {
    g->beat.join();
  }
  delete g;
}

// op: 0 = sum, 1 = avg (Gloo has no AVG: sum, then divide).
int emu_pg_all_reduce(void* p, void* t, int op, char** err) {
  Group* g = static_cast<Group*>(p);
  return guarded(err, [&] {
    mark(g);
    std::vector<at::Tensor> ts{*static_cast<at::Tensor*>(t)};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    wait(g, g->backend->allreduce(ts, o));
    if (op == 1) {
      ts[0].div_(g->world);
    }
  });
}

int emu_pg_broadcast(void* p, void* t, int root, char** err) {
  Group* g = static_cast<Group*>(p);
  return guarded(err, [&] {
    mark(g);
    std::vector<at::Tensor> ts{*static_cast<at::Tensor*>(t)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = g->timeout;
    wait(g, g->backend->broadcast(ts, o));
  });
}

int emu_pg_all_gather(void* p, void* out, void* in, char** err) {
  Group* g = static_cast<Group*>(p);
  return guarded(err, [&] {
    mark(g);
    c10d::AllgatherOptions o;
    o.timeout = g->timeout;
    wait(g, g->backend->_allgather_base(*static_cast<at::Tensor*>(out), *static_cast<at::Tensor*>(in), o));
  });
}

int emu_pg_reduce_scatter(void* p, void* out, void* in, char** err) {
  Group* g = static_cast<Group*>(p);
  return guarded(err, [&] {
    mark(g);
    c10d::ReduceScatterOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    wait(g, g->backend->_reduce_scatter_base(*static_cast<at::Tensor*>(out), *static_cast<at::Tensor*>(in), o));
  });
}

int emu_pg_barrier(void* p, char** err) {
  Group* g = static_cast<Group*>(p);
  return guarded(err, [&] {
    mark(g);
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    wait(g, g->backend->barrier(o));
  });
}

// For each other rank: milliseconds since its last heartbeat (-1 if the store cannot be read) and
// how many collectives it has entered (-1 if unknown). Returns 0 on success.
int emu_pg_health(void* p, int64_t* beat_age_ms, int64_t* seqs, int n, char** err) {
  Group* g = static_cast<Group*>(p);
  return guarded(err, [&] {
    for (int r = 0; r < n && r < g->world; ++r) {
      beat_age_ms[r] = -1;
      seqs[r] = -1;
      try {
        auto key = "beat/" + std::to_string(r);
        if (g->beat_store->check({key})) {
          beat_age_ms[r] = now_ms() - decode(g->beat_store->get(key));
        }
        auto skey = "seq/" + std::to_string(r);
        if (g->beat_store->check({skey})) {
          seqs[r] = decode(g->beat_store->get(skey));
        } else {
          seqs[r] = 0;
        }
      } catch (...) {
      }
    }
  });
}

int64_t emu_pg_seq(void* p) { return static_cast<Group*>(p)->seq; }

}  // extern "C"
