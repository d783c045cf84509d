// CallLayout: where the items of an image group sit in its UNet calls (images_per_unet_call k > 1).
//
// An image's pixels may depend on its place in a UNet call of k images: on the GPU, cuBLAS and cuDNN choose
// their kernels by the call's shape, and a kernel that splits some output tiles along K rounds the rows of
// those tiles differently (measured on the H200 in session 18: the image at the second place of a two-image
// call did not get the bits it got at the first place). So the place is not left to the batch: an item sits
// at place (item index mod k) of its call, the items of one aligned block [b·k, (b+1)·k) share a call, and
// the places no item takes are filled with copies. An image then meets the same place in a call of the same
// shape whatever the batch size, the number of concurrent calls, the cluster's shape or a resume, and gets
// the same bits, whichever kernels the libraries choose. With k = 1 every call holds one image and the
// layout is the plain order.
//
// A batch the coordinator hands out is an aligned group of batch_size consecutive items; with batch_size a
// multiple of k (as `batch_size: auto` picks), its calls are full, and only batches with gaps (items an
// earlier run finished, the job's end) hold copies. Pure bookkeeping: no LibTorch, thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sdxlb {

struct CallLayout {
  /// Per item, in the order given: its position among the group's images (call · k + place).
  std::vector<int64_t> position;
  /// Per position: the index (into the items given) of the item whose prompt and seed fill it, the item
  /// itself where one sits there, else a copy (of an item of the same call, or of the last item for a call
  /// that holds none).
  std::vector<int64_t> source;
  /// Whether a position holds its own item (not a copy).
  std::vector<bool> real;
  /// The group's images: whole calls, at least the `images` asked for.
  int64_t padded = 0;
};

/// Lays out `items` (job item indices, never negative; distinct or not) in calls of `per_call` images, at
/// least `images` images in all (the group size; rounded up to whole calls). per_call < 1 counts as 1.
CallLayout lay_out_calls(const std::vector<int64_t>& items, int64_t per_call, int64_t images);

/// How far from `begin` one group of `calls` calls of `per_call` images reaches in `items`: the end of the
/// longest run items[begin, end) that lay_out_calls() places in at most `calls` calls (at least one item
/// when any is left).
size_t group_end(const std::vector<int64_t>& items, size_t begin, int64_t per_call, int64_t calls);

}  // namespace sdxlb
