// Status and StatusOr: the error currency at module boundaries.
//
// A Status is OK or carries a code and a message written for the user: it names the file, key, line or
// tensor, says what is wrong and, where one exists, the fix. StatusOr<T> holds a T or a non-OK Status.
// Both are cheap to move and are not thread-safe to mutate concurrently (like any value type).
#pragma once

#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace sdxlb {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad user input: job file, CLI flag, prompt file
  kNotFound,            // a file, component or key that should exist does not
  kDataLoss,            // a file exists but is corrupt or truncated
  kIoError,             // the OS refused a read or write
  kFailedPrecondition,  // the state does not allow this (e.g. resuming a different job)
  kResourceExhausted,   // out of memory
  kUnimplemented,       // a capability that is not built yet
  kInternal,            // a bug: an invariant of ours broke
  kCancelled,           // stopped early on request (a stop signal); resuming finishes the work
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  bool is_ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "<code name>: <message>", or "OK".
  std::string to_string() const;
  /// Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status with_context(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) {
  return Status(StatusCode::kInvalidArgument, std::move(m));
}
inline Status not_found(std::string m) {
  return Status(StatusCode::kNotFound, std::move(m));
}
inline Status data_loss(std::string m) {
  return Status(StatusCode::kDataLoss, std::move(m));
}
inline Status io_error(std::string m) {
  return Status(StatusCode::kIoError, std::move(m));
}
inline Status failed_precondition(std::string m) {
  return Status(StatusCode::kFailedPrecondition, std::move(m));
}
inline Status internal_error(std::string m) {
  return Status(StatusCode::kInternal, std::move(m));
}
inline Status cancelled(std::string m) {
  return Status(StatusCode::kCancelled, std::move(m));
}
inline Status unimplemented(std::string m) {
  return Status(StatusCode::kUnimplemented, std::move(m));
}

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(v_).is_ok()) v_ = Status(StatusCode::kInternal, "StatusOr built from an OK status");
  }
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  /// The error, or OK when a value is held.
  Status status() const { return is_ok() ? Status::ok() : std::get<Status>(v_); }
  /// The value. Calling these on an error is a bug and aborts.
  T& value() & {
    check();
    return std::get<T>(v_);
  }
  const T& value() const& {
    check();
    return std::get<T>(v_);
  }
  T&& value() && {
    check();
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  void check() const {
    if (!is_ok()) std::abort();
  }
  std::variant<Status, T> v_;
};

}  // namespace sdxlb

#define SDXLB_CONCAT_INNER(a, b) a##b
#define SDXLB_CONCAT(a, b) SDXLB_CONCAT_INNER(a, b)

/// Returns the Status from the enclosing function when `expr` is not OK.
#define SDXLB_RETURN_IF_ERROR(expr)           \
  do {                                        \
    ::sdxlb::Status _sdxlb_st = (expr);       \
    if (!_sdxlb_st.is_ok()) return _sdxlb_st; \
  } while (0)

/// `SDXLB_ASSIGN_OR_RETURN(auto x, f());` declares x from a StatusOr, or returns its error.
#define SDXLB_ASSIGN_OR_RETURN(lhs, expr) \
  SDXLB_ASSIGN_OR_RETURN_IMPL(SDXLB_CONCAT(_sdxlb_so_, __LINE__), lhs, expr)
#define SDXLB_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.is_ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
