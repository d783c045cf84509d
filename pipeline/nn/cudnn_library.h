// The cuDNN library behind cuDNN's frontend (the header-only graph API that FP8 attention and FP8
// convolutions build their graphs with). The frontend is compiled with NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING:
// it finds cuDNN's functions in a library handle, here the libcudnn.so.9 that LibTorch has already loaded, so
// that both use one cuDNN. Only in builds with the frontend (SDXLB_WITH_CUDNN_FRONTEND).
#pragma once

#include <string>

namespace sdxlb {

/// Loads (once, thread-safe) libcudnn.so.9 for the frontend; "" when it is loaded, else why not in a
/// sentence.
const std::string& cudnn_frontend_library_error();

}  // namespace sdxlb
