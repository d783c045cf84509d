// Sampler: one of diffusers' schedulers, as a schedule plus a step that runs inside the denoising CUDA graph.
//
// A sampler is made for one step count. Its per-step scalars (the UNet's timestep, the input scale and the
// step's coefficients, all float32) form a table with one row per step, computed on the host when the
// sampler is made. The denoising loop (pipeline/runtime/denoise_loop.h) uploads the table once, copies row i
// into a device buffer before step i and then runs (or replays) the same work every step:
//
//   model_in = sampler.model_input(x, row)                     the UNet's input
//   out      = UNet(model_in, row[0], ...), then guidance       one implementation, in the loop
//   sampler.step({x, history, noise}, out, row)                 updates x (and the history) in place
//
// So the step is written once, on tensors, and serves the eager loop (CPU, or CUDA without graphs) and the
// captured graph alike. Branches that diffusers takes per step (the first step of a multistep method, a
// lower order at the end) are coefficients in the table, never host control flow inside step(). Multistep
// methods keep their past model outputs in history buffers (float32, zero before step 0); stochastic ones
// get a fresh standard-normal draw per step and image, drawn by the pipeline from that image's own CPU
// generator in the order diffusers draws it.
//
// Samplers are immutable after creation; step() and model_input() only read the sampler.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

namespace sdxlb {

/// The tensors of one image that a step reads and writes: rows [1, C, h, w] of the loop's static buffers.
struct SamplerTensors {
  at::Tensor x;                     ///< the sample, in the latent dtype; updated in place
  std::vector<at::Tensor> history;  ///< history_buffers() float32 buffers, kept between steps (zero at first)
  at::Tensor noise;                 ///< this step's standard-normal draw when draws_noise(), else undefined
};

class Sampler {
 public:
  virtual ~Sampler() = default;

  /// Our name for it ("euler", "dpmpp_2m", ...), as the job file spells it.
  virtual const char* name() const = 0;
  /// What the captured work depends on beyond shapes (name and the options that change the tensor ops, e.g.
  /// "euler/epsilon"): two samplers with the same signature can replay each other's CUDA graph.
  virtual std::string step_signature() const = 0;

  int64_t num_steps() const { return static_cast<int64_t>(timesteps_.size()); }
  /// The timestep given to the UNet at each step (diffusers' `scheduler.timesteps`, as float32).
  const std::vector<float>& timesteps() const { return timesteps_; }
  /// The initial latents are standard-normal noise times this.
  float init_noise_sigma() const { return init_noise_sigma_; }

  /// Per-step scalars, row-major [num_steps(), coefficient_width()], float32. Column 0 is the UNet timestep.
  const std::vector<float>& coefficients() const { return coefficients_; }
  int64_t coefficient_width() const { return width_; }

  /// Latent-shaped float32 buffers kept per image between steps (0 for one-step methods).
  virtual int history_buffers() const { return 0; }
  /// Whether each step needs a fresh standard-normal draw per image (ancestral and SDE samplers).
  virtual bool draws_noise() const { return false; }
  /// The dtype of those draws, for a model running in `model_dtype` (what diffusers passes to randn_tensor).
  virtual at::ScalarType noise_dtype(at::ScalarType model_dtype) const { return model_dtype; }

  /// The UNet's input for sample rows `x` (one image's, both copies with CFG), from the step's device row.
  virtual at::Tensor model_input(const at::Tensor& x, const at::Tensor& row) const = 0;
  /// One step of one image from its guided model output (the latent dtype), in place on `t`.
  virtual void step(const SamplerTensors& t, const at::Tensor& model_output, const at::Tensor& row) const = 0;

 protected:
  /// For implementations: the schedule's timesteps, the initial noise scale and the table (width columns).
  Sampler(std::vector<float> timesteps, float init_noise_sigma, int64_t width)
      : timesteps_(std::move(timesteps)),
        init_noise_sigma_(init_noise_sigma),
        coefficients_(timesteps_.size() * static_cast<size_t>(width), 0.0f),
        width_(width) {
    for (size_t i = 0; i < timesteps_.size(); ++i)
      coefficients_[i * static_cast<size_t>(width)] = timesteps_[i];
  }
  /// Row i's column j (j >= 1; column 0 holds the timestep).
  float& coefficient(int64_t i, int64_t j) { return coefficients_[static_cast<size_t>(i * width_ + j)]; }

 private:
  std::vector<float> timesteps_;
  float init_noise_sigma_ = 1.0f;
  std::vector<float> coefficients_;
  int64_t width_ = 1;
};

}  // namespace sdxlb
