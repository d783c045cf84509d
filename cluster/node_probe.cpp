#include "cluster/node_probe.h"

#include <algorithm>

#include <sys/sysinfo.h>
#include <unistd.h>

#include <string>

namespace sdxlb {

StatusOr<NodePlacement> node_placement(Comm& world) {
  NodePlacement p;
  if (std::string(world.backend()) != "mpi") {
    p.slot = world.rank() - 1;
    p.workers_on_node = world.size() - 1;
    return p;
  }
  SDXLB_ASSIGN_OR_RETURN(auto node, world.split_node("finding the ranks of this node"));
  SDXLB_ASSIGN_OR_RETURN(auto ranks,
                         node.all_gather(std::to_string(world.rank()), "finding the ranks of this node"));
  int workers = 0;
  for (const auto& r : ranks) {
    const int world_rank = std::stoi(r);
    if (world_rank == world.rank()) p.slot = workers;
    if (world_rank != 0) ++workers;
  }
  p.workers_on_node = workers;
  return p;
}

StatusOr<Comm> node_workers(Comm& world) {
  const char* hint = "grouping the workers of this node";
  const int colour = world.rank() == 0 ? kNoColour : 0;
  if (std::string(world.backend()) != "mpi") return world.split(colour, hint);
  SDXLB_ASSIGN_OR_RETURN(auto node, world.split_node(hint));
  return node.split(colour, hint);
}

StatusOr<int> workers_sharing_device(Comm& node_workers, const std::string& device_id) {
  SDXLB_ASSIGN_OR_RETURN(auto ids,
                         node_workers.all_gather(device_id, "finding the workers that share a GPU"));
  const auto n = std::count(ids.begin(), ids.end(), device_id);
  return static_cast<int>(std::max<std::ptrdiff_t>(n, 1));
}

std::string host_name() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

double host_ram_gib() {
  struct sysinfo info {};
  if (sysinfo(&info) != 0) return -1;
  return static_cast<double>(info.totalram) * info.mem_unit / (1024.0 * 1024.0 * 1024.0);
}

}  // namespace sdxlb
