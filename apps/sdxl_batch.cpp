// sdxl-batch: the command-line entry point. Subcommands are declared once here, with their help text.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include <c10/util/Exception.h>
#include <CLI/CLI.hpp>

#include "apps/job_check.h"
#include "apps/job_runner.h"
#include "cluster/comm.h"
#include "cluster/stop_signal.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "common/version.h"
#include "coordinator/progress.h"
#include "pipeline/demo_model.h"
#include "pipeline/nn/fused_ops.h"
#include "pipeline/sdxl_pipeline.h"
#include "run/faults.h"
#include "store/dataset_reader.h"
#include "store/png.h"
#include "store/webdataset_writer.h"

namespace {

using namespace sdxlb;

constexpr const char* kDescription =
    "sdxl-batch " SDXLB_VERSION
    ": render one SDXL image per prompt (or several) for large prompt lists, on one GPU or a SLURM cluster.\n"
    "Under mpirun/srun, rank 0 coordinates and every other rank drives one GPU. Outputs are HDF5 (segments "
    "+\n"
    "index.h5); rerunning the same command resumes where a crashed or preempted run stopped.\n\n"
    "Exit codes: 0 ok, 1 internal error, 2 bad command line or job file, 3 output folder holds another job,\n"
    "4 model or I/O problem, 5 finished with failed items, 6 out of memory, 7 stopped early by a signal\n"
    "(resubmit the same command to resume), 8 a worker stopped answering (resubmit to resume).\n\n"
    "Environment: SDXLB_EXIT_CODE_FILE=PATH: rank 0 writes the job's exit code there (for launchers such as\n"
    "srun that report the highest code of all ranks).\n\n"
    "Stopping: SIGTERM (what SLURM sends on preemption or at the time limit), SIGINT or SIGUSR1 make every\n"
    "worker finish the images it is denoising, save them, and exit with 7; Ctrl-C twice exits at once.\n\n"
    "Environment: SDXLB_DISABLE_FUSION=all (or a comma list of groupnorm, layernorm, geglu, upsample,\n"
    "wideattention, fp8qkv, crossattention) runs the plain LibTorch ops instead of those fused GPU kernels\n"
    "(same results within rounding, slower); pdl launches our kernels plainly instead of letting each start\n"
    "while the kernel before it ends (Hopper; the same bits); gelutable computes GEGLU's GELU with erf\n"
    "instead of looking it up, in fp16 and FP8 (the same bits); memsetkernels leaves the libraries' memsets\n"
    "in the denoising CUDA graph instead of rewriting them as kernels (the same bytes); geglugemm, qkv and\n"
    "upsampleconv run the feed-forward's projection and GEGLU, a self-attention's query, key and value\n"
    "projections, and an upsampler's nearest x2 and 3x3 convolution as separate steps instead of one GEMM\n"
    "or one 2x2 phase convolution (within rounding, slower); fp8crossout quantises the FP8 "
    "cross-attention's\n"
    "output per token in its own kernel instead of writing it in e4m3 at one scale per image (slower);\n"
    "gnbound gives the GroupNorms before FP8 convolutions their exact per-image scale from a pass of their\n"
    "own instead of a bound from their statistics (slower); concat joins the UNet's skip connections with\n"
    "PyTorch's cat instead of a copy kernel of ours (the same bits); timeproj projects the time embedding\n"
    "for each resnet in its own GEMM instead of one GEMM for all (within rounding, slower with FP8);\n"
    "fillchains gives each of the memsets in a row (cuDNN's FP8 attention zeroes three) a kernel of its own\n"
    "instead of one for the row (the same bytes, slower with FP8); an unknown name is an error.\n\n"
    "Environment: SDXLB_INVARIANT_KERNELS=1 keeps the GPU's matrix products to kernels whose rows do not\n"
    "depend on their place in a UNet call (cuBLASLt without split-K, 1x1 convolutions as GEMMs, FP8 linears\n"
    "in our own GEMM) instead of the libraries' choice by shape: a measurement switch; the images stay\n"
    "batch-invariant either way, as each image sits at the same place of its UNet call.";

int make_demo_model(const std::string& dir, bool full, const std::string& dtype, uint64_t seed,
                    bool no_tiny) {
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
  std::printf("wrote a %s random-weight SDXL-architecture model to %s%s\n", full ? "full-size" : "tiny",
              dir.c_str(), no_tiny ? "" : " (tiny VAE in its tiny_vae/ folder)");
  return kExitOk;
}

int inspect(const std::string& dir, bool list_missing) {
  auto r = DatasetReader::open(dir);
  if (!r.is_ok()) return report_error(r.status());
  const DatasetSummary& s = r->summary();
  std::printf("%s: %lld items: %lld ok, %lld failed, %lld missing (%s, %dx%d)\n", dir.c_str(),
              static_cast<long long>(s.total_items), static_cast<long long>(s.ok),
              static_cast<long long>(s.failed), static_cast<long long>(s.missing), s.encoding.c_str(),
              s.width, s.height);
  if (!s.start_time.empty()) std::printf("last run: %s .. %s\n", s.start_time.c_str(), s.end_time.c_str());
  for (const auto& [item, err] : s.failed_items)
    std::printf("failed item %lld: %s\n", static_cast<long long>(item), err.c_str());
  if (list_missing)
    for (int64_t m : s.missing_items) std::printf("missing item %lld\n", static_cast<long long>(m));
  std::printf("--- job file ---\n%s", s.job_yaml.c_str());
  return kExitOk;
}

int export_pngs(const std::string& dir, const std::string& to, const std::string& sheet, int64_t limit) {
  auto r = DatasetReader::open(dir);
  if (!r.is_ok()) return report_error(r.status());
  const DatasetSummary& s = r->summary();
  std::vector<int64_t> items;
  for (int64_t i = 0; i < s.total_items && (limit <= 0 || static_cast<int64_t>(items.size()) < limit); ++i)
    if (r->ok(i)) items.push_back(i);
  if (!to.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(to, ec);
    if (ec) return report_error(io_error("cannot create " + to + ": " + ec.message()));
  }
  const int cols = std::max(1, static_cast<int>(std::ceil(std::sqrt(static_cast<double>(items.size())))));
  const int rows = std::max(1, static_cast<int>((items.size() + cols - 1) / cols));
  std::vector<uint8_t> grid;
  if (!sheet.empty()) grid.assign(static_cast<size_t>(rows) * s.height * cols * s.width * 3, 0);
  for (size_t k = 0; k < items.size(); ++k) {
    auto rgb = r->image(items[k]);
    if (!rgb.is_ok()) return report_error(rgb.status());
    if (!to.empty()) {
      char name[64];
      std::snprintf(name, sizeof name, "/item-%08lld.png", static_cast<long long>(items[k]));
      Status st = write_png_file(to + name, rgb->data(), s.height, s.width);
      if (!st.is_ok()) return report_error(st);
    }
    if (!sheet.empty()) {
      const size_t gx = k % cols, gy = k / cols, row_bytes = static_cast<size_t>(s.width) * 3;
      for (int y = 0; y < s.height; ++y)
        std::copy_n(rgb->data() + y * row_bytes, row_bytes,
                    grid.data() + ((gy * s.height + y) * cols * s.width + gx * s.width) * 3);
    }
  }
  if (!sheet.empty()) {
    Status st = write_png_file(sheet, grid.data(), rows * s.height, cols * s.width);
    if (!st.is_ok()) return report_error(st);
    std::printf("contact sheet of %zu images: %s\n", items.size(), sheet.c_str());
  }
  if (!to.empty()) std::printf("exported %zu images to %s\n", items.size(), to.c_str());
  return kExitOk;
}

constexpr const char* kCheckFooter =
    "Run it on a login node before sbatch: it prints the prompt and item counts, the model it read, the\n"
    "render settings, and whether the run would create, resume (with how many items done) or refuse the\n"
    "output folder. On a machine without a GPU, a job for a GPU (device: cuda or auto) is checked as a\n"
    "GPU node would see it; FP8 support and the memory plan are checked when the job starts there.\n"
    "--gpu-gib 80 checks the memory plan for an 80 GiB GPU here (placement, decode, batch) and prints it.\n"
    "Exit codes: 0 the run would start, 2 job file, 3 output folder (another job, or a live run on it),\n"
    "4 model or I/O, 6 memory (an image too large for this machine's RAM with device: cpu, or no memory\n"
    "plan that fits the --gpu-gib GPU).\n";

constexpr const char* kExportFooter =
    "--format png (the default) writes item-<index>.png files to --to and/or a --contact-sheet.\n"
    "--format webdataset writes tar shards to --to: shard-000000.tar, shard-000001.tar, ... of\n"
    "--shard-size samples each; a sample is <key>.png and <key>.json (the item's prompt, seed, steps,\n"
    "guidance, size, scheduler, model id, approximations), the key being the item index zero-padded to\n"
    "8 digits (more past 10^8 items). Only items stored OK are exported, in item order; failed and\n"
    "never-rendered items are skipped (their keys are absent; `sdxl-batch inspect` lists them). Shards\n"
    "are written under .tmp names and renamed when complete: rerun the same command after a crash and it\n"
    "keeps the complete shards and writes the rest. A rerun with another --shard-size, or after the\n"
    "dataset changed, is refused (exit 3). See docs/output-format.md, section Export.\n";

int export_webdataset_shards(const std::string& dir, const std::string& to, int64_t shard_size, int64_t limit,
                             bool quiet) {
  auto faults = Faults::from_environment();
  if (!faults.is_ok()) return report_error(faults.status());
  auto r = DatasetReader::open(dir);
  if (!r.is_ok()) return report_error(r.status());
  WebDatasetOptions options;
  options.shard_size = shard_size;
  options.limit = limit;
  std::unique_ptr<Progress> progress;
  const std::shared_ptr<const Faults> f = *faults;
  auto report = export_webdataset(*r, to, options, [&](int64_t done, int64_t to_do) {
    if (!progress) progress = std::make_unique<Progress>("export", to_do, /*interval_s=*/5.0, quiet);
    progress->add(1);
    f->maybe_kill_export(done);
  });
  if (!report.is_ok()) return report_error(report.status());
  if (progress) progress->finish();
  std::printf(
      "exported %lld samples in %lld shards of up to %lld to %s (%lld shards written now, %lld kept from "
      "an earlier run)\n",
      static_cast<long long>(report->samples), static_cast<long long>(report->shards),
      static_cast<long long>(shard_size), to.c_str(), static_cast<long long>(report->shards_written),
      static_cast<long long>(report->shards_kept));
  if (report->skipped_failed + report->skipped_missing > 0)
    std::fprintf(stderr,
                 "sdxl-batch: note: %lld failed and %lld never-rendered items are not exported (`sdxl-batch "
                 "inspect %s` lists them; rerun the job to render them, then export to a new folder)\n",
                 static_cast<long long>(report->skipped_failed),
                 static_cast<long long>(report->skipped_missing), dir.c_str());
  return kExitOk;
}

}  // namespace

static int run_main(int argc, char** argv) {
  // cuDNN picks a convolution's algorithm among those whose workspace it can allocate, and PyTorch silently
  // falls back to another algorithm (other rounding) when an allocation fails. This caps every workspace at
  // 256 MiB (measured: same speed, same pixels); what keeps the choice fixed is the memory plan leaving
  // room for the workspaces (a 1 MiB cap alone did not, on an H100 under a tight max_gpu_gib). A value the
  // user set wins.
  setenv("CUDNN_CONV_WSCAP_DBG", "256", /*overwrite=*/0);
  // A job's stop signals are caught from the first moment: SLURM can preempt a job while its ranks are still
  // starting (MPI, the model), and the default action would kill a rank without the clean exit 7. Other
  // commands keep the default (Ctrl-C ends an export at once).
  const bool job_command =
      argc > 1 && (std::strcmp(argv[1], "run") == 0 || std::strcmp(argv[1], "encode") == 0);
  if (job_command) StopSignal::install();
  MpiSession mpi(&argc, &argv);
  Comm world = mpi.world();
  init_logging(world.rank());
  // A misspelt fusion name would otherwise fail deep inside the first forward pass.
  try {
    (void)fusion_enabled(Fusion::kGroupNorm);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "sdxl-batch: error: %s\n", e.what_without_backtrace());
    return kExitBadInput;
  }

  CLI::App app{kDescription, "sdxl-batch"};
  app.set_version_flag("--version", SDXLB_VERSION);
  app.require_subcommand(1);

  RunOptions run_opts;
  auto* run =
      app.add_subcommand("run", "Render a job: encode prompts, render every missing item, write index.h5");
  run->add_option("job", run_opts.job_file, "Job file (YAML); see docs/job-file.md")
      ->required()
      ->check(CLI::ExistingFile);
  run->add_flag("--overwrite", run_opts.overwrite,
                "Start over when the output folder holds a different job (deletes its images)");
  run->add_flag("-q,--quiet", run_opts.quiet, "No progress lines (errors and the summary still print)");

  std::string check_file;
  auto* chk = app.add_subcommand(
      "check",
      "Check a job without rendering or writing anything: the job file and its prompts, the model's configs "
      "and weight headers, and what run would do with the output folder (exit code as run's at start-up)");
  chk->add_option("job", check_file, "Job file (YAML)")->required()->check(CLI::ExistingFile);
  CheckOptions check_opts;
  chk->add_option("--gpu-gib", check_opts.gpu_gib,
                  "GPU memory of the nodes the job will run on (GiB, e.g. 80): also check and print the "
                  "memory plan a worker there would choose")
      ->check(CLI::PositiveNumber);
  chk->add_option("--workers-per-gpu", check_opts.workers_per_gpu,
                  "Workers sharing each of those GPUs (default 1)")
      ->check(CLI::Range(1, 64));
  chk->footer(kCheckFooter);

  RunOptions enc_opts;
  enc_opts.encode_only = true;
  auto* enc = app.add_subcommand("encode", "Only compute and store the text embeddings of a job (phase 1)");
  enc->add_option("job", enc_opts.job_file, "Job file (YAML)")->required()->check(CLI::ExistingFile);
  enc->add_flag("-q,--quiet", enc_opts.quiet, "No progress lines");

  std::string demo_dir, demo_dtype = "fp32";
  bool demo_full = false, demo_no_tiny = false;
  uint64_t demo_seed = 0;
  auto* demo =
      app.add_subcommand("make-demo-model",
                         "Write a random-weight SDXL-architecture model in diffusers format (no Python "
                         "needed): tiny for demos and tests, --full for benchmarks");
  demo->add_option("dir", demo_dir, "Folder to create (must not exist, or be empty)")->required();
  demo->add_flag("--full", demo_full, "SDXL base's full-size configs (2.6 B UNet parameters)");
  demo->add_option("--dtype", demo_dtype, "Saved weight dtype: fp32, fp16 or bf16")->capture_default_str();
  // CLI11 reads "-1" into a uint64_t as 2^64-1: a negative seed is refused instead.
  demo->add_option("--seed", demo_seed, "Seed of the random weights")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& v) {
            return !v.empty() && v[0] == '-' ? std::string("must be an integer from 0 to 2^64-1")
                                             : std::string();
          },
          "UINT64"));
  demo->add_flag("--no-tiny-vae", demo_no_tiny, "Do not write the tiny VAE folder");

  std::string out_dir;
  bool list_missing = false;
  auto* insp =
      app.add_subcommand("inspect", "Summarise an output folder: counts, failures, missing items, settings");
  insp->add_option("output", out_dir, "The job's output folder")->required()->check(CLI::ExistingDirectory);
  insp->add_flag("--missing", list_missing, "List every missing item");

  std::string export_dir, sheet, export_format = "png";
  int64_t limit = 0, shard_size = 1000;
  bool export_quiet = false;
  auto* exp =
      app.add_subcommand("export",
                         "Write the OK images of an output folder as PNG files and/or a contact sheet, "
                         "or as WebDataset tar shards with their metadata");
  exp->add_option("output", out_dir, "The job's output folder")->required()->check(CLI::ExistingDirectory);
  exp->add_option("--format", export_format, "png or webdataset")
      ->capture_default_str()
      ->check(CLI::IsMember({"png", "webdataset"}));
  exp->add_option(
      "--to", export_dir,
      "Folder for item-<index>.png files (png) or shard-<n>.tar files (webdataset; created, resumed)");
  exp->add_option("--contact-sheet", sheet, "One PNG with the images in a grid (png only)");
  exp->add_option("--limit", limit, "At most this many images, the first OK ones (0: all)")
      ->check(CLI::NonNegativeNumber);
  exp->add_option("--shard-size", shard_size, "Samples per tar shard (webdataset; at least 1)")
      ->capture_default_str();
  exp->add_flag("-q,--quiet", export_quiet, "No progress lines (webdataset)");
  exp->footer(kExportFooter);

  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const auto* sub : app.get_subcommands({})) known = known || sub->get_name() == argv[1];
    if (!known) {
      std::fprintf(
          stderr,
          "sdxl-batch: error: unknown command \"%s\"; the commands are run, check, encode, inspect, export "
          "and make-demo-model (see sdxl-batch --help)\n",
          argv[1]);
      return kExitBadInput;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitBadInput;
  }

  if (run->parsed() || enc->parsed()) {
    StopSignal::install();  // again: MPI's initialisation may have replaced the handlers
    const int code = run_job(world, run->parsed() ? run_opts : enc_opts);
    if (world.rank() == 0) record_exit_code(code);
    return code;
  }
  if (chk->parsed()) return world.rank() == 0 ? check_job(check_file, check_opts) : kExitOk;
  if (insp->parsed()) return world.rank() == 0 ? inspect(out_dir, list_missing) : kExitOk;
  if (exp->parsed() && export_format == "webdataset") {
    if (export_dir.empty()) {
      std::fprintf(
          stderr,
          "sdxl-batch: error: export --format webdataset needs --to DIR (the folder for the shards)\n");
      return kExitBadInput;
    }
    if (!sheet.empty()) {
      std::fprintf(stderr,
                   "sdxl-batch: error: --contact-sheet is for --format png; export the sheet separately\n");
      return kExitBadInput;
    }
    if (shard_size < 1) {
      std::fprintf(
          stderr,
          "sdxl-batch: error: --shard-size %lld: a shard holds at least 1 sample (the default is 1000)\n",
          static_cast<long long>(shard_size));
      return kExitBadInput;
    }
    return world.rank() == 0 ? export_webdataset_shards(out_dir, export_dir, shard_size, limit, export_quiet)
                             : kExitOk;
  }
  if (exp->parsed()) {
    if (export_dir.empty() && sheet.empty()) {
      std::fprintf(stderr, "sdxl-batch: error: export needs --to DIR and/or --contact-sheet FILE\n");
      return kExitBadInput;
    }
    return world.rank() == 0 ? export_pngs(out_dir, export_dir, sheet, limit) : kExitOk;
  }
  if (demo->parsed())
    return world.rank() == 0 ? make_demo_model(demo_dir, demo_full, demo_dtype, demo_seed, demo_no_tiny)
                             : kExitOk;
  return kExitBadInput;
}

int main(int argc, char** argv) {
  // Every error is meant to arrive as a Status; an exception that gets here is a bug of ours (or a library's
  // surprise), reported as such instead of std::terminate's core dump.
  try {
    return run_main(argc, argv);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "sdxl-batch: internal error: %s (please report this)\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sdxl-batch: internal error: %s (please report this)\n", e.what());
  }
  return kExitInternal;
}
