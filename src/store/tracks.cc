#include "store/tracks.h"

#include <cerrno>
#include <limits>
#include <unordered_set>
#include <utility>

#include "util/size.h"

namespace smos {

namespace {

constexpr std::pair<std::string_view, std::uint64_t> kDtypes[] = {
    {"bool", 1},    {"int8", 1},    {"uint8", 1},     {"int16", 2},     {"uint16", 2},
    {"int32", 4},   {"uint32", 4},  {"int64", 8},     {"uint64", 8},    {"float16", 2},
    {"float32", 4}, {"float64", 8}, {"complex64", 8}, {"complex128", 16},
};

std::uint64_t itemsize(std::string_view dtype) {
  for (auto& [name, size] : kDtypes) {
    if (name == dtype) return size;
  }
  return 0;
}

// Splits on `sep`, keeping empty fields.
std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == sep) {
      parts.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return parts;
}

bool valid_track_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

}  // namespace

int parse_tracks(std::string_view text, std::vector<Track>* out) {
  std::vector<Track> tracks;
  std::unordered_set<std::string_view> names;
  std::uint64_t end = 0;
  for (std::string_view spec : split(text, ',')) {
    std::vector<std::string_view> fields = split(spec, ':');
    if (fields.size() != 3 || !valid_track_name(fields[0]) || !names.insert(fields[0]).second) {
      return EINVAL;
    }
    Track t;
    t.name = fields[0];
    t.dtype = fields[1];
    t.bytes = itemsize(fields[1]);
    if (t.bytes == 0) return EINVAL;
    for (std::string_view dim : split(fields[2], 'x')) {
      std::optional<std::uint64_t> n = parse_count(dim);
      if (!n || *n == 0 || !checked_mul(t.bytes, *n, &t.bytes)) return EINVAL;
      t.shape.push_back(*n);
    }
    t.offset = (end + kTrackAlign - 1) / kTrackAlign * kTrackAlign;
    if (t.offset < end || t.offset + t.bytes < t.offset || t.offset + t.bytes > (1ull << 50)) {
      return EINVAL;
    }
    end = t.offset + t.bytes;
    tracks.push_back(std::move(t));
  }
  *out = std::move(tracks);
  return 0;
}

std::string format_tracks(const std::vector<Track>& tracks, bool with_offsets) {
  std::string text;
  for (const Track& t : tracks) {
    if (!text.empty()) text += ',';
    text += t.name + ':' + t.dtype + ':';
    for (std::size_t i = 0; i < t.shape.size(); ++i) {
      if (i > 0) text += 'x';
      text += std::to_string(t.shape[i]);
    }
    if (with_offsets) text += '@' + std::to_string(t.offset);
  }
  return text;
}

std::uint64_t tracks_size(const std::vector<Track>& tracks) {
  return tracks.empty() ? 0 : tracks.back().offset + tracks.back().bytes;
}

}  // namespace smos
