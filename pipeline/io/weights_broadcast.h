// WeightsBroadcast: weight files read once per node (issue 18).
//
// The workers of a node (node_workers() in cluster/node_probe.h) load the same model. Through this opener the
// node's first worker (rank 0 of `node`) reads each weight file from disk and the others receive its bytes
// over the node's Comm (MPI today; NCCL later), so that a shared filesystem serves each file once per node
// instead of once per worker. The received file is rebuilt with SafetensorsFile::from_buffer: the loaders,
// and the model identity (ModelSource::add_identity), see the same bytes as from disk.
//
// Protocol, per file a worker opens (every worker of the node must open the same files in the same order,
// which the same job on every worker does):
//   1. all-gather of each worker's request: the path it opens, or "done" from finish(); the reader adds what
//      its open gave (the size, or the error);
//   2. every worker compares: another path (or a worker already done) is an error on every worker, naming
//      both paths; a reader that could not open the file gives every worker its error; nobody waits forever;
//   3. all-gather of whether each receiver could allocate the file's memory (an error on every worker if
//   not);
//   4. the bytes, broadcast from the reader (Comm::broadcast_bytes, any size).
// A file is opened once: later opens of the same path (the identity, LoRA matching and the load each ask for
// the unet's files) return the same object until finish(). After finish(), or after a mismatch ended the
// exchange, the opener reads from disk without any collective.
//
// Thread-safety: one thread per worker uses the object and its opener (the loading thread). The opener keeps
// the shared state alive, so it may outlive this object; `node` must outlive finish().
#pragma once

#include <cstdint>
#include <memory>

#include "cluster/comm.h"
#include "common/status.h"
#include "pipeline/io/file_opener.h"

namespace sdxlb {

class WeightsBroadcast {
 public:
  /// `node`: the workers of one node; its rank 0 reads the files.
  explicit WeightsBroadcast(Comm& node);
  /// Calls finish() when it was not called (its error is dropped), so that a worker that fails before or
  /// during loading still tells the others it is done.
  ~WeightsBroadcast();
  WeightsBroadcast(const WeightsBroadcast&) = delete;
  WeightsBroadcast& operator=(const WeightsBroadcast&) = delete;

  /// The opener to give the loaders (ModelSource::open, PipelineOptions::weights_opener). Each call of it is
  /// collective over `node` until finish(). Errors: those of SafetensorsFile::open (the reader's, on every
  /// worker); kFailedPrecondition when the workers open different files; kResourceExhausted when a worker
  /// cannot hold a file; the Comm's failures.
  FileOpener opener() const;
  /// Collective over `node`: the end of loading. Releases the files held for reuse (the loaders' own
  /// references keep theirs). Errors: kFailedPrecondition when another worker is still opening a file (it
  /// gets the matching error); the Comm's failures. Later calls do nothing.
  Status finish();

  /// Files this worker got through the exchange (read and sent, or received) and their bytes.
  int64_t files() const;
  uint64_t bytes() const;
  /// True on the worker that reads the files.
  bool reads() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace sdxlb
