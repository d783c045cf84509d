#!/usr/bin/env bash
# Probe (issue 16): does flash attention at head width 64 go faster with part of its exponentials off the MUFU
# unit? Builds CUTLASS's Hopper FMHA example (examples/88_hopper_fmha in the nvidia-cutlass wheel; forward,
# head width 64 only) in variants whose softmax computes exp2 differently, and the exp2 throughput kernel
# (exp2_throughput.cu); then runs them at the UNet's attention shapes.
#   f32   exp2f, as the example ships (MUFU.EX2)
#   f16   the argument rounded to fp16, ex2.approx.f16x2
#   p4    every fourth exp2 as 2^n · p(f) on the FMA units (n = round(x), f = x - n in [-0.5, 0.5], p a
#         degree-3 fit of 2^f, relative error 7.5e-5, below fp16's rounding of the probabilities)
#   p2    every second exp2 so
# Usage: bench/exp2_probe/fmha_variants.sh build DIR [CUTLASS_DIR]   (any machine with nvcc: sm_90a)
#        bench/exp2_probe/fmha_variants.sh run DIR                   (a Hopper GPU)
set -euo pipefail
mode="$1" dir="$(mkdir -p "$2" && cd "$2" && pwd)"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $mode == run ]]; then
  "$dir/exp2_throughput"
  for s in "2 20 1024" "4 20 1024" "2 10 4096" "4 10 4096"; do
    read -r b h n <<< "$s"
    for v in f32 f16 p4 p2; do
      echo "$v b=$b h=$h n=$n: $("$dir/fmha_$v" --b="$b" --h="$h" --q="$n" --k="$n" --d=64 --iterations=300 --verify 2>&1 |
        grep 'tma 64x128' | tr -s ' ')"
    done
  done
  exit 0
fi
cutlass="${3:-$(python3 -c 'import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), "source"))')}"
nvcc="${NVCC:-/usr/local/cuda/bin/nvcc}"
rm -rf "$dir/ex" && cp -r "$cutlass/examples/88_hopper_fmha" "$dir/ex"
python3 - "$dir/ex" <<'PY'
import sys
ex = sys.argv[1]
p = ex + '/collective/fmha_collective_softmax.hpp'
s = open(p).read()
helper = '''
  template<class Row>
  CUTLASS_DEVICE void exp2_row(Row&& row, float scale, float scale_max) {
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < size(row); j += 2) {
      float a = scale * row(j) - scale_max;
      float b = scale * row(j + 1) - scale_max;
#if defined(PROBE_F16EXP)
      __half2 h = __floats2half2_rn(a, b);
      uint32_t hu = reinterpret_cast<uint32_t&>(h), du;
      asm("ex2.approx.f16x2 %0, %1;" : "=r"(du) : "r"(hu));
      float2 f = __half22float2(reinterpret_cast<__half2&>(du));
      row(j) = f.x; row(j + 1) = f.y;
#elif defined(PROBE_POLY)
      row(j) = ::exp2f(a);
      if ((j / 2) % (PROBE_POLY / 2) == (PROBE_POLY / 2) - 1) {
        float x = fmaxf(b, -127.f);
        float t = x + 12582912.f;
        float fr = x - (t - 12582912.f);
        float q = fmaf(fmaf(fmaf(0.05517162f, fr, 0.24261113f), fr, 0.69326097f), fr, 0.99992806f);
        row(j + 1) = __int_as_float(__float_as_int(q) + (__float_as_int(t) << 23));
      } else {
        row(j + 1) = ::exp2f(b);
      }
#else
      row(j) = ::exp2f(a); row(j + 1) = ::exp2f(b);
#endif
    }
  }
'''
anchor = '  CUTLASS_DEVICE float overload_exp2(float f) {'
assert anchor in s
s = s.replace(anchor, helper + anchor, 1)
old1 = '''      CUTLASS_PRAGMA_UNROLL
      for (int j = 0; j < size<1>(acc_qk_mn); j++) {
        acc_qk_mn(i, j) = overload_exp2(scale * acc_qk_mn(i, j) - scale_max);
      }
'''
assert s.count(old1) == 2
s = s.replace(old1, '      if constexpr (cute::is_same_v<MaxType, float>) { exp2_row(acc_qk_mn(i, _), scale, scale_max); } else {\n'
              + old1 + '      }\n')
old2 = '''      CUTLASS_PRAGMA_UNROLL
      for (int k = 0; k < size<1>(acc_qk_mn); k++) {
        acc_qk_mn(j, k) = ::exp2f(params.scale_softmax_log2 * acc_qk_mn(j, k) - scale_max);
        a_sum(j) += acc_qk_mn(j, k);
      }'''
assert s.count(old2) == 1
s = s.replace(old2, '''      exp2_row(acc_qk_mn(j, _), params.scale_softmax_log2, scale_max);
      CUTLASS_PRAGMA_UNROLL
      for (int k = 0; k < size<1>(acc_qk_mn); k++) {
        a_sum(j) += acc_qk_mn(j, k);
      }''')
open(p, 'w').write(s)
# Forward, head width 64, no masking: the one configuration the probe measures.
p = ex + '/88_hopper_fmha.cu'
s = open(p).read()
i = s.index('  with_fusion([&](auto fusion) {\n    if (options.bwd) {')
j = s.index('#endif\n\n  return 0;\n}', i)
open(p, 'w').write(s[:i] + '  run_fwd_64(DefaultFusion{}, options, hw_info);\n' + s[j:])
PY
# -DNDEBUG matters: with the assertions' calls in, ptxas serialises the WGMMAs (warning C7510).
flags=(-O3 -DNDEBUG -std=c++17 -arch=sm_90a --use_fast_math --expt-relaxed-constexpr -I"$cutlass/include"
  -I"$cutlass/tools/util/include" -I"$dir/ex")
"$nvcc" -O3 -arch=sm_90a -o "$dir/exp2_throughput" "$here/exp2_throughput.cu"
"$nvcc" "${flags[@]}" -o "$dir/fmha_f32" "$dir/ex/88_hopper_fmha.cu"
"$nvcc" "${flags[@]}" -DPROBE_F16EXP -o "$dir/fmha_f16" "$dir/ex/88_hopper_fmha.cu"
"$nvcc" "${flags[@]}" -DPROBE_POLY=4 -o "$dir/fmha_p4" "$dir/ex/88_hopper_fmha.cu"
"$nvcc" "${flags[@]}" -DPROBE_POLY=2 -o "$dir/fmha_p2" "$dir/ex/88_hopper_fmha.cu"
echo "built in $dir: exp2_throughput fmha_f32 fmha_f16 fmha_p4 fmha_p2 (run: $0 run $dir)"
