// The weight streamer on the CPU (synchronous copies, same layout logic as on a GPU): a UNet whose units
// stream through rotating slots, keep part of them resident, or leave and come back (model offload) computes
// exactly what the resident UNet computes, every forward pass.
#include "pipeline/runtime/weight_streamer.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "pipeline/io/model_folder.h"
#include "pipeline/nn/fp8.h"
#include "pipeline/nn/resnet_block.h"
#include "pipeline/nn/transformer_2d.h"
#include "test_files.h"

namespace sdxlb {
namespace {

UNet2DConditionModel load_tiny(const std::string& model) {
  auto folder = ModelFolder::open(testing::fixture_model_dir(model));
  EXPECT_TRUE(folder.is_ok()) << folder.status().to_string();
  auto unet = load_unet(*folder, "", at::kFloat, at::kCPU);
  EXPECT_TRUE(unet.is_ok()) << unet.status().to_string();
  return *unet;
}

struct Inputs {
  at::Tensor sample, timestep, embeds, pooled, time_ids;
};

Inputs inputs_for(const UNet2DConditionModel& unet, uint64_t seed) {
  const auto& c = unet->config();
  at::Generator g = at::detail::createCPUGenerator(seed);
  Inputs in;
  in.sample = at::randn({2, c.in_channels, 16, 12}, g);
  in.timestep = at::full({}, 500.0);
  in.embeds = at::randn({2, 77, c.cross_attention_dim[0]}, g);
  const int64_t time_dim = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim;
  in.pooled = at::randn({2, time_dim}, g);
  in.time_ids = at::tensor({128.0f, 96.0f, 0.0f, 0.0f, 128.0f, 96.0f}).repeat({2, 1});
  return in;
}

at::Tensor run(UNet2DConditionModel& unet, const Inputs& in) {
  c10::InferenceMode guard;
  return unet->forward(in.sample, in.timestep, in.embeds, in.pooled, in.time_ids);
}

// Pass 1 traces, pass 2 fixes the layout, pass 3 reuses it; new inputs each time: the streamed UNet's output
// equals the resident one's bit for bit.
void expect_same_passes(UNet2DConditionModel& streamed, UNet2DConditionModel& resident) {
  for (uint64_t seed : {1, 2, 3}) {
    const Inputs in = inputs_for(resident, seed);
    EXPECT_TRUE(at::equal(run(streamed, in), run(resident, in))) << "pass " << seed;
  }
}

// Bytes of the weights in the UNet's units (resnets and transformer blocks): parameters and buffers.
int64_t unit_bytes(const UNet2DConditionModel& unet) {
  int64_t n = 0;
  for (const auto& m : unet->modules(/*include_self=*/false))
    if (dynamic_cast<HookedUnit*>(m.get()))
      for (const auto& t : weights_and_buffers(*m)) n += static_cast<int64_t>(t.nbytes());
  return n;
}

// unet_precision: fp8 with its convolutions and attention, as the pipeline switches them on a GPU: the
// upsamplers as phase convolutions first (resnet_block.h), so that their 2x2 convolutions are FP8 too.
UNet2DConditionModel load_fp8(const std::string& model) {
  UNet2DConditionModel unet = load_tiny(model);
  EXPECT_GT(use_phase_upsamplers(*unet), 0);
  Fp8Layers which;
  which.convolutions = true;
  EXPECT_GT(use_fp8_linears(*unet, which), 0);
  EXPECT_GT(use_fp8_convolutions(*unet), 0);
  EXPECT_GT(use_fp8_attention(*unet), 0);
  return unet;
}

// (model, share of the unit weights that may stay resident, slots)
class Streaming : public ::testing::TestWithParam<std::tuple<std::string, double, int>> {};

TEST_P(Streaming, ComputesExactlyWhatTheResidentUNetComputes) {
  const auto& [model, share, slots] = GetParam();
  UNet2DConditionModel resident = load_tiny(model);
  UNet2DConditionModel streamed = load_tiny(model);
  const auto budget = static_cast<int64_t>(share * static_cast<double>(unit_bytes(resident)));
  StreamingOptions o;
  o.resident_budget_bytes = budget;
  o.slots = slots;
  auto ws = WeightStreamer::attach(streamed, at::kCPU, o);
  ASSERT_TRUE(ws.is_ok()) << ws.status().to_string();
  expect_same_passes(streamed, resident);
  const StreamingStats st = (*ws)->stats();
  EXPECT_GT(st.units, 4);
  EXPECT_EQ(st.resident_bytes + st.streamed_bytes, st.unit_bytes);
  EXPECT_LE(st.resident_bytes, budget);
  if (budget == 0) {
    EXPECT_EQ(st.streamed_units, st.units);
  } else {
    EXPECT_GT(st.streamed_units, 0);
    EXPECT_LT(st.streamed_units, st.units);
  }
  EXPECT_NE(st.describe().find("units streamed"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Tiny, Streaming,
                         ::testing::Values(std::make_tuple("tiny-a", 0.0, 2),
                                           std::make_tuple("tiny-a", 0.0, 3),
                                           std::make_tuple("tiny-a", 0.5, 3),
                                           std::make_tuple("tiny-b", 0.3, 2)));

// The upsamplers' phase convolutions (registered after loading, outside the units) go to the device with the
// rest: a streamed UNet with them computes what the resident one computes.
TEST(Streaming, PhaseUpsamplersComputeTheSameStreamed) {
  UNet2DConditionModel resident = load_tiny("tiny-a");
  UNet2DConditionModel streamed = load_tiny("tiny-a");
  EXPECT_GT(use_phase_upsamplers(*resident), 0);
  EXPECT_GT(use_phase_upsamplers(*streamed), 0);
  StreamingOptions o;
  o.resident_budget_bytes = 0;
  o.slots = 2;
  auto ws = WeightStreamer::attach(streamed, at::kCPU, o);
  ASSERT_TRUE(ws.is_ok()) << ws.status().to_string();
  expect_same_passes(streamed, resident);
}

TEST(Streaming, ModelOffloadEvictsAndRestores) {
  UNet2DConditionModel resident = load_tiny("tiny-a");
  UNet2DConditionModel offloaded = load_tiny("tiny-a");
  StreamingOptions o;
  o.resident_budget_bytes = INT64_MAX;
  auto ws = WeightStreamer::attach(offloaded, at::kCPU, o);
  ASSERT_TRUE(ws.is_ok()) << ws.status().to_string();
  for (uint64_t seed : {1, 2}) {
    const Inputs in = inputs_for(resident, seed);
    EXPECT_TRUE(at::equal(run(offloaded, in), run(resident, in)));
  }
  EXPECT_EQ((*ws)->stats().streamed_units, 0);
  (*ws)->evict();
  EXPECT_TRUE((*ws)->evicted());
  (*ws)->restore();
  EXPECT_FALSE((*ws)->evicted());
  const Inputs in = inputs_for(resident, 7);
  EXPECT_TRUE(at::equal(run(offloaded, in), run(resident, in)));
}

// An FP8 UNet streams its e4m3 weights and scales (module buffers; the fused QKV weights and the FP8
// attention's scales too): here under half the bytes of the fp32 units (a switched layer's weight is a
// quarter of its fp32 bytes, half of its fp16 ones). It computes exactly what the resident FP8 UNet computes
// in every placement: all units streamed, part of them resident, and model offload after evict and restore.
TEST(Streaming, Fp8UNetStreamsItsE4m3WeightsAndComputesTheSame) {
  UNet2DConditionModel resident = load_fp8("tiny-a");
  const int64_t fp32_units = unit_bytes(load_tiny("tiny-a"));
  const int64_t fp8_units = unit_bytes(resident);
  EXPECT_LT(fp8_units, fp32_units / 2);
  for (const double share : {0.0, 0.5, 2.0}) {
    SCOPED_TRACE("resident share " + std::to_string(share));
    UNet2DConditionModel streamed = load_fp8("tiny-a");
    StreamingOptions o;
    o.resident_budget_bytes = static_cast<int64_t>(share * static_cast<double>(fp8_units));
    auto ws = WeightStreamer::attach(streamed, at::kCPU, o);
    ASSERT_TRUE(ws.is_ok()) << ws.status().to_string();
    expect_same_passes(streamed, resident);
    const StreamingStats st = (*ws)->stats();
    // The packed units hold the e4m3 bytes (each weight 256-byte aligned), not the fp32 ones.
    EXPECT_GE(st.unit_bytes, fp8_units);
    EXPECT_LT(st.unit_bytes, fp32_units / 2);
    if (share >= 1.0) {
      (*ws)->evict();
      (*ws)->restore();
      const Inputs in = inputs_for(resident, 9);
      EXPECT_TRUE(at::equal(run(streamed, in), run(resident, in))) << "after evict and restore";
    }
  }
}

TEST(Streaming, RefusesAUNetOffTheCpuAndTooFewSlots) {
  UNet2DConditionModel unet = load_tiny("tiny-a");
  StreamingOptions o;
  o.slots = 1;
  auto ws = WeightStreamer::attach(unet, at::kCPU, o);
  ASSERT_FALSE(ws.is_ok());
  EXPECT_EQ(ws.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sdxlb
