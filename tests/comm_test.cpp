#include "cluster/comm.h"
#include "cluster/node_probe.h"

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

namespace sdxlb {
namespace {

TEST(Comm, SerialIsOneRank) {
  Comm c = Comm::serial();
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  std::string v = "x";
  EXPECT_TRUE(c.broadcast(v, 0, "test").is_ok());
  auto all = c.all_gather("me", "test");
  ASSERT_TRUE(all.is_ok());
  EXPECT_EQ(*all, std::vector<std::string>{"me"});
  // A message to oneself arrives.
  ASSERT_TRUE(c.send(0, 7, "hello", "test").is_ok());
  auto m = c.recv(7, "test");
  ASSERT_TRUE(m.is_ok());
  EXPECT_EQ(m->bytes, "hello");
  EXPECT_EQ(m->source, 0);
}

TEST(Comm, ReceiveWithATimeoutAndPoll) {
  auto comms = Comm::local_group(2);
  auto none = comms[0].recv_for(5, 0.05, "test");
  ASSERT_TRUE(none.is_ok());
  EXPECT_FALSE(none->has_value());
  auto idle = comms[0].poll(5, "test");
  ASSERT_TRUE(idle.is_ok());
  EXPECT_FALSE(*idle);
  std::thread sender([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(comms[1].send(0, 5, "late", "test").is_ok());
  });
  auto got = comms[0].recv_for(kAnyTag, 5.0, "test");
  sender.join();
  ASSERT_TRUE(got.is_ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->bytes, "late");
  EXPECT_EQ((*got)->source, 1);
  ASSERT_TRUE(comms[1].send(0, 6, "waiting", "test").is_ok());
  auto waiting = comms[0].poll(6, "test");
  ASSERT_TRUE(waiting.is_ok());
  EXPECT_TRUE(*waiting);
  auto other_tag = comms[0].poll(7, "test");
  ASSERT_TRUE(other_tag.is_ok());
  EXPECT_FALSE(*other_tag);
  EXPECT_EQ(comms[0].recv(6, "test")->bytes, "waiting");
}

// Raw bytes from one rank into every rank's buffer (issue 18: weights read once per node).
TEST(Comm, BroadcastBytesFillsEveryRanksBuffer) {
  const int n = 3;
  auto comms = Comm::local_group(n);
  std::vector<std::vector<unsigned char>> buffers(n, std::vector<unsigned char>(100003, 0));
  for (size_t i = 0; i < buffers[1].size(); ++i) buffers[1][i] = static_cast<unsigned char>(i * 31 + 7);
  std::vector<std::thread> threads;
  std::vector<Status> results(n, Status::ok());
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      results[r] = comms[r].broadcast_bytes(buffers[r].data(), buffers[r].size(), /*root=*/1, "test");
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) {
    EXPECT_TRUE(results[r].is_ok()) << results[r].to_string();
    EXPECT_EQ(buffers[r], buffers[1]) << "rank " << r;
  }
  // A receiver whose buffer has another size gets an error, not a partial copy.
  std::vector<unsigned char> small(10, 0), big(20, 1);
  std::thread root([&] { EXPECT_TRUE(comms[0].broadcast_bytes(big.data(), big.size(), 0, "test").is_ok()); });
  std::thread other([&] { (void)comms[2].broadcast_bytes(nullptr, 0, 0, "test"); });
  const Status mismatch = comms[1].broadcast_bytes(small.data(), small.size(), 0, "test");
  root.join();
  other.join();
  EXPECT_FALSE(mismatch.is_ok());
  EXPECT_EQ(small, std::vector<unsigned char>(10, 0));
}

TEST(Comm, LocalGroupPointToPointAndCollectives) {
  const int n = 4;
  auto comms = Comm::local_group(n);
  std::vector<std::vector<std::string>> gathered(n);
  std::vector<std::string> bcast(n);
  std::vector<std::string> got_by_root;
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      Comm& c = comms[r];
      if (r != 0) {
        ASSERT_TRUE(c.send(0, 3, "from " + std::to_string(r), "test").is_ok());
      } else {
        for (int i = 1; i < n; ++i) {
          auto m = c.recv(3, "test");
          ASSERT_TRUE(m.is_ok());
          got_by_root.push_back(m->bytes);
        }
      }
      ASSERT_TRUE(c.barrier("test").is_ok());
      bcast[r] = r == 2 ? "payload" : "";
      ASSERT_TRUE(c.broadcast(bcast[r], 2, "test").is_ok());
      auto all = c.all_gather(std::to_string(r * r), "test");
      ASSERT_TRUE(all.is_ok());
      gathered[r] = *all;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(got_by_root.size(), 3u);
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(bcast[r], "payload");
    EXPECT_EQ(gathered[r], (std::vector<std::string>{"0", "1", "4", "9"}));
  }
}

TEST(Comm, RecvFiltersByTag) {
  auto comms = Comm::local_group(2);
  ASSERT_TRUE(comms[1].send(0, 1, "first", "test").is_ok());
  ASSERT_TRUE(comms[1].send(0, 2, "second", "test").is_ok());
  auto m = comms[0].recv(2, "test");
  ASSERT_TRUE(m.is_ok());
  EXPECT_EQ(m->bytes, "second");
  auto any = comms[0].recv(kAnyTag, "test");
  EXPECT_EQ(any->bytes, "first");
  EXPECT_EQ(any->tag, 1);
}

TEST(Comm, SendToBadRankIsAnError) {
  Comm c = Comm::serial();
  Status s = c.send(3, 1, "", "dispatching work");
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("dispatching work"), std::string::npos);
}

// Runs fn(rank) on every rank of a fresh local group, one thread each.
template <typename Fn>
void on_every_rank(int n, Fn fn) {
  auto comms = Comm::local_group(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back([&, r] { fn(comms[r]); });
  for (auto& t : threads) t.join();
}

TEST(Comm, SplitByColourMakesConnectedGroups) {
  const int n = 5;
  const std::vector<int> colours = {kNoColour, 0, 1, 0, 0};
  std::vector<int> ranks(n, -1), sizes(n, -1);
  std::vector<std::string> backends(n), received(n), gathered(n);
  on_every_rank(n, [&](Comm& world) {
    const int r = world.rank();
    auto part = world.split(colours[r], "test");
    ASSERT_TRUE(part.is_ok()) << part.status().to_string();
    ranks[r] = part->rank();
    sizes[r] = part->size();
    backends[r] = part->backend();
    // The new group's collectives reach its members only (and twice in a row, so the split's own traffic is
    // not confused with them).
    std::string v = part->rank() == part->size() - 1 ? "from the last of colour " + std::to_string(colours[r])
                                                     : std::string();
    ASSERT_TRUE(part->broadcast(v, part->size() - 1, "test").is_ok());
    received[r] = v;
    auto all = part->all_gather(std::to_string(r), "test");
    ASSERT_TRUE(all.is_ok());
    for (const auto& x : *all) gathered[r] += x;
    // A second split of the same Comm makes another group.
    auto again = world.split(r == 0 ? kNoColour : 7, "test");
    ASSERT_TRUE(again.is_ok());
    EXPECT_EQ(again->size(), r == 0 ? 1 : n - 1);
  });
  EXPECT_EQ(ranks, (std::vector<int>{0, 0, 0, 1, 2}));
  EXPECT_EQ(sizes, (std::vector<int>{1, 3, 1, 3, 3}));
  EXPECT_EQ(backends[0], "local");  // serial: one rank
  EXPECT_EQ(received[1], "from the last of colour 0");
  EXPECT_EQ(received[4], "from the last of colour 0");
  EXPECT_EQ(received[2], "from the last of colour 1");
  EXPECT_EQ(gathered[3], "134");
  EXPECT_EQ(gathered[2], "2");

  Comm c = Comm::serial();
  auto bad = c.split(-2, "grouping ranks");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("grouping ranks"), std::string::npos);
}

TEST(NodeProbe, NodeWorkersLeaveTheCoordinatorOut) {
  const int n = 4;
  std::vector<int> ranks(n, -1), sizes(n, -1);
  on_every_rank(n, [&](Comm& world) {
    auto node = world.split_node("test");  // the local backend is one node
    ASSERT_TRUE(node.is_ok());
    EXPECT_EQ(node->size(), n);
    auto workers = node_workers(world);
    ASSERT_TRUE(workers.is_ok()) << workers.status().to_string();
    ranks[world.rank()] = workers->rank();
    sizes[world.rank()] = workers->size();
    ASSERT_TRUE(workers->barrier("test").is_ok());
  });
  EXPECT_EQ(ranks, (std::vector<int>{0, 0, 1, 2}));
  EXPECT_EQ(sizes, (std::vector<int>{1, 3, 3, 3}));
}

// Sharing is counted by physical GPU (PCI bus id), whatever the binding: with one GPU visible per rank every
// worker has "device 0" but its own bus id; with every GPU visible, round-robin can still put two on one.
TEST(NodeProbe, WorkersSharingADeviceAreCountedByItsId) {
  auto count = [](const std::vector<std::string>& ids) {
    const int n = static_cast<int>(ids.size()) + 1;
    std::vector<int> shared(n, -1);
    on_every_rank(n, [&](Comm& world) {
      auto workers = node_workers(world);
      ASSERT_TRUE(workers.is_ok()) << workers.status().to_string();
      const std::string id = world.rank() == 0 ? "coordinator" : ids[world.rank() - 1];
      auto s = workers_sharing_device(*workers, id);
      ASSERT_TRUE(s.is_ok()) << s.status().to_string();
      shared[world.rank()] = *s;
    });
    return shared;
  };
  // One GPU per rank (e.g. SLURM --gpus-per-task=1: each sees its GPU as device 0).
  EXPECT_EQ(count({"0000:19:00.0", "0000:3b:00.0", "0000:4c:00.0", "0000:5d:00.0"}),
            (std::vector<int>{1, 1, 1, 1, 1}));
  // Five workers on two GPUs.
  EXPECT_EQ(count({"0000:19:00.0", "0000:3b:00.0", "0000:19:00.0", "0000:3b:00.0", "0000:19:00.0"}),
            (std::vector<int>{1, 3, 2, 3, 2, 3}));
  // CPU workers.
  EXPECT_EQ(count({"cpu", "cpu"}), (std::vector<int>{1, 2, 2}));
  EXPECT_GT(host_ram_gib(), 0.1);
}

TEST(NodeProbe, LocalBackendPlacement) {
  auto comms = Comm::local_group(3);
  auto p = node_placement(comms[2]);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->slot, 1);
  EXPECT_EQ(p->workers_on_node, 2);
}

}  // namespace
}  // namespace sdxlb
