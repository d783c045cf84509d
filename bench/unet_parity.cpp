// unet_parity: the full-size check of our UNet against diffusers on the GPU, and UNet-call timings.
//
//   unet_parity <model dir> <inputs.safetensors> <out.json> [--variant fp16] [--iters 10] [--profile P.json]
//               [--tome MAX_DOWNSAMPLE[,mlp]] [--fp8] [--fp8-conv]
//               [--fp8-layers attention,feed_forward,projections,convolutions]
//               [--fp8-accum fast|fp32] [--fp8-attention] [--batch N]
//
// <inputs.safetensors> holds sample, timestep, encoder_hidden_states, text_embeds, time_ids and diffusers'
// output `expected` (written by bench/unet_reference.py from the same weights). Reports the relative error
// max|ours - theirs| / max|theirs| and the median seconds per UNet call for: eager NCHW, eager channels-last
// with cuDNN heuristics, a CUDA graph of the channels-last call, and that graph with the cross-attention keys
// and values projected ahead (UNetCall::projected), as the product's denoise loop runs it. --profile writes
// the GPU time per kernel name of the product's call (Kineto, averaged over 3 eager calls: the graph runs the
// same kernels).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <nlohmann/json.hpp>

#include "bench/gpu_timing.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/models/unet.h"
#include "pipeline/nn/fp8.h"
#include "pipeline/nn/resnet_block.h"
#include "pipeline/nn/transformer_2d.h"
#include "pipeline/runtime/graph_memsets.h"

using namespace sdxlb;
using sdxlb::bench::median_seconds;
using sdxlb::bench::profile_kernels;

namespace {

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kFloat) - b.to(at::kFloat)).abs().max() / b.to(at::kFloat).abs().max()).item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: unet_parity <model dir> <inputs.safetensors> <out.json> [--variant V] [--iters N] "
                 "[--profile P.json] [--tome MAX_DOWNSAMPLE[,mlp]] [--fp8] [--fp8-conv] [--fp8-layers LIST] "
                 "[--fp8-accum fast|fp32] [--fp8-attention] [--batch N]\n");
    return 2;
  }
  std::string variant, profile_path;
  int iters = 10;
  std::string tome;
  bool fp8 = false, fp8_attention = false;
  Fp8Layers fp8_which;
  int64_t batch = 2;
  for (int i = 4; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--fp8") {
      fp8 = true;
    } else if (a == "--fp8-conv") {
      fp8 = fp8_which.convolutions = true;
    } else if (a == "--fp8-attention") {
      fp8 = fp8_attention = true;
    } else if (has_value && a == "--fp8-accum") {
      const std::string mode = argv[++i];
      if (mode != "fast" && mode != "fp32")
        return std::fprintf(stderr, "unet_parity: --fp8-accum takes fast or fp32, not %s\n", mode.c_str()), 2;
      fp8_which.fast_accum = mode == "fast";
    } else if (has_value && a == "--fp8-layers") {
      const std::string list = argv[++i];
      fp8_which.attention = list.find("attention") != std::string::npos;
      fp8_which.feed_forward = list.find("feed_forward") != std::string::npos;
      fp8_which.projections = list.find("projections") != std::string::npos;
      fp8_which.convolutions = list.find("convolutions") != std::string::npos;
    } else if (has_value && a == "--batch") {
      batch = std::stoll(argv[++i]);
    } else if (has_value && a == "--variant") {
      variant = argv[++i];
    } else if (has_value && a == "--iters") {
      iters = std::stoi(argv[++i]);
    } else if (has_value && a == "--profile") {
      profile_path = argv[++i];
    } else if (has_value && a == "--tome") {
      tome = argv[++i];
    } else {
      return std::fprintf(stderr, "unet_parity: unknown or incomplete option %s\n", a.c_str()), 2;
    }
  }
  const at::Device dev(at::kCUDA, 0);
  auto t_load = std::chrono::steady_clock::now();
  auto folder = ModelFolder::open(argv[1]);
  if (!folder.is_ok()) return std::fprintf(stderr, "%s\n", folder.status().to_string().c_str()), 4;
  auto unet = load_unet(*folder, variant, at::kHalf, dev);
  if (!unet.is_ok()) return std::fprintf(stderr, "%s\n", unet.status().to_string().c_str()), 4;
  // --fp8: the transformer linears in e4m3 as unet_precision: fp8 loads them (the relative error is then the
  // FP8 UNet's against diffusers' fp16).
  const int64_t fp8_layers = fp8 ? use_fp8_linears(**unet, fp8_which) : 0;
  // The upsamplers' phase convolutions, as the product switches them before FP8 (which then quantises them).
  (void)use_phase_upsamplers(**unet);
  // --fp8-conv (or "convolutions" in --fp8-layers): the 3x3 convolutions too, as convolution_precision: fp8.
  std::string no_conv;
  if (fp8 && fp8_which.convolutions && !fp8_conv_supported(dev, &no_conv))
    return std::fprintf(stderr, "unet_parity: --fp8-conv: %s\n", no_conv.c_str()), 4;
  const int64_t fp8_convs = fp8 && fp8_which.convolutions ? use_fp8_convolutions(**unet) : 0;
  // --fp8-attention: attn1 in cuDNN's FP8 attention as attention_precision: fp8 loads it.
  const int64_t fp8_attentions = fp8_attention ? use_fp8_attention(**unet) : 0;
  c10::cuda::device_synchronize();
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  auto inputs = WeightSet::open_file(argv[2]);
  if (!inputs.is_ok()) return std::fprintf(stderr, "%s\n", inputs.status().to_string().c_str()), 4;
  auto get = [&](const char* n) { return inputs->get(n)->to(dev); };
  c10::InferenceMode guard;
  at::Tensor sample = get("sample").to(at::kHalf), t = get("timestep"),
             ehs = get("encoder_hidden_states").to(at::kHalf), te = get("text_embeds").to(at::kHalf),
             ids = get("time_ids").to(at::kHalf), expected = get("expected");
  // --batch N (a multiple of the inputs' 2): the inputs repeated, as a CFG call of N / 2 images; the error is
  // then over the repeats, each against diffusers' output for its copy.
  if (batch % sample.size(0) != 0)
    return std::fprintf(stderr, "unet_parity: --batch %lld is not a multiple of %lld\n",
                        static_cast<long long>(batch), static_cast<long long>(sample.size(0))),
           2;
  if (batch != sample.size(0)) {
    const int64_t r = batch / sample.size(0);
    auto rep = [&](const at::Tensor& v) {
      std::vector<int64_t> times(v.dim(), 1);
      times[0] = r;
      return v.repeat(times);
    };
    sample = rep(sample), ehs = rep(ehs), te = rep(te), ids = rep(ids), expected = rep(expected);
    if (t.dim() > 0 && t.size(0) > 1) t = rep(t);
  }
  auto& u = *unet;
  at::Tensor out = u->forward(sample, t, ehs, te, ids);
  const double err = rel_err(out, expected);
  const double eager = median_seconds([&] { u->forward(sample, t, ehs, te, ids); }, iters);

  // Channels-last convolutions, the GPU's algorithms chosen as in the product (gpu_numerics.h; the
  // 2026-11-25 results were recorded with cuDNN's benchmark mode, which the product no longer uses), and
  // the feed-forwards' GEGLU GEMM where it runs: the UNet as the product readies it.
  const int64_t geglu_gemms = prepare_unet_for_gpu(**unet, dev, at::kHalf);
  at::Tensor sample_cl = sample.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out_cl = u->forward(sample_cl, t, ehs, te, ids);
  const double err_cl = rel_err(out_cl, expected);
  const double eager_cl = median_seconds([&] { u->forward(sample_cl, t, ehs, te, ids); }, iters);

  // A CUDA graph of the channels-last call (static inputs; warmed up on the capture stream first).
  at::Tensor graph_out;
  at::cuda::CUDAGraph graph(/*keep_graph=*/true);
  {
    auto stream = c10::cuda::getStreamFromPool();
    c10::cuda::CUDAStreamGuard sg(stream);
    for (int i = 0; i < 3; ++i) u->forward(sample_cl, t, ehs, te, ids);
    stream.synchronize();
    graph.capture_begin();
    graph_out = u->forward(sample_cl, t, ehs, te, ids);
    graph.capture_end();
    const int memsets = instantiate_graph(graph);
    std::printf("CUDA graph: %d memset nodes written as kernel nodes\n", memsets);
  }
  graph.replay();
  c10::cuda::device_synchronize();
  const double err_graph = rel_err(graph_out, expected);
  const double graphed = median_seconds([&] { graph.replay(); }, iters);

  // The same with the prompt's keys and values projected once, outside the graph.
  ContextProjections projected;
  u->project_context(ehs, projected);
  UNetCall call;
  call.projected = &projected;
  // --tome: the product's call with ToMe (ratio 0.5, random destinations from a fixed seed, at step 0) on
  // the levels up to MAX_DOWNSAMPLE, and the MLP too with ",mlp"; the graph then times it (its output is not
  // the exact model's, so "same bits" says no).
  TokenMerging merging;
  TokenReduction tokens;
  if (!tome.empty()) {
    merging.ratio = 0.5;
    merging.max_downsample = std::stoi(tome);
    merging.merge_mlp = tome.find("mlp") != std::string::npos;
    tokens.merging = &merging;
    tokens.seed = at::scalar_tensor(int64_t{1234}, at::TensorOptions().dtype(at::kLong).device(dev));
    tokens.step = at::scalar_tensor(int64_t{0}, at::TensorOptions().dtype(at::kLong).device(dev));
    call.tokens = &tokens;
  }
  auto product_call = [&] { return u->forward(sample_cl, t, ehs, te, ids, call); };
  at::Tensor graph_out_p;
  at::cuda::CUDAGraph graph_p(/*keep_graph=*/true);
  {
    auto stream = c10::cuda::getStreamFromPool();
    c10::cuda::CUDAStreamGuard sg(stream);
    for (int i = 0; i < 3; ++i) product_call();
    stream.synchronize();
    graph_p.capture_begin();
    graph_out_p = product_call();
    graph_p.capture_end();
    instantiate_graph(graph_p);
  }
  graph_p.replay();
  c10::cuda::device_synchronize();
  const bool projected_same = at::equal(graph_out_p, graph_out);
  const double err_projected = rel_err(graph_out_p, expected);
  const double graphed_p = median_seconds([&] { graph_p.replay(); }, iters);

  const std::string per_call = "seconds_per_unet_call_batch" + std::to_string(sample.size(0));
  nlohmann::json j = {{"relative_error", err},
                      {"relative_error_channels_last", err_cl},
                      {"relative_error_graph", err_graph},
                      {per_call, eager},
                      {per_call + "_channels_last", eager_cl},
                      {per_call + "_graph", graphed},
                      {per_call + "_graph_projected_context", graphed_p},
                      {"projected_context_bit_identical", projected_same},
                      {"relative_error_graph_projected_context", err_projected},

                      {"load_seconds", load_s},
                      {"fp8_linears", fp8_layers},
                      {"fp8_convolutions", fp8_convs},
                      {"fp8_fast_accum", fp8 && fp8_which.fast_accum},
                      {"fp8_attentions", fp8_attentions},
                      {"geglu_gemms", geglu_gemms},
                      {"batch", sample.size(0)},
                      {"latent", {sample.size(2), sample.size(3)}}};
  std::ofstream(argv[3]) << j.dump(2) << "\n";
  if (!profile_path.empty()) {
    // The graph's replays, as the product runs the call: their idle time is the gaps the graph leaves. Where
    // the profiler sees no kernel in a replay, the eager call instead (its gaps include the CPU's launches).
    nlohmann::json p = profile_kernels([&] { graph_p.replay(); }, 3);
    p["timeline_of"] = "CUDA graph replay";
    if (p["kernels"].empty()) {
      p = profile_kernels([&] { product_call(); }, 3);
      p["timeline_of"] = "eager call (its gaps include the CPU's launches)";
    }
    std::ofstream(profile_path) << p.dump(1) << "\n";
    std::printf("profile: %.2f ms of kernels per call, %.2f ms with no kernel running between them\n",
                p["gpu_us_per_call"].get<double>() / 1e3, p["first_call_idle_us"].get<double>() / 1e3);
    int shown = 0;
    for (const auto& k : p["kernels"]) {
      if (++shown > 30) break;
      std::printf("  %8.1f us %4d x  %s\n", k["us_per_call"].get<double>(), k["launches_per_call"].get<int>(),
                  k["name"].get<std::string>().substr(0, 110).c_str());
    }
  }
  std::printf(
      "ours: relative error %.3e vs diffusers; per UNet call (batch %lld): eager %.2f ms, channels-last "
      "%.2f ms (err %.1e), CUDA graph %.2f ms (err %.1e), with the context projected ahead %.2f ms (err "
      "%.1e, "
      "same bits: %s); load %.1f s\n",
      err, static_cast<long long>(sample.size(0)), eager * 1e3, eager_cl * 1e3, err_cl, graphed * 1e3,
      err_graph, graphed_p * 1e3, err_projected, projected_same ? "yes" : "NO", load_s);
  return err <= 1e-2 ? 0 : 1;
}
