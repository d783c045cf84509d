// JobSpec: defaults, every key, relative paths, prompt sources through the job file, and one test per kind
// of bad input checking that the message has file:line:column and a fix.
#include "jobs/job_spec.h"

#include <fstream>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <utility>
#include <vector>

#include "jobs/approximations.h"
#include "jobs/job_plan.h"
#include "jobs/sha256.h"
#include "jobs/yaml_fields.h"
#include "test_files.h"

namespace sdxlb {
namespace {

using testing::ScratchDir;
using testing::write_bytes;

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

// A scratch folder with a fake SDXL folder ("sdxl/model_index.json") and a fake tiny VAE ("taesd/").
class JobSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    ::mkdir(dir_.file("sdxl").c_str(), 0755);
    write_bytes(dir_.file("sdxl/model_index.json"), "{}");
    ::mkdir(dir_.file("taesd").c_str(), 0755);
    write_bytes(dir_.file("taesd/config.json"), "{}");
  }

  // Writes job.yaml and loads it.
  StatusOr<JobSpec> load(const std::string& yaml, JobLoadOptions options = {}) {
    write_bytes(dir_.file("job.yaml"), yaml);
    return JobSpec::load_file(dir_.file("job.yaml"), options);
  }

  // Loads a job expected to fail and returns its message; checks the code and that it names the file.
  std::string error_of(const std::string& yaml) {
    auto spec = load(yaml);
    EXPECT_FALSE(spec.is_ok()) << yaml;
    if (spec.is_ok()) return "";
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument) << spec.status().message();
    return spec.status().message();
  }

  ScratchDir dir_;
};

#define EXPECT_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "missing [" << (part) << "] in:\n" << (msg)

const char* kMinimal = "model: sdxl\noutput: out\nprompts:\n  - a red fox\n";

// issue 12 (weak case): an output folder equal to or inside the model folder was accepted.
TEST_F(JobSpecTest, OutputInsideTheModelFolderIsRefused) {
  std::string m = error_of("model: sdxl\noutput: sdxl\nprompts: [a]\n");
  EXPECT_HAS(m, "job.yaml:2:9: output: \"" + dir_.file("sdxl") + "\" is the model folder");
  EXPECT_HAS(m, "Choose an output folder outside the model folder");
  m = error_of("model: sdxl\noutput: ./sdxl/runs/../out\nprompts: [a]\n");
  EXPECT_HAS(m, "is inside the model folder \"" + dir_.file("sdxl") + "\"");
  // Through a symbolic link to the model folder.
  ASSERT_EQ(::symlink(dir_.file("sdxl").c_str(), dir_.file("link").c_str()), 0);
  m = error_of("model: sdxl\noutput: link/out\nprompts: [a]\n");
  EXPECT_HAS(m, "is inside the model folder");
  // A sibling whose name starts with the model's is not inside it.
  auto ok = load("model: sdxl\noutput: sdxl-out\nprompts: [a]\n");
  EXPECT_TRUE(ok.is_ok()) << ok.status().to_string();
}

// issue 15: `model:` may be an SDXL .safetensors single file, with `model_config:` (a diffusers folder for
// its configs and tokenizers); `vae:` names a VAE file. Each is checked with file:line:col errors.
TEST_F(JobSpecTest, SingleFileModelConfigAndVaeKeys) {
  write_bytes(dir_.file("sdxl.safetensors"), "x");
  write_bytes(dir_.file("vae.safetensors"), "x");
  auto ok =
      load("model: sdxl.safetensors\nmodel_config: sdxl\nvae: vae.safetensors\noutput: out\nprompts: [a]\n");
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->model, dir_.file("sdxl.safetensors"));
  EXPECT_EQ(ok->model_config, dir_.file("sdxl"));
  EXPECT_EQ(ok->vae, dir_.file("vae.safetensors"));
  EXPECT_HAS(ok->to_canonical_json(), "\"model_config\":\"" + dir_.file("sdxl") + "\"");
  EXPECT_HAS(ok->to_canonical_json(), "\"vae\":\"" + dir_.file("vae.safetensors") + "\"");
  // A folder model with a VAE file is fine too; unset keys stay out of the canonical JSON.
  auto folder = load(std::string(kMinimal) + "vae: vae.safetensors\n");
  ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
  EXPECT_EQ(folder->to_canonical_json().find("model_config"), std::string::npos);
  auto plain = load(kMinimal);
  ASSERT_TRUE(plain.is_ok());
  EXPECT_EQ(plain->to_canonical_json().find("\"vae\""), std::string::npos);

  std::string m = error_of("model: missing.safetensors\noutput: out\nprompts: [a]\n");
  EXPECT_HAS(m, "job.yaml:1:8: model: file \"" + dir_.file("missing.safetensors") + "\" does not exist");
  m = error_of("model: sdxl\nmodel_config: sdxl\noutput: out\nprompts: [a]\n");
  EXPECT_HAS(m, "job.yaml:2:15: model_config: is set, but model is a diffusers folder");
  m = error_of("model: sdxl.safetensors\nmodel_config: taesd\noutput: out\nprompts: [a]\n");
  EXPECT_HAS(m, "job.yaml:2:15: model_config: folder \"" + dir_.file("taesd") + "\" has no model_index.json");
  m = error_of(std::string(kMinimal) + "vae: taesd\n");
  EXPECT_HAS(m, "job.yaml:5:6: vae: \"" + dir_.file("taesd") + "\" is not a .safetensors file");
  m = error_of(std::string(kMinimal) + "vae: nowhere.safetensors\n");
  EXPECT_HAS(m, "job.yaml:5:6: vae: file \"" + dir_.file("nowhere.safetensors") + "\" does not exist");
}

// Found by fuzz_job_spec: "prompts_format:" with no value (or an anchor with none) was taken as set, so the
// extension was not read, no format was chosen, and the job passed validation with no prompt list.
TEST_F(JobSpecTest, EmptyPromptsFormatMeansTheExtensionDecides) {
  write_bytes(dir_.file("p.txt"), "one\ntwo\n");
  write_bytes(dir_.file("p.data"), "one\ntwo\n");
  for (const char* value : {"", " ~", " &anchor"}) {
    auto spec =
        load(std::string("model: sdxl\noutput: out\nprompts_file: p.txt\nprompts_format:") + value + "\n");
    ASSERT_TRUE(spec.is_ok()) << value << ": " << spec.status().to_string();
    ASSERT_NE(spec->prompts, nullptr);
    EXPECT_EQ(spec->num_prompts(), 2u);
    std::string m = error_of(std::string("model: sdxl\noutput: out\nprompts_file: p.data\nprompts_format:") +
                             value + "\n");
    EXPECT_HAS(m, "cannot tell the format");
  }
}

// Found by bench/hostile_corpus.py: `run /dev/zero` grew until killed, and a FIFO as the job file hung.
TEST_F(JobSpecTest, JobFileMustBeARegularFileOfBoundedSize) {
  ASSERT_EQ(::mkfifo(dir_.file("fifo.yaml").c_str(), 0600), 0);
  for (const std::string& path : {dir_.file("fifo.yaml"), std::string("/dev/zero")}) {
    auto spec = JobSpec::load_file(path);
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument) << path;
    EXPECT_HAS(spec.status().message(), "is not a regular file");
  }
  {
    std::ofstream big(dir_.file("big.yaml"));
    big << kMinimal;
    big.seekp(static_cast<std::streamoff>(kMaxJobFileBytes) + 1);
    big << "\n";
  }
  auto spec = JobSpec::load_file(dir_.file("big.yaml"));
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_HAS(spec.status().message(),
             "job files are limited to 64 MiB: put long prompt lists in a prompts_file");
}

// bench/hostile_corpus.py: a valid job followed by "---" and more keys ran the first one and ignored the
// rest.
TEST_F(JobSpecTest, ASecondYamlDocumentIsAnError) {
  std::string m = error_of(std::string(kMinimal) + "---\nsteps: 9\n");
  EXPECT_HAS(m, "job.yaml:5:1: a second YAML document starts here");
  // Found by the job-file fuzzer in CI: yaml-cpp 0.7's LoadAll looped forever, growing past 2 GB, on input
  // like this; the second document is found in the text instead.
  auto odd = load(", output: o\n---\nmodel: m\n");
  EXPECT_FALSE(odd.is_ok());
  // A document end marker or an empty trailing document is fine.
  auto ok = load(std::string(kMinimal) + "---\n");
  EXPECT_TRUE(ok.is_ok()) << ok.status().to_string();
  ok = load(std::string(kMinimal) + "...\n");
  EXPECT_TRUE(ok.is_ok()) << ok.status().to_string();
}

// bench/hostile_corpus.py: "guidance:5" (no space) is one plain scalar in YAML, and the error pointed at the
// next line only. The message now names the line with the missing space.
TEST_F(JobSpecTest, KeyWithoutASpaceAfterTheColonIsNamed) {
  std::string m = error_of("model: sdxl\noutput: out\nprompts: [a]\nguidance:5\nwidth: 64\n");
  EXPECT_HAS(m, "line 4 has no space after \"guidance:\": write \"guidance: <value>\"");
}

TEST_F(JobSpecTest, MinimalJobGetsEveryDefault) {
  auto spec = load(kMinimal);
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  const JobSpec& s = *spec;
  EXPECT_EQ(s.model, dir_.file("sdxl"));
  EXPECT_EQ(s.output, dir_.file("out"));
  EXPECT_EQ(s.embedding_cache, dir_.file("out/embeddings"));
  EXPECT_EQ(s.model_variant, "");
  EXPECT_EQ(s.tiny_vae, "");
  EXPECT_FALSE(s.vae_fp16_safe);
  EXPECT_EQ(s.negative_prompt, "");
  EXPECT_EQ(s.images_per_prompt, 1);
  EXPECT_EQ(s.seed, 0u);
  EXPECT_EQ(s.steps, 30);
  EXPECT_DOUBLE_EQ(s.guidance, 5.0);
  EXPECT_EQ(s.width, 1024);
  EXPECT_EQ(s.height, 1024);
  EXPECT_TRUE(s.scheduler.empty());       // the model folder's scheduler as it is
  EXPECT_TRUE(s.approximations.empty());  // the exact computation
  EXPECT_FALSE(s.batch_size.has_value());
  EXPECT_EQ(s.dtype, JobSpec::DType::kFp16);
  EXPECT_EQ(s.device, JobSpec::Device::kAuto);
  EXPECT_EQ(s.image_format, JobSpec::ImageFormat::kRaw);
  EXPECT_EQ(s.decoder, JobSpec::Decoder::kAuto);
  EXPECT_EQ(s.resolved_decoder(), JobSpec::Decoder::kFull);
  EXPECT_EQ(s.memory.placement, JobSpec::Placement::kAuto);
  EXPECT_EQ(s.memory.decode, JobSpec::Decode::kAuto);
  EXPECT_FALSE(s.memory.max_gpu_gib.has_value());
  EXPECT_EQ(s.memory.overlap_decode, JobSpec::OverlapDecode::kAuto);
  EXPECT_EQ(s.to_canonical_json().find("overlap_decode"), std::string::npos);  // earlier jobs' JSON
  EXPECT_EQ(s.weights_broadcast, JobSpec::WeightsBroadcast::kAuto);
  EXPECT_EQ(s.to_canonical_json().find("weights_broadcast"), std::string::npos);  // earlier jobs' JSON
  EXPECT_EQ(s.segment_items, 256);
  EXPECT_DOUBLE_EQ(s.segment_seconds, 60.0);
  EXPECT_DOUBLE_EQ(s.progress_interval_s, 10.0);
  EXPECT_DOUBLE_EQ(s.worker_timeout_s, 600.0);
  EXPECT_FALSE(s.prompt_source.from_file);
  ASSERT_EQ(s.num_prompts(), 1u);
  EXPECT_EQ(s.prompts->prompt(0), "a red fox");
  EXPECT_EQ(s.num_items(), 1u);
  EXPECT_EQ(s.prompts_sha256.size(), 64u);
  EXPECT_EQ(s.yaml_text, kMinimal);
}

TEST_F(JobSpecTest, EveryKeySet) {
  auto spec = load(R"(model: sdxl
model_variant: fp16
tiny_vae: taesd
vae_fp16_safe: true
prompts: ["a", "b"]
negative_prompt: blurry
images_per_prompt: 3
seed: 18446744073709551615
steps: 4
guidance: 7.5
width: 512
height: 768
scheduler: euler
batch_size: 8
dtype: bf16
device: cuda
output: /abs/out
image_format: png
decoder: full
memory: {placement: streamed, decode: tiled, max_gpu_gib: 20.5, concurrent_images: 3, overlap_decode: off}
weights_broadcast: off
embedding_cache: cache
segment_items: 64
segment_seconds: 30
progress_interval_s: 0.5
worker_timeout_s: 90
)");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  const JobSpec& s = *spec;
  EXPECT_EQ(s.model_variant, "fp16");
  EXPECT_EQ(s.tiny_vae, dir_.file("taesd"));
  EXPECT_TRUE(s.vae_fp16_safe);
  EXPECT_EQ(s.negative_prompt, "blurry");
  EXPECT_EQ(s.images_per_prompt, 3);
  EXPECT_EQ(s.seed, UINT64_MAX);
  EXPECT_EQ(s.steps, 4);
  EXPECT_DOUBLE_EQ(s.guidance, 7.5);
  EXPECT_EQ(s.width, 512);
  EXPECT_EQ(s.height, 768);
  EXPECT_EQ(s.scheduler.name, SamplerName::kEuler);
  EXPECT_TRUE(s.scheduler.options_set().empty());
  EXPECT_EQ(s.batch_size, 8);
  EXPECT_EQ(s.dtype, JobSpec::DType::kBf16);
  EXPECT_EQ(s.device, JobSpec::Device::kCuda);
  EXPECT_EQ(s.output, "/abs/out");
  EXPECT_EQ(s.image_format, JobSpec::ImageFormat::kPng);
  EXPECT_EQ(s.resolved_decoder(), JobSpec::Decoder::kFull);  // explicit full wins over tiny_vae
  EXPECT_EQ(s.memory.placement, JobSpec::Placement::kStreamed);
  EXPECT_EQ(s.memory.decode, JobSpec::Decode::kTiled);
  EXPECT_DOUBLE_EQ(*s.memory.max_gpu_gib, 20.5);
  EXPECT_EQ(s.memory.concurrent_images, 3);
  EXPECT_EQ(s.memory.overlap_decode, JobSpec::OverlapDecode::kOff);
  EXPECT_NE(s.to_canonical_json().find(R"("overlap_decode":"off")"), std::string::npos);
  EXPECT_EQ(s.weights_broadcast, JobSpec::WeightsBroadcast::kOff);
  EXPECT_NE(s.to_canonical_json().find(R"("weights_broadcast":"off")"), std::string::npos);
  EXPECT_EQ(s.embedding_cache, dir_.file("cache"));
  EXPECT_EQ(s.segment_items, 64);
  EXPECT_DOUBLE_EQ(s.segment_seconds, 30.0);
  EXPECT_DOUBLE_EQ(s.progress_interval_s, 0.5);
  EXPECT_DOUBLE_EQ(s.worker_timeout_s, 90.0);
  EXPECT_EQ(s.num_items(), 6u);
}

TEST_F(JobSpecTest, TinyVaeMakesAutoDecoderTiny) {
  auto spec = load(std::string(kMinimal) + "tiny_vae: ./taesd/\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_EQ(spec->resolved_decoder(), JobSpec::Decoder::kTiny);
}

TEST_F(JobSpecTest, InlinePromptMaps) {
  auto spec = load(R"(model: sdxl
output: out
negative_prompt: ugly
prompts:
  - plain text
  - {prompt: with own negative, negative_prompt: blurry}
  - prompt: with own seed
    seed: 99
  - {prompt: explicitly no negative, negative_prompt: ""}
  - 42
)");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  const PromptList& p = *spec->prompts;
  ASSERT_EQ(p.size(), 5u);
  EXPECT_EQ(spec->negative_for(0), "ugly");
  EXPECT_EQ(p.prompt(1), "with own negative");
  EXPECT_EQ(spec->negative_for(1), "blurry");
  EXPECT_EQ(p.seed(2), std::optional<uint64_t>(99));
  EXPECT_EQ(spec->negative_for(2), "ugly");
  EXPECT_FALSE(p.seed(0).has_value());
  EXPECT_EQ(spec->negative_for(3), "");
  EXPECT_EQ(p.prompt(4), "42");  // a plain number is prompt text
}

TEST_F(JobSpecTest, PromptFilesOfEachFormat) {
  write_bytes(dir_.file("p.txt"), "one\n\ntwo\n");
  write_bytes(dir_.file("p.jsonl"), "{\"prompt\": \"one\", \"seed\": 5}\n{\"prompt\": \"two\"}\n");
  write_bytes(dir_.file("p.csv"), "text,neg\n\"one, with comma\",bad\ntwo,\n");
  write_bytes(dir_.file("p.dat"), "one\ntwo\n");
  for (const char* yaml : {"prompts_file: p.txt\n", "prompts_file: p.jsonl\n",
                           "prompts_file: p.csv\ncsv_prompt_column: text\ncsv_negative_column: neg\n",
                           "prompts_file: p.dat\nprompts_format: txt\n"}) {
    auto spec = load(std::string("model: sdxl\noutput: out\n") + yaml);
    ASSERT_TRUE(spec.is_ok()) << yaml << spec.status().message();
    EXPECT_TRUE(spec->prompt_source.from_file);
    ASSERT_EQ(spec->num_prompts(), 2u) << yaml;
    EXPECT_EQ(spec->prompts->prompt(1), "two");
  }
  auto csv = load(
      "model: sdxl\noutput: out\nprompts_file: p.csv\ncsv_prompt_column: text\ncsv_negative_column: neg\n");
  ASSERT_TRUE(csv.is_ok());
  EXPECT_EQ(csv->prompt_source.file, dir_.file("p.csv"));
  EXPECT_EQ(csv->prompt_source.format, PromptFormat::kCsv);
  EXPECT_EQ(csv->prompts->prompt(0), "one, with comma");
  EXPECT_EQ(csv->negative_for(0), "bad");
}

TEST_F(JobSpecTest, RelativePathsResolveAgainstTheJobFolder) {
  ::mkdir(dir_.file("jobs").c_str(), 0755);
  write_bytes(dir_.file("jobs/p.txt"), "x\n");
  write_bytes(dir_.file("jobs/job.yaml"), "model: ../sdxl\noutput: ../out/run1\nprompts_file: p.txt\n");
  auto spec = JobSpec::load_file(dir_.file("jobs/job.yaml"));
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_EQ(spec->model, dir_.file("sdxl"));
  EXPECT_EQ(spec->output, dir_.file("out/run1"));
  EXPECT_EQ(spec->prompt_source.file, dir_.file("jobs/p.txt"));
  EXPECT_EQ(spec->base_dir, dir_.file("jobs"));
}

TEST_F(JobSpecTest, ValidationWritesNothing) {
  auto spec = load(std::string(kMinimal) + "embedding_cache: cache\n");
  ASSERT_TRUE(spec.is_ok());
  EXPECT_FALSE(exists(dir_.file("out")));
  EXPECT_FALSE(exists(dir_.file("cache")));
}

TEST_F(JobSpecTest, ExamplesParse) {
  const std::string ex = std::string(SDXLB_SOURCE_DIR) + "/examples/demo.yaml";
  JobLoadOptions no_paths;
  no_paths.check_paths = false;
  auto spec = JobSpec::load_file(ex, no_paths);
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_EQ(spec->num_prompts(), 8u);
  EXPECT_EQ(spec->num_items(), 16u);
  for (const char* f : {"prompts.txt", "prompts.csv"}) {
    auto other = JobSpec::parse(
        std::string("model: m\noutput: o\nprompts_file: ") + f + "\ncsv_negative_column: negative_prompt\n",
        "x.yaml", std::string(SDXLB_SOURCE_DIR) + "/examples", no_paths);
    if (std::string(f) == "prompts.txt") {
      EXPECT_FALSE(other.is_ok());  // csv_negative_column with a txt file is an error
      other = JobSpec::parse(std::string("model: m\noutput: o\nprompts_file: ") + f + "\n", "x.yaml",
                             std::string(SDXLB_SOURCE_DIR) + "/examples", no_paths);
    }
    ASSERT_TRUE(other.is_ok()) << f << ": " << other.status().message();
    EXPECT_GE(other->num_prompts(), 5u);
  }
}

TEST_F(JobSpecTest, MissingJobFileIsNotFound) {
  auto spec = JobSpec::load_file(dir_.file("nope.yaml"));
  ASSERT_FALSE(spec.is_ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kNotFound);
  EXPECT_HAS(spec.status().message(), dir_.file("nope.yaml"));
}

// ---- bad input: one test per kind, each checking file:line:column and the fix.

TEST_F(JobSpecTest, UnknownKeySuggestsNearest) {
  std::string m = error_of("model: sdxl\noutput: out\nprompts: [a]\nstpes: 30\n");
  EXPECT_HAS(m, "job.yaml:4:1: unknown key \"stpes\"; did you mean \"steps\"?");
}

TEST_F(JobSpecTest, OtherToolsNamesForAKeyPointToOurs) {
  // diffusers', A1111's and ComfyUI's names are not near ours by spelling.
  EXPECT_HAS(error_of(std::string(kMinimal) + "sampler: euler\n"),
             "job.yaml:5:1: unknown key \"sampler\"; did you mean \"scheduler\"?");
  EXPECT_HAS(error_of(std::string(kMinimal) + "guidance_scale: 7\n"),
             "job.yaml:5:1: unknown key \"guidance_scale\"; did you mean \"guidance\"?");
  EXPECT_HAS(error_of(std::string(kMinimal) + "CFG_Scale: 7\n"),
             "job.yaml:5:1: unknown key \"CFG_Scale\"; did you mean \"guidance\"?");
  EXPECT_HAS(error_of(std::string(kMinimal) + "num_inference_steps: 30\n"),
             "job.yaml:5:1: unknown key \"num_inference_steps\"; did you mean \"steps\"?");
  // Only where the key it names is valid: inside memory there is no guidance.
  const std::string m = error_of(std::string(kMinimal) + "memory:\n  cfg: 7\n");
  EXPECT_HAS(m, "job.yaml:6:3: unknown key \"cfg\"; valid keys are: ");
  EXPECT_EQ(m.find("guidance"), std::string::npos) << m;
}

TEST_F(JobSpecTest, UnknownKeyFarFromAnyListsValidKeys) {
  std::string m = error_of(std::string(kMinimal) + "colour: blue\n");
  EXPECT_HAS(m, "job.yaml:5:1: unknown key \"colour\"; valid keys are: model, ");
}

TEST_F(JobSpecTest, UnknownNestedKey) {
  std::string m = error_of(std::string(kMinimal) + "memory:\n  placment: resident\n");
  EXPECT_HAS(m, "job.yaml:6:3: unknown key \"placment\"; did you mean \"placement\"? (in memory)");
}

TEST_F(JobSpecTest, ConcurrentImagesOutOfRange) {
  std::string m = error_of(std::string(kMinimal) + "memory:\n  concurrent_images: 0\n");
  EXPECT_HAS(m,
             "job.yaml:6:22: memory.concurrent_images: 0 is out of range; use \"auto\" or "
             "images_per_unet_call times 1 to 8 (whole UNet calls)");
  // More than 8 UNet calls at once.
  m = error_of(std::string(kMinimal) + "memory:\n  concurrent_images: 9\n");
  EXPECT_HAS(m,
             "job.yaml:6:22: memory.concurrent_images: is 9, but the images denoised at once are whole UNet "
             "calls of images_per_unet_call (1) images, at most 8 calls");
}

// concurrent_images counts images: with images_per_unet_call: 8 it takes 8 (one call) or 16 (two), not 12.
TEST_F(JobSpecTest, ConcurrentImagesAreWholeUnetCalls) {
  auto one_call = load(std::string(kMinimal) + "images_per_unet_call: 8\nmemory: {concurrent_images: 8}\n");
  ASSERT_TRUE(one_call.is_ok()) << one_call.status().message();
  EXPECT_EQ(one_call->memory.concurrent_images, 8);
  std::string m =
      error_of(std::string(kMinimal) + "images_per_unet_call: 8\nmemory: {concurrent_images: 12}\n");
  EXPECT_HAS(m,
             "memory.concurrent_images: is 12, but the images denoised at once are whole UNet calls of "
             "images_per_unet_call (8) images, at most 8 calls; use 8, 16, ... up to 64 (or auto)");
}

TEST_F(JobSpecTest, OverlapDecodeUnknownValue) {
  std::string m = error_of(std::string(kMinimal) + "memory:\n  overlap_decode: yes\n");
  EXPECT_HAS(m, "job.yaml:6:19: memory.overlap_decode");
  EXPECT_HAS(m, "use one of: auto | on | off");
}

TEST_F(JobSpecTest, NegativeSteps) {
  std::string m = error_of(std::string(kMinimal) + "steps: -5\n");
  EXPECT_HAS(m, "job.yaml:5:8: steps: -5 is out of range; use an integer from 1 to 1000");
}

TEST_F(JobSpecTest, StepsOfWrongType) {
  std::string m = error_of(std::string(kMinimal) + "steps: thirty\n");
  EXPECT_HAS(m, "job.yaml:5:8: steps: expected an integer, got \"thirty\"; use an integer from 1 to 1000");
  m = error_of(std::string(kMinimal) + "steps: \"30\"\n");
  EXPECT_HAS(m, "job.yaml:5:8: steps: expected an integer, got the quoted string \"30\"; remove the quotes");
  m = error_of(std::string(kMinimal) + "steps: [30]\n");
  EXPECT_HAS(m, "job.yaml:5:8: steps: expected an integer, got a list");
}

TEST_F(JobSpecTest, SizeNotMultipleOfEight) {
  std::string m = error_of(std::string(kMinimal) + "width: 1023\n");
  EXPECT_HAS(m,
             "job.yaml:5:8: width: 1023 is not a multiple of 8 (the VAE downsamples by 8); use 1016 or 1024");
}

TEST_F(JobSpecTest, ZeroSize) {
  std::string m = error_of(std::string(kMinimal) + "height: 0\n");
  EXPECT_HAS(m, "job.yaml:5:9: height: 0 is not a positive size; use a multiple of 8");
}

TEST_F(JobSpecTest, BothPromptsAndPromptsFile) {
  write_bytes(dir_.file("p.txt"), "x\n");
  std::string m = error_of(std::string(kMinimal) + "prompts_file: p.txt\n");
  EXPECT_HAS(m, "job.yaml:5:15: prompts_file: both prompts and prompts_file are set; keep only one");
}

TEST_F(JobSpecTest, NeitherPromptsNorPromptsFile) {
  std::string m = error_of("model: sdxl\noutput: out\n");
  EXPECT_HAS(m, "job.yaml:1:1: prompts: no prompts; set prompts: (an inline list) or prompts_file:");
}

TEST_F(JobSpecTest, EmptyPromptList) {
  std::string m = error_of("model: sdxl\noutput: out\nprompts: []\n");
  EXPECT_HAS(m, "job.yaml:3:10: prompts: the list is empty; add at least one prompt");
  m = error_of("model: sdxl\noutput: out\nprompts:\n");
  EXPECT_HAS(m, "job.yaml:3:1: prompts: the list is empty; add at least one prompt");
}

TEST_F(JobSpecTest, BrokenYaml) {
  std::string m = error_of("model: sdxl\noutput: out\nprompts: [a, b\nsteps: 3\n");
  EXPECT_HAS(m, "job.yaml:");
  EXPECT_HAS(m, "invalid YAML: ");
  EXPECT_HAS(m, "fix the syntax");
  m = error_of("model: sdxl\n  output: out\n");
  EXPECT_HAS(m, "job.yaml:2:9: invalid YAML: illegal map value; fix the syntax");
}

TEST_F(JobSpecTest, NegativeGuidance) {
  std::string m = error_of(std::string(kMinimal) + "guidance: -1\n");
  EXPECT_HAS(m, "job.yaml:5:11: guidance: -1 is out of range; use a number from 0 to 100");
}

// issue 12, weak case 3: guidance: 1e39 was accepted (it is finite as a double) and every item failed with
// NaN latents. Guidance has an upper limit far above any useful scale.
TEST_F(JobSpecTest, HugeGuidance) {
  std::string m = error_of(std::string(kMinimal) + "guidance: 1e39\n");
  EXPECT_HAS(m,
             "job.yaml:5:11: guidance: 1e39 is out of range; use a number from 0 to 100 (e.g. 5.0; 1 or less "
             "turns classifier-free guidance off)");
  m = error_of(std::string(kMinimal) + "guidance: 100.5\n");
  EXPECT_HAS(m, "job.yaml:5:11: guidance: 100.5 is out of range; use a number from 0 to 100");
  auto spec = load(std::string(kMinimal) + "guidance: 100\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_DOUBLE_EQ(spec->guidance, 100.0);
}

// issue 12, weak case 2: yaml-cpp's message for a tab-indented line ("illegal map value", "illegal block
// entry", ...) does not say that tabs are the problem. The message now names the line with the tab.
TEST_F(JobSpecTest, TabIndentationIsNamed) {
  const std::string tab_hint = "is indented with a tab; YAML allows only spaces for indentation";
  std::string m = error_of("model: sdxl\noutput: out\nprompts:\n\t- a red fox\n");
  EXPECT_HAS(m, "job.yaml:4:2: invalid YAML: illegal block entry; line 4 " + tab_hint);
  m = error_of(std::string(kMinimal) + "memory:\n\tplacement: auto\n");
  EXPECT_HAS(m, "job.yaml:6:11: invalid YAML: illegal map value; line 6 " + tab_hint);
  m = error_of(std::string(kMinimal) + "memory:\n  decode: auto\n \tplacement: auto\n");
  EXPECT_HAS(m, "line 7 " + tab_hint);
  // The tab on the line before the one yaml-cpp points at.
  m = error_of("model: sdxl\noutput: out\nprompts: [a,\n\tb]\n  - c\n");
  EXPECT_HAS(m, "job.yaml:5:3: invalid YAML: ");
  EXPECT_HAS(m, "; line 4 " + tab_hint);
  // No tab: no tab hint.
  m = error_of("model: sdxl\n  output: out\n");
  EXPECT_EQ(m.find("tab"), std::string::npos) << m;
}

// issue 12, weak case 2: 10000 '[' gave "invalid YAML: bad file" (yaml-cpp's recursion limit). The message
// now says that the nesting is too deep, at the line where the brackets get deep.
TEST_F(JobSpecTest, TooDeepNestingIsNamed) {
  std::string m = error_of("model: sdxl\noutput: out\nprompts:\n  - " + std::string(10000, '[') + "\n");
  EXPECT_HAS(m,
             "job.yaml:4:69: invalid YAML: the nesting is too deep (brackets open more than 64 levels deep "
             "here); a job file nests at most 3 levels: look for repeated or unclosed [ or {");
  EXPECT_EQ(m.find("bad file"), std::string::npos) << m;
  // Spread over lines, the line where the depth passes 64 is named.
  std::string spread;
  for (int i = 0; i < 3000; ++i) spread += i % 10 == 9 ? "[\n" : "[";
  m = error_of("model: sdxl\noutput: out\nprompts: " + spread + "\n");
  EXPECT_HAS(m, "job.yaml:9:5: invalid YAML: the nesting is too deep");
  // Deep block nesting (indentation) is named too, at yaml-cpp's position.
  std::string block = "model: sdxl\noutput: out\nmemory:\n";
  for (int i = 1; i < 1000; ++i) block += std::string(i, ' ') + "k:\n";
  m = error_of(block);
  EXPECT_HAS(m, "invalid YAML: the nesting is too deep");
  EXPECT_EQ(m.find("bad file"), std::string::npos) << m;
}

// issue 12, weak case 1: a NUL (written "\0" in a double-quoted YAML string) in an inline prompt or the
// negative prompt was accepted, and invalid UTF-8 in a plain inline prompt skipped the UTF-8 check.
TEST_F(JobSpecTest, NulAndInvalidUtf8InInlineTextAreRefused) {
  std::string m = error_of("model: sdxl\noutput: out\nprompts: [\"a\\0b\"]\n");
  EXPECT_HAS(m,
             "job.yaml:3:11: prompts[0]: holds a NUL byte (U+0000); remove it (\\0 in a double-quoted YAML "
             "string is a NUL byte)");
  m = error_of(std::string(kMinimal) + "negative_prompt: \"x\\0\"\n");
  EXPECT_HAS(m, "job.yaml:5:18: negative_prompt: holds a NUL byte (U+0000)");
  m = error_of("model: sdxl\noutput: out\nprompts:\n  - {prompt: \"\\0\"}\n");
  EXPECT_HAS(m, "job.yaml:4:14: prompts[0].prompt: holds a NUL byte (U+0000)");
  m = error_of("model: sdxl\noutput: out\nprompts:\n  - ok\n  - caf\xE9\n");
  EXPECT_HAS(m, "job.yaml:5:5: prompts[1]: is not valid UTF-8 text; save the job file as UTF-8");
}

// issue 12, weak case 1: the prompt file's encoding errors reach the job's message (and its exit code).
TEST_F(JobSpecTest, PromptFileEncodingErrorsAreIncluded) {
  write_bytes(dir_.file("p.txt"), std::string("\xFF\xFE"
                                              "a\0\n\0",
                                              6));
  std::string m = error_of("model: sdxl\noutput: out\nprompts_file: p.txt\n");
  EXPECT_HAS(m, dir_.file("p.txt") + ": is UTF-16 text; save it as UTF-8");
  write_bytes(dir_.file("p.txt"), "ok\nna\xEFve\n");
  m = error_of("model: sdxl\noutput: out\nprompts_file: p.txt\n");
  EXPECT_HAS(m, dir_.file("p.txt") + ":2:3: is not valid UTF-8 text (byte 0xEF)");
}

// An inline prompt over the 64 KiB limit was dropped without a word (the job had one prompt less).
TEST_F(JobSpecTest, OverlongInlinePromptIsRefused) {
  std::string m =
      error_of("model: sdxl\noutput: out\nprompts:\n  - a\n  - " + std::string(70000, 'x') + "\n");
  EXPECT_HAS(m, "job.yaml:5:5: prompts[1]: a prompt of 70000 bytes is longer than the limit of 65536 bytes");
}

TEST_F(JobSpecTest, UnknownEnumValueSuggests) {
  std::string m = error_of(std::string(kMinimal) + "dtype: fp61\n");
  EXPECT_HAS(
      m,
      "job.yaml:5:8: dtype: unknown value \"fp61\"; use one of: fp16 | bf16 | fp32 (did you mean \"fp16\"?)");
}

TEST_F(JobSpecTest, WeightsBroadcastIsAutoOnOrOff) {
  for (const char* v : {"auto", "on", "off"}) {
    auto spec = load(std::string(kMinimal) + "weights_broadcast: " + v + "\n");
    ASSERT_TRUE(spec.is_ok()) << spec.status().message();
    EXPECT_STREQ(weights_broadcast_name(spec->weights_broadcast), v);
  }
  std::string m = error_of(std::string(kMinimal) + "weights_broadcast: yes\n");
  EXPECT_HAS(m, "job.yaml:5:20: weights_broadcast: unknown value \"yes\"; use one of: auto | on | off");
}

TEST_F(JobSpecTest, AMapOrListWhereANameGoesSaysWhatTheKeyTakes) {
  EXPECT_HAS(error_of(std::string(kMinimal) + "dtype: {fp16: 1}\n"),
             "job.yaml:5:8: dtype: expected one of fp16 | bf16 | fp32, got a map");
  EXPECT_HAS(error_of(std::string(kMinimal) + "decoder: [full]\n"),
             "job.yaml:5:10: decoder: expected one of auto | full | tiny, got a list");
}

// ---- scheduler: a sampler name, or a map of a name and options

TEST_F(JobSpecTest, SchedulerNamesEverySampler) {
  for (const auto& info : sampler_table()) {
    auto spec = load(std::string(kMinimal) + "scheduler: " + info.id + "\n");
    ASSERT_TRUE(spec.is_ok()) << info.id << ": " << spec.status().message();
    EXPECT_EQ(spec->scheduler.name, info.name);
    EXPECT_TRUE(spec->scheduler.options_set().empty());
  }
  auto null_value = load(std::string(kMinimal) + "scheduler:\n");  // null means default
  ASSERT_TRUE(null_value.is_ok()) << null_value.status().message();
  EXPECT_TRUE(null_value->scheduler.empty());
}

TEST_F(JobSpecTest, SchedulerMapSetsOptionsKeyByKey) {
  auto spec =
      load(std::string(kMinimal) +
           "scheduler: {name: dpmpp_2m, sigmas: karras, timestep_spacing: trailing, final_sigmas_type: "
           "zero, lower_order_final: true, euler_at_final: false}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  const SamplerChoice& c = spec->scheduler;
  EXPECT_EQ(c.name, SamplerName::kDpmpp2m);
  EXPECT_EQ(c.sigmas, SigmaSchedule::kKarras);
  EXPECT_EQ(c.timestep_spacing, TimestepSpacing::kTrailing);
  EXPECT_EQ(c.final_sigmas_type, FinalSigmas::kZero);
  EXPECT_EQ(c.lower_order_final, true);
  EXPECT_EQ(c.euler_at_final, false);
  // Without a name: options over the model folder's own scheduler (checked against its class at load).
  auto no_name =
      load(std::string(kMinimal) + "scheduler:\n  sigmas: exponential\n  timestep_spacing: leading\n");
  ASSERT_TRUE(no_name.is_ok()) << no_name.status().message();
  EXPECT_FALSE(no_name->scheduler.name.has_value());
  EXPECT_EQ(no_name->scheduler.sigmas, SigmaSchedule::kExponential);
  EXPECT_EQ(no_name->scheduler.timestep_spacing, TimestepSpacing::kLeading);
  EXPECT_FALSE(no_name->scheduler.final_sigmas_type.has_value());
  // Null values keep the folder's value; a name-only map is the string form.
  auto nulls = load(std::string(kMinimal) + "scheduler: {name: unipc, sigmas: ~, lower_order_final: }\n");
  ASSERT_TRUE(nulls.is_ok()) << nulls.status().message();
  EXPECT_EQ(nulls->scheduler.name, SamplerName::kUniPC);
  EXPECT_TRUE(nulls->scheduler.options_set().empty());
  auto map_name = load(std::string(kMinimal) + "scheduler: {name: euler_a}\n");
  auto str_name = load(std::string(kMinimal) + "scheduler: euler_a\n");
  ASSERT_TRUE(map_name.is_ok() && str_name.is_ok());
  EXPECT_EQ(map_name->scheduler, str_name->scheduler);
  EXPECT_EQ(map_name->to_canonical_json(), str_name->to_canonical_json());
  // sigmas: default switches the folder's Karras (or other) sigmas off.
  auto plain = load(std::string(kMinimal) + "scheduler: {name: euler, sigmas: default}\n");
  ASSERT_TRUE(plain.is_ok()) << plain.status().message();
  EXPECT_EQ(plain->scheduler.sigmas, SigmaSchedule::kDefault);
}

TEST_F(JobSpecTest, UnknownSamplerListsOursWithTheOtherToolsNames) {
  std::string m = error_of(std::string(kMinimal) + "scheduler: eulr\n");
  EXPECT_HAS(m, "job.yaml:5:12: scheduler: unknown sampler \"eulr\" (did you mean \"euler\"?); use one of: ");
  EXPECT_HAS(m, "euler (A1111 \"Euler\", ComfyUI euler)");
  EXPECT_HAS(m, "euler_a (A1111 \"Euler a\", ComfyUI euler_ancestral)");
  EXPECT_HAS(m, "dpmpp_2m (A1111 \"DPM++ 2M\", ComfyUI dpmpp_2m)");
  EXPECT_HAS(m, "dpmpp_2m_sde (A1111 \"DPM++ 2M SDE\", ComfyUI dpmpp_2m_sde)");
  EXPECT_HAS(m, "ddim (A1111 \"DDIM\", ComfyUI ddim)");
  EXPECT_HAS(m, "unipc (A1111 \"UniPC\", ComfyUI uni_pc)");
  EXPECT_HAS(m, "A1111's \"Karras\" schedule is the option sigmas: karras");
  // Another tool's name gets the job-file spelling.
  m = error_of(std::string(kMinimal) + "scheduler: DPM++ 2M Karras\n");
  EXPECT_HAS(m,
             "scheduler: unknown sampler \"DPM++ 2M Karras\", another tool's name for scheduler: {name: "
             "dpmpp_2m, sigmas: karras}");
  m = error_of(std::string(kMinimal) + "scheduler: euler_ancestral\n");
  EXPECT_HAS(m, "another tool's name for scheduler: euler_a;");
  m = error_of(std::string(kMinimal) + "scheduler: {name: uni_pc}\n");
  EXPECT_HAS(
      m,
      "job.yaml:5:19: scheduler.name: unknown sampler \"uni_pc\", another tool's name for scheduler: unipc");
  m = error_of(std::string(kMinimal) + "scheduler: [euler]\n");
  EXPECT_HAS(m,
             "job.yaml:5:12: scheduler: expected a sampler name or a map, got a list; write e.g. scheduler: "
             "dpmpp_2m or scheduler: {name: dpmpp_2m, sigmas: karras}");
}

TEST_F(JobSpecTest, SchedulerMapErrors) {
  // An unknown key, with the nearest one.
  std::string m = error_of(std::string(kMinimal) + "scheduler: {name: euler, sigma: karras}\n");
  EXPECT_HAS(m, "job.yaml:5:26: unknown key \"sigma\"; did you mean \"sigmas\"? (in scheduler)");
  // An option the named sampler does not have in diffusers, with what it accepts and who has it.
  m = error_of(std::string(kMinimal) + "scheduler: {name: euler_a, sigmas: karras}\n");
  EXPECT_HAS(m,
             "job.yaml:5:28: scheduler.sigmas: euler_a does not accept sigmas (diffusers' "
             "EulerAncestralDiscreteScheduler has no such option); euler_a accepts: timestep_spacing. Remove "
             "it, or choose a sampler that accepts it: euler, dpmpp_2m, dpmpp_2m_sde, unipc");
  m = error_of(std::string(kMinimal) +
               "scheduler: {name: ddim, final_sigmas_type: zero, euler_at_final: true}\n");
  EXPECT_HAS(m, "scheduler.final_sigmas_type: ddim does not accept final_sigmas_type");
  EXPECT_HAS(m, "scheduler.euler_at_final: ddim does not accept euler_at_final");
  EXPECT_HAS(m,
             "euler_at_final (diffusers' DDIMScheduler has no such option); ddim accepts: timestep_spacing. "
             "Remove it, or choose a sampler that accepts it: dpmpp_2m, dpmpp_2m_sde");
  m = error_of(std::string(kMinimal) + "scheduler: {name: unipc, euler_at_final: true}\n");
  EXPECT_HAS(m, "unipc accepts: sigmas, timestep_spacing, final_sigmas_type, lower_order_final.");
  m = error_of(std::string(kMinimal) + "scheduler: {name: euler, lower_order_final: false}\n");
  EXPECT_HAS(m, "euler accepts: sigmas, timestep_spacing, final_sigmas_type.");
  // Bad values.
  m = error_of(std::string(kMinimal) + "scheduler: {sigmas: karas}\n");
  EXPECT_HAS(m,
             "job.yaml:5:21: scheduler.sigmas: unknown value \"karas\"; use one of: default | karras | "
             "exponential | beta (did you mean \"karras\"?)");
  m = error_of(std::string(kMinimal) + "scheduler: {timestep_spacing: trailng}\n");
  EXPECT_HAS(m,
             "scheduler.timestep_spacing: unknown value \"trailng\"; use one of: linspace | leading | "
             "trailing (did you mean \"trailing\"?)");
  m = error_of(std::string(kMinimal) + "scheduler: {final_sigmas_type: min}\n");
  EXPECT_HAS(m, "scheduler.final_sigmas_type: unknown value \"min\"; use one of: zero | sigma_min");
  m = error_of(std::string(kMinimal) + "scheduler: {lower_order_final: maybe}\n");
  EXPECT_HAS(m, "scheduler.lower_order_final: expected true or false, got \"maybe\"");
  m = error_of(std::string(kMinimal) + "scheduler: {name: [euler]}\n");
  EXPECT_HAS(m, "scheduler.name: expected a string, got a list");
}

TEST_F(JobSpecTest, SchedulerInTheIdentity) {
  auto canonical = [&](const std::string& extra) {
    auto s = load(std::string(kMinimal) + extra);
    EXPECT_TRUE(s.is_ok()) << extra << s.status().message();
    return s.is_ok() ? s->to_canonical_json() : std::string();
  };
  auto id_of = [&](const std::string& extra) {
    auto s = load(std::string(kMinimal) + extra);
    EXPECT_TRUE(s.is_ok()) << extra << s.status().message();
    return s.is_ok() ? s->identity("model-1") : std::string();
  };
  // Unset: null (the model folder's scheduler, which the model identity covers); a name alone: the string,
  // as when Euler was the only sampler; options: a map of what is set.
  EXPECT_HAS(canonical(""), "\"scheduler\":null");
  EXPECT_HAS(canonical("scheduler: euler\n"), "\"scheduler\":\"euler\"");
  EXPECT_HAS(canonical("scheduler: {sigmas: karras}\n"), "\"scheduler\":{\"sigmas\":\"karras\"}");
  EXPECT_HAS(
      canonical("scheduler: {name: unipc, lower_order_final: false, timestep_spacing: trailing}\n"),
      "\"scheduler\":{\"lower_order_final\":false,\"name\":\"unipc\",\"timestep_spacing\":\"trailing\"}");
  const std::string folder = id_of(""), euler = id_of("scheduler: euler\n");
  EXPECT_NE(folder, euler);
  EXPECT_NE(euler, id_of("scheduler: euler_a\n"));
  EXPECT_NE(id_of("scheduler: dpmpp_2m\n"), id_of("scheduler: dpmpp_2m_sde\n"));
  EXPECT_NE(id_of("scheduler: dpmpp_2m\n"), id_of("scheduler: {name: dpmpp_2m, sigmas: karras}\n"));
  EXPECT_NE(id_of("scheduler: {sigmas: karras}\n"), folder);
  EXPECT_EQ(euler, id_of("scheduler: {name: euler}\n"));
}

// ---- approximations (issue 14): token_merging, token_downsampling, deep_cache

TEST_F(JobSpecTest, ApproximationsAreOffByDefault) {
  auto spec = load(kMinimal);
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_TRUE(spec->approximations.empty());
  EXPECT_FALSE(spec->approximations.token_merging.has_value());
  EXPECT_FALSE(spec->approximations.token_downsampling.has_value());
  EXPECT_FALSE(spec->approximations.deep_cache.has_value());
  EXPECT_EQ(spec->approximations.to_json(), "{}");
  EXPECT_EQ(spec->approximations.describe(), "exact (no approximation)");
}

TEST_F(JobSpecTest, EmptyApproximationMapsMeanEveryDefault) {
  auto spec = load(std::string(kMinimal) + "token_merging: {}\ndeep_cache: {}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  const Approximations& a = spec->approximations;
  EXPECT_FALSE(a.empty());
  ASSERT_TRUE(a.token_merging.has_value());
  EXPECT_DOUBLE_EQ(a.token_merging->ratio, 0.5);
  EXPECT_EQ(a.token_merging->max_downsample, 2);  // not tomesd's 1, which merges nothing on SDXL
  EXPECT_EQ(a.token_merging->sx, 2);
  EXPECT_EQ(a.token_merging->sy, 2);
  EXPECT_TRUE(a.token_merging->use_rand);
  EXPECT_TRUE(a.token_merging->merge_attn);
  EXPECT_FALSE(a.token_merging->merge_crossattn);
  EXPECT_FALSE(a.token_merging->merge_mlp);
  EXPECT_FALSE(a.token_downsampling.has_value());
  ASSERT_TRUE(a.deep_cache.has_value());
  EXPECT_EQ(a.deep_cache->cache_interval, 3);
  EXPECT_EQ(a.deep_cache->cache_branch_id, 0);

  spec = load(std::string(kMinimal) + "token_downsampling: {}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  ASSERT_TRUE(spec->approximations.token_downsampling.has_value());
  EXPECT_EQ(spec->approximations.token_downsampling->factor, 2);
  EXPECT_EQ(spec->approximations.token_downsampling->max_downsample, 2);
  EXPECT_EQ(spec->approximations.token_downsampling->method, TokenDownsampling::Method::kNearest);
  EXPECT_FALSE(spec->approximations.token_merging.has_value());
  EXPECT_FALSE(spec->approximations.deep_cache.has_value());

  // A setting with no value keeps its default, as everywhere in the job file.
  spec = load(std::string(kMinimal) + "deep_cache: {cache_interval: ~, cache_branch_id: }\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_EQ(spec->approximations.deep_cache->cache_interval, 3);
  EXPECT_EQ(spec->approximations.deep_cache->cache_branch_id, 0);
}

TEST_F(JobSpecTest, EveryApproximationKeyIsRead) {
  auto spec = load(std::string(kMinimal) + R"(token_merging:
  ratio: 0.3
  max_downsample: 4
  sx: 3
  sy: 1
  use_rand: false
  merge_attn: false
  merge_crossattn: true
  merge_mlp: true
deep_cache: {cache_interval: 5, cache_branch_id: 2}
)");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  const TokenMerging& t = *spec->approximations.token_merging;
  EXPECT_DOUBLE_EQ(t.ratio, 0.3);
  EXPECT_EQ(t.max_downsample, 4);
  EXPECT_EQ(t.sx, 3);
  EXPECT_EQ(t.sy, 1);
  EXPECT_FALSE(t.use_rand);
  EXPECT_FALSE(t.merge_attn);
  EXPECT_TRUE(t.merge_crossattn);
  EXPECT_TRUE(t.merge_mlp);
  EXPECT_EQ(spec->approximations.deep_cache->cache_interval, 5);
  EXPECT_EQ(spec->approximations.deep_cache->cache_branch_id, 2);
  EXPECT_EQ(spec->approximations.describe(),
            "ToMe ratio 0.3 (max_downsample 4, sx 3, sy 1, use_rand false, merge_attn false, merge_crossattn "
            "true, merge_mlp true); DeepCache interval 5 (cache_branch_id 2)");

  spec =
      load(std::string(kMinimal) + "token_downsampling: {factor: 4, max_downsample: 8, method: average}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  const TokenDownsampling& d = *spec->approximations.token_downsampling;
  EXPECT_EQ(d.factor, 4);
  EXPECT_EQ(d.max_downsample, 8);
  EXPECT_EQ(d.method, TokenDownsampling::Method::kAverage);
  EXPECT_EQ(spec->approximations.describe(), "ToDo factor 4 (max_downsample 8, method average)");

  // Every valid value of the enumerated settings, and the range ends.
  for (const char* v : {"1", "2", "4", "8"}) {
    spec = load(std::string(kMinimal) + "token_merging: {max_downsample: " + v + "}\n");
    ASSERT_TRUE(spec.is_ok()) << v << spec.status().message();
    EXPECT_EQ(spec->approximations.token_merging->max_downsample, std::stoll(v));
    spec = load(std::string(kMinimal) + "token_downsampling: {max_downsample: " + v + "}\n");
    ASSERT_TRUE(spec.is_ok()) << v << spec.status().message();
    EXPECT_EQ(spec->approximations.token_downsampling->max_downsample, std::stoll(v));
  }
  spec = load(std::string(kMinimal) + "token_merging: {ratio: 0}\ndeep_cache: {cache_interval: 1}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_EQ(spec->approximations.token_merging->ratio, 0.0);
  EXPECT_EQ(spec->approximations.deep_cache->cache_interval, 1);
  spec = load(std::string(kMinimal) + "token_merging: {ratio: 0.99}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_DOUBLE_EQ(spec->approximations.token_merging->ratio, 0.99);
  spec = load(std::string(kMinimal) + "token_downsampling: {method: nearest}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_EQ(spec->approximations.token_downsampling->method, TokenDownsampling::Method::kNearest);
}

TEST_F(JobSpecTest, DeepCacheRecordsWhereItsBranchIdIsWritten) {
  const std::string file = dir_.file("job.yaml");
  // The value's own place when the id is written ...
  auto spec = load(std::string(kMinimal) + "deep_cache:\n  cache_interval: 2\n  cache_branch_id: 7\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_EQ(spec->approximations.deep_cache->where, file + ":7:20");
  spec = load(std::string(kMinimal) + "steps: 20\ndeep_cache: {cache_branch_id: 4}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_EQ(spec->approximations.deep_cache->where, file + ":6:31");
  // ... else the deep_cache key's.
  spec = load(std::string(kMinimal) + "steps: 20\ndeep_cache: {cache_interval: 4}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_EQ(spec->approximations.deep_cache->where, file + ":6:1");
  spec = load(std::string(kMinimal) + "deep_cache: {cache_branch_id: ~}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().message();
  EXPECT_EQ(spec->approximations.deep_cache->where, file + ":5:1");
  // Parsed from text: the name given, as in the error messages.
  auto parsed = JobSpec::parse(std::string(kMinimal) + "deep_cache: {}\n", "", dir_.path(),
                               JobLoadOptions{/*check_paths=*/false});
  ASSERT_TRUE(parsed.is_ok()) << parsed.status().message();
  EXPECT_EQ(parsed->approximations.deep_cache->where, "<job>:5:1");
}

// unet_precision (issue 17): fp16 (the default, the job's dtype) or fp8; fp8 is part of the identity and the
// items' metadata as the other approximations are, fp16 changes nothing.
TEST_F(JobSpecTest, UNetPrecision) {
  auto minimal = load(kMinimal);
  ASSERT_TRUE(minimal.is_ok()) << minimal.status().message();
  auto fp16 = load(std::string(kMinimal) + "unet_precision: fp16\n");
  ASSERT_TRUE(fp16.is_ok()) << fp16.status().message();
  EXPECT_TRUE(fp16->approximations.empty());
  EXPECT_EQ(fp16->identity("m"), minimal->identity("m"));
  auto fp8 = load(std::string(kMinimal) + "unet_precision: fp8\n");
  ASSERT_TRUE(fp8.is_ok()) << fp8.status().message();
  EXPECT_EQ(fp8->approximations.unet_precision, UNetPrecision::kFp8);
  EXPECT_FALSE(fp8->approximations.empty());
  EXPECT_EQ(fp8->approximations.to_json(), "{\"unet_precision\":\"fp8\"}");
  EXPECT_NE(fp8->identity("m"), minimal->identity("m"));
  EXPECT_HAS(fp8->approximations.describe(), "FP8 UNet");
  const std::string m = error_of(std::string(kMinimal) + "unet_precision: int8\n");
  EXPECT_HAS(m, "job.yaml:5:17: unet_precision");
  EXPECT_HAS(m, "fp16");
  EXPECT_HAS(m, "fp8");
}

// images_per_unet_call: 1 (the default) to 64 images per UNet call; not 1 is part of the identity (the
// kernels' rounding follows the call's shape), 1 leaves it as before the key; refused with token_merging.
TEST_F(JobSpecTest, ImagesPerUNetCall) {
  auto minimal = load(kMinimal);
  ASSERT_TRUE(minimal.is_ok()) << minimal.status().message();
  EXPECT_EQ(minimal->images_per_unet_call, 1);
  auto one = load(std::string(kMinimal) + "images_per_unet_call: 1\n");
  ASSERT_TRUE(one.is_ok()) << one.status().message();
  EXPECT_EQ(one->identity("m"), minimal->identity("m"));
  auto four = load(std::string(kMinimal) + "images_per_unet_call: 4\n");
  ASSERT_TRUE(four.is_ok()) << four.status().message();
  EXPECT_EQ(four->images_per_unet_call, 4);
  EXPECT_NE(four->identity("m"), minimal->identity("m"));
  EXPECT_HAS(four->to_canonical_json(), "\"images_per_unet_call\":4");
  auto downsampling =
      load(std::string(kMinimal) + "images_per_unet_call: 2\ntoken_downsampling: {factor: 2}\n");
  EXPECT_TRUE(downsampling.is_ok()) << downsampling.status().message();
  EXPECT_HAS(error_of(std::string(kMinimal) + "images_per_unet_call: 0\n"),
             "job.yaml:5:23: images_per_unet_call: 0 is out of range; use an integer from 1 to 64");
  EXPECT_HAS(error_of(std::string(kMinimal) + "images_per_unet_call: 65\n"), "images_per_unet_call");
  const std::string tome =
      error_of(std::string(kMinimal) + "images_per_unet_call: 2\ntoken_merging: {ratio: 0.5}\n");
  EXPECT_HAS(tome,
             "job.yaml:5:23: images_per_unet_call: is 2, but token_merging draws its random destinations");
  EXPECT_HAS(tome, "token_downsampling works with both");
}

// attention_precision (issue 17): fp8 needs unet_precision: fp8, is part of the identity when set, and the
// error for it alone names the key's line and the way out.
TEST_F(JobSpecTest, AttentionPrecision) {
  auto linears = load(std::string(kMinimal) + "unet_precision: fp8\n");
  ASSERT_TRUE(linears.is_ok()) << linears.status().message();
  auto both = load(std::string(kMinimal) + "unet_precision: fp8\nattention_precision: fp8\n");
  ASSERT_TRUE(both.is_ok()) << both.status().message();
  EXPECT_EQ(both->approximations.attention_precision, AttentionPrecision::kFp8);
  EXPECT_EQ(both->approximations.to_json(), "{\"attention_precision\":\"fp8\",\"unet_precision\":\"fp8\"}");
  EXPECT_NE(both->identity("m"), linears->identity("m"));
  EXPECT_HAS(both->approximations.describe(), "FP8 self-attention");
  auto fp16 = load(std::string(kMinimal) + "unet_precision: fp8\nattention_precision: fp16\n");
  ASSERT_TRUE(fp16.is_ok()) << fp16.status().message();
  EXPECT_EQ(fp16->identity("m"), linears->identity("m"));
  const std::string alone = error_of(std::string(kMinimal) + "attention_precision: fp8\n");
  EXPECT_HAS(alone, "job.yaml:5:22: attention_precision");
  EXPECT_HAS(alone, "needs unet_precision: fp8");
  const std::string bad =
      error_of(std::string(kMinimal) + "unet_precision: fp8\nattention_precision: int8\n");
  EXPECT_HAS(bad, "attention_precision");
  EXPECT_HAS(bad, "fp16");
}

// convolution_precision (issue 17): the same rules as attention_precision.
TEST_F(JobSpecTest, ConvolutionPrecision) {
  auto linears = load(std::string(kMinimal) + "unet_precision: fp8\n");
  ASSERT_TRUE(linears.is_ok()) << linears.status().message();
  auto both = load(std::string(kMinimal) + "unet_precision: fp8\nconvolution_precision: fp8\n");
  ASSERT_TRUE(both.is_ok()) << both.status().message();
  EXPECT_EQ(both->approximations.convolution_precision, ConvolutionPrecision::kFp8);
  EXPECT_EQ(both->approximations.to_json(), "{\"convolution_precision\":\"fp8\",\"unet_precision\":\"fp8\"}");
  EXPECT_NE(both->identity("m"), linears->identity("m"));
  EXPECT_HAS(both->approximations.describe(), "FP8 3x3 convolutions");
  auto fp16 = load(std::string(kMinimal) + "unet_precision: fp8\nconvolution_precision: fp16\n");
  ASSERT_TRUE(fp16.is_ok()) << fp16.status().message();
  EXPECT_EQ(fp16->identity("m"), linears->identity("m"));
  const std::string alone = error_of(std::string(kMinimal) + "convolution_precision: fp8\n");
  EXPECT_HAS(alone, "job.yaml:5:24: convolution_precision");
  EXPECT_HAS(alone, "needs unet_precision: fp8");
  const std::string bad =
      error_of(std::string(kMinimal) + "unet_precision: fp8\nconvolution_precision: int8\n");
  EXPECT_HAS(bad, "convolution_precision");
  EXPECT_HAS(bad, "fp16");
}

TEST_F(JobSpecTest, TokenMergingRatioOutOfRange) {
  std::string m = error_of(std::string(kMinimal) + "token_merging: {ratio: 1.0}\n");
  EXPECT_HAS(m,
             "job.yaml:5:24: token_merging.ratio: 1.0 is out of range; use a number >= 0 and < 1, the "
             "fraction of tokens merged (e.g. 0.5");
  m = error_of(std::string(kMinimal) + "token_merging:\n  ratio: 1.5\n");
  EXPECT_HAS(m, "job.yaml:6:10: token_merging.ratio: 1.5 is out of range; use a number >= 0 and < 1");
  m = error_of(std::string(kMinimal) + "token_merging: {ratio: -0.1}\n");
  EXPECT_HAS(m, "job.yaml:5:24: token_merging.ratio: -0.1 is out of range; use a number >= 0 and < 1");
  // Not a number: NaN and infinity (both spellings), text, quoted.
  for (const char* v : {"nan", ".nan", "inf", ".inf", "half", "\"0.5\""}) {
    m = error_of(std::string(kMinimal) + "token_merging: {ratio: " + v + "}\n");
    EXPECT_HAS(m, "job.yaml:5:24: token_merging.ratio: expected a number, got ");
    EXPECT_HAS(m, "; use a number >= 0 and < 1");
  }
}

TEST_F(JobSpecTest, MaxDownsampleMustBeAPowerOfTwoUpToEight) {
  std::string m = error_of(std::string(kMinimal) + "token_merging: {max_downsample: 3}\n");
  EXPECT_HAS(
      m,
      "job.yaml:5:33: token_merging.max_downsample: 3 is not 1, 2, 4 or 8; use 1, 2, 4 or 8: it applies "
      "in the blocks whose latent is downsampled at most this much");
  EXPECT_HAS(m, "1 changes nothing on SDXL");
  for (const char* v : {"0", "16", "-2"}) {
    m = error_of(std::string(kMinimal) + "token_downsampling: {max_downsample: " + v + "}\n");
    EXPECT_HAS(m, std::string("job.yaml:5:38: token_downsampling.max_downsample: ") + v +
                      " is not 1, 2, 4 or 8; use 1, 2, 4 or 8");
  }
  m = error_of(std::string(kMinimal) + "token_merging: {max_downsample: 2.5}\n");
  EXPECT_HAS(m, "job.yaml:5:33: token_merging.max_downsample: expected an integer, got \"2.5\"");
}

TEST_F(JobSpecTest, TokenMergingStridesAndSwitches) {
  std::string m = error_of(std::string(kMinimal) + "token_merging: {sx: 0}\n");
  EXPECT_HAS(m, "job.yaml:5:21: token_merging.sx: 0 is out of range; use an integer >= 1");
  m = error_of(std::string(kMinimal) + "token_merging: {sx: 2, sy: -1}\n");
  EXPECT_HAS(m, "job.yaml:5:28: token_merging.sy: -1 is out of range; use an integer >= 1");
  m = error_of(std::string(kMinimal) + "token_merging: {merge_mlp: maybe}\n");
  EXPECT_HAS(m, "job.yaml:5:28: token_merging.merge_mlp: expected true or false, got \"maybe\"");
  m = error_of(std::string(kMinimal) + "token_merging: {use_rand: 1}\n");
  EXPECT_HAS(m, "token_merging.use_rand: expected true or false");
}

TEST_F(JobSpecTest, TokenDownsamplingFactorAndMethod) {
  std::string m = error_of(std::string(kMinimal) + "token_downsampling: {factor: 3}\n");
  EXPECT_HAS(m,
             "job.yaml:5:30: token_downsampling.factor: 3 is not 2 or 4; use 2 (keys and values from a grid "
             "halved in each direction: 4x fewer) or 4 (16x fewer)");
  for (const char* v : {"1", "8", "0"}) {
    m = error_of(std::string(kMinimal) + "token_downsampling: {factor: " + v + "}\n");
    EXPECT_HAS(m, std::string("token_downsampling.factor: ") + v + " is not 2 or 4");
  }
  m = error_of(std::string(kMinimal) + "token_downsampling: {method: bilinear}\n");
  EXPECT_HAS(m,
             "job.yaml:5:30: token_downsampling.method: unknown value \"bilinear\"; use one of: nearest | "
             "average");
  m = error_of(std::string(kMinimal) + "token_downsampling: {method: averge}\n");
  EXPECT_HAS(m, "use one of: nearest | average (did you mean \"average\"?)");
}

TEST_F(JobSpecTest, DeepCacheIntervalAndBranch) {
  std::string m = error_of(std::string(kMinimal) + "deep_cache: {cache_interval: 0}\n");
  EXPECT_HAS(m,
             "job.yaml:5:30: deep_cache.cache_interval: 0 is out of range; use an integer >= 1: a full UNet "
             "step every cache_interval steps");
  m = error_of(std::string(kMinimal) + "deep_cache:\n  cache_interval: -3\n");
  EXPECT_HAS(m, "job.yaml:6:19: deep_cache.cache_interval: -3 is out of range; use an integer >= 1");
  m = error_of(std::string(kMinimal) + "deep_cache: {cache_branch_id: -1}\n");
  EXPECT_HAS(
      m,
      "job.yaml:5:31: deep_cache.cache_branch_id: -1 is out of range; use an integer >= 0, DeepCache's "
      "skip branch");
  m = error_of(std::string(kMinimal) + "deep_cache: {cache_interval: two}\n");
  EXPECT_HAS(m, "job.yaml:5:30: deep_cache.cache_interval: expected an integer, got \"two\"");
}

TEST_F(JobSpecTest, UnknownApproximationSettingIsNamed) {
  std::string m = error_of(std::string(kMinimal) + "token_merging: {ratio: 0.5, colour: red}\n");
  EXPECT_HAS(
      m,
      "job.yaml:5:29: unknown key \"colour\"; valid keys are: ratio, max_downsample, sx, sy, use_rand, "
      "merge_attn, merge_crossattn, merge_mlp (in token_merging)");
  m = error_of(std::string(kMinimal) + "deep_cache:\n  interval: 3\n");
  EXPECT_HAS(m,
             "job.yaml:6:3: unknown key \"interval\"; valid keys are: cache_interval, cache_branch_id (in "
             "deep_cache)");
  m = error_of(std::string(kMinimal) + "token_downsampling: {downsample: 2}\n");
  EXPECT_HAS(m,
             "job.yaml:5:22: unknown key \"downsample\"; valid keys are: factor, max_downsample, method (in "
             "token_downsampling)");
  // A near miss gets the nearest key, as everywhere in the job file.
  m = error_of(std::string(kMinimal) + "token_downsampling: {factr: 2}\n");
  EXPECT_HAS(m, "job.yaml:5:22: unknown key \"factr\"; did you mean \"factor\"? (in token_downsampling)");
  // And a misspelt top-level key.
  m = error_of(std::string(kMinimal) + "deepcache: {}\n");
  EXPECT_HAS(m, "job.yaml:5:1: unknown key \"deepcache\"; did you mean \"deep_cache\"?");
}

TEST_F(JobSpecTest, ApproximationValueMustBeAMap) {
  std::string m = error_of(std::string(kMinimal) + "token_merging: 0.5\n");
  EXPECT_HAS(m,
             "job.yaml:5:16: token_merging: expected a map of settings, got \"0.5\"; write token_merging: {} "
             "for the defaults, or e.g. token_merging: {ratio: 0.5}, or remove the key to render without it");
  m = error_of(std::string(kMinimal) + "token_downsampling: [2]\n");
  EXPECT_HAS(m, "job.yaml:5:21: token_downsampling: expected a map of settings, got a list");
  m = error_of(std::string(kMinimal) + "deep_cache: true\n");
  EXPECT_HAS(m, "job.yaml:5:13: deep_cache: expected a map of settings, got \"true\"; write deep_cache: {}");
  // No value is neither "on with the defaults" nor "off": the job says which.
  m = error_of(std::string(kMinimal) + "deep_cache:\nsteps: 20\n");
  EXPECT_HAS(m, "job.yaml:5:1: deep_cache: expected a map of settings, got nothing; write deep_cache: {}");
}

TEST_F(JobSpecTest, TokenMergingAndTokenDownsamplingCannotBeCombined) {
  std::string m = error_of(std::string(kMinimal) + "token_merging: {}\ntoken_downsampling: {}\n");
  EXPECT_HAS(m,
             "job.yaml:6:1: token_downsampling: cannot be combined with token_merging (line 5): both change "
             "self-attention; choose one, token_merging or token_downsampling, and remove the other");
  // Reported at whichever comes second.
  m = error_of(std::string(kMinimal) +
               "token_downsampling: {factor: 4}\nsteps: 9\ntoken_merging: {ratio: 0.4}\n");
  EXPECT_HAS(m, "job.yaml:7:1: token_merging: cannot be combined with token_downsampling (line 5)");
  // Either one with deep_cache is fine.
  for (const char* both :
       {"token_merging: {}\ndeep_cache: {}\n", "deep_cache: {}\ntoken_downsampling: {}\n"}) {
    auto spec = load(std::string(kMinimal) + both);
    EXPECT_TRUE(spec.is_ok()) << both << spec.status().message();
  }
}

TEST_F(JobSpecTest, ApproximationProblemsAreReportedTogether) {
  std::string m =
      error_of(std::string(kMinimal) +
               "token_merging: {ratio: 1.0, sx: 0}\ndeep_cache: {cache_interval: 0, cache_branch_id: "
               "-1}\nsteps: 0\n");
  EXPECT_HAS(m, "job.yaml:5:24: token_merging.ratio: 1.0 is out of range");
  EXPECT_HAS(m, "job.yaml:5:33: token_merging.sx: 0 is out of range");
  EXPECT_HAS(m, "job.yaml:6:30: deep_cache.cache_interval: 0 is out of range");
  EXPECT_HAS(m, "job.yaml:6:50: deep_cache.cache_branch_id: -1 is out of range");
  EXPECT_HAS(m, "job.yaml:7:8: steps: 0 is out of range");
  EXPECT_LT(m.find("token_merging.ratio"), m.find("deep_cache.cache_branch_id"));
}

TEST_F(JobSpecTest, ApproximationsInTheCanonicalJsonAndIdentity) {
  auto canonical = [&](const std::string& extra) {
    auto s = load(std::string(kMinimal) + extra);
    EXPECT_TRUE(s.is_ok()) << extra << s.status().message();
    return s.is_ok() ? s->to_canonical_json() : std::string();
  };
  auto id_of = [&](const std::string& extra) {
    auto s = load(std::string(kMinimal) + extra);
    EXPECT_TRUE(s.is_ok()) << extra << s.status().message();
    return s.is_ok() ? s->identity("model-1") : std::string();
  };
  // Absent without the keys (so the identity is the one of before, pinned in IdentityOfExactJobsIsUnchanged),
  // Approximations::to_json() inside "image" with them.
  EXPECT_EQ(canonical("").find("approximations"), std::string::npos);
  EXPECT_HAS(canonical("deep_cache: {}\n"),
             "\"approximations\":{\"deep_cache\":{\"cache_branch_id\":0,\"cache_interval\":3}}");
  EXPECT_HAS(canonical("deep_cache: {}\n"), "\"image\":{\"approximations\":{");
  EXPECT_HAS(
      canonical("token_merging: {ratio: 0.25}\n"),
      "\"approximations\":{\"token_merging\":{\"max_downsample\":2,\"merge_attn\":true,\"merge_crossattn\":"
      "false,\"merge_mlp\":false,\"ratio\":0.25,\"sx\":2,\"sy\":2,\"use_rand\":true}}");

  const std::string exact = id_of("");
  const std::string tome = id_of("token_merging: {}\n"), todo = id_of("token_downsampling: {}\n"),
                    deep = id_of("deep_cache: {}\n");
  EXPECT_NE(exact, tome);
  EXPECT_NE(exact, todo);
  EXPECT_NE(exact, deep);
  EXPECT_NE(tome, todo);
  EXPECT_NE(tome, deep);
  EXPECT_NE(todo, deep);
  EXPECT_NE(deep, id_of("deep_cache: {}\ntoken_merging: {}\n"));
  EXPECT_NE(tome, id_of("deep_cache: {}\ntoken_merging: {}\n"));
  // Every setting counts.
  for (const char* changed :
       {"token_merging: {ratio: 0.4}\n", "token_merging: {ratio: 0}\n",
        "token_merging: {max_downsample: 4}\n", "token_merging: {sx: 4}\n", "token_merging: {sy: 1}\n",
        "token_merging: {use_rand: false}\n", "token_merging: {merge_attn: false}\n",
        "token_merging: {merge_crossattn: true}\n", "token_merging: {merge_mlp: true}\n"}) {
    EXPECT_NE(tome, id_of(changed)) << changed;
  }
  EXPECT_NE(id_of("token_merging: {sx: 1, sy: 2}\n"), id_of("token_merging: {sx: 2, sy: 1}\n"));
  for (const char* changed :
       {"token_downsampling: {factor: 4}\n", "token_downsampling: {max_downsample: 4}\n",
        "token_downsampling: {method: average}\n"}) {
    EXPECT_NE(todo, id_of(changed)) << changed;
  }
  EXPECT_NE(deep, id_of("deep_cache: {cache_interval: 2}\n"));
  EXPECT_NE(deep, id_of("deep_cache: {cache_branch_id: 1}\n"));
  EXPECT_NE(id_of("deep_cache: {cache_interval: 2, cache_branch_id: 1}\n"),
            id_of("deep_cache: {cache_interval: 1, cache_branch_id: 2}\n"));
  // Explicit defaults, another spelling of the same number, and where the keys are written do not.
  EXPECT_EQ(tome,
            id_of("token_merging: {ratio: 0.5, max_downsample: 2, sx: 2, sy: 2, use_rand: true, merge_attn: "
                  "true, merge_crossattn: false, merge_mlp: false}\n"));
  EXPECT_EQ(tome, id_of("token_merging: {ratio: 0.50}\n"));
  EXPECT_EQ(tome, id_of("token_merging:\n  ratio: 5e-1\n"));
  EXPECT_EQ(todo, id_of("token_downsampling: {factor: 2, max_downsample: 2, method: nearest}\n"));
  EXPECT_EQ(deep, id_of("deep_cache: {cache_interval: 3, cache_branch_id: 0}\n"));
  EXPECT_EQ(id_of("deep_cache: {cache_branch_id: 1}\n"),
            id_of("steps: 30\n\ndeep_cache:\n  cache_branch_id: 1\n"));
  // A run setting is still not part of it.
  EXPECT_EQ(deep, id_of("deep_cache: {}\nbatch_size: 3\n"));
}

TEST(Approximations, ToJsonIsCompactSortedAndComplete) {
  Approximations a;
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(a.to_json(), "{}");
  a.deep_cache.emplace();
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a.to_json(), R"({"deep_cache":{"cache_branch_id":0,"cache_interval":3}})");
  a.deep_cache->where = "job.yaml:9:9";  // not part of the JSON
  EXPECT_EQ(a.to_json(), R"({"deep_cache":{"cache_branch_id":0,"cache_interval":3}})");
  a.token_merging.emplace();
  EXPECT_EQ(a.to_json(),
            R"({"deep_cache":{"cache_branch_id":0,"cache_interval":3},"token_merging":{"max_downsample":2,)"
            R"("merge_attn":true,"merge_crossattn":false,"merge_mlp":false,"ratio":0.5,"sx":2,"sy":2,)"
            R"("use_rand":true}})");
  Approximations b;
  b.token_downsampling.emplace();
  b.token_downsampling->method = TokenDownsampling::Method::kAverage;
  b.token_downsampling->factor = 4;
  EXPECT_EQ(b.to_json(), R"({"token_downsampling":{"factor":4,"max_downsample":2,"method":"average"}})");
  // Numbers read back as written: the shortest text of the double.
  Approximations c;
  c.token_merging.emplace();
  for (const auto& [ratio, text] :
       std::vector<std::pair<double, std::string>>{{0.3, "0.3"},
                                                   {0.0, "0.0"},
                                                   {0.1 + 0.2, "0.30000000000000004"},
                                                   {0.125, "0.125"},
                                                   {1e-7, "1e-07"}}) {
    c.token_merging->ratio = ratio;
    EXPECT_HAS(c.to_json(), "\"ratio\":" + text + ",");
  }
}

TEST(Approximations, DescribeAndEquality) {
  Approximations a;
  EXPECT_EQ(a.describe(), "exact (no approximation)");
  a.token_merging.emplace();
  EXPECT_EQ(a.describe(),
            "ToMe ratio 0.5 (max_downsample 2, sx 2, sy 2, use_rand true, merge_attn true, merge_crossattn "
            "false, merge_mlp false)");
  a.token_merging.reset();
  a.token_downsampling.emplace();
  EXPECT_EQ(a.describe(), "ToDo factor 2 (max_downsample 2, method nearest)");
  a.deep_cache.emplace();
  EXPECT_EQ(a.describe(),
            "ToDo factor 2 (max_downsample 2, method nearest); DeepCache interval 3 (cache_branch_id 0)");
  EXPECT_STREQ(todo_method_name(TokenDownsampling::Method::kNearest), "nearest");
  EXPECT_STREQ(todo_method_name(TokenDownsampling::Method::kAverage), "average");

  Approximations b = a;
  b.deep_cache->where = "elsewhere:1:1";  // where it was written is not a setting
  EXPECT_EQ(a, b);
  b.deep_cache->cache_branch_id = 1;
  EXPECT_NE(a, b);
  b = a;
  b.token_downsampling->method = TokenDownsampling::Method::kAverage;
  EXPECT_NE(a, b);
  b = a;
  b.token_merging.emplace();
  EXPECT_NE(a, b);
  TokenMerging t1, t2;
  EXPECT_EQ(t1, t2);
  t2.merge_crossattn = true;
  EXPECT_NE(t1, t2);
  t2 = t1;
  t2.ratio = 0.25;
  EXPECT_NE(t1, t2);
  EXPECT_EQ(Approximations{}, Approximations{});
}

TEST_F(JobSpecTest, BadBatchSize) {
  std::string m = error_of(std::string(kMinimal) + "batch_size: 0\n");
  EXPECT_HAS(m, "job.yaml:5:13: batch_size: 0 is out of range; use \"auto\" or an integer from 1 to 4096");
  m = error_of(std::string(kMinimal) + "batch_size: automatic\n");
  EXPECT_HAS(m, "job.yaml:5:13: batch_size: expected an integer, got \"automatic\"; use \"auto\"");
}

TEST_F(JobSpecTest, NegativeSeed) {
  std::string m = error_of(std::string(kMinimal) + "seed: -1\n");
  EXPECT_HAS(m, "job.yaml:5:7: seed: -1 is negative; a seed is an integer from 0 to 18446744073709551615");
  m = error_of(std::string(kMinimal) + "seed: 18446744073709551616\n");
  EXPECT_HAS(m, "job.yaml:5:7: seed: 18446744073709551616 is too large; a seed is an integer from 0 to");
}

TEST_F(JobSpecTest, TinyDecoderWithoutTinyVae) {
  std::string m = error_of(std::string(kMinimal) + "decoder: tiny\n");
  EXPECT_HAS(m, "job.yaml:5:10: decoder: is \"tiny\" but tiny_vae is not set; set tiny_vae:");
}

TEST_F(JobSpecTest, BadMaxGpuGib) {
  std::string m = error_of(std::string(kMinimal) + "memory:\n  max_gpu_gib: 0\n");
  EXPECT_HAS(m, "job.yaml:6:16: memory.max_gpu_gib: 0 is out of range; use a number of GiB > 0");
  m = error_of(std::string(kMinimal) + "memory: resident\n");
  EXPECT_HAS(m,
             "job.yaml:5:9: memory: expected a map, got \"resident\"; write e.g. memory: {placement: auto");
}

TEST_F(JobSpecTest, MissingPromptsFileNamesResolvedPath) {
  std::string m = error_of("model: sdxl\noutput: out\nprompts_file: data/prompts.txt\n");
  EXPECT_HAS(m, "job.yaml:3:15: prompts_file: file \"" + dir_.file("data/prompts.txt") +
                    "\" does not exist; fix the path (relative paths resolve against");
}

TEST_F(JobSpecTest, UnknownPromptsFileExtension) {
  write_bytes(dir_.file("p.dat"), "x\n");
  std::string m = error_of("model: sdxl\noutput: out\nprompts_file: p.dat\n");
  EXPECT_HAS(m, "job.yaml:3:15: prompts_file: cannot tell the format of");
  EXPECT_HAS(m, "set prompts_format: txt | jsonl | csv");
}

TEST_F(JobSpecTest, DuplicateKey) {
  std::string m = error_of(std::string(kMinimal) + "steps: 20\nsteps: 25\n");
  EXPECT_HAS(m, "job.yaml:6:1: duplicate key \"steps\" (first set at line 5); keep only one");
}

TEST_F(JobSpecTest, MissingRequiredKeys) {
  std::string m = error_of("prompts: [a]\n");
  EXPECT_HAS(m, "job.yaml:1:1: model: missing; set model: <folder of a diffusers SDXL pipeline");
  EXPECT_HAS(m, "job.yaml:1:1: output: missing; set output:");
}

TEST_F(JobSpecTest, BadBool) {
  std::string m = error_of(std::string(kMinimal) + "vae_fp16_safe: maybe\n");
  EXPECT_HAS(
      m, "job.yaml:5:16: vae_fp16_safe: expected true or false, got \"maybe\"; write vae_fp16_safe: true");
}

// vae_dtype: the full VAE's dtype, or nothing (the job's dtype, upcast under force_upcast); refused with an
// fp16-safe VAE asking for another dtype and with the tiny decoder, at the key's line.
TEST_F(JobSpecTest, VaeDtype) {
  auto plain = load(kMinimal);
  ASSERT_TRUE(plain.is_ok());
  EXPECT_FALSE(plain->vae_dtype.has_value());
  auto bf16 = load(std::string(kMinimal) + "vae_dtype: bf16\n");
  ASSERT_TRUE(bf16.is_ok()) << bf16.status().to_string();
  ASSERT_TRUE(bf16->vae_dtype.has_value());
  EXPECT_EQ(*bf16->vae_dtype, JobSpec::DType::kBf16);
  auto fp16 = load(std::string(kMinimal) + "vae_fp16_safe: true\nvae_dtype: fp16\n");
  ASSERT_TRUE(fp16.is_ok()) << fp16.status().to_string();
  EXPECT_HAS(error_of(std::string(kMinimal) + "vae_dtype: int8\n"),
             "job.yaml:5:12: vae_dtype: unknown value \"int8\"");
  EXPECT_HAS(error_of(std::string(kMinimal) + "vae_fp16_safe: true\nvae_dtype: bf16\n"),
             "job.yaml:6:12: vae_dtype: is bf16, but vae_fp16_safe: true asks for an fp16 VAE; keep one");
  EXPECT_HAS(error_of(std::string(kMinimal) + "tiny_vae: taesd\nvae_dtype: bf16\n"),
             "job.yaml:6:12: vae_dtype: sets the full VAE's dtype, but this job decodes with the tiny VAE");
}

TEST_F(JobSpecTest, InlineMapWithoutPrompt) {
  std::string m = error_of(
      "model: sdxl\noutput: out\nprompts:\n  - {negative_prompt: x, seed: 3}\n  - {prompt: y, sed: 4}\n");
  EXPECT_HAS(m, "job.yaml:4:5: prompts[0]: missing key \"prompt\"; write {prompt:");
  EXPECT_HAS(m, "job.yaml:5:17: unknown key \"sed\"; did you mean \"seed\"? (in prompts[1])");
}

TEST_F(JobSpecTest, EmptyAndNestedPromptEntries) {
  std::string m = error_of("model: sdxl\noutput: out\nprompts:\n  - a\n  -\n  - [b, c]\n  - ~\n");
  EXPECT_HAS(
      m, "job.yaml:5:3: prompts[1]: empty entry; write the prompt text after the dash, or remove the dash");
  EXPECT_HAS(
      m,
      "job.yaml:6:5: prompts[2]: expected a prompt (text) or a map {prompt, negative_prompt, seed}, got "
      "a list; write the prompt as text or as {prompt: \"...\"}");
  EXPECT_HAS(m, "job.yaml:7:5: prompts[3]: empty entry");
}

TEST_F(JobSpecTest, BadModelVariant) {
  std::string m = error_of(std::string(kMinimal) + "model_variant: fp8\n");
  EXPECT_HAS(
      m, "job.yaml:5:16: model_variant: unknown variant \"fp8\"; use \"\" (the default weights) or \"fp16\"");
}

TEST_F(JobSpecTest, ModelFolderChecked) {
  std::string m = error_of("model: nowhere\noutput: out\nprompts: [a]\n");
  EXPECT_HAS(m, "job.yaml:1:8: model: folder \"" + dir_.file("nowhere") + "\" does not exist; fix the path");
  m = error_of("model: taesd\noutput: out\nprompts: [a]\n");
  EXPECT_HAS(m, "job.yaml:1:8: model: folder \"" + dir_.file("taesd") +
                    "\" has no model_index.json; point model at");
  JobLoadOptions no_paths;
  no_paths.check_paths = false;
  EXPECT_TRUE(load("model: nowhere\noutput: out\nprompts: [a]\n", no_paths).is_ok());
}

TEST_F(JobSpecTest, CsvKeysNeedCsvFile) {
  write_bytes(dir_.file("p.txt"), "x\n");
  std::string m = error_of("model: sdxl\noutput: out\nprompts_file: p.txt\ncsv_prompt_column: text\n");
  EXPECT_HAS(
      m,
      "job.yaml:4:1: csv_prompt_column: applies only to CSV prompt files, but the format is txt; remove it");
  m = error_of(std::string(kMinimal) + "prompts_format: csv\n");
  EXPECT_HAS(
      m,
      "job.yaml:5:1: prompts_format: applies only with prompts_file, but the prompts are inline; remove it");
}

TEST_F(JobSpecTest, BadPromptsFormat) {
  write_bytes(dir_.file("p.dat"), "x\n");
  std::string m = error_of("model: sdxl\noutput: out\nprompts_file: p.dat\nprompts_format: json\n");
  EXPECT_HAS(m,
             "job.yaml:4:17: prompts_format: unknown value \"json\"; use one of: txt | jsonl | csv (did you "
             "mean \"jsonl\"?)");
  EXPECT_EQ(std::count(m.begin(), m.end(), '\n'), 0) << m;  // the file is not read with a guessed format
}

TEST_F(JobSpecTest, EmptyOrNonMapFile) {
  std::string m = error_of("");
  EXPECT_HAS(m, "job.yaml:1:1: the job file is empty; it needs at least model, output and prompts");
  m = error_of("- model: x\n");
  EXPECT_HAS(m, "job.yaml:1:1: expected a map of settings (key: value lines) at the top level, got a list");
}

TEST_F(JobSpecTest, PromptsNotAList) {
  std::string m = error_of("model: sdxl\noutput: out\nprompts: a red fox\n");
  EXPECT_HAS(
      m, "job.yaml:3:10: prompts: expected a list of prompts, got \"a red fox\"; write one prompt per line");
}

TEST_F(JobSpecTest, PromptFileErrorsAreIncluded) {
  write_bytes(dir_.file("p.jsonl"), "{\"prompt\": \"ok\"}\n{\"text\": \"no prompt key\"}\n");
  std::string m = error_of("model: sdxl\noutput: out\nprompts_file: p.jsonl\n");
  EXPECT_HAS(m, dir_.file("p.jsonl") + ":2: missing \"prompt\"; every line needs a \"prompt\" string");
}

TEST_F(JobSpecTest, AllProblemsReportedTogetherInOrder) {
  std::string m = error_of("model: sdxl\noutput: out\nprompts: [a]\nwidth: 1001\nstpes: 3\nguidance: x\n");
  const size_t a = m.find("job.yaml:4:8: width"), b = m.find("job.yaml:5:1: unknown key"),
               c = m.find("job.yaml:6:11: guidance");
  ASSERT_NE(a, std::string::npos) << m;
  ASSERT_NE(b, std::string::npos) << m;
  ASSERT_NE(c, std::string::npos) << m;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(std::count(m.begin(), m.end(), '\n'), 2) << m;
}

// ---- canonical JSON and identity

TEST(Sha256, KnownVectorsAndBuffering) {
  EXPECT_EQ(Sha256::of("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256::of(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const std::string big(200000, 'x');  // crosses the 64 KiB buffer in pieces of several sizes
  Sha256 h;
  h.update(big.substr(0, 10));
  h.update(big.substr(10, 70000));
  h.update(big.substr(70010));
  EXPECT_EQ(h.hex(), Sha256::of(big));
}

TEST(EditDistance, CountsSwapsAsOne) {
  EXPECT_EQ(edit_distance("stpes", "steps"), 1u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("placment", "placement"), 1u);
  EXPECT_EQ(edit_distance("guidance", "guidance"), 0u);
}

TEST_F(JobSpecTest, CanonicalJsonIsStableAndComplete) {
  auto a = load(kMinimal);
  auto b = load(std::string("output: out\nprompts:\n  - a red fox\nmodel: sdxl\nsteps: 30\n"));
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a->to_canonical_json(), b->to_canonical_json());  // key order and explicit defaults don't matter
  const std::string j = a->to_canonical_json();
  EXPECT_HAS(j, "\"format\":\"sdxlb-job/1\"");
  EXPECT_HAS(j, "\"steps\":30");
  EXPECT_HAS(j, "\"batch_size\":\"auto\"");
  EXPECT_HAS(j, "\"max_gpu_gib\":null");
  EXPECT_HAS(j, "\"sha256\":\"" + a->prompts_sha256 + "\"");
}

TEST_F(JobSpecTest, IdentityIgnoresRunSettingsButNotImageSettings) {
  const std::string base = "model: sdxl\nprompts: [a red fox, a blue bird]\n";
  auto id_of = [&](const std::string& extra, const std::string& model_id = "model-1") {
    auto s = load(base + "output: out\n" + extra);
    EXPECT_TRUE(s.is_ok()) << extra << s.status().message();
    return s.is_ok() ? s->identity(model_id) : std::string();
  };
  const std::string id = id_of("");
  EXPECT_EQ(id.size(), 64u);
  EXPECT_EQ(id, id_of(""));
  // Not part of the identity.
  EXPECT_EQ(id, id_of("batch_size: 4\n"));
  EXPECT_EQ(id, id_of("memory: {placement: sequential, decode: sliced, max_gpu_gib: 8}\n"));
  EXPECT_EQ(id, id_of("segment_items: 7\nprogress_interval_s: 1\ndevice: cpu\nimage_format: png\n"));
  auto other_output = load(base + "output: elsewhere\n");
  ASSERT_TRUE(other_output.is_ok());
  EXPECT_EQ(id, other_output->identity("model-1"));
  // Part of it.
  EXPECT_NE(id, id_of("steps: 31\n"));
  EXPECT_NE(id, id_of("seed: 1\n"));
  EXPECT_NE(id, id_of("guidance: 5.5\n"));
  EXPECT_NE(id, id_of("width: 512\n"));
  EXPECT_NE(id, id_of("dtype: bf16\n"));
  EXPECT_NE(id, id_of("negative_prompt: blurry\n"));
  EXPECT_NE(id, id_of("images_per_prompt: 2\n"));
  EXPECT_NE(id, id_of("vae_fp16_safe: true\n"));
  EXPECT_NE(id, id_of("vae_dtype: bf16\n"));
  EXPECT_NE(id_of("vae_dtype: bf16\n"), id_of("vae_dtype: fp32\n"));
  EXPECT_NE(id, id_of("model_variant: fp16\n"));
  EXPECT_NE(id, id_of("", "model-2"));
  EXPECT_NE(id_of("tiny_vae: taesd\n"), id_of("tiny_vae: taesd\ndecoder: full\n"));
  auto reordered = load("model: sdxl\noutput: out\nprompts: [a blue bird, a red fox]\n");
  ASSERT_TRUE(reordered.is_ok());
  EXPECT_NE(id, reordered->identity("model-1"));
}

// The identity of jobs without the approximation keys, as it was before they existed (issue 14): a job
// written before them resumes into the same dataset.
TEST_F(JobSpecTest, IdentityOfExactJobsIsUnchanged) {
  auto minimal = load(kMinimal);
  ASSERT_TRUE(minimal.is_ok()) << minimal.status().message();
  EXPECT_EQ(minimal->identity("model-1"), "dc2ac45facb1b8141dca97fa3679d1b85062cc4728290dfd8a1ddf7ebc5b2919");
  auto rich = load(std::string(kMinimal) +
                   "scheduler: {name: dpmpp_2m, sigmas: karras}\nsteps: 20\nseed: 7\nguidance: 6.5\n"
                   "tiny_vae: taesd\n");
  ASSERT_TRUE(rich.is_ok()) << rich.status().message();
  EXPECT_EQ(rich->identity("model-1", "taesd-1"),
            "3c9fbcdee902ef92236cb44d998214965fee0e8264a46cd3d684187ab5e9d43a");
}

TEST_F(JobSpecTest, IdentityIsTheSameForInlineAndFilePrompts) {
  write_bytes(dir_.file("p.txt"), "a red fox\r\na blue bird\r\n");
  auto inline_spec = load("model: sdxl\noutput: out\nprompts: [a red fox, a blue bird]\n");
  auto file_spec = load("model: sdxl\noutput: out\nprompts_file: p.txt\n");
  ASSERT_TRUE(inline_spec.is_ok() && file_spec.is_ok());
  EXPECT_EQ(inline_spec->identity("m"), file_spec->identity("m"));
  EXPECT_NE(inline_spec->to_canonical_json(), file_spec->to_canonical_json());  // the source is recorded
}

TEST_F(JobSpecTest, TinyVaeIdentityCountsOnlyWhenItDecodes) {
  auto tiny = load(std::string(kMinimal) + "tiny_vae: taesd\n");
  ASSERT_TRUE(tiny.is_ok());
  EXPECT_NE(tiny->identity("m", "taesd-a"), tiny->identity("m", "taesd-b"));
  auto full = load(std::string(kMinimal) + "tiny_vae: taesd\ndecoder: full\n");
  ASSERT_TRUE(full.is_ok());
  EXPECT_EQ(full->identity("m", "taesd-a"), full->identity("m", "taesd-b"));
}

// ---- loras (issue 15)

TEST_F(JobSpecTest, LorasAreReadWithDefaultsAndResolvedPaths) {
  write_bytes(dir_.file("a.safetensors"), "x");
  write_bytes(dir_.file("b.safetensors"), "x");
  auto none = load(kMinimal);
  ASSERT_TRUE(none.is_ok()) << none.status().to_string();
  EXPECT_TRUE(none->loras.empty());
  EXPECT_EQ(loras_to_json(none->loras), "[]");
  auto spec =
      load(std::string(kMinimal) +
           "loras:\n  - {path: a.safetensors, scale: 0.5}\n  - path: b.safetensors\n  - a.safetensors\n"
           "  - {path: b.safetensors, scale: -1.25}\n");
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  ASSERT_EQ(spec->loras.size(), 4u);
  EXPECT_EQ(spec->loras[0].path, dir_.file("a.safetensors"));
  EXPECT_EQ(spec->loras[0].scale, 0.5);
  EXPECT_EQ(spec->loras[1].path, dir_.file("b.safetensors"));
  EXPECT_EQ(spec->loras[1].scale, 1.0);  // the default
  EXPECT_EQ(spec->loras[2].scale, 1.0);
  EXPECT_EQ(spec->loras[3].scale, -1.25);
  EXPECT_EQ(spec->loras[0].where, dir_.file("job.yaml") + ":6:5");
  EXPECT_EQ(loras_to_json({spec->loras[0]}),
            "[{\"path\":\"" + dir_.file("a.safetensors") + "\",\"scale\":0.5}]");
}

TEST_F(JobSpecTest, BadLorasAreRefusedWithTheirLocation) {
  write_bytes(dir_.file("a.safetensors"), "x");
  write_bytes(dir_.file("a.ckpt"), "x");
  std::string m = error_of(std::string(kMinimal) + "loras:\n  - {path: a.safetensors, scale: .nan}\n");
  EXPECT_HAS(m, "job.yaml:6:34: loras[0].scale: expected a number, got \".nan\"");
  EXPECT_HAS(m, "use a finite number");
  m = error_of(std::string(kMinimal) + "loras:\n  - {path: a.safetensors, scale: .inf}\n");
  EXPECT_HAS(m, "loras[0].scale: expected a number");
  m = error_of(std::string(kMinimal) + "loras:\n  - {path: a.safetensors, scale: 1e999}\n");
  EXPECT_HAS(m, "loras[0].scale: expected a number");
  m = error_of(std::string(kMinimal) + "loras:\n  - {path: a.safetensors, scale: high}\n");
  EXPECT_HAS(m, "loras[0].scale: expected a number");
  m = error_of(std::string(kMinimal) + "loras:\n  - {path: a.safetensors, scale:}\n");
  EXPECT_HAS(m, "loras[0].scale: is empty");
  m = error_of(std::string(kMinimal) + "loras:\n  - {path: missing.safetensors}\n");
  EXPECT_HAS(
      m, "job.yaml:6:12: loras[0]: LoRA file \"" + dir_.file("missing.safetensors") + "\" does not exist");
  EXPECT_HAS(m, "fix the path");
  m = error_of(std::string(kMinimal) + "loras:\n  - a.ckpt\n");
  EXPECT_HAS(m, "loras[0]: \"" + dir_.file("a.ckpt") + "\" is not a .safetensors file");
  m = error_of(std::string(kMinimal) + "loras:\n  - {scale: 0.5}\n");
  EXPECT_HAS(m, "loras[0]: missing key \"path\"");
  m = error_of(std::string(kMinimal) + "loras:\n  - {path: a.safetensors, weight: 0.5}\n");
  EXPECT_HAS(m, "job.yaml:6:27: unknown key \"weight\"; valid keys are: path, scale (in loras[0])");
  m = error_of(std::string(kMinimal) + "loras: a.safetensors\n");
  EXPECT_HAS(m, "loras: expected a list of LoRA files");
  m = error_of(std::string(kMinimal) + "loras:\n  - [a.safetensors]\n");
  EXPECT_HAS(m, "loras[0]: expected a LoRA file or a map {path, scale}");
  // Without path checks (e.g. the fuzzer) a missing file is left to the pipeline.
  JobLoadOptions no_paths;
  no_paths.check_paths = false;
  auto spec = load(std::string(kMinimal) + "loras: [missing.safetensors]\n", no_paths);
  EXPECT_TRUE(spec.is_ok()) << spec.status().to_string();
}

TEST_F(JobSpecTest, LorasInTheCanonicalJsonAndIdentity) {
  write_bytes(dir_.file("a.safetensors"), "x");
  write_bytes(dir_.file("b.safetensors"), "x");
  auto spec_of = [&](const std::string& extra) {
    auto s = load(std::string(kMinimal) + extra);
    EXPECT_TRUE(s.is_ok()) << extra << s.status().message();
    return s.is_ok() ? *s : JobSpec();
  };
  // Absent without the key (the identity of before, pinned in IdentityOfExactJobsIsUnchanged).
  EXPECT_EQ(spec_of("").to_canonical_json().find("loras"), std::string::npos);
  EXPECT_EQ(spec_of("loras: []\n").identity("model-1"), spec_of("").identity("model-1"));
  const JobSpec one = spec_of("loras: [{path: a.safetensors, scale: 0.5}]\n");
  EXPECT_HAS(one.to_canonical_json(), "\"loras\":[{\"scale\":0.5}]");
  EXPECT_HAS(one.to_canonical_json(),
             "\"loras\":[{\"path\":\"" + dir_.file("a.safetensors") + "\",\"scale\":0.5}]");
  const std::string id = one.identity("model-1");
  EXPECT_NE(id, spec_of("").identity("model-1"));
  EXPECT_NE(id, spec_of("loras: [{path: a.safetensors, scale: 0.75}]\n").identity("model-1"));
  EXPECT_NE(id, spec_of("loras: [{path: a.safetensors, scale: 0.5}, a.safetensors]\n").identity("model-1"));
  // The file's content is the model identity's part (the pipeline's model_id); its path is a run setting.
  EXPECT_EQ(id, spec_of("loras: [{path: b.safetensors, scale: 0.5}]\n").identity("model-1"));
  EXPECT_EQ(id, spec_of("loras:\n  - path: ./a.safetensors\n    scale: 5e-1\n").identity("model-1"));
}

}  // namespace
}  // namespace sdxlb
