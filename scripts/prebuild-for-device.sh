#!/usr/bin/env bash
# Packs this machine's Release build for the GPU machine (bench/bench_env.sh, SDXLB_PREBUILT): the benchmark
# binaries and the shared libraries whose versions differ there. Only valid when both sides have the same
# LibTorch (torch 2.11 + CUDA 13 here and there); bench_env.sh builds on the spot when they do not start.
#   scripts/prebuild-for-device.sh BUILD_DIR OUT_DIR [FUZZ_BUILD_DIR]
# With FUZZ_BUILD_DIR (scripts/fuzz.sh's build folder), its libFuzzer targets go to OUT_DIR/fuzz too
# (bench/device_fuzz.sh runs them on the GPU machine's cores).
set -euo pipefail
build="$1" out="$2"
rm -rf "$out"
mkdir -p "$out/apps" "$out/bench" "$out/tests" "$out/lib"
cp "$build/apps/sdxl-batch" "$out/apps/"
cp "$build/bench/unet_parity" "$build/bench/vae_timing" "$build/bench/store_bench" "$out/bench/"
[[ -x "$build/bench/gemm_algos" ]] && cp "$build/bench/gemm_algos" "$out/bench/"
if [[ -n "${3:-}" ]]; then
  mkdir -p "$out/fuzz"
  for f in "$3"/fuzz/fuzz_*; do [[ -x "$f" && ! -d "$f" ]] && cp "$f" "$out/fuzz/"; done
fi
for t in fused_ops_test speedup_parity_test fp8_test fp8_attention_test batch_invariance_test gpu_numerics_test \
  graph_memsets_test; do
  [[ -x "$build/tests/$t" ]] && cp "$build/tests/$t" "$out/tests/"
done
# libarchive (WebDataset export) and what it needs that a GPU machine may lack (not libnettle: the
# machine's own gnutls needs its newer one).
for lib in libyaml-cpp.so.0.7 libspdlog.so.1.10 libfmt.so.9 libmpi_cxx.so.40 libarchive.so.13 libacl.so.1 \
  liblz4.so.1 libbz2.so.1.0 libxml2.so.2 libicuuc.so.72 libicudata.so.72; do
  cp -L "/lib/x86_64-linux-gnu/$lib" "$out/lib/"
done
# Symbols are not needed there, and the device call carries at most 64 MiB in all (with .whl and the tree).
strip "$out"/apps/* "$out"/bench/* "$out"/tests/* 2>/dev/null || true
du -sh "$out"
