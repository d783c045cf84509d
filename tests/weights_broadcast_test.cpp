// WeightsBroadcast on the local backend (the workers of a node as threads): the weights and identities are
// those of a direct load, a worker that opens another file (or none) makes an error on every worker rather
// than a hang, and the reader's failure to open a file reaches every worker. The same under mpirun:
// weights_broadcast_mpi.cpp.
#include "pipeline/io/weights_broadcast.h"

#include <functional>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/comm.h"
#include "pipeline/io/lora.h"
#include "pipeline/io/model_source.h"
#include "pipeline/io/safetensors.h"
#include "test_files.h"
#include "weights_digest.h"

namespace sdxlb {
namespace {

constexpr int kWorkers = 3;

// Runs fn(node) on every worker of a fresh local group, one thread each.
void on_every_worker(int n, const std::function<void(Comm&)>& fn) {
  auto comms = Comm::local_group(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back([&, r] { fn(comms[r]); });
  for (auto& t : threads) t.join();
}

struct Source {
  const char* name;
  std::string model, config, vae;
};

std::vector<Source> sources() {
  const std::string single = testing::fixtures_dir() + "/single_file/";
  return {{"folder", testing::fixture_model_dir("tiny-a"), "", ""},
          {"sharded folder", testing::fixture_model_dir("tiny-a-sharded"), "", ""},
          {"single file with a VAE file", single + "tiny-a.safetensors", testing::fixture_model_dir("tiny-a"),
           single + "tiny-a-vae-ldm.safetensors"}};
}

TEST(WeightsBroadcast, EveryWorkerGetsTheWeightsAndIdentityOfADirectLoad) {
  for (const Source& s : sources()) {
    SCOPED_TRACE(s.name);
    auto direct = ModelSource::open(s.model, s.config, s.vae);
    ASSERT_TRUE(direct.is_ok()) << direct.status().to_string();
    auto want = testing::weights_digest(*direct);
    ASSERT_TRUE(want.is_ok()) << want.status().to_string();
    ASSERT_NE(want->find("unet"), std::string::npos);

    std::vector<std::string> got(kWorkers), errors(kWorkers);
    std::vector<int64_t> files(kWorkers);
    std::vector<bool> same_bytes(kWorkers, false), owned(kWorkers, false);
    on_every_worker(kWorkers, [&](Comm& node) {
      const int r = node.rank();
      WeightsBroadcast share(node);
      auto source = ModelSource::open(s.model, s.config, s.vae, share.opener());
      if (!source.is_ok()) {
        errors[r] = source.status().to_string();
        return;
      }
      auto digest = testing::weights_digest(*source);  // each file asked for twice: weights, then identity
      if (digest.is_ok()) got[r] = *digest;
      // The bytes of every unet file, against the file on disk.
      auto w = source->weights("unet", "");
      auto d = direct->weights("unet", "");
      if (w.is_ok() && d.is_ok() && w->files().size() == d->files().size()) {
        bool same = true;
        for (size_t i = 0; i < w->files().size(); ++i)
          same = same && w->files()[i]->file_bytes() == d->files()[i]->file_bytes() &&
                 w->files()[i]->path() == d->files()[i]->path();
        same_bytes[r] = same;
        // The receivers' files live in memory of their own, not in the reader's mapping.
        owned[r] = w->files()[0]->file_bytes().data() != d->files()[0]->file_bytes().data();
      }
      files[r] = share.files();
      const Status done = share.finish();
      if (!done.is_ok()) errors[r] = done.to_string();
      // After finish() the opener reads from disk, alone.
      auto later = share.opener()(d->files()[0]->path());
      if (!later.is_ok()) errors[r] = later.status().to_string();
    });
    for (int r = 0; r < kWorkers; ++r) {
      SCOPED_TRACE("worker " + std::to_string(r));
      EXPECT_EQ(errors[r], "");
      EXPECT_EQ(got[r], *want);
      EXPECT_TRUE(same_bytes[r]);
      EXPECT_TRUE(owned[r]);
      EXPECT_EQ(files[r], files[0]);  // each file once, on every worker
    }
    // Each distinct file of the model exactly once.
    std::set<std::string> paths;
    for (const char* c : SingleFileCheckpoint::kComponents) {
      auto w = direct->weights(c, "");
      ASSERT_TRUE(w.is_ok()) << w.status().to_string();
      for (const auto& f : w->files()) paths.insert(f->path());
    }
    EXPECT_EQ(files[0], static_cast<int64_t>(paths.size()));
  }
}

TEST(WeightsBroadcast, LorasAreSharedToo) {
  const std::string model = testing::fixture_model_dir("tiny-a");
  const std::vector<LoraEntry> loras = {{testing::fixtures_dir() + "/lora/kohya.safetensors", 0.5, ""}};
  auto direct = ModelSource::open(model);
  ASSERT_TRUE(direct.is_ok());
  auto direct_set = LoraSet::open(loras, *direct, "");
  ASSERT_TRUE(direct_set.is_ok()) << direct_set.status().to_string();
  Fingerprint want;
  direct_set->add_identity(want, LoraSet::components());

  std::vector<std::string> got(kWorkers), errors(kWorkers);
  on_every_worker(kWorkers, [&](Comm& node) {
    WeightsBroadcast share(node);
    auto source = ModelSource::open(model, "", "", share.opener());
    auto set = source.is_ok() ? LoraSet::open(loras, *source, "") : StatusOr<LoraSet>(source.status());
    if (!set.is_ok()) {
      errors[node.rank()] = set.status().to_string();
      return;
    }
    Fingerprint fp;
    set->add_identity(fp, LoraSet::components());
    got[node.rank()] = fp.hex() + " " + set->describe();
    // unet, text_encoder, text_encoder_2 (their headers are matched) and the LoRA.
    if (share.files() != 4) errors[node.rank()] = "files: " + std::to_string(share.files());
  });
  for (int r = 0; r < kWorkers; ++r) {
    EXPECT_EQ(errors[r], "") << "worker " << r;
    EXPECT_EQ(got[r], want.hex() + " " + direct_set->describe()) << "worker " << r;
  }
}

// Two small valid files, for the error cases.
struct TwoFiles {
  testing::ScratchDir dir;
  std::string a = dir.file("a.safetensors"), b = dir.file("b.safetensors");
  TwoFiles() {
    testing::write_bytes(
        a, testing::safetensors_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                      std::string(8, 'a')));
    testing::write_bytes(
        b, testing::safetensors_bytes(R"({"y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                      std::string(4, 'b')));
  }
};

TEST(WeightsBroadcast, WorkersOpeningDifferentFilesAllFailNamingBothPaths) {
  TwoFiles f;
  std::vector<Status> opened(kWorkers), finished(kWorkers);
  on_every_worker(kWorkers, [&](Comm& node) {
    WeightsBroadcast share(node);
    opened[node.rank()] = share.opener()(node.rank() == 1 ? f.b : f.a).status();
    finished[node.rank()] = share.finish();
  });
  for (int r = 0; r < kWorkers; ++r) {
    SCOPED_TRACE("worker " + std::to_string(r));
    EXPECT_EQ(opened[r].code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(opened[r].message().find("first worker opened " + f.a), std::string::npos)
        << opened[r].message();
    EXPECT_NE(opened[r].message().find("worker 1 of the node opened " + f.b), std::string::npos);
    EXPECT_NE(opened[r].message().find("weights_broadcast: off"), std::string::npos);
    EXPECT_TRUE(finished[r].is_ok());  // the mismatch ended the exchange everywhere: nobody waits
  }
}

TEST(WeightsBroadcast, AWorkerThatStopsEarlyMakesAnErrorNotAHang) {
  TwoFiles f;
  std::vector<Status> opened(kWorkers), finished(kWorkers);
  on_every_worker(kWorkers, [&](Comm& node) {
    WeightsBroadcast share(node);
    if (node.rank() == 2) return;  // failed before loading: the destructor says it is done
    opened[node.rank()] = share.opener()(f.a).status();
    finished[node.rank()] = share.finish();
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(opened[r].code(), StatusCode::kFailedPrecondition) << opened[r].to_string();
    EXPECT_NE(opened[r].message().find("worker 2 of the node had finished loading"), std::string::npos)
        << opened[r].message();
    EXPECT_TRUE(finished[r].is_ok());
  }
}

TEST(WeightsBroadcast, TheReadersFailureReachesEveryWorker) {
  TwoFiles f;
  const std::string missing = f.dir.file("missing.safetensors");
  const std::string corrupt = f.dir.file("corrupt.safetensors");
  testing::write_bytes(corrupt, testing::safetensors_bytes("{not json", ""));
  std::vector<Status> gone(kWorkers), bad(kWorkers), good(kWorkers);
  on_every_worker(kWorkers, [&](Comm& node) {
    WeightsBroadcast share(node);
    FileOpener open = share.opener();
    gone[node.rank()] = open(missing).status();
    bad[node.rank()] = open(corrupt).status();
    good[node.rank()] = open(f.b).status();  // the exchange goes on after a failed open
    EXPECT_TRUE(share.finish().is_ok());
  });
  for (int r = 0; r < kWorkers; ++r) {
    SCOPED_TRACE("worker " + std::to_string(r));
    EXPECT_EQ(gone[r].code(), StatusCode::kNotFound);
    EXPECT_NE(gone[r].message().find(missing), std::string::npos) << gone[r].message();
    EXPECT_EQ(bad[r].code(), StatusCode::kDataLoss);
    EXPECT_NE(bad[r].message().find(corrupt), std::string::npos) << bad[r].message();
    EXPECT_TRUE(good[r].is_ok()) << good[r].to_string();
    if (r > 0) {
      EXPECT_NE(gone[r].message().find("read by this node's first worker"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace sdxlb
