// What our CUTLASS kernels (sm_90a, pipeline/nn/kernels/fp8_*_kernel.cu) share to launch: the device's SM
// count (asked once per device) and the adapter's checks and launch, with no workspace.
#pragma once

#include <cuda_runtime_api.h>

#include <cutlass/cutlass.h>
#include <cutlass/kernel_hardware_info.hpp>

namespace sdxlb::kernels {

/// The number of SMs of `device`, asked once per device (0 to 15).
inline int cutlass_sm_count(int device) {
  static int count[16] = {};
  if (device < 0 || device >= 16)
    return cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device);
  if (count[device] == 0)
    count[device] = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device);
  return count[device];
}

/// Checks `args` with a CUTLASS device adapter (GemmUniversalAdapter, ConvUniversalAdapter) and launches it
/// on `stream`: cudaErrorNotSupported, launching nothing, when the adapter cannot take the arguments or would
/// need a workspace; else the launch's error.
template <class Adapter>
cudaError_t launch_cutlass(const typename Adapter::Arguments& args, cudaStream_t stream) {
  Adapter op;
  if (op.can_implement(args) != cutlass::Status::kSuccess) return cudaErrorNotSupported;
  if (Adapter::get_workspace_size(args) != 0) return cudaErrorNotSupported;
  if (op.initialize(args, nullptr, stream) != cutlass::Status::kSuccess) return cudaErrorNotSupported;
  if (op.run(stream) != cutlass::Status::kSuccess) return cudaGetLastError();
  return cudaGetLastError();
}

}  // namespace sdxlb::kernels
