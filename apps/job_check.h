// `sdxl-batch check JOB.yaml`: everything `sdxl-batch run` checks before it writes anything, without
// rendering and without writing: the job file and every prompt, the model's configs and weight headers (and
// the LoRAs against them), and what the run would do with the output folder (start it, resume it with N
// items done, or refuse it: another job, a live run's lock, not writable). For a login node before `sbatch`:
// on a machine without a GPU, a job for a GPU (device cuda, or auto) is checked as a GPU node would see it,
// and what depends on the GPU itself (FP8 support, the memory plan) is checked when the job starts. With
// --gpu-gib, the memory plan a worker on such a GPU would choose is checked and printed here too.
#pragma once

#include <optional>
#include <string>

namespace sdxlb {

struct CheckOptions {
  /// The GPU memory (GiB) of the nodes the job will run on: check and print the memory plan a worker there
  /// would choose (runtime/memory_plan.h), as `run` does at start-up. nullopt: not checked.
  std::optional<double> gpu_gib;
  /// Workers sharing each of those GPUs (the plan divides the GPU's memory between them).
  int workers_per_gpu = 1;
};

/// Prints what it checked (stdout) and returns the exit code `run` would return at start-up: 0 when the job
/// would start, else 2 (job file), 3 (output folder; with gpu_gib, memory.overlap_decode: on where the plan
/// cannot overlap), 4 (model or I/O) or 6 (memory: an image too large for this machine's RAM on the CPU;
/// with gpu_gib, no memory plan fits that GPU), with the error on stderr as `run` prints it.
int check_job(const std::string& job_file, const CheckOptions& options = {});

}  // namespace sdxlb
