// OutputLock (store/output_lock.h): one run per output folder, stale locks taken over, live ones refused.
#include "store/output_lock.h"

#include <sys/time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "test_files.h"

namespace sdxlb {
namespace {

using ::sdxlb::testing::ScratchDir;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// issue 12, case 4: a second run on the same folder rendered the remaining items again.
TEST(OutputLock, ASecondRunIsRefusedAndNamesTheFirst) {
  ScratchDir dir;
  auto first = OutputLock::acquire(dir.path(), "run-a");
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_NE(read_text(dir.path() + "/lock").find("\"run_id\":\"run-a\""), std::string::npos);
  auto second = OutputLock::acquire(dir.path(), "run-b");
  ASSERT_FALSE(second.is_ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  const std::string m = second.status().message();
  EXPECT_NE(m.find("is in use by sdxl-batch on host"), std::string::npos) << m;
  EXPECT_NE(m.find("pid " + std::to_string(::getpid())), std::string::npos) << m;
  EXPECT_NE(m.find("run run-a"), std::string::npos) << m;
  // Released: the file is gone and the next run takes it.
  (*first)->release();
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/lock"));
  auto third = OutputLock::acquire(dir.path(), "run-c");
  EXPECT_TRUE(third.is_ok()) << third.status().to_string();
}

TEST(OutputLock, ALockOfADeadProcessOnThisHostIsTakenOver) {
  ScratchDir dir;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  // pid 2^22 - 1 is above Linux's default pid_max: no such process.
  write_text(dir.path() + "/lock", std::string(R"({"format":"sdxlb-lock","host":")") + host +
                                       R"(","pid":4194303,"run_id":"old","started":"x"})");
  std::string warning;
  auto lock = OutputLock::acquire(dir.path(), "new", {}, &warning);
  ASSERT_TRUE(lock.is_ok()) << lock.status().to_string();
  EXPECT_NE(warning.find("its process 4194303 on this host is gone"), std::string::npos) << warning;
  EXPECT_NE(read_text(dir.path() + "/lock").find("\"run_id\":\"new\""), std::string::npos);
}

TEST(OutputLock, ALockNotRefreshedForLongIsStaleElsewhereIsNot) {
  ScratchDir dir;
  const std::string path = dir.path() + "/lock";
  write_text(path, R"({"format":"sdxlb-lock","host":"another-node","pid":1,"run_id":"far","started":"x"})");
  // Fresh: another host's live run.
  auto refused = OutputLock::acquire(dir.path(), "new");
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("host another-node"), std::string::npos);
  // Ten minutes without a heartbeat: the node is gone.
  struct timeval old[2] = {{::time(nullptr) - 600, 0}, {::time(nullptr) - 600, 0}};
  ASSERT_EQ(::utimes(path.c_str(), old), 0);
  std::string warning;
  auto lock = OutputLock::acquire(dir.path(), "new", {}, &warning);
  ASSERT_TRUE(lock.is_ok()) << lock.status().to_string();
  EXPECT_NE(warning.find("last refreshed"), std::string::npos) << warning;
}

// `sdxl-batch check`: whether a run would get the lock, taking nothing.
TEST(OutputLock, CheckFreeSaysWhatAcquireWouldDoAndTakesNothing) {
  ScratchDir dir;
  const std::string path = dir.path() + "/lock";
  EXPECT_TRUE(OutputLock::check_free(dir.path()).is_ok());
  EXPECT_FALSE(std::filesystem::exists(path));
  write_text(path, R"({"format":"sdxlb-lock","host":"another-node","pid":1,"run_id":"far","started":"x"})");
  const Status held = OutputLock::check_free(dir.path());
  EXPECT_EQ(held.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(held.message().find("is in use by sdxl-batch on host another-node"), std::string::npos)
      << held.message();
  struct timeval old[2] = {{::time(nullptr) - 600, 0}, {::time(nullptr) - 600, 0}};
  ASSERT_EQ(::utimes(path.c_str(), old), 0);
  EXPECT_TRUE(OutputLock::check_free(dir.path()).is_ok());  // stale: a run would take it over
  EXPECT_NE(read_text(path).find("\"run_id\":\"far\""), std::string::npos);  // and check left it alone
}

TEST(OutputLock, AHeldLockIsRefreshed) {
  ScratchDir dir;
  OutputLockOptions o;
  o.heartbeat_s = 0.05;
  auto lock = OutputLock::acquire(dir.path(), "run", o);
  ASSERT_TRUE(lock.is_ok());
  const std::string path = dir.path() + "/lock";
  struct timeval old[2] = {{::time(nullptr) - 600, 0}, {::time(nullptr) - 600, 0}};
  ASSERT_EQ(::utimes(path.c_str(), old), 0);
  usleep(300 * 1000);
  const auto age = std::filesystem::file_time_type::clock::now() - std::filesystem::last_write_time(path);
  EXPECT_LT(std::chrono::duration_cast<std::chrono::seconds>(age).count(), 10);
}

}  // namespace
}  // namespace sdxlb
