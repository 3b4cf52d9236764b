// Typed tracks: the fixed layout of every entry of an object, as SMOS's multi-track objects.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace smos {

struct Track {
  std::string name;
  std::string dtype;
  std::vector<std::uint64_t> shape;
  std::uint64_t offset = 0;  // aligned to kTrackAlign
  std::uint64_t bytes = 0;
};

inline constexpr std::uint64_t kTrackAlign = 64;

// Parses "obs:uint8:84x84x4,action:int64:1" and lays the tracks out end to end, each at a
// 64-byte aligned offset. EINVAL for anything malformed: an empty or duplicate name, an unknown
// dtype, a zero or missing dimension, or a layout that overflows.
int parse_tracks(std::string_view text, std::vector<Track>* out);

// The canonical text of a layout; with offsets, each track ends in "@OFFSET".
std::string format_tracks(const std::vector<Track>& tracks, bool with_offsets);

// The bytes of one entry: the end of the last track.
std::uint64_t tracks_size(const std::vector<Track>& tracks);

}  // namespace smos
