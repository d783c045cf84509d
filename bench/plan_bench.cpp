// Planning and dispatch at scale (issue 12, case 7): a job of `prompts` x `images` items is validated,
// planned, turned into the pending ranges of a fresh run and of a resumed one (every other segment of 256
// items done), and its first 1000 batches are handed out. Prints one JSON line: seconds per phase and peak
// RSS. Usage: plan_bench [prompts=1000] [images_per_prompt=1000000]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "coordinator/dispatcher.h"
#include "jobs/job_plan.h"
#include "jobs/job_spec.h"

using namespace sdxlb;

namespace {
double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
double peak_rss_mib() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}
}  // namespace

int main(int argc, char** argv) {
  const long prompts = argc > 1 ? std::atol(argv[1]) : 1000;
  const long images = argc > 2 ? std::atol(argv[2]) : 1000000;
  std::string yaml =
      "model: m\noutput: o\nbatch_size: 8\nimages_per_prompt: " + std::to_string(images) + "\nprompts:\n";
  for (long i = 0; i < prompts; ++i) yaml += "  - prompt number " + std::to_string(i) + "\n";
  const double rss0 = peak_rss_mib();
  auto t = std::chrono::steady_clock::now();
  JobLoadOptions o;
  o.check_paths = false;
  auto spec = JobSpec::parse(yaml, "job.yaml", "/tmp", o);
  if (!spec.is_ok()) {
    std::fprintf(stderr, "%s\n", spec.status().to_string().c_str());
    return 1;
  }
  const double t_parse = since(t);
  t = std::chrono::steady_clock::now();
  auto plan = JobPlan::build(*spec);
  if (!plan.is_ok()) {
    std::fprintf(stderr, "%s\n", plan.status().to_string().c_str());
    return 1;
  }
  const int64_t n = static_cast<int64_t>(plan->num_items());
  const double t_plan = since(t);
  t = std::chrono::steady_clock::now();
  Dispatcher fresh(ItemRanges::all_but(n, {}), 8);
  int64_t handed = 0;
  for (int k = 0; k < 1000; ++k) handed += static_cast<int64_t>(fresh.next(1 + k % 8).size());
  const double t_dispatch = since(t);
  // A resumed run: 100000 done items in runs of 256 with gaps (what earlier segments left).
  std::vector<int64_t> done;
  for (int64_t s = 0; s < 400 && s * 512 < n; ++s)
    for (int64_t i = s * 512; i < s * 512 + 256; ++i) done.push_back(i);
  t = std::chrono::steady_clock::now();
  Dispatcher resumed(ItemRanges::all_but(n, done), 8);
  for (int k = 0; k < 1000; ++k) handed += static_cast<int64_t>(resumed.next(1).size());
  const double t_resume = since(t);
  std::printf(
      "{\"prompts\": %ld, \"images_per_prompt\": %ld, \"items\": %lld, \"parse_s\": %.3f, \"plan_s\": %.4f, "
      "\"dispatch_first_1000_batches_s\": %.4f, \"resumed_dispatch_s\": %.4f, \"handed_out\": %lld, "
      "\"peak_rss_mib\": %.1f, \"rss_before_mib\": %.1f}\n",
      prompts, images, static_cast<long long>(n), t_parse, t_plan, t_dispatch, t_resume,
      static_cast<long long>(handed), peak_rss_mib(), rss0);
  return 0;
}
