// cuDNN's frontend as the files that build cuDNN graphs of their own use it (fp8_attention.cpp): the
// frontend calls the backend through the libcudnn.so.9 LibTorch has already loaded, so that both use one
// cuDNN. Host code; no frontend types in this header.
#pragma once

#include <string>

namespace sdxlb {

/// Loads (once) the libcudnn.so.9 LibTorch uses and hands it to the frontend; "" when found, else why not
/// (also in a build without the frontend headers).
const std::string& cudnn_library_error();

}  // namespace sdxlb
