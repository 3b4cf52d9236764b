// The control files that every object of a mounted smos store holds. See smos(7).
#pragma once

#include <cstddef>

namespace smos::control {

// open(O_WRONLY) creates an anonymous entry, named by its seq when it commits.
inline constexpr char kPush[] = ".push";
// open(O_RDONLY) claims the oldest idle entry, blocking until there is one.
inline constexpr char kPop[] = ".pop";
// A path to the committed entry with the highest seq.
inline constexpr char kLatest[] = ".latest";

// Pushed entries are named by their seq, zero-padded to this width, so that names sort in
// FIFO order.
inline constexpr std::size_t kSeqNameWidth = 20;

}  // namespace smos::control
