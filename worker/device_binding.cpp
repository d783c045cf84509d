#include "worker/device_binding.h"

#include <ATen/Context.h>

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace sdxlb {

at::Device bind_device(const at::Device& device, int gpu_slot) {
  if (!device.is_cuda()) return device;
  const int n = static_cast<int>(at::getNumGPUs());
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(n > 0 ? gpu_slot % n : 0));
}

std::string device_identity(const at::Device& device) {
#ifdef SDXLB_WITH_CUDA
  if (device.is_cuda()) {
    char bus[64] = {0};
    if (cudaDeviceGetPCIBusId(bus, sizeof bus, device.index()) == cudaSuccess) return bus;
    (void)cudaGetLastError();
    return "cuda:" + std::to_string(device.index());  // no bus id: each visible index its own GPU
  }
#endif
  (void)device;
  return "cpu";
}

std::string device_name(const at::Device& device) {
#ifdef SDXLB_WITH_CUDA
  if (device.is_cuda()) return at::cuda::getDeviceProperties(device.index())->name;
#endif
  (void)device;
  return "cpu";
}

}  // namespace sdxlb
