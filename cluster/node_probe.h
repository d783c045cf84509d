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

/// Collective over `node_workers` (node_workers()): how many of the node's workers use the device that
/// `device_id` names (this worker's included), from every worker's id (worker/device_binding.h:
/// device_identity, the GPU's PCI bus id). Counting the physical GPU rather than assuming a round-robin over
/// the visible ones makes the memory plan right whatever the launcher's GPU binding did: one GPU per rank
/// (SLURM's --gpus-per-task, CUDA_VISIBLE_DEVICES per rank), every GPU visible to every rank, or more
/// workers than GPUs. The coordinator's serial Comm gives 1.
StatusOr<int> workers_sharing_device(Comm& node_workers, const std::string& device_id);

/// This machine's host name.
std::string host_name();

/// Host RAM in GiB (total), or -1 when unknown.
double host_ram_gib();

}  // namespace sdxlb
