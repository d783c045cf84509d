# Finds LibTorch. The C++ library is the one bundled in the PyPI `torch` wheel, so the prefix comes from
# `torch.utils.cmake_prefix_path` of the Python named by SDXLB_PYTHON (or Python3 on PATH).
# Set Torch_DIR yourself to use a standalone LibTorch instead.
if(NOT Torch_DIR)
  if(NOT SDXLB_PYTHON)
    find_package(Python3 REQUIRED COMPONENTS Interpreter)
    set(SDXLB_PYTHON ${Python3_EXECUTABLE})
  endif()
  execute_process(
    COMMAND ${SDXLB_PYTHON} -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _sdxlb_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _sdxlb_torch_rc ERROR_VARIABLE _sdxlb_torch_err)
  if(NOT _sdxlb_torch_rc EQUAL 0)
    message(FATAL_ERROR "Cannot import torch with ${SDXLB_PYTHON}: ${_sdxlb_torch_err}\n"
                        "Run scripts/setup.sh, or pass -DSDXLB_PYTHON=/path/to/python with torch installed, "
                        "or -DTorch_DIR=<libtorch>/share/cmake/Torch.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH ${_sdxlb_torch_prefix})
endif()

# GPU architectures for LibTorch's CUDA flags and our own kernels: Ampere and Hopper (A100, H100, H200)
# unless the user says otherwise. (Without this, torch asks nvcc for architectures CUDA 13 no longer has.)
if(NOT TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
endif()

# The torch wheel's CUDA build wants a CUDA toolkit when present; on a machine without one we still build
# the CPU path, because the wheel's libraries carry the CUDA runtime they need.
find_package(Torch REQUIRED)
message(STATUS "LibTorch ${Torch_VERSION}: ${TORCH_INSTALL_PREFIX}")

# The Python interpreter that has torch, diffusers and transformers (for the oracle fixtures).
if(NOT SDXLB_PYTHON)
  find_package(Python3 COMPONENTS Interpreter)
  set(SDXLB_PYTHON ${Python3_EXECUTABLE})
endif()
set(SDXLB_PYTHON ${SDXLB_PYTHON} CACHE FILEPATH "Python with torch/diffusers/transformers for oracle tests")

# LibTorch built with CUDA: our code may call the CUDA parts of c10 (synchronize, streams, graphs).
if(TORCH_CUDA_LIBRARIES)
  set(SDXLB_WITH_CUDA ON)
else()
  set(SDXLB_WITH_CUDA OFF)
endif()
message(STATUS "sdxl-batch CUDA code paths: ${SDXLB_WITH_CUDA}")

# libtorch.so and libtorch_cpu.so export their own, statically linked copy of std::filesystem (built against an
# older libstdc++). When libtorch comes before libstdc++.so.6 in an executable's DT_NEEDED list, the dynamic
# linker binds *our* std::filesystem calls to that copy, whose internals do not match our headers:
# std::filesystem::remove_all crashed with a null call (issue 12, `run --overwrite`). Naming libstdc++ first
# makes every std:: symbol resolve to the system libstdc++, as it does when Python imports torch.
add_link_options("LINKER:--push-state,--no-as-needed,-lstdc++,--pop-state")

# Header-only C++ packages that scripts/setup.sh installs into the venv: when VAR is empty, sets it (cached) to
# the venv's site-packages folder + SUBDIR if that holds CHECK_FILE.
function(sdxlb_find_in_venv var subdir check_file)
  if(SDXLB_WITH_CUDA AND NOT ${var} AND SDXLB_PYTHON)
    execute_process(
      COMMAND ${SDXLB_PYTHON} -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"
      OUTPUT_VARIABLE _purelib OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
    if(_rc EQUAL 0 AND EXISTS "${_purelib}/${subdir}/${check_file}")
      set(${var} "${_purelib}/${subdir}" CACHE PATH "" FORCE)
    endif()
  endif()
endfunction()

# cuDNN's frontend (the PyPI `nvidia-cudnn-frontend` wheel): FP8 attention (pipeline/nn/fp8_attention.cpp) builds
# its cuDNN graphs with it. Without it the build still works, and `attention_precision: fp8` is refused with a
# message that says so.
set(SDXLB_CUDNN_FRONTEND_INCLUDE "" CACHE PATH "Folder with cudnn_frontend.h (found in the venv when empty)")
sdxlb_find_in_venv(SDXLB_CUDNN_FRONTEND_INCLUDE include cudnn_frontend.h)
if(SDXLB_WITH_CUDA AND SDXLB_CUDNN_FRONTEND_INCLUDE AND EXISTS "${SDXLB_CUDNN_FRONTEND_INCLUDE}/cudnn_frontend.h")
  set(SDXLB_WITH_CUDNN_FRONTEND ON)
else()
  set(SDXLB_WITH_CUDNN_FRONTEND OFF)
endif()
message(STATUS "sdxl-batch cuDNN frontend (FP8 attention): ${SDXLB_WITH_CUDNN_FRONTEND} ${SDXLB_CUDNN_FRONTEND_INCLUDE}")

# CUTLASS (the PyPI `nvidia-cutlass` wheel): the FP8 3x3 convolution (pipeline/nn/kernels/fp8_conv_kernel.cu,
# Hopper's implicit GEMM). Without it the build still works, and `convolution_precision: fp8` is refused with a
# message that says so.
set(SDXLB_CUTLASS_DIR "" CACHE PATH "CUTLASS source folder with include/cutlass (found in the venv when empty)")
sdxlb_find_in_venv(SDXLB_CUTLASS_DIR cutlass_library/source include/cutlass/cutlass.h)
if(SDXLB_WITH_CUDA AND CMAKE_CUDA_COMPILER AND SDXLB_CUTLASS_DIR AND EXISTS "${SDXLB_CUTLASS_DIR}/include/cutlass/cutlass.h")
  set(SDXLB_WITH_CUTLASS ON)
else()
  set(SDXLB_WITH_CUTLASS OFF)
endif()
message(STATUS "sdxl-batch CUTLASS (FP8 convolutions): ${SDXLB_WITH_CUTLASS} ${SDXLB_CUTLASS_DIR}")
