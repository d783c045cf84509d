// How deeply JSON text nests, found without parsing it: nlohmann's parser is iterative, but dump() (the
// model identity hashes configs through it) and our readers recurse, so a config.json of 200,000 '['
// overflowed the stack (issue 12). Readers refuse text nested deeper than kMaxJsonDepth before parsing.
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string_view>

namespace sdxlb {

/// Deeper than any config, tokenizer file or safetensors header (they nest 2 to 4 levels).
constexpr size_t kMaxJsonDepth = 64;

/// The deepest nesting of '[' and '{' in `text`, outside strings (escapes honoured). Linear, no recursion;
/// malformed text gives some depth and is left to the parser to refuse.
inline size_t json_nesting_depth(std::string_view text) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

}  // namespace sdxlb
