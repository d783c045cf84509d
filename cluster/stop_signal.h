// StopSignal: graceful preemption. SLURM sends SIGTERM when it preempts a job or when the job reaches its
// time limit (render.sbatch asks for it 120 s early); users press Ctrl-C (SIGINT); SIGUSR1 is there for
// launchers and scripts that reserve SIGTERM. install() makes each of them set a process-wide flag, which
// the coordinator and the workers poll at safe points: a worker finishes the images it is denoising,
// publishes its segment and stops; the coordinator writes index.h5 and the process exits with
// kExitStopped ("resubmit the same command to resume"). A second SIGINT while stopping ends the process at
// once (128 + 2); a repeated SIGTERM does not, since SLURM may deliver it twice.
//
// Thread-safety: the flag is a lock-free atomic, safe to read from any thread and set from the handler.
#pragma once

namespace sdxlb {

class StopSignal {
 public:
  /// Installs the handlers for SIGTERM, SIGINT and SIGUSR1 (idempotent; each call installs them again, in
  /// case a library replaced them since).
  static void install();
  /// Whether a stop was asked for (by a signal or by request()).
  static bool requested();
  /// The signal that asked for the stop (0 when none, or when request() did).
  static int signal_number();
  /// Asks for a stop from code (e.g. the coordinator told this worker to stop); `signal` is recorded.
  static void request(int signal = 0);
  /// Clears the flag (tests only).
  static void reset();
  /// "SIGTERM", "SIGINT", "SIGUSR1" or "a stop request".
  static const char* name(int signal);
};

}  // namespace sdxlb
