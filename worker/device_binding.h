// Which device a worker uses, and how to name it in the per-item metadata.
#pragma once

#include <string>

#include <c10/core/Device.h>

namespace sdxlb {

/// The i-th worker on a node takes GPU i mod (GPUs on the node); a CPU device stays as it is.
at::Device bind_device(const at::Device& device, int gpu_slot);
/// What tells one physical device from another on a node: a GPU's PCI bus id (the same for every process that
/// sees that GPU, whatever CUDA_VISIBLE_DEVICES renumbered), or "cpu".
std::string device_identity(const at::Device& device);
/// The GPU's name, or "cpu".
std::string device_name(const at::Device& device);

}  // namespace sdxlb
