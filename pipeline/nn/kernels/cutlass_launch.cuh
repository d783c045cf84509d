// What our CUTLASS kernels (sm_90a: pipeline/nn/kernels/fp8_*_kernel.cu, geglu_gemm_kernel.cu) share to
// launch: the device's SM count (asked once per device) and the adapter's checks and launch, with no
// workspace.
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

/// Checks `args` with a CUTLASS device adapter (GemmUniversalAdapter, ConvUniversalAdapter) and initialises
/// `op` with them for `stream`: cudaErrorNotSupported when the adapter cannot take the arguments or would
/// need a workspace, else cudaSuccess. Launches nothing.
template <class Adapter>
cudaError_t prepare_cutlass(Adapter& op, const typename Adapter::Arguments& args, cudaStream_t stream) {
  if (op.can_implement(args) != cutlass::Status::kSuccess) return cudaErrorNotSupported;
  if (Adapter::get_workspace_size(args) != 0) return cudaErrorNotSupported;
  if (op.initialize(args, nullptr, stream) != cutlass::Status::kSuccess) return cudaErrorNotSupported;
  return cudaSuccess;
}

/// prepare_cutlass, then the launch on `stream`: the first's error, launching nothing, or the launch's.
template <class Adapter>
cudaError_t launch_cutlass(const typename Adapter::Arguments& args, cudaStream_t stream) {
  Adapter op;
  if (const cudaError_t e = prepare_cutlass(op, args, stream); e != cudaSuccess) return e;
  if (op.run(stream) != cutlass::Status::kSuccess) return cudaGetLastError();
  return cudaGetLastError();
}

}  // namespace sdxlb::kernels
