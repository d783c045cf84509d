// UnitHook: a callback run at the start of each forward of a model and before each of its weight units (a
// ResnetBlock2D or a BasicTransformerBlock) computes. The weight streamer (weight_streamer.h) uses it to have
// a unit's weights on the GPU in time, while the other units' weights wait in host memory.
//
// A module that is a unit derives from HookedUnit and calls run_unit_hook() first thing in its forward.
// Without a hook (the default) that is one branch. A model with a hook is used by one thread at a time.
#pragma once

namespace sdxlb {

class UnitHook {
 public:
  virtual ~UnitHook() = default;
  /// A forward pass of the hooked model starts (on the current CUDA stream).
  virtual void begin_forward() = 0;
  /// Unit `unit` (its number from set_unit_hook) is about to compute.
  virtual void before_unit(int unit) = 0;
};

class HookedUnit {
 public:
  /// Installs (or, with nullptr, removes) the hook and this unit's number.
  void set_unit_hook(UnitHook* hook, int unit) {
    hook_ = hook;
    unit_ = unit;
  }

 protected:
  ~HookedUnit() = default;
  void run_unit_hook() const {
    if (hook_) hook_->before_unit(unit_);
  }

 private:
  UnitHook* hook_ = nullptr;
  int unit_ = -1;
};

}  // namespace sdxlb
