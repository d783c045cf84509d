#include "pipeline/nn/cudnn_loader.h"

#ifdef SDXLB_WITH_CUDNN_FRONTEND
#include <dlfcn.h>

#include <cudnn_frontend.h>

// cuDNN's frontend finds the backend's functions in this library handle
// (NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING).
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}
#endif

namespace sdxlb {

const std::string& cudnn_library_error() {
#ifdef SDXLB_WITH_CUDNN_FRONTEND
  static const std::string error = [] {
    void* h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_NOLOAD);
    if (h == nullptr) h = dlopen("libcudnn.so.9", RTLD_NOW);
    if (h == nullptr) return std::string("cuDNN 9 (libcudnn.so.9) could not be loaded: ") + dlerror();
    cudnn_frontend::cudnn_dlhandle = h;
    return std::string();
  }();
#else
  static const std::string error =
      "this build has no cuDNN frontend (the nvidia-cudnn-frontend headers were not found when it was "
      "configured); rebuild after scripts/setup.sh";
#endif
  return error;
}

}  // namespace sdxlb
