// Which device a worker uses, and how to name it in the per-item metadata.
#pragma once

#include <string>

#include <c10/core/Device.h>

namespace sdxlb {

/// The i-th worker on a node takes GPU i mod (GPUs on the node); a CPU device stays as it is.
at::Device bind_device(const at::Device& device, int gpu_slot);
/// The GPU's name, or "cpu".
std::string device_name(const at::Device& device);

}  // namespace sdxlb
