// Whether our kernels are launched programmatically (kernels/programmatic_launch.cuh), for the host code and
// tests that do not compile CUDA.
#pragma once

namespace sdxlb::kernels {

/// Whether launch_kernel() launches programmatically on the current device: sm_90 or later and not switched
/// off by SDXLB_DISABLE_FUSION ("pdl" or "all"). The environment is read once; the device's capability once
/// per device. False where no device answers.
bool programmatic_launch_enabled();

}  // namespace sdxlb::kernels
