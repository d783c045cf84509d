// unet_parity: the full-size check of our UNet against diffusers on the GPU (issue: SDXL parity).
//
//   unet_parity <model dir> <inputs.safetensors> <out.json> [--variant fp16] [--iters 10]
//
// <inputs.safetensors> holds sample, timestep, encoder_hidden_states, text_embeds, time_ids and diffusers'
// output `expected` (written by bench/unet_reference.py from the same weights). Prints and writes the
// relative error max|ours - theirs| / max|theirs| and the median seconds per UNet call.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAFunctions.h>
#include <nlohmann/json.hpp>

#include "pipeline/model_folder.h"
#include "pipeline/unet.h"

using namespace sdxlb;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(
        stderr, "usage: unet_parity <model dir> <inputs.safetensors> <out.json> [--variant V] [--iters N]\n");
    return 2;
  }
  std::string variant;
  int iters = 10;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--variant") variant = argv[i + 1];
    if (std::string(argv[i]) == "--iters") iters = std::stoi(argv[i + 1]);
  }
  const at::Device dev(at::kCUDA, 0);
  auto t_load = std::chrono::steady_clock::now();
  auto folder = ModelFolder::open(argv[1]);
  if (!folder.is_ok()) return std::fprintf(stderr, "%s\n", folder.status().to_string().c_str()), 4;
  auto unet = load_unet(*folder, variant, at::kHalf, dev);
  if (!unet.is_ok()) return std::fprintf(stderr, "%s\n", unet.status().to_string().c_str()), 4;
  c10::cuda::device_synchronize();
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  auto inputs = WeightSet::open_file(argv[2]);
  if (!inputs.is_ok()) return std::fprintf(stderr, "%s\n", inputs.status().to_string().c_str()), 4;
  auto get = [&](const char* n) { return inputs->get(n)->to(dev); };
  c10::InferenceMode guard;
  at::Tensor sample = get("sample").to(at::kHalf), t = get("timestep"),
             ehs = get("encoder_hidden_states").to(at::kHalf), te = get("text_embeds").to(at::kHalf),
             ids = get("time_ids").to(at::kHalf), expected = get("expected");
  at::Tensor out = (*unet)->forward(sample, t, ehs, te, ids);
  const double err =
      ((out.to(at::kFloat) - expected.to(at::kFloat)).abs().max() / expected.to(at::kFloat).abs().max())
          .item<double>();
  std::vector<double> times;
  for (int i = 0; i < iters + 3; ++i) {
    c10::cuda::device_synchronize();
    auto t0 = std::chrono::steady_clock::now();
    (*unet)->forward(sample, t, ehs, te, ids);
    c10::cuda::device_synchronize();
    if (i >= 3) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  nlohmann::json j = {{"relative_error", err},
                      {"seconds_per_unet_call_batch2", median},
                      {"load_seconds", load_s},
                      {"batch", sample.size(0)},
                      {"latent", {sample.size(2), sample.size(3)}}};
  std::ofstream(argv[3]) << j.dump(2) << "\n";
  std::printf("ours: relative error %.3e vs diffusers, %.2f ms per UNet call (batch %lld), load %.1f s\n",
              err, median * 1e3, static_cast<long long>(sample.size(0)), load_s);
  return err <= 1e-2 ? 0 : 1;
}
