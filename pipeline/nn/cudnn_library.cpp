#include "pipeline/nn/cudnn_library.h"

#include <dlfcn.h>

// cuDNN's frontend finds the backend's functions in this library handle
// (NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING).
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}

namespace sdxlb {

const std::string& cudnn_frontend_library_error() {
  static const std::string error = [] {
    void* h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_NOLOAD);
    if (h == nullptr) h = dlopen("libcudnn.so.9", RTLD_NOW);
    if (h == nullptr) return std::string("cuDNN 9 (libcudnn.so.9) could not be loaded: ") + dlerror();
    cudnn_frontend::cudnn_dlhandle = h;
    return std::string();
  }();
  return error;
}

}  // namespace sdxlb
