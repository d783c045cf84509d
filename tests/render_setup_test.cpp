// RenderSetup's helpers that run before the model loads: which dtype the full VAE will decode in, for the
// memory plan (a float32 decode holds about twice the memory of an fp16 one). The fixture models' VAE configs
// differ in force_upcast: tiny-a says true (as the stock SDXL VAE), tiny-b false (as sdxl-vae-fp16-fix).
#include "worker/render_setup.h"

#include <gtest/gtest.h>

#include "test_files.h"

namespace sdxlb {
namespace {

JobSpec job_for(const std::string& model, JobSpec::DType dtype) {
  JobSpec job;
  job.model = testing::fixture_model_dir(model);
  job.dtype = dtype;
  return job;
}

TEST(VaeDecodesInFp32, FollowsTheVaeConfigsForceUpcastInFp16Jobs) {
  EXPECT_TRUE(vae_decodes_in_fp32(job_for("tiny-a", JobSpec::DType::kFp16)));
  EXPECT_FALSE(vae_decodes_in_fp32(job_for("tiny-b", JobSpec::DType::kFp16)));
  // vae_fp16_safe overrides force_upcast; bf16 jobs are never upcast (force_upcast applies to fp16 only).
  JobSpec safe = job_for("tiny-a", JobSpec::DType::kFp16);
  safe.vae_fp16_safe = true;
  EXPECT_FALSE(vae_decodes_in_fp32(safe));
  EXPECT_FALSE(vae_decodes_in_fp32(job_for("tiny-a", JobSpec::DType::kBf16)));
  EXPECT_TRUE(vae_decodes_in_fp32(job_for("tiny-b", JobSpec::DType::kFp32)));
}

TEST(VaeDecodesInFp32, VaeDtypeWins) {
  JobSpec job = job_for("tiny-a", JobSpec::DType::kFp16);
  job.vae_dtype = JobSpec::DType::kBf16;
  EXPECT_FALSE(vae_decodes_in_fp32(job));
  job = job_for("tiny-b", JobSpec::DType::kFp16);
  job.vae_dtype = JobSpec::DType::kFp32;
  EXPECT_TRUE(vae_decodes_in_fp32(job));
}

TEST(VaeDecodesInFp32, AnUnreadableModelCountsAsFloat32) {
  // The larger estimate; the load then reports the problem with the model.
  EXPECT_TRUE(vae_decodes_in_fp32(job_for("no-such-model", JobSpec::DType::kFp16)));
}

}  // namespace
}  // namespace sdxlb
