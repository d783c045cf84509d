#include "worker/item_sink.h"

#include "common/log.h"
#include "store/output_folder.h"

namespace sdxlb {

ItemSink::ItemSink(const RunContext& ctx, int rank) : ctx_(&ctx), rank_(rank) {}

ItemSink::~ItemSink() = default;

Status ItemSink::before_work(double next_work_s, Clock::time_point now) {
  if (clock_running_ && open_items() > 0 &&
      std::chrono::duration<double>(now - work_start_).count() + next_work_s > ctx_->job.segment_seconds)
    SDXLB_RETURN_IF_ERROR(publish());
  if (!clock_running_) {
    clock_running_ = true;
    work_start_ = now;
  }
  return Status::ok();
}

Status ItemSink::add(const ItemRecord& r, const uint8_t* rgb) {
  if (!segment_) {
    SegmentOptions o;
    o.path = segment_file_path(ctx_->job.output, ctx_->run_id, rank_, segments_);
    o.encoding =
        ctx_->job.image_format == JobSpec::ImageFormat::kPng ? ImageEncoding::kPng : ImageEncoding::kRaw;
    o.height = static_cast<int>(ctx_->job.height);
    o.width = static_cast<int>(ctx_->job.width);
    o.run_id = ctx_->run_id;
    o.rank = rank_;
    if (job_identity_.empty()) job_identity_ = ctx_->job.identity(ctx_->model.render_identity());
    o.job_identity = job_identity_;
    SDXLB_ASSIGN_OR_RETURN(auto w, SegmentWriter::create(o));
    segment_ = std::make_unique<SegmentWriter>(std::move(w));
  }
  SDXLB_RETURN_IF_ERROR(segment_->add(r, rgb));
  if (segment_->size() >= ctx_->job.segment_items) SDXLB_RETURN_IF_ERROR(publish());
  return Status::ok();
}

Status ItemSink::publish() {
  if (!segment_) return Status::ok();
  const int64_t n = segment_->size();
  SDXLB_RETURN_IF_ERROR(segment_->publish());
  log_debug("published " + segment_->path() + " with " + std::to_string(n) + " items");
  segment_.reset();
  ++segments_;
  clock_running_ = false;
  return Status::ok();
}

}  // namespace sdxlb
