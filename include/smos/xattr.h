// The extended-attribute interface of a mounted smos store.
//
// Every name here is part of the contract documented in smos(7). Programs in any language may
// use the literal strings; C and C++ programs may include this header instead.
#pragma once

#include <cstddef>

namespace smos::xattr {

// Prefix of every attribute that smosd owns. Other "user." names are free-form user metadata.
inline constexpr char kPrefix[] = "user.smos.";

// Object (directory) attributes.
inline constexpr char kCapacity[] = "user.smos.capacity";      // max entries, all states; rw
inline constexpr char kBlockSize[] = "user.smos.block_size";   // max bytes of one entry; rw
inline constexpr char kCommit[] = "user.smos.commit";          // "close" or "explicit"; rw
inline constexpr char kEntries[] = "user.smos.entries";        // committed entries; ro
inline constexpr char kBytes[] = "user.smos.bytes";            // memory in use; ro
inline constexpr char kTracks[] = "user.smos.tracks";          // typed layout; rw (also on entries)

// Entry (file) attributes.
inline constexpr char kState[] = "user.smos.state";      // write|idle|busy|zombie; "idle" commits
inline constexpr char kReaders[] = "user.smos.readers";  // open read handles; ro
inline constexpr char kSeq[] = "user.smos.seq";          // commit sequence number, 0 before; ro
inline constexpr char kSegment[] = "user.smos.segment";  // path of the entry's shm file; ro
inline constexpr char kName[] = "user.smos.name";        // the entry's name (see .push); ro

// The total size of the free-form user.* attributes of one entry or object: for each
// attribute, the length of its name plus the length of its value.
inline constexpr std::size_t kUserXattrCap = 4000;

}  // namespace smos::xattr
