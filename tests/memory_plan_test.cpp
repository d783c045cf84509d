#include "pipeline/runtime/memory_plan.h"

#include <tuple>
#include <vector>

#include <gtest/gtest.h>

namespace sdxlb {
namespace {

MemoryPlan plan_of(const std::string& placement, const std::string& decode, int streams = 1,
                   double resident_gib = 0) {
  MemoryPlan p;
  p.placement = placement;
  p.decode = decode;
  p.unet_streams = streams;
  p.resident_budget_gib = resident_gib;
  return p;
}

TEST(MemoryPlan, EstimateFollowsTheModel) {
  // Memory grows with concurrent images, not with the batch; lighter placements and decodes need less.
  const double resident = estimate_peak_gib(plan_of("resident", "full"), 1024, 1024);
  // Measured with one image at a time: 7.41 GiB allocated; the model counts reserved memory (graph pools
  // included), which with two images measured 10.69 GiB (bench/results/2026-11-25-h100-memory.json).
  EXPECT_GT(resident, 7.41);
  EXPECT_NEAR(estimate_peak_gib(plan_of("resident", "full", 2), 1024, 1024), 10.69, 1.0);
  // A second concurrent image costs activations, hidden under the decode's peak with the full VAE.
  EXPECT_GE(estimate_peak_gib(plan_of("resident", "full", 2), 1024, 1024), resident);
  EXPECT_GT(estimate_peak_gib(plan_of("sequential", "tiny", 2), 1024, 1024),
            estimate_peak_gib(plan_of("sequential", "tiny", 1), 1024, 1024));
  // Unloading the resident units for the decode lowers the peak of a streamed plan.
  MemoryPlan unload = plan_of("streamed", "full", 1, 3.0);
  unload.unload_for_decode = true;
  EXPECT_LT(estimate_peak_gib(unload, 1024, 1024),
            estimate_peak_gib(plan_of("streamed", "full", 1, 3.0), 1024, 1024));
  EXPECT_LT(estimate_peak_gib(plan_of("resident", "tiled"), 1024, 1024), resident);
  EXPECT_LT(estimate_peak_gib(plan_of("model_offload", "full"), 1024, 1024), resident);
  EXPECT_LT(estimate_peak_gib(plan_of("streamed", "full", 1, 2.0), 1024, 1024), resident);
  EXPECT_LT(estimate_peak_gib(plan_of("sequential", "full"), 1024, 1024),
            estimate_peak_gib(plan_of("streamed", "full", 1, 2.0), 1024, 1024));
  MemoryPlan lightest = plan_of("sequential", "tiled");
  lightest.project_context = false;
  EXPECT_LT(estimate_peak_gib(lightest, 1024, 1024), 3.0);
  // Keeping the projected prompts costs about 48 MiB per image of the batch.
  EXPECT_NEAR(
      estimate_peak_gib(plan_of("sequential", "tiled"), 1024, 1024) - estimate_peak_gib(lightest, 1024, 1024),
      8 * 0.0477, 0.002);
  EXPECT_LT(estimate_peak_gib(plan_of("resident", "full"), 512, 512), resident);
}

// memory.overlap_decode: auto overlaps the decode with the next group's denoising on a resident plan of an
// unshared, uncapped GPU; never on a placement that moves the UNet around the decode; the job's on/off win.
TEST(MemoryPlan, DecodeOverlapsOnResidentPlans) {
  MemoryRequest req;
  auto big = choose_memory_plan({141, 1, std::nullopt}, req);
  ASSERT_TRUE(big.is_ok()) << big.status().to_string();
  EXPECT_EQ(big->placement, "resident");
  EXPECT_TRUE(big->overlap_decode);
  EXPECT_NE(big->describe().find("each group decodes while the next one denoises"), std::string::npos)
      << big->describe();
  // The estimate is the same either way: a resident plan's already holds the decode beside the graphs.
  MemoryPlan off = *big;
  off.overlap_decode = false;
  EXPECT_DOUBLE_EQ(estimate_peak_gib(off, 1024, 1024), big->estimate_gib);
  auto shared = choose_memory_plan({141, 2, std::nullopt}, req);
  auto capped = choose_memory_plan({141, 1, 40.0}, req);
  ASSERT_TRUE(shared.is_ok() && capped.is_ok());
  EXPECT_FALSE(shared->overlap_decode) << shared->describe();
  EXPECT_FALSE(capped->overlap_decode) << capped->describe();
  EXPECT_EQ(capped->describe().find("decodes while"), std::string::npos) << capped->describe();
  req.overlap_decode = true;
  auto forced = choose_memory_plan({141, 1, 40.0}, req);
  ASSERT_TRUE(forced.is_ok());
  EXPECT_TRUE(forced->overlap_decode);
  req.overlap_decode = false;
  auto never = choose_memory_plan({141, 1, std::nullopt}, req);
  ASSERT_TRUE(never.is_ok());
  EXPECT_FALSE(never->overlap_decode);
  req.overlap_decode = true;
  req.placement = "model_offload";
  auto offload = choose_memory_plan({141, 1, std::nullopt}, req);
  ASSERT_TRUE(offload.is_ok());
  EXPECT_FALSE(offload->overlap_decode) << offload->describe();
}

// images_per_unet_call: each concurrent call holds that many images' activations; the plan keeps the job's
// count (it changes pixels), and its auto batch is a whole number of two calls.
TEST(MemoryPlan, ImagesPerCallMultiplyTheActivations) {
  MemoryPlan one = plan_of("resident", "full", 2), four = one;
  four.images_per_call = 4;
  const double per_image = estimate_peak_gib(four, 1024, 1024) - estimate_peak_gib(one, 1024, 1024);
  EXPECT_NEAR(per_image, 3 * 2 * 0.36, 1e-9);  // three more images' activations in each of two calls
  MemoryRequest req;
  req.images_per_call = 3;
  auto p = choose_memory_plan({141, 1, std::nullopt}, req);
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->images_per_call, 3);
  // memory.concurrent_images counts images: 3 is one call of 3, 6 two.
  req.concurrent_images = 3;
  auto one_call = choose_memory_plan({141, 1, std::nullopt}, req);
  ASSERT_TRUE(one_call.is_ok());
  EXPECT_EQ(one_call->unet_streams, 1) << one_call->describe();
  req.concurrent_images = 6;
  auto two_calls = choose_memory_plan({141, 1, std::nullopt}, req);
  ASSERT_TRUE(two_calls.is_ok());
  EXPECT_EQ(two_calls->unet_streams, 2) << two_calls->describe();
  req.concurrent_images.reset();
  EXPECT_EQ(p->unet_streams, 2);
  EXPECT_EQ(p->batch_size, 12);
  EXPECT_NE(p->describe().find("6 image(s) denoised concurrently (3 per UNet call), batch 12"),
            std::string::npos)
      << p->describe();
  // With the job's batch_size, auto runs only as many calls at once as the batch fills: batch 4 is two calls
  // of 2 images but one call of 4 (two would pad the second with copies), batch 6 one call of 2; the job's
  // own memory.concurrent_images still wins.
  for (const auto& [batch, per_call, streams] : std::vector<std::tuple<int64_t, int64_t, int>>{
           {4, 2, 2}, {4, 4, 1}, {4, 1, 2}, {6, 2, 1}, {8, 4, 2}, {3, 1, 1}}) {
    MemoryRequest sized;
    sized.batch_size = batch;
    sized.images_per_call = per_call;
    auto q = choose_memory_plan({141, 1, std::nullopt}, sized);
    ASSERT_TRUE(q.is_ok()) << q.status().to_string();
    EXPECT_EQ(q->unet_streams, streams)
        << "batch " << batch << ", " << per_call << " per call: " << q->describe();
    sized.concurrent_images = 2 * per_call;
    q = choose_memory_plan({141, 1, std::nullopt}, sized);
    ASSERT_TRUE(q.is_ok()) << q.status().to_string();
    EXPECT_EQ(q->unet_streams, 2) << q->describe();
  }
  // A small GPU: two resident calls of 8 (15.8 GiB) do not fit 16 GiB, so the plan gives up a stream or the
  // resident weights, never images per call; and where nothing fits, the error names the key.
  req.images_per_call = 8;
  auto small = choose_memory_plan({16, 1, std::nullopt}, req);
  ASSERT_TRUE(small.is_ok()) << small.status().to_string();
  EXPECT_EQ(small->images_per_call, 8);
  EXPECT_LE(small->estimate_gib, small->budget_gib);
  EXPECT_FALSE(small->placement == "resident" && small->unet_streams == 2) << small->describe();
  req.images_per_call = 64;
  auto none = choose_memory_plan({16, 1, std::nullopt}, req);
  ASSERT_FALSE(none.is_ok());
  EXPECT_NE(none.status().message().find("a smaller images_per_unet_call"), std::string::npos)
      << none.status().message();
}

// The stock SDXL VAE decodes in float32 (force_upcast): its weights and its decode's memory are about twice
// the fp16 figures (4.52 against 2.21 GiB of decode measured on the H200), and the plan counts them.
TEST(MemoryPlan, Fp32VaeDoublesTheDecode) {
  MemoryPlan fp16 = plan_of("resident", "full"), fp32 = fp16;
  fp32.vae_fp32 = true;
  EXPECT_NEAR(estimate_peak_gib(fp32, 1024, 1024) - estimate_peak_gib(fp16, 1024, 1024),
              0.16 + 2.09 * (4.52 / 2.21 - 1), 1e-9);
  MemoryPlan tiny = plan_of("resident", "tiny");
  MemoryPlan tiny32 = tiny;
  tiny32.vae_fp32 = true;  // (the tiny VAE has no float32 upcast)
  EXPECT_DOUBLE_EQ(estimate_peak_gib(tiny32, 1024, 1024), estimate_peak_gib(tiny, 1024, 1024));
  // A 12 GiB GPU: the fp16 decode fits beside the resident UNet (10.3 of 11.0 GiB), the float32 one
  // (12.7 GiB) does not, so the UNet leaves the GPU while the VAE decodes.
  MemoryRequest req;
  auto half = choose_memory_plan({12, 1, std::nullopt}, req);
  ASSERT_TRUE(half.is_ok()) << half.status().to_string();
  EXPECT_EQ(half->placement, "resident") << half->describe();
  req.vae_fp32 = true;
  auto full = choose_memory_plan({12, 1, std::nullopt}, req);
  ASSERT_TRUE(full.is_ok()) << full.status().to_string();
  EXPECT_EQ(full->placement, "model_offload") << full->describe();
  EXPECT_LE(full->estimate_gib, full->budget_gib);
  EXPECT_NE(full->describe().find("full decode in fp32"), std::string::npos) << full->describe();
}

TEST(MemoryPlan, TimeModelRanksThePlacements) {
  const double resident = estimate_relative_time(plan_of("resident", "full"), 1024, 1024, 30);
  EXPECT_DOUBLE_EQ(resident, 1.0);
  EXPECT_LT(estimate_relative_time(plan_of("resident", "full", 2), 1024, 1024, 30), resident);
  // Streaming little costs nothing (the copies hide behind compute); streaming everything is copy-bound.
  EXPECT_DOUBLE_EQ(estimate_relative_time(plan_of("streamed", "full", 1, 4.5), 1024, 1024, 30), 1.0);
  EXPECT_GT(estimate_relative_time(plan_of("sequential", "full"), 1024, 1024, 30), 2.0);
  EXPECT_GT(estimate_relative_time(plan_of("model_offload", "full"), 1024, 1024, 30), resident);
}

TEST(MemoryPlan, LargeGpuKeepsEverythingResident) {
  auto p = choose_memory_plan({80, 1, std::nullopt}, MemoryRequest{});
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->placement, "resident");
  EXPECT_EQ(p->decode, "full");
  EXPECT_EQ(p->unet_streams, 2);
  EXPECT_EQ(p->batch_size, 8);
}

TEST(MemoryPlan, CapsActLikeSmallerGpusAndLargerCapsAreNeverSlower) {
  double last_time = 1e9;
  for (double cap : {4.0, 8.0, 12.0, 24.0, 80.0}) {
    auto p = choose_memory_plan({80, 1, cap}, MemoryRequest{});
    ASSERT_TRUE(p.is_ok()) << cap << ": " << p.status().to_string();
    EXPECT_LE(p->estimate_gib, p->budget_gib) << cap;
    EXPECT_LE(p->relative_time, last_time + 1e-9) << cap;
    last_time = p->relative_time;
  }
  auto p4 = choose_memory_plan({80, 1, 4.0}, MemoryRequest{});
  EXPECT_NE(p4->placement, "resident");
  EXPECT_GT(p4->relative_time, 1.0);
  auto p8 = choose_memory_plan({80, 1, 8.0}, MemoryRequest{});
  // 7.2 GiB usable: not resident, but no slower than resident with one stream (most of the UNet resident
  // and the copies hidden, or the UNet re-uploaded once per batch).
  EXPECT_NE(p8->placement, "resident");
  EXPECT_LE(p8->relative_time, 1.1);
  auto p12 = choose_memory_plan({80, 1, 12.0}, MemoryRequest{});
  EXPECT_EQ(p12->placement, "resident");
  // 3.5 GiB (3.2 usable) does not hold a full decode next to the smallest UNet footprint: tiled.
  auto p3 = choose_memory_plan({80, 1, 3.5}, MemoryRequest{});
  ASSERT_TRUE(p3.is_ok()) << p3.status().to_string();
  EXPECT_EQ(p3->decode, "tiled");
  // There the prompts are projected at every step (no room to keep them); with room they are kept.
  EXPECT_FALSE(p3->project_context);
  EXPECT_NE(p3->describe().find("prompts projected at every step"), std::string::npos) << p3->describe();
  EXPECT_TRUE(p12->project_context);
  EXPECT_EQ(p12->describe().find("projected"), std::string::npos) << p12->describe();
  // 1 GiB holds nothing: a clear error with the numbers and the fixes.
  auto p1 = choose_memory_plan({80, 1, 1.0}, MemoryRequest{});
  ASSERT_FALSE(p1.is_ok());
  EXPECT_EQ(p1.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(p1.status().message().find("max_gpu_gib"), std::string::npos);
}

TEST(MemoryPlan, TwoRanksShareOneGpu) {
  // A 16 GiB card: alone, resident; shared by two ranks (7.2 GiB each), neither can keep it all resident.
  auto one = choose_memory_plan({16, 1, std::nullopt}, MemoryRequest{});
  auto two = choose_memory_plan({16, 2, std::nullopt}, MemoryRequest{});
  ASSERT_TRUE(one.is_ok() && two.is_ok());
  EXPECT_NEAR(two->budget_gib, one->budget_gib / 2, 1e-9);
  EXPECT_EQ(one->placement, "resident");
  EXPECT_NE(two->placement, "resident");
  EXPECT_LE(two->estimate_gib, two->budget_gib);
}

TEST(MemoryPlan, JobOverridesWin) {
  MemoryRequest r;
  r.batch_size = 3;
  r.decode = "tiled";
  r.placement = "sequential";
  auto p = choose_memory_plan({80, 1, std::nullopt}, r);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->batch_size, 3);
  EXPECT_EQ(p->decode, "tiled");
  EXPECT_EQ(p->placement, "sequential");
  EXPECT_EQ(p->unet_streams, 1);
  // A forced streamed plan under a 6 GiB cap keeps what fits of the UNet resident.
  MemoryRequest s;
  s.placement = "streamed";
  s.decode = "sliced";
  auto st = choose_memory_plan({80, 1, 6.0}, s);
  ASSERT_TRUE(st.is_ok()) << st.status().to_string();
  EXPECT_EQ(st->decode, "full");  // sliced and full are the same computation (one image at a time)
  EXPECT_GT(st->resident_budget_gib, 1.0);
  EXPECT_LE(st->estimate_gib, 6.0 * 0.92 + 1e-9);
  MemoryRequest tiny;
  tiny.tiny_decoder = true;
  auto t = choose_memory_plan({16, 1, std::nullopt}, tiny);
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(t->decode, "tiny");
}

TEST(MemoryPlan, HostMemoryLimitsThePlacementsThatKeepTheUNetThere) {
  // A 12 GiB card shared by two workers (5.5 GiB each) must stream part of the UNet; with 4 GiB of RAM per
  // worker it cannot, and the error says so.
  auto poor = choose_memory_plan({12, 2, std::nullopt, 4.0}, MemoryRequest{});
  ASSERT_FALSE(poor.is_ok());
  EXPECT_EQ(poor.status().code(), StatusCode::kResourceExhausted);
  auto rich = choose_memory_plan({12, 2, std::nullopt, 64.0}, MemoryRequest{});
  ASSERT_TRUE(rich.is_ok()) << rich.status().to_string();
  EXPECT_NE(rich->placement, "resident");
  // Forced streaming on a host without the RAM: refused, naming the RAM and the fixes.
  MemoryRequest r;
  r.placement = "streamed";
  auto forced = choose_memory_plan({80, 1, std::nullopt, 4.0}, r);
  ASSERT_FALSE(forced.is_ok());
  EXPECT_NE(forced.status().message().find("RAM per worker"), std::string::npos);
  // A large card keeps everything resident whatever the host has.
  auto big = choose_memory_plan({80, 1, std::nullopt, 4.0}, MemoryRequest{});
  ASSERT_TRUE(big.is_ok());
  EXPECT_EQ(big->placement, "resident");
  EXPECT_GE(host_gib_needed("streamed"), 4.68);
}

TEST(MemoryPlan, UnknownNamesAreRefused) {
  MemoryRequest r;
  r.placement = "swap";
  auto p = choose_memory_plan({80, 1, std::nullopt}, r);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("memory.placement"), std::string::npos);
}

// issue 12 (weak case): 16384x16384 was accepted with no warning. Sizes over 2048^2 in area get one, with the
// activation estimate; on the CPU it says when that exceeds the host's RAM.
TEST(MemoryPlan, LargeImagesGetAWarningWithTheEstimate) {
  EXPECT_EQ(large_image_warning(1024, 1024, false, 0), "");
  EXPECT_EQ(large_image_warning(2048, 2048, true, 16), "");
  EXPECT_NEAR(activation_gib_per_image(1024, 1024), 0.36 + 2.09, 1e-9);
  const std::string gpu = large_image_warning(16384, 16384, false, 0);
  EXPECT_NE(gpu.find("16384x16384 is 256 times the area"), std::string::npos) << gpu;
  EXPECT_NE(gpu.find("about 627 GiB of activations per image (fp16"), std::string::npos) << gpu;
  EXPECT_EQ(gpu.find("run out of memory"), std::string::npos) << gpu;
  const std::string cpu = large_image_warning(16384, 16384, true, 24);
  EXPECT_NE(cpu.find("fp32 on the CPU"), std::string::npos) << cpu;
  EXPECT_NE(cpu.find("this node has 24 GiB of RAM, so it will likely run out of memory"), std::string::npos)
      << cpu;
}

// bench/hostile_corpus.py: 16384x16384 on the CPU grew until killed. The CPU estimate follows the model's
// own widths, so the tiny demo model is not refused at sizes it can run.
TEST(MemoryPlan, CpuEstimateFollowsTheModelsWidths) {
  const double sdxl = cpu_activation_gib(1024, 1024, 1.0, 1.0, "full");
  EXPECT_NEAR(sdxl, 2 * (0.36 + 2.09), 1e-9);
  EXPECT_NEAR(cpu_activation_gib(2048, 2048, 1.0, 1.0, "full"), 4 * sdxl, 1e-9);
  EXPECT_NEAR(cpu_activation_gib(1024, 1024, 0.1, 0.25, "full"), 2 * (0.036 + 2.09 * 0.25), 1e-9);
  EXPECT_LT(cpu_activation_gib(16384, 16384, 1.0, 1.0, "tiled"),
            cpu_activation_gib(16384, 16384, 1.0, 1.0, "full"));
}

}  // namespace
}  // namespace sdxlb

namespace sdxlb {
namespace {
// DeepCache keeps one feature map per image of the batch: SDXL at 1024², branch 0 caches the 320-channel
// 128×128 input of the last up layer (its CFG pair in fp16: 20 MiB), and the plan's estimate counts it per
// image.
// unet_precision: fp8 (issue 17): the 582 transformer linears at one byte per weight, 1.74 GiB less wherever
// the UNet's units are. Resident: a budget too small for the fp16 UNet holds the FP8 one. Streamed,
// sequential and model offload (the weight streamer moves the units' e4m3 bytes): less GPU memory, less host
// memory, fewer bytes copied per call. A budget too small for any plan says so.
TEST(MemoryPlanFp8, TransformerLinearsAtOneBytePerWeightInEveryPlacement) {
  const double saved = 1.867e9 / (1 << 30);
  MemoryPlan fp8 = plan_of("resident", "full");
  fp8.fp8_unet = true;
  const double fp16_gib = estimate_peak_gib(plan_of("resident", "full"), 1024, 1024);
  const double fp8_gib = estimate_peak_gib(fp8, 1024, 1024);
  EXPECT_NEAR(fp16_gib - fp8_gib, saved, 1e-9);
  const double cap = (fp8_gib + 0.05) / 0.92;  // what the FP8 plan needs, with the plan's 8% margin
  MemoryRequest r16;
  r16.placement = "resident";
  auto p16 = choose_memory_plan({80, 1, cap}, r16);
  ASSERT_FALSE(p16.is_ok());
  EXPECT_EQ(p16.status().code(), StatusCode::kResourceExhausted);
  MemoryRequest r8;
  r8.placement = "resident";
  r8.fp8_unet = true;
  auto p8 = choose_memory_plan({80, 1, cap}, r8);
  ASSERT_TRUE(p8.is_ok()) << p8.status().to_string();
  EXPECT_EQ(p8->placement, "resident");
  EXPECT_TRUE(p8->fp8_unet);
  EXPECT_NE(p8->describe().find("FP8 UNet"), std::string::npos) << p8->describe();

  // Model offload holds the units while denoising; sequential streams all of them every call.
  MemoryPlan offload16 = plan_of("model_offload", "full"), offload8 = offload16;
  offload8.fp8_unet = true;
  EXPECT_NEAR(estimate_peak_gib(offload16, 1024, 1024) - estimate_peak_gib(offload8, 1024, 1024), saved,
              1e-9);
  MemoryPlan seq16 = plan_of("sequential", "full"), seq8 = seq16;
  seq8.fp8_unet = true;
  EXPECT_LT(estimate_relative_time(seq8, 1024, 1024, 30), estimate_relative_time(seq16, 1024, 1024, 30));
  EXPECT_NEAR(host_gib_needed("streamed", false) - host_gib_needed("streamed", true), saved, 1e-9);
  EXPECT_NEAR(host_gib_needed("resident", true), host_gib_needed("resident", false), 1e-12);

  // A placement the job names is kept, FP8 or not.
  for (const char* placement : {"streamed", "model_offload", "sequential"}) {
    r8.placement = placement;
    auto forced = choose_memory_plan({80, 1, std::nullopt}, r8);
    ASSERT_TRUE(forced.is_ok()) << placement << ": " << forced.status().to_string();
    EXPECT_EQ(forced->placement, placement);
    EXPECT_TRUE(forced->fp8_unet);
  }
  // A streamed FP8 plan keeps more of its (smaller) units resident in the same budget.
  r16.placement = r8.placement = "streamed";
  auto s16 = choose_memory_plan({80, 1, 6.0}, r16), s8 = choose_memory_plan({80, 1, 6.0}, r8);
  ASSERT_TRUE(s16.is_ok() && s8.is_ok());
  EXPECT_LT(estimate_relative_time(*s8, 1024, 1024, 30), estimate_relative_time(*s16, 1024, 1024, 30));
  r8.placement = "auto";
  auto too_small = choose_memory_plan({80, 1, 2.0}, r8);
  ASSERT_FALSE(too_small.is_ok());
  EXPECT_EQ(too_small.status().code(), StatusCode::kResourceExhausted) << too_small.status().to_string();
}

TEST(MemoryPlanDeepCache, CachedFeaturesAreCountedPerImage) {
  EXPECT_NEAR(deep_cache_gib_per_image(1024, 1024, 0), 2.0 * 2 * 320 * 128 * 128 / (1 << 30), 1e-12);
  EXPECT_NEAR(deep_cache_gib_per_image(1024, 1024, 2), 2.0 * 2 * 640 * 128 * 128 / (1 << 30), 1e-12);
  EXPECT_NEAR(deep_cache_gib_per_image(1024, 1024, 3), 2.0 * 2 * 640 * 64 * 64 / (1 << 30), 1e-12);
  MemoryPlan plain;
  plain.batch_size = 8;
  MemoryPlan cached = plain;
  cached.cached_gib_per_image = deep_cache_gib_per_image(1024, 1024, 0);
  EXPECT_NEAR(estimate_peak_gib(cached, 1024, 1024) - estimate_peak_gib(plain, 1024, 1024),
              8 * cached.cached_gib_per_image, 1e-9);
}

}  // namespace
}  // namespace sdxlb
