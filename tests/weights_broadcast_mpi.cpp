// Weights read once per node, under mpirun (ctest: weights_broadcast_mpi, label mpi): rank 0 stands for the
// coordinator and sits out; the other ranks are the workers of the node (node_workers). Each loads the model
// through WeightsBroadcast, and every tensor (its bytes, dtype and shape) and every component's identity must
// be bit-identical to a direct load from disk. Then the error paths over MPI: workers that open different
// files, and a file the reader cannot open, end with the same error on every worker instead of a hang.
//
// Usage: mpirun -np 4 weights_broadcast_mpi <model> [<model_config> [<vae file>]] ("-" for none; relative
// paths are under the fixtures folder, $SDXLB_FIXTURES_DIR or the build's). Exit 0 when every rank passed.
#include <cstdio>
#include <set>
#include <string>

#include "cluster/comm.h"
#include "cluster/node_probe.h"
#include "pipeline/io/weights_broadcast.h"
#include "test_files.h"
#include "weights_digest.h"

namespace sdxlb {
namespace {

// "" when this worker passed, else what went wrong.
std::string check_worker(Comm& node, const std::string& model, const std::string& config,
                         const std::string& vae) {
  auto direct = ModelSource::open(model, config, vae);
  if (!direct.is_ok()) return "direct load: " + direct.status().to_string();
  auto want = testing::weights_digest(*direct);
  if (!want.is_ok()) return "direct load: " + want.status().to_string();

  std::string got;
  int64_t files = 0;
  uint64_t bytes = 0;
  {
    WeightsBroadcast share(node);
    auto source = ModelSource::open(model, config, vae, share.opener());
    if (!source.is_ok()) return "broadcast load: " + source.status().to_string();
    auto digest = testing::weights_digest(*source);
    if (!digest.is_ok()) return "broadcast load: " + digest.status().to_string();
    got = *digest;
    files = share.files();
    bytes = share.bytes();
    const Status done = share.finish();
    if (!done.is_ok()) return "finish: " + done.to_string();
  }
  if (got != *want) return "weights differ from a direct load:\n" + got + "direct:\n" + *want;
  std::set<std::string> paths;  // each distinct file of the model exactly once
  for (const char* c : SingleFileCheckpoint::kComponents) {
    auto w = direct->weights(c, "");
    if (!w.is_ok()) return "direct load: " + w.status().to_string();
    for (const auto& f : w->files()) paths.insert(f->path());
  }
  if (files != static_cast<int64_t>(paths.size()))
    return std::to_string(files) + " files went through the exchange, not the model's " +
           std::to_string(paths.size());
  std::printf("worker %d of %d: %lld files, %llu bytes %s; identical to a direct load:\n%s", node.rank(),
              node.size(), static_cast<long long>(files), static_cast<unsigned long long>(bytes),
              node.rank() == 0 ? "read and sent" : "received", got.c_str());

  // Another file on the last worker: an error on every worker, naming both paths.
  {
    WeightsBroadcast share(node);
    auto unet = direct->weights("unet", "");
    auto vae_weights = direct->weights("vae", "");
    if (!unet.is_ok() || !vae_weights.is_ok()) return "direct load: no unet or vae";
    const std::string mine = (node.rank() == node.size() - 1 ? *vae_weights : *unet).files()[0]->path();
    const Status st = share.opener()(mine).status();
    if (node.size() > 1 && (st.code() != StatusCode::kFailedPrecondition ||
                            st.message().find(unet->files()[0]->path()) == std::string::npos ||
                            st.message().find(vae_weights->files()[0]->path()) == std::string::npos))
      return "a path mismatch gave: " + st.to_string();
  }
  // A file the reader cannot open: its error on every worker.
  {
    WeightsBroadcast share(node);
    const std::string missing = "/nonexistent-sdxlb-fixture/no-such-file.safetensors";
    const Status st = share.opener()(missing).status();
    if (st.code() != StatusCode::kNotFound || st.message().find(missing) == std::string::npos)
      return "a missing file gave: " + st.to_string();
    if (!share.finish().is_ok()) return "finish after a missing file failed";
  }
  return "";
}

int run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mpirun -np 4 %s <model> [<model_config> [<vae file>]]\n", argv[0]);
    return 2;
  }
  auto arg = [&](int i) -> std::string {
    const std::string p = i < argc ? argv[i] : "-";
    if (p == "-") return "";
    return p[0] == '/' ? p : testing::fixtures_dir() + "/" + p;
  };
  const std::string model = arg(1), config = arg(2), vae = arg(3);
  MpiSession mpi(&argc, &argv, /*force=*/true);
  Comm world = mpi.world();
  auto node = node_workers(world);
  std::string verdict;
  if (!node.is_ok())
    verdict = "node_workers: " + node.status().to_string();
  else if (world.rank() != 0)
    verdict = check_worker(*node, model, config, vae);
  auto all = world.all_gather(verdict, "collecting the verdicts");
  if (!all.is_ok()) return 1;
  int failed = 0;
  for (size_t r = 0; r < all->size(); ++r) {
    if ((*all)[r].empty()) continue;
    ++failed;
    if (world.rank() == 0) std::fprintf(stderr, "rank %zu FAILED: %s\n", r, (*all)[r].c_str());
  }
  if (world.rank() == 0)
    std::printf("%s: %d ranks, %d workers shared the weights%s\n", failed ? "FAILED" : "PASSED", world.size(),
                world.size() - 1, failed ? "" : " bit-identically");
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace sdxlb

int main(int argc, char** argv) {
  return sdxlb::run(argc, argv);
}
