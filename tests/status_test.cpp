#include "common/status.h"

#include <gtest/gtest.h>

namespace sdxlb {
namespace {

StatusOr<int> parse_positive(int v) {
  if (v <= 0) return invalid_argument("steps must be positive, got " + std::to_string(v));
  return v;
}

Status use(int v, int* out) {
  SDXLB_ASSIGN_OR_RETURN(*out, parse_positive(v));
  return Status::ok();
}

TEST(Status, OkAndError) {
  EXPECT_TRUE(Status::ok().is_ok());
  Status s = not_found("x.json does not exist");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.to_string(), "not found: x.json does not exist");
  EXPECT_EQ(s.with_context("job.yaml").message(), "job.yaml: x.json does not exist");
  EXPECT_TRUE(Status::ok().with_context("ctx").is_ok());
}

TEST(Status, StatusOrPropagates) {
  int out = 0;
  EXPECT_TRUE(use(3, &out).is_ok());
  EXPECT_EQ(out, 3);
  Status s = use(-1, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("-1"), std::string::npos);
}

TEST(Status, StatusOrFromOkIsAnError) {
  StatusOr<int> v(Status::ok());
  EXPECT_FALSE(v.is_ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace sdxlb
