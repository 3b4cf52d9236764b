// Parsing of human-readable sizes and counts, for options and xattr values.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace smos {

// "4096", "64K", "1M", "2G", "1T", "64KiB", "64kb": powers of 1024, case-insensitive.
// Returns nullopt for anything else, including overflow and an empty string.
std::optional<std::uint64_t> parse_size(std::string_view text);

// A plain decimal count: digits only, no sign, no suffix, no overflow.
std::optional<std::uint64_t> parse_count(std::string_view text);

}  // namespace smos
