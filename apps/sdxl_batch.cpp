// sdxl-batch: the command-line entry point. Subcommands are declared once here, with their help text.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cluster/comm.h"
#include "common/exit_codes.h"
#include "common/version.h"
#include "coordinator/job_runner.h"
#include "pipeline/demo_model.h"
#include "pipeline/sdxl_pipeline.h"

namespace {

using namespace sdxlb;

constexpr const char* kDescription =
    "sdxl-batch " SDXLB_VERSION
    ": render one SDXL image per prompt (or several) for large prompt lists, on one GPU or a SLURM cluster.\n"
    "Under mpirun/srun, rank 0 coordinates and every other rank drives one GPU. Outputs are HDF5 (segments +\n"
    "index.h5); rerunning the same command resumes where a crashed or preempted run stopped.\n\n"
    "Exit codes: 0 ok, 1 internal error, 2 bad command line or job file, 3 output folder holds another job,\n"
    "4 model or I/O problem, 5 finished with failed items, 6 out of memory.";

void setup_logging(int rank) {
  auto logger = spdlog::stderr_color_mt("sdxlb");
  logger->set_pattern("[%H:%M:%S] [rank " + std::to_string(rank) + "] %^%l%$: %v");
  spdlog::set_default_logger(logger);
  if (const char* lvl = std::getenv("SDXLB_LOG")) spdlog::set_level(spdlog::level::from_str(lvl));
}

int make_demo_model(const std::string& dir, bool full, const std::string& dtype, uint64_t seed, bool no_tiny) {
  DemoModelOptions o;
  o.size = full ? DemoModelSize::kFull : DemoModelSize::kTiny;
  auto dt = parse_dtype(dtype);
  if (!dt.is_ok()) {
    std::fprintf(stderr, "sdxl-batch: error: --dtype: %s\n", dt.status().message().c_str());
    return kExitBadInput;
  }
  o.dtype = *dt;
  o.seed = seed;
  o.with_tiny_vae = !no_tiny;
  Status st = write_demo_model(dir, o);
  if (!st.is_ok()) {
    std::fprintf(stderr, "sdxl-batch: error: %s\n", st.to_string().c_str());
    return exit_code_for(st);
  }
  std::printf("wrote a %s random-weight SDXL-architecture model to %s%s\n", full ? "full-size" : "tiny", dir.c_str(),
              no_tiny ? "" : " (tiny VAE in its tiny_vae/ folder)");
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  MpiSession mpi(&argc, &argv);
  Comm world = mpi.world();
  setup_logging(world.rank());

  CLI::App app{kDescription, "sdxl-batch"};
  app.set_version_flag("--version", SDXLB_VERSION);
  app.require_subcommand(1);

  RunOptions run_opts;
  auto* run = app.add_subcommand("run", "Render a job: encode prompts, render every missing item, write index.h5");
  run->add_option("job", run_opts.job_file, "Job file (YAML); see docs/job-file.md")->required()->check(CLI::ExistingFile);
  run->add_flag("--overwrite", run_opts.overwrite,
                "Start over when the output folder holds a different job (deletes its images)");
  run->add_flag("-q,--quiet", run_opts.quiet, "No progress lines (errors and the summary still print)");

  RunOptions enc_opts;
  enc_opts.encode_only = true;
  auto* enc = app.add_subcommand("encode", "Only compute and store the text embeddings of a job (phase 1)");
  enc->add_option("job", enc_opts.job_file, "Job file (YAML)")->required()->check(CLI::ExistingFile);
  enc->add_flag("-q,--quiet", enc_opts.quiet, "No progress lines");

  std::string demo_dir, demo_dtype = "fp32";
  bool demo_full = false, demo_no_tiny = false;
  uint64_t demo_seed = 0;
  auto* demo = app.add_subcommand("make-demo-model",
                                  "Write a random-weight SDXL-architecture model in diffusers format (no Python "
                                  "needed): tiny for demos and tests, --full for benchmarks");
  demo->add_option("dir", demo_dir, "Folder to create (must not exist, or be empty)")->required();
  demo->add_flag("--full", demo_full, "SDXL base's full-size configs (2.6 B UNet parameters)");
  demo->add_option("--dtype", demo_dtype, "Saved weight dtype: fp32, fp16 or bf16")->capture_default_str();
  demo->add_option("--seed", demo_seed, "Seed of the random weights")->capture_default_str();
  demo->add_flag("--no-tiny-vae", demo_no_tiny, "Do not write the tiny VAE folder");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitBadInput;
  }

  if (run->parsed()) return run_job(world, run_opts);
  if (enc->parsed()) return run_job(world, enc_opts);
  if (demo->parsed()) return world.rank() == 0 ? make_demo_model(demo_dir, demo_full, demo_dtype, demo_seed, demo_no_tiny)
                                               : kExitOk;
  return kExitBadInput;
}
