#include "pipeline/runtime/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

namespace sdxlb {
namespace {

// Measured on an H100 (bench/results/2026-11-25-h100-memory.json), fp16, 1024^2, allocator peak. These were
// measured before the fused GroupNorm kernels, which lowered the peak by about 1 GiB (7.44 to 6.44 GiB
// resident, 2.85 to 1.85 GiB sequential): the estimates err on the safe side.
constexpr double kUnetUnitsGib = 4.68;  // weights of the UNet's resnets and transformer blocks
constexpr double kUnetOtherGib = 0.10;  // the rest of the UNet's weights (always on the GPU)
constexpr double kVaeGib = 0.16;        // the VAE's weights
// unet_precision: fp8 keeps its 582 transformer linears (1.867e9 weights: 18·d² per transformer block and
// 2·d² per Transformer2DModel, 70 blocks and 11 models at d = 640 and 1280) at one byte per weight instead of
// two.
constexpr double kFp8SavedGib = 1.867e9 / (1 << 30);
// convolution_precision: fp8 saves 0.29 GiB more (36 convolutions, 315e6 weights) where its kernel runs; not
// counted, so the estimate stays on the safe side.
constexpr double kSlotGib = 0.095;         // one streaming slot (the largest unit, an up-block resnet)
constexpr double kUnetPerImageGib = 0.36;  // activations of one image's CFG pair being denoised
// Each image's cross-attention keys and values, projected once per batch (denoise_loop.cpp): SDXL's 70
// cross-attentions (10 of width 640, 60 of 1280), K and V, 2 CFG rows, 77 tokens, fp16.
constexpr double kContextProjectionGib = (10.0 * 640 + 60.0 * 1280) * 2 * 2 * 77 * 2 / (1 << 30);
// Per concurrent image, what the allocator keeps reserved beyond that: the CUDA graph's private pool and the
// stream's cached blocks (peak reserved minus peak allocated measured 1.0 to 1.3 GiB per stream). A memory
// cap limits reserved memory, so the plan must count it.
constexpr double kGraphPoolGib = 1.1;
constexpr double kFullDecodeGib = 2.09;   // decoding one image with the full VAE (with cuDNN workspace)
constexpr double kTiledDecodeGib = 0.94;  // decoding one image in 512^2 tiles
constexpr double kTinyDecodeGib = 0.65;   // the tiny VAE
// The full VAE in float32 (force_upcast): weights and decode memory (full or tiled) times this, as measured
// on the H200 (bench/vae_timing, the decode's peak reserved memory beyond the weights: 4.52 GiB in float32
// against 2.21 in float16 and in bfloat16; bench/results/2026-12-04-h200-session16.md).
constexpr double kFp32VaeFactor = 4.52 / 2.21;
constexpr double kMargin = 0.92;  // leave 8% for the CUDA context and what the model misses
// Time: one UNet call (one image's CFG pair, one at a time; 32.3 ms with the fused kernels,
// bench/results/2026-11-25-h100-speed-fused.json), the copy rate from page-locked host memory, and the gain
// of denoising two images concurrently (918 against 977 ms of denoising per image at batch 4 and 1, 30 steps;
// three or four streams measured no faster than two).
constexpr double kUnetCallS = 0.0323;
constexpr double kCopyGibPerS = 32.0;
constexpr double kRecaptureS = 0.1;  // capturing the step's CUDA graph again after the weights moved
constexpr double kTwoStreamSpeedup = 1.06;
constexpr int kMaxStreams = 2;
// Host memory of a placement that keeps the UNet off the GPU: its page-locked copy of the units, plus the
// process itself (LibTorch, the loader's transient copies).
constexpr double kHostProcessGib = 2.5;
constexpr int64_t kAutoBatch = 8;

double pixels_scale(int64_t width, int64_t height) {
  return static_cast<double>(width) * static_cast<double>(height) / (1024.0 * 1024.0);
}

// Throughput gained by denoising images concurrently.
double streams_speedup(int streams) {
  return streams >= 2 ? kTwoStreamSpeedup : 1.0;
}

double decode_gib(const std::string& decode, double scale, bool fp32) {
  if (decode == "tiny") return kTinyDecodeGib * scale;
  const double factor = fp32 ? kFp32VaeFactor : 1.0;
  if (decode == "tiled") return std::min(kTiledDecodeGib, kFullDecodeGib * scale) * factor;
  return kFullDecodeGib * scale * factor;
}

// The UNet's units (the weights that stream, or stay resident): an FP8 UNet's transformer linears at one
// byte per weight. The weight streamer moves what the units hold, so every placement counts these bytes.
double unit_gib(bool fp8_unet) {
  return kUnetUnitsGib - (fp8_unet ? kFp8SavedGib : 0.0);
}

// UNet weights on the GPU while denoising and while decoding.
std::pair<double, double> unet_on_gpu(const MemoryPlan& p) {
  const double units = unit_gib(p.fp8_unet);
  if (p.placement == "model_offload") return {units + kUnetOtherGib, kUnetOtherGib};
  if (p.placement == "sequential") return {kUnetOtherGib + 2 * kSlotGib, kUnetOtherGib + 2 * kSlotGib};
  if (p.placement == "streamed") {
    const double base = kUnetOtherGib + 3 * kSlotGib;
    const double resident = std::min(p.resident_budget_gib, units);
    return {base + resident, p.unload_for_decode ? base : base + resident};
  }
  return {units + kUnetOtherGib, units + kUnetOtherGib};
}

}  // namespace

int64_t auto_batch_size(int64_t images_per_call) {
  const int64_t group = kMaxStreams * std::max<int64_t>(1, images_per_call);
  return (kAutoBatch + group - 1) / group * group;
}

double estimate_peak_gib(const MemoryPlan& p, int64_t width, int64_t height) {
  const double scale = pixels_scale(width, height);
  const auto [denoising, decoding] = unet_on_gpu(p);
  // Per image of the batch (the graph's static buffers): its projected prompt keys and values, and
  // DeepCache's feature map.
  // Per concurrent call: its images' activations and one graph pool (measured on the H200 with
  // images_per_unet_call 1, 4 and 8: 6.66, 8.85 and 12.15 GiB reserved with two calls, 0.39 GiB more per
  // image of a call; bench/results/2026-12-04-h200-session16.md).
  const double act =
      (kUnetPerImageGib * scale * static_cast<double>(std::max<int64_t>(1, p.images_per_call)) +
       kGraphPoolGib) *
          std::max(1, p.unet_streams) +
      (p.cached_gib_per_image + (p.project_context ? kContextProjectionGib : 0.0)) *
          static_cast<double>(std::max<int64_t>(1, p.batch_size));
  // The denoising graph's private memory pool stays reserved while the VAE decodes.
  const double vae = p.vae_fp32 && p.decode != "tiny" ? kVaeGib * 2 : kVaeGib;
  return vae + std::max(denoising + act, decoding + act + decode_gib(p.decode, scale, p.vae_fp32));
}

double estimate_relative_time(const MemoryPlan& p, int64_t width, int64_t height, int64_t steps) {
  const double scale = pixels_scale(width, height);
  const double compute = kUnetCallS * scale;
  double call = compute / streams_speedup(p.unet_streams);
  const double units = unit_gib(p.fp8_unet);
  if (p.placement == "streamed" || p.placement == "sequential") {
    const double streamed =
        p.placement == "sequential" ? units : std::max(0.0, units - p.resident_budget_gib);
    call = std::max(compute, streamed / kCopyGibPerS);
  }
  const double n = static_cast<double>(std::max<int64_t>(1, steps));
  double per_image = call * n;
  double reupload = 0;
  if (p.placement == "model_offload") reupload = units;
  if (p.placement == "streamed" && p.unload_for_decode) reupload = std::min(p.resident_budget_gib, units);
  if (reupload > 0)
    per_image +=
        (reupload / kCopyGibPerS + kRecaptureS) / static_cast<double>(std::max<int64_t>(1, p.batch_size));
  return per_image / (compute * n);
}

double deep_cache_gib_per_image(int64_t width, int64_t height, int64_t cache_branch_id) {
  constexpr int64_t kChannels[] = {320, 640, 1280};
  const int64_t level = std::min<int64_t>(std::max<int64_t>(cache_branch_id / 3, 0), 2);
  const int64_t layer = cache_branch_id % 3;
  // Layer 2 caches the input of the up block's first layer: the block below's output, upsampled.
  const int64_t channels = layer >= 2 && level < 2 ? kChannels[level + 1] : kChannels[level];
  const double pixels = static_cast<double>(width / 8 >> level) * static_cast<double>(height / 8 >> level);
  return 2.0 * 2.0 * static_cast<double>(channels) * pixels / static_cast<double>(1 << 30);
}

double activation_gib_per_image(int64_t width, int64_t height) {
  const double scale = pixels_scale(width, height);
  return kUnetPerImageGib * scale + kFullDecodeGib * scale;
}

double cpu_activation_gib(int64_t width, int64_t height, double unet_scale, double vae_scale,
                          const std::string& decode) {
  const double scale = pixels_scale(width, height);
  return 2.0 *
         (kUnetPerImageGib * scale * unet_scale + decode_gib(decode, scale, /*fp32=*/false) * vae_scale);
}

std::string large_image_warning(int64_t width, int64_t height, bool on_cpu, double host_ram_gib) {
  const double scale = pixels_scale(width, height);
  if (scale <= 4.0) return "";
  const double gib = activation_gib_per_image(width, height) * (on_cpu ? 2.0 : 1.0);
  char buf[640];
  std::snprintf(buf, sizeof buf,
                "%lldx%lld is %.0f times the area of SDXL's 1024x1024: SDXL composes best near one megapixel "
                "(expect repeated subjects), each image takes about %.0f times as long, and the full SDXL "
                "model needs about %.0f GiB of activations per image (%s; the tiled decode lowers it)",
                static_cast<long long>(width), static_cast<long long>(height), scale, scale, gib,
                on_cpu ? "fp32 on the CPU" : "fp16");
  std::string out = buf;
  if (on_cpu && host_ram_gib > 0 && gib > host_ram_gib) {
    std::snprintf(buf, sizeof buf, "; this node has %.0f GiB of RAM, so it will likely run out of memory",
                  host_ram_gib);
    out += buf;
  }
  return out;
}

double host_gib_needed(const std::string& placement, bool fp8_unet) {
  if (placement == "streamed" || placement == "sequential" || placement == "model_offload")
    return unit_gib(fp8_unet) + kHostProcessGib;
  return kHostProcessGib;
}

std::string MemoryPlan::describe() const {
  char buf[400];
  char extra[64] = "", per_call[48] = "";
  if (images_per_call > 1)
    std::snprintf(per_call, sizeof per_call, " (%lld per UNet call)",
                  static_cast<long long>(images_per_call));
  if (placement == "streamed")
    std::snprintf(extra, sizeof extra, " (%.2f GiB of UNet units resident%s)", resident_budget_gib,
                  unload_for_decode ? ", unloaded for the decode" : "");
  std::snprintf(buf, sizeof buf,
                "memory plan: %s weights%s, %s decode%s, %lld image(s) denoised concurrently%s, batch %lld%s "
                "(estimated peak %.1f GiB of %.1f GiB, time %.2fx resident)",
                placement.c_str(), extra, decode.c_str(), vae_fp32 && decode != "tiny" ? " in fp32" : "",
                static_cast<long long>(unet_streams * std::max<int64_t>(1, images_per_call)), per_call,
                static_cast<long long>(batch_size),
                project_context ? "" : ", prompts projected at every step", estimate_gib, budget_gib,
                relative_time);
  std::string line = buf;
  if (overlap_decode) line += "; each group decodes while the next one denoises";
  if (fp8_unet) line += "; FP8 UNet (transformer linears at one byte per weight)";
  return line;
}

namespace {

// The counts of UNet calls (of images_per_call images each) to try running at once: the job's choice, else
// every count up to kMaxStreams whose calls divide the job's batch_size, where it names one. A group that the
// batch does not fill is padded with copies, so more calls than the batch fills would cost time rather than
// save it (batch 4 at images_per_unet_call 4 in two calls of 4, the second all copies: 1.77 s/image on an
// H100, twice batch 4 at images_per_unet_call 2; session 26). Streaming shares its slots between UNet calls,
// so a streamed or sequential plan runs one call at a time.
std::vector<int> stream_choices(const std::string& placement, const std::optional<int>& forced,
                                const std::optional<int64_t>& batch_size, int64_t images_per_call) {
  if (placement == "streamed" || placement == "sequential") return {1};
  if (forced) return {*forced};
  std::vector<int> out;
  for (int s = kMaxStreams; s >= 1; --s)
    if (s == 1 || !batch_size || *batch_size % (s * std::max<int64_t>(1, images_per_call)) == 0)
      out.push_back(s);
  return out;
}

// Sets p.resident_budget_gib to the largest resident share of the UNet's units that fits `budget` (the peak
// grows with it, so bisect). False when not even streaming every unit fits.
bool fit_resident_share(MemoryPlan& p, const MemoryRequest& req, double budget) {
  p.resident_budget_gib = 0;
  if (estimate_peak_gib(p, req.width, req.height) > budget) return false;
  double lo = 0, hi = unit_gib(p.fp8_unet);
  for (int it = 0; it < 40; ++it) {
    p.resident_budget_gib = (lo + hi) / 2;
    (estimate_peak_gib(p, req.width, req.height) <= budget ? lo : hi) = p.resident_budget_gib;
  }
  p.resident_budget_gib = lo;
  return true;
}

}  // namespace

StatusOr<MemoryPlan> choose_memory_plan(const GpuBudgetInput& gpu, const MemoryRequest& req) {
  static const std::vector<std::string> kPlacements = {"resident", "streamed", "model_offload", "sequential"};
  std::vector<std::string> placements;
  if (req.placement == "auto")
    placements = kPlacements;
  else if (std::find(kPlacements.begin(), kPlacements.end(), req.placement) != kPlacements.end())
    placements = {req.placement};
  else
    return invalid_argument("memory.placement: unknown placement \"" + req.placement +
                            "\"; use auto, resident, model_offload, streamed or sequential");
  std::vector<std::string> decodes;
  if (req.tiny_decoder)
    decodes = {"tiny"};
  else if (req.decode)
    decodes = {*req.decode == "sliced" ? "full" : *req.decode};
  else
    decodes = {"full", "tiled"};  // tiled changes pixels (slightly): only when nothing else fits
  for (const auto& d : decodes)
    if (d != "full" && d != "tiled" && d != "tiny")
      return invalid_argument("memory.decode: unknown decode \"" + d + "\"; use auto, full, sliced or tiled");

  // Placements that keep the UNet in host memory need the RAM for it.
  if (gpu.host_gib_per_worker) {
    std::vector<std::string> fit_host;
    for (const auto& pl : placements)
      if (host_gib_needed(pl, req.fp8_unet) <= *gpu.host_gib_per_worker) fit_host.push_back(pl);
    if (fit_host.empty()) {
      char buf[320];
      std::snprintf(buf, sizeof buf,
                    "memory.placement %s keeps the UNet in host memory and needs about %.1f GiB of RAM per "
                    "worker, but this node has %.1f GiB per worker; run fewer workers per node or use "
                    "memory.placement: resident",
                    placements.front().c_str(), host_gib_needed(placements.front(), req.fp8_unet),
                    *gpu.host_gib_per_worker);
      return Status(StatusCode::kResourceExhausted, buf);
    }
    placements = fit_host;
  }
  double budget = gpu.total_gib;
  if (gpu.cap_gib) budget = std::min(budget, *gpu.cap_gib);
  budget = budget / std::max(1, gpu.ranks_sharing) * kMargin;

  // memory.concurrent_images counts images; the plan runs whole UNet calls of images_per_call images.
  std::optional<int> forced_calls;
  if (req.concurrent_images)
    forced_calls = std::max<int>(
        1, static_cast<int>(*req.concurrent_images / std::max<int64_t>(1, req.images_per_call)));
  for (const auto& decode : decodes) {
    std::vector<MemoryPlan> fits;
    for (const auto& placement : placements) {
      for (int streams : stream_choices(placement, forced_calls, req.batch_size, req.images_per_call)) {
        MemoryPlan p;
        p.cached_gib_per_image = req.cached_gib_per_image;
        p.fp8_unet = req.fp8_unet;
        p.placement = placement;
        // The projected prompts need the UNet's weights in place between its calls: resident only.
        p.project_context = placement == "resident";
        p.decode = decode;
        p.unet_streams = streams;
        p.images_per_call = std::max<int64_t>(1, req.images_per_call);
        p.vae_fp32 = req.vae_fp32;
        p.batch_size = req.batch_size ? *req.batch_size : auto_batch_size(p.images_per_call);
        // The decode beside the next group's denoising: resident only; auto leaves it off where memory is
        // capped or shared (the decode then returns the allocator's cache before each image).
        p.overlap_decode =
            placement == "resident" && req.overlap_decode.value_or(!gpu.cap_gib && gpu.ranks_sharing <= 1);
        p.budget_gib = budget;
        // Streamed: the resident units kept through the decode, or unloaded for it.
        for (bool unload :
             placement == "streamed" ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
          MemoryPlan q = p;
          q.unload_for_decode = unload;
          if (placement == "streamed" && !fit_resident_share(q, req, budget)) continue;
          q.estimate_gib = estimate_peak_gib(q, req.width, req.height);
          if (q.estimate_gib > budget) {
            // The projected prompts are the first thing to give up (a few percent of a step's time).
            q.project_context = false;
            q.estimate_gib = estimate_peak_gib(q, req.width, req.height);
          }
          if (q.estimate_gib > budget) continue;
          q.relative_time = estimate_relative_time(q, req.width, req.height, req.steps);
          fits.push_back(q);
        }
      }
    }
    if (!fits.empty()) {
      // Fastest first; among equals, the earlier candidate (resident before streamed before offload).
      return *std::min_element(fits.begin(), fits.end(), [](const MemoryPlan& a, const MemoryPlan& b) {
        return a.relative_time < b.relative_time - 1e-9;
      });
    }
  }
  MemoryPlan lightest;
  lightest.project_context = false;
  lightest.fp8_unet = req.fp8_unet;
  lightest.images_per_call = std::max<int64_t>(1, req.images_per_call);
  lightest.vae_fp32 = req.vae_fp32;
  lightest.placement = placements.size() > 1 ? "sequential" : placements.front();
  lightest.decode = decodes.back();
  char buf[400];
  std::snprintf(
      buf, sizeof buf,
      "the lightest plan (%s weights, %s decode, one UNet call of %lld image(s) at a time) needs about "
      "%.1f GiB, but this worker may use %.1f GiB; use a larger GPU, fewer ranks per GPU, a higher "
      "memory.max_gpu_gib, memory.placement: auto, the tiny VAE, a smaller image%s",
      lightest.placement.c_str(), lightest.decode.c_str(), static_cast<long long>(lightest.images_per_call),
      estimate_peak_gib(lightest, req.width, req.height), budget,
      lightest.images_per_call > 1 ? ", or a smaller images_per_unet_call" : "");
  return Status(StatusCode::kResourceExhausted, buf);
}

}  // namespace sdxlb
