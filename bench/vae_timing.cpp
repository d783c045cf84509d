// vae_timing: the full VAE's decode of one 1024² image on the GPU, timed and profiled by kernel, in the
// layout the product runs it (NCHW) or channels-last.
//
//   vae_timing <model dir> <out.json> [--channels-last] [--fp32 | --bf16 | --fp8] [--iters N]
//              [--profile P.json] [--save F]
//
// Decodes one seeded random latent [1, 4, 128, 128] with the model's VAE in fp16 (the bench's vae_fp16_safe;
// --fp32: float32 as force_upcast runs the SDXL VAE; --bf16: the job key vae_dtype: bf16; --fp8: fp16 with
// the decoder's resnet and upsampler 3x3 convolutions in FP8 as convolution_precision runs the UNet's, a
// measurement only) and reports the median wall time of
// a decode (eager, the product's path: one image per call) and, with --profile, the GPU time per kernel name
// of one decode. --save writes the decoded image [3, 1024, 1024] as raw float32 (little-endian, C order), to
// compare two builds or settings (SDXLB_DISABLE_FUSION) on the same weights.
#include <cstdio>
#include <fstream>
#include <string>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <nlohmann/json.hpp>

#include "bench/gpu_timing.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/models/vae.h"
#include "pipeline/nn/fp8.h"
#include "pipeline/nn/gpu_numerics.h"

using namespace sdxlb;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: vae_timing <model dir> <out.json> [--channels-last] [--fp32 | --bf16 | --fp8] "
                 "[--iters N] [--profile P.json] [--save F]\n");
    return 2;
  }
  bool channels_last = false, fp32 = false, bf16 = false, fp8 = false;
  int iters = 5;
  std::string profile_path, save_path;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--channels-last") {
      channels_last = true;
    } else if (a == "--fp32") {
      fp32 = true;
    } else if (a == "--bf16") {
      bf16 = true;
    } else if (a == "--fp8") {
      fp8 = true;
    } else if (has_value && a == "--iters") {
      iters = std::stoi(argv[++i]);
    } else if (has_value && a == "--profile") {
      profile_path = argv[++i];
    } else if (has_value && a == "--save") {
      save_path = argv[++i];
    } else {
      return std::fprintf(stderr, "vae_timing: unknown or incomplete option %s\n", a.c_str()), 2;
    }
  }
  const at::Device dev(at::kCUDA, 0);
  auto folder = ModelFolder::open(argv[1]);
  if (!folder.is_ok()) return std::fprintf(stderr, "%s\n", folder.status().to_string().c_str()), 4;
  VaeLoadOptions options;
  options.honor_force_upcast = fp32;
  if (bf16) options.dtype = at::kBFloat16;  // the job key vae_dtype: bf16
  auto vae = load_vae(*folder, "", at::kHalf, dev, options);
  if (!vae.is_ok()) return std::fprintf(stderr, "%s\n", vae.status().to_string().c_str()), 4;
  std::string no_fp8;
  if (fp8 && !fp8_conv_supported(dev, &no_fp8))
    return std::fprintf(stderr, "vae_timing: --fp8: %s\n", no_fp8.c_str()), 4;
  const int64_t fp8_convs = fp8 ? use_fp8_convolutions(**vae) : 0;
  c10::InferenceMode guard;
  use_reproducible_gpu_numerics();
  if (channels_last)
    for (auto& p : (*vae)->parameters())
      if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
  at::manual_seed(0);
  const at::Tensor latents = at::randn({1, 4, 128, 128}).to(dev, at::kHalf);
  at::Tensor image;
  auto decode = [&] { image = (*vae)->decode(latents); };
  // The decode's own memory: the allocator's peak over one decode beyond what the weights and the latents
  // hold.
  namespace alloc = c10::cuda::CUDACachingAllocator;
  decode();  // warm-up (cuDNN's workspaces), then the measured one
  alloc::emptyCache();
  const double before_gib =
      static_cast<double>(alloc::getDeviceStats(0).allocated_bytes[0].current) / (1 << 30);
  alloc::resetPeakStats(0);
  decode();
  const auto stats = alloc::getDeviceStats(0);
  const double peak_allocated_gib =
      static_cast<double>(stats.allocated_bytes[0].peak) / (1 << 30) - before_gib;
  const double peak_reserved_gib = static_cast<double>(stats.reserved_bytes[0].peak) / (1 << 30) - before_gib;
  const double seconds = bench::median_seconds(decode, iters);
  nlohmann::json j = {{"ms_per_decode", seconds * 1e3},
                      {"channels_last", channels_last},
                      {"dtype", bf16   ? "bfloat16"
                                : fp32 ? "float32"
                                       : "float16"},
                      {"fp8_convolutions", fp8_convs},
                      {"decode_peak_allocated_gib", peak_allocated_gib},
                      {"decode_peak_reserved_gib", peak_reserved_gib},
                      {"finite", image.isfinite().all().item<bool>()}};
  if (!profile_path.empty()) {
    const nlohmann::json profile = bench::profile_kernels(decode, 2);
    std::ofstream(profile_path) << profile.dump(1) << "\n";
    j["gpu_ms_per_decode"] = profile["gpu_us_per_call"].get<double>() / 1e3;
  }
  if (!save_path.empty()) {
    const at::Tensor pixels = image.to(at::kCPU, at::kFloat).contiguous();
    std::ofstream(save_path, std::ios::binary)
        .write(static_cast<const char*>(pixels.data_ptr()), static_cast<std::streamsize>(pixels.nbytes()));
  }
  std::ofstream(argv[2]) << j.dump(2) << "\n";
  std::printf("vae decode (%s%s%s): %.2f ms%s\n",
              bf16   ? "bfloat16"
              : fp32 ? "float32"
                     : "float16",
              fp8 ? (", " + std::to_string(fp8_convs) + " convolutions in FP8").c_str() : "",
              channels_last ? ", channels-last" : "", seconds * 1e3,
              j.contains("gpu_ms_per_decode")
                  ? (", " + std::to_string(j["gpu_ms_per_decode"].get<double>()) + " ms of kernels").c_str()
                  : "");
  return 0;
}
