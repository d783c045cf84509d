// `sdxl-batch check JOB.yaml`: everything `sdxl-batch run` checks before it writes anything, without
// rendering and without writing: the job file and every prompt, the model's configs and weight headers (and
// the LoRAs against them), and what the run would do with the output folder (start it, resume it with N
// items done, or refuse it: another job, a live run's lock, not writable). For a login node before `sbatch`:
// on a machine without a GPU, a job for a GPU (device cuda, or auto) is checked as a GPU node would see it,
// and what depends on the GPU itself (FP8 support, the memory plan) is checked when the job starts.
#pragma once

#include <string>

namespace sdxlb {

/// Prints what it checked (stdout) and returns the exit code `run` would return at start-up: 0 when the job
/// would start, else 2 (job file), 3 (output folder), 4 (model or I/O) or 6 (memory), with the error on
/// stderr as `run` prints it.
int check_job(const std::string& job_file);

}  // namespace sdxlb
