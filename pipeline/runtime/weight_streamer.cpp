#include "pipeline/runtime/weight_streamer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <unordered_set>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#ifdef SDXLB_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

#include "pipeline/io/torch_error.h"
#include "pipeline/nn/layers.h"

namespace sdxlb {
namespace {

constexpr int64_t kAlign = 256;  // every weight starts on a 256-byte boundary (vector loads, cuBLAS)

int64_t align_up(int64_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

// One weight of a unit: where it sits in the unit's packed bytes and how to view it.
struct Weight {
  at::Tensor param;
  int64_t offset = 0;  // bytes from the unit's start
  std::vector<int64_t> sizes, strides;
  at::ScalarType dtype = at::kFloat;
};

struct Unit {
  HookedUnit* hook = nullptr;
  std::string name;
  std::vector<Weight> weights;
  int64_t bytes = 0;        // packed size
  int64_t host_offset = 0;  // in the host buffer
  at::Tensor resident;      // its own GPU buffer when resident
  int ordinal = -1;         // among streamed units in execution order; -1 when resident
};

// Points every weight of `u` at `base` (a byte tensor holding the unit's packed bytes).
void view_weights(Unit& u, const at::Tensor& base) {
  at::NoGradGuard no_grad;
  for (Weight& w : u.weights) {
    at::Tensor typed = base.narrow(0, w.offset, base.size(0) - w.offset).view(w.dtype);
    w.param.set_data(typed.as_strided(w.sizes, w.strides));
  }
}

}  // namespace

std::string StreamingStats::describe() const {
  char buf[256];
  const double gib = 1024.0 * 1024.0 * 1024.0;
  std::snprintf(buf, sizeof buf,
                "weight streaming: %d of %d UNet units streamed, %.2f GiB copied per UNet call, %.2f GiB "
                "resident (+%.2f GiB outside units), %.2f GiB of slots",
                streamed_units, units, static_cast<double>(streamed_bytes) / gib,
                static_cast<double>(resident_bytes) / gib, static_cast<double>(other_bytes) / gib,
                static_cast<double>(slot_bytes) / gib);
  return buf;
}

struct WeightStreamer::State {
  enum class Phase { kUntraced, kTracing, kPipelined };

  UNet2DConditionModel unet{nullptr};
  c10::Device device{at::kCPU};
  StreamingOptions options;
  std::vector<Unit> units;
  at::Tensor host;          // every unit's packed bytes (page-locked on CUDA)
  bool registered = false;  // host is cudaHostRegister'ed
  int64_t other_bytes = 0;

  Phase phase = Phase::kUntraced;
  std::vector<int> order;     // unit numbers in execution order (recorded by the first pass)
  std::vector<int> streamed;  // unit numbers of the streamed units, in execution order
  std::vector<at::Tensor> slots;
  at::Tensor trace_slot;  // the tracing pass's single buffer
  size_t pos = 0;         // next position in `order` during a pipelined pass
  bool evicted = false;   // evict() dropped the resident units' GPU buffers

#ifdef SDXLB_WITH_CUDA
  std::unique_ptr<c10::cuda::CUDAStream> copy_stream;
  std::vector<at::cuda::CUDAEvent> copied;  // per streamed ordinal: its copy is done
  at::cuda::CUDAEvent progress;             // compute reached a point (slots before it are free)
#endif

  void copy_unit(const Unit& u, const at::Tensor& dst, bool on_copy_stream);
  void finalize();
  void issue_copy(int ordinal);
};

void WeightStreamer::State::copy_unit(const Unit& u, const at::Tensor& dst, bool on_copy_stream) {
  const uint8_t* src = host.data_ptr<uint8_t>() + u.host_offset;
  if (!dst.is_cuda()) {
    std::memcpy(dst.data_ptr<uint8_t>(), src, static_cast<size_t>(u.bytes));
    return;
  }
#ifdef SDXLB_WITH_CUDA
  const cudaStream_t stream =
      on_copy_stream ? copy_stream->stream() : c10::cuda::getCurrentCUDAStream(device.index()).stream();
  const cudaError_t err =
      cudaMemcpyAsync(dst.data_ptr(), src, static_cast<size_t>(u.bytes), cudaMemcpyHostToDevice, stream);
  TORCH_CHECK(err == cudaSuccess, "weight streaming: copying ", u.name,
              " to the GPU: ", cudaGetErrorString(err));
#else
  (void)on_copy_stream;
#endif
}

// Fixes the layout after the tracing pass: the resident units (spread evenly through the pass, within the
// budget) get GPU buffers of their own; the streamed ones rotate through the slots.
void WeightStreamer::State::finalize() {
  int64_t total = 0;
  for (const Unit& u : units) total += u.bytes;
  const int64_t to_stream = std::max<int64_t>(0, total - options.resident_budget_bytes);
  // Bresenham-like spread: stream a unit whenever the streamed share so far lags the target fraction.
  const double fraction = total > 0 ? static_cast<double>(to_stream) / static_cast<double>(total) : 0.0;
  std::vector<bool> stream_it(units.size(), false);
  double owed = 0;
  int64_t resident = 0;
  for (int idx : order) {
    const Unit& u = units[static_cast<size_t>(idx)];
    owed += fraction * static_cast<double>(u.bytes);
    if (owed >= 0.5 * static_cast<double>(u.bytes)) {
      stream_it[static_cast<size_t>(idx)] = true;
      owed -= static_cast<double>(u.bytes);
    } else {
      resident += u.bytes;
    }
  }
  // Rounding can leave the resident part over budget: stream the largest resident units until it fits.
  while (resident > options.resident_budget_bytes) {
    int best = -1;
    for (int idx : order)
      if (!stream_it[static_cast<size_t>(idx)] &&
          (best < 0 || units[static_cast<size_t>(idx)].bytes > units[static_cast<size_t>(best)].bytes))
        best = idx;
    if (best < 0) break;
    stream_it[static_cast<size_t>(best)] = true;
    resident -= units[static_cast<size_t>(best)].bytes;
  }

  streamed.clear();
  int64_t slot_bytes = 0;
  for (int idx : order) {
    Unit& u = units[static_cast<size_t>(idx)];
    if (stream_it[static_cast<size_t>(idx)]) {
      u.ordinal = static_cast<int>(streamed.size());
      streamed.push_back(idx);
      slot_bytes = std::max(slot_bytes, u.bytes);
    } else {
      u.ordinal = -1;
      u.resident = at::empty({u.bytes}, at::TensorOptions().dtype(at::kByte).device(device));
      copy_unit(u, u.resident, /*on_copy_stream=*/false);
      view_weights(u, u.resident);
    }
  }
  trace_slot = at::Tensor();
  const int nslots = std::min<int>(options.slots, static_cast<int>(streamed.size()));
  slots.clear();
  for (int k = 0; k < nslots; ++k)
    slots.push_back(at::empty({slot_bytes}, at::TensorOptions().dtype(at::kByte).device(device)));
  for (int idx : streamed) {
    Unit& u = units[static_cast<size_t>(idx)];
    view_weights(u, slots[static_cast<size_t>(u.ordinal % nslots)]);
  }
#ifdef SDXLB_WITH_CUDA
  if (device.is_cuda()) {
    copy_stream =
        std::make_unique<c10::cuda::CUDAStream>(c10::cuda::getStreamFromPool(false, device.index()));
    copied = std::vector<at::cuda::CUDAEvent>(streamed.size());
    c10::cuda::getCurrentCUDAStream(device.index()).synchronize();  // resident copies done
  }
#endif
}

// Copies streamed unit `ordinal` into its slot on the copy stream, after the compute stream reached the
// current point (so the slot's previous user is done).
void WeightStreamer::State::issue_copy(int ordinal) {
  const Unit& u = units[static_cast<size_t>(streamed[static_cast<size_t>(ordinal)])];
  const at::Tensor& slot = slots[static_cast<size_t>(ordinal) % slots.size()];
#ifdef SDXLB_WITH_CUDA
  if (device.is_cuda()) {
    progress.record(c10::cuda::getCurrentCUDAStream(device.index()));
    progress.block(*copy_stream);
    copy_unit(u, slot, /*on_copy_stream=*/true);
    copied[static_cast<size_t>(ordinal)].record(*copy_stream);
    return;
  }
#endif
  copy_unit(u, slot, false);
}

WeightStreamer::WeightStreamer() : s_(std::make_unique<State>()) {}

WeightStreamer::~WeightStreamer() {
  if (!s_->unet) return;
  s_->unet->set_forward_hook(nullptr);
  for (Unit& u : s_->units) u.hook->set_unit_hook(nullptr, -1);
#ifdef SDXLB_WITH_CUDA
  if (s_->device.is_cuda()) c10::cuda::device_synchronize();
  if (s_->registered) cudaHostUnregister(s_->host.data_ptr());
#endif
}

StatusOr<std::unique_ptr<WeightStreamer>> WeightStreamer::attach(UNet2DConditionModel unet,
                                                                 c10::Device device,
                                                                 const StreamingOptions& options) {
  if (options.slots < 2) return invalid_argument("weight streaming needs at least 2 slots");
  if (unet->device().type() != at::kCPU)
    return invalid_argument("weight streaming: the UNet must be loaded on the CPU first");
  std::unique_ptr<WeightStreamer> ws(new WeightStreamer());
  State& s = *ws->s_;
  s.unet = unet;
  s.device = device;
  s.options = options;
  try {
    at::NoGradGuard no_grad;
    // 1. The units, in module order, with their weights' places in one packed host buffer.
    std::unordered_set<const at::TensorImpl*> in_units;
    int64_t offset = 0;
    for (const auto& item : unet->named_modules("", /*include_self=*/false)) {
      auto* hooked = dynamic_cast<HookedUnit*>(item.value().get());
      if (!hooked) continue;
      Unit u;
      u.hook = hooked;
      u.name = item.key();
      u.host_offset = offset;
      // Parameters and buffers (an FP8 layer's e4m3 weight and scales are buffers, layers.h).
      for (const auto& p : weights_and_buffers(*item.value())) {
        Weight w;
        w.param = p;
        w.offset = u.bytes;
        w.sizes = p.sizes().vec();
        w.strides = p.strides().vec();
        w.dtype = p.scalar_type();
        TORCH_CHECK(p.is_non_overlapping_and_dense(), "weight streaming: ", u.name, " has a strided weight");
        u.bytes = align_up(u.bytes + static_cast<int64_t>(p.nbytes()));
        u.weights.push_back(w);
        in_units.insert(p.unsafeGetTensorImpl());
      }
      offset += u.bytes;
      s.units.push_back(std::move(u));
    }
    s.host = at::empty({std::max<int64_t>(offset, 1)}, at::TensorOptions().dtype(at::kByte));
    for (Unit& u : s.units) {
      for (Weight& w : u.weights) {
        // The weight's bytes as laid out (dense, so channels-last convs keep their layout).
        std::memcpy(s.host.data_ptr<uint8_t>() + u.host_offset + w.offset, w.param.data_ptr(),
                    w.param.nbytes());
        // Until the first forward the weight is an empty placeholder: nothing of it moves with to(device).
        w.param.set_data(at::empty({0}, w.param.options()));
      }
    }
#ifdef SDXLB_WITH_CUDA
    if (device.is_cuda()) {
      const cudaError_t err =
          cudaHostRegister(s.host.data_ptr(), static_cast<size_t>(s.host.nbytes()), cudaHostRegisterDefault);
      if (err != cudaSuccess)
        return Status(StatusCode::kResourceExhausted,
                      std::string("weight streaming: page-locking host memory for the UNet weights: ") +
                          cudaGetErrorString(err));
      s.registered = true;
    }
#endif
    // 2. Everything else to the device.
    unet->to(device);
    for (const auto& p : weights_and_buffers(*unet))
      if (!in_units.count(p.unsafeGetTensorImpl())) s.other_bytes += static_cast<int64_t>(p.nbytes());
    for (size_t i = 0; i < s.units.size(); ++i) s.units[i].hook->set_unit_hook(ws.get(), static_cast<int>(i));
    unet->set_forward_hook(ws.get());
  } catch (const c10::Error& e) {
    return torch_error_status("weight streaming", e);
  }
  return ws;
}

void WeightStreamer::begin_forward() {
  State& s = *s_;
  if (s.phase == State::Phase::kTracing) {
    // The previous pass was the tracing one: if it saw every unit once, fix the layout; otherwise (it
    // failed part-way) trace again.
    std::vector<int> seen(s.order);
    std::sort(seen.begin(), seen.end());
    const bool complete =
        seen.size() == s.units.size() && std::adjacent_find(seen.begin(), seen.end()) == seen.end();
    if (complete) {
      s.finalize();
      s.phase = State::Phase::kPipelined;
    }
  }
  if (s.phase == State::Phase::kUntraced || s.phase == State::Phase::kTracing) {
    s.phase = State::Phase::kTracing;
    s.order.clear();
    if (!s.trace_slot.defined()) {
      int64_t most = 0;
      for (const Unit& u : s.units) most = std::max(most, u.bytes);
      s.trace_slot = at::empty({most}, at::TensorOptions().dtype(at::kByte).device(s.device));
    }
    return;
  }
  s.pos = 0;
  const int ahead = static_cast<int>(s.slots.size()) - 1;
  for (int k = 0; k < ahead && k < static_cast<int>(s.streamed.size()); ++k) s.issue_copy(k);
}

void WeightStreamer::before_unit(int unit) {
  State& s = *s_;
  Unit& u = s.units[static_cast<size_t>(unit)];
  if (s.phase == State::Phase::kTracing) {
    // Copy on the compute stream itself: stream order keeps the previous unit's reads before the overwrite.
    s.order.push_back(unit);
    s.copy_unit(u, s.trace_slot, /*on_copy_stream=*/false);
    view_weights(u, s.trace_slot);
    return;
  }
  TORCH_CHECK(s.pos < s.order.size() && s.order[s.pos] == unit, "weight streaming: unit ", u.name,
              " ran out of the order recorded by the first forward pass");
  ++s.pos;
  if (u.ordinal < 0) return;
  const int ahead = static_cast<int>(s.slots.size()) - 1;
  // The slot of ordinal - 1 is free once compute gets here: refill it with the unit `ahead` places on.
  if (u.ordinal + ahead < static_cast<int>(s.streamed.size())) s.issue_copy(u.ordinal + ahead);
#ifdef SDXLB_WITH_CUDA
  if (s.device.is_cuda())
    s.copied[static_cast<size_t>(u.ordinal)].block(c10::cuda::getCurrentCUDAStream(s.device.index()));
#endif
}

void WeightStreamer::evict() {
  State& s = *s_;
  if (s.phase != State::Phase::kPipelined || s.evicted) return;
#ifdef SDXLB_WITH_CUDA
  if (s.device.is_cuda()) c10::cuda::getCurrentCUDAStream(s.device.index()).synchronize();
#endif
  at::NoGradGuard no_grad;
  for (Unit& u : s.units) {
    if (u.ordinal >= 0) continue;
    for (Weight& w : u.weights) w.param.set_data(at::empty({0}, w.param.options()));
    u.resident = at::Tensor();
  }
  s.evicted = true;
}

void WeightStreamer::restore() {
  State& s = *s_;
  if (!s.evicted) return;
  for (Unit& u : s.units) {
    if (u.ordinal >= 0) continue;
    u.resident = at::empty({u.bytes}, at::TensorOptions().dtype(at::kByte).device(s.device));
    s.copy_unit(u, u.resident, /*on_copy_stream=*/false);
    view_weights(u, u.resident);
  }
  s.evicted = false;
}

bool WeightStreamer::evicted() const {
  return s_->evicted;
}

StreamingStats WeightStreamer::stats() const {
  const State& s = *s_;
  StreamingStats st;
  st.units = static_cast<int>(s.units.size());
  st.streamed_units = static_cast<int>(s.streamed.size());
  for (const Unit& u : s.units) {
    st.unit_bytes += u.bytes;
    if (u.ordinal >= 0)
      st.streamed_bytes += u.bytes;
    else if (u.resident.defined())
      st.resident_bytes += u.bytes;
  }
  for (const auto& slot : s.slots) st.slot_bytes += static_cast<int64_t>(slot.nbytes());
  st.other_bytes = s.other_bytes;
  return st;
}

}  // namespace sdxlb
