// Node probe: where a worker sits on its node (its slot among the node's workers, how many workers the node
// has, how many of them share its GPU) and the host's memory. The GPU side (total and free memory) is read by
// the worker once it is bound to a device (worker.cpp), since reading it needs a CUDA context.
#pragma once

#include <string>

#include "cluster/comm.h"
#include "common/status.h"

namespace sdxlb {

struct NodePlacement {
  int slot = 0;             ///< this rank's index among the worker ranks (world rank != 0) of its node
  int workers_on_node = 1;  ///< worker ranks on this node
};

/// Collective over `world`: every rank calls it. With the local or serial backend (one process), the workers
/// are ranks 1..N-1 of one node.
StatusOr<NodePlacement> node_placement(Comm& world);

/// Collective over `world`: every rank calls it. The worker ranks (world rank != 0) of this rank's node, in
/// world rank order, as their own Comm: what the node's workers share start-up work through (weights read
/// once per node). Rank 0, the coordinator, takes no part and gets a Comm::serial(). With the local or serial
/// backend the workers are ranks 1..N-1.
StatusOr<Comm> node_workers(Comm& world);

/// Workers that use the same GPU as worker `slot` when `workers` workers take `gpus` GPUs round-robin.
int ranks_sharing_gpu(int slot, int workers, int gpus);

/// This machine's host name.
std::string host_name();

/// Host RAM in GiB (total), or -1 when unknown.
double host_ram_gib();

}  // namespace sdxlb
