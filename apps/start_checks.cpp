#include "apps/start_checks.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "cluster/node_probe.h"
#include "common/log.h"
#include "pipeline/io/model_folder.h"
#include "pipeline/runtime/memory_plan.h"

namespace sdxlb {

StatusOr<ModelIdentity> read_model_identity(const RunContext& ctx, const RenderSetup& setup) {
  SDXLB_ASSIGN_OR_RETURN(auto probe,
                         SdxlPipeline::load(ctx.job.model, setup.pipeline_options(ctx.job, false, false)));
  ModelIdentity id;
  id.model_id = probe->model_id();
  if (!ctx.job.loras.empty()) log_info("model: " + probe->loras_summary());
  id.text_encoder_id = probe->text_encoder_id();
  id.force_zeros_for_empty_prompt = probe->force_zeros_for_empty_prompt();
  id.scheduler = probe->scheduler_config().effective_json().dump();
  return id;
}

Status check_cpu_memory(const RunContext& ctx, const RenderSetup& setup) {
  if (!setup.device.is_cpu()) return Status::ok();
  auto first_width = [&](const std::string& component, double sdxl) -> double {
    auto cfg = read_json_file(ctx.job.model + "/" + component + "/config.json");
    if (!cfg.is_ok() || !cfg->contains("block_out_channels") || !(*cfg)["block_out_channels"].is_array() ||
        (*cfg)["block_out_channels"].empty() || !(*cfg)["block_out_channels"][0].is_number())
      return 1.0;  // unknown: SDXL's
    return std::max(0.0, (*cfg)["block_out_channels"][0].get<double>()) / sdxl;
  };
  const std::string decode = setup.decoder == DecoderKind::kTiny    ? "tiny"
                             : setup.decoder == DecoderKind::kTiled ? "tiled"
                                                                    : "full";
  const double need = cpu_activation_gib(ctx.job.width, ctx.job.height, first_width("unet", 320),
                                         first_width("vae", 128), decode);
  const double have = host_ram_gib() / std::max(1, ctx.workers_on_node);
  if (have <= 0 || need <= have) return Status::ok();
  char buf[400];
  std::snprintf(
      buf, sizeof buf,
      "%s: a %lldx%lld image needs about %.0f GiB of activations with this model on the CPU (fp32, %s "
      "decode), more than the %.0f GiB of RAM each of this node's %d worker(s) has; use a smaller "
      "width and height%s",
      ctx.job.job_file.c_str(), static_cast<long long>(ctx.job.width), static_cast<long long>(ctx.job.height),
      need, decode.c_str(), have, ctx.workers_on_node, decode == "full" ? " or memory: {decode: tiled}" : "");
  return Status(StatusCode::kResourceExhausted, buf);
}

}  // namespace sdxlb
