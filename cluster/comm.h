// Comm: the communicator the coordinator and workers talk through.
//
// Three backends behind one move-only value type:
//  - MPI: a duplicate of MPI_COMM_WORLD (or a split of it), for real runs under mpirun/srun;
//  - local: N in-process ranks connected by queues (Comm::local_group), so that the coordinator and worker
//    logic runs in unit tests as threads, without mpirun;
//  - serial: one rank (Comm::serial), for single-process tools.
// Messages are byte strings with an integer tag. Every call takes a `hint` naming the operation, used in the
// error message when the call fails. A Comm is used by one thread at a time (its rank's thread); the local
// backend's shared queues are internally synchronised.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace sdxlb {

struct Message {
  int source = -1;
  int tag = 0;
  std::string bytes;
};

/// Any tag, for recv().
constexpr int kAnyTag = -1;
/// The colour of a rank that takes no part in a split (Comm::split).
constexpr int kNoColour = -1;

class Comm {
 public:
  class Impl;  // backend interface (comm.cpp)

  /// One rank, no peers.
  static Comm serial();
  /// n connected in-process ranks; element r is rank r. Hand each to its own thread.
  static std::vector<Comm> local_group(int n);
  /// MPI_COMM_WORLD (duplicated). Requires MpiSession to be alive.
  static Comm mpi_world();

  Comm(Comm&&) noexcept;
  Comm& operator=(Comm&&) noexcept;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  ~Comm();

  int rank() const;
  int size() const;
  /// "mpi", "local" or "serial".
  const char* backend() const;

  /// Sends bytes to `dest` with `tag` (>= 0). Blocks until the buffer may be reused.
  Status send(int dest, int tag, const std::string& bytes, const char* hint);
  /// Receives the next message from any source with `tag` (or kAnyTag). Blocks.
  StatusOr<Message> recv(int tag, const char* hint);
  /// Like recv(), but waits at most `timeout_s` seconds; nullopt when nothing came in that time.
  StatusOr<std::optional<Message>> recv_for(int tag, double timeout_s, const char* hint);
  /// Whether a message with `tag` is waiting (does not receive it; never blocks).
  StatusOr<bool> poll(int tag, const char* hint);
  /// Blocks until every rank has called it.
  Status barrier(const char* hint);
  /// Rank `root`'s `value` is copied to every rank.
  Status broadcast(std::string& value, int root, const char* hint);
  /// Rank `root`'s `size` bytes at `data` are copied into every rank's `data` (which must hold `size` bytes
  /// on every rank; any size: MPI moves it in pieces of at most 1 GiB). For weights read once per node (issue
  /// 18).
  Status broadcast_bytes(void* data, size_t size, int root, const char* hint);
  /// Every rank's `value`, indexed by rank, on every rank.
  StatusOr<std::vector<std::string>> all_gather(const std::string& value, const char* hint);
  /// Ranks that share a node (MPI_COMM_TYPE_SHARED); the local and serial backends are one node.
  StatusOr<Comm> split_node(const char* hint);
  /// Collective: the ranks that pass the same `colour` (>= 0) form a new Comm, ranked in this Comm's rank
  /// order (MPI_Comm_split). A rank that passes kNoColour takes no part and gets a Comm::serial() of its own.
  /// Errors: kInvalidArgument for a colour below kNoColour; the backend's failure.
  StatusOr<Comm> split(int colour, const char* hint);
  /// Aborts every rank of the job (MPI_Abort) with `code`; for the local backend, exits the process.
  [[noreturn]] void abort(int code);

 private:
  friend struct CommFactory;
  explicit Comm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Initializes MPI (MPI_THREAD_FUNNELED) for its lifetime when the process was started by mpirun/srun, or
/// when `force` is set; otherwise leaves MPI alone so that a plain single-process run needs no launcher.
class MpiSession {
 public:
  explicit MpiSession(int* argc, char*** argv, bool force = false);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  /// True when MPI was initialized by this session.
  bool active() const { return active_; }
  /// The communicator for this process: MPI world when active, otherwise serial.
  Comm world() const;

 private:
  bool active_ = false;
};

/// True when the environment says a launcher (Open MPI, MPICH/PMI, SLURM srun) started this process.
bool launched_by_mpi();

}  // namespace sdxlb
