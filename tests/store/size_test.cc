// Sizes and counts as options and xattr values spell them (smosd(8): "4096, 64K, 1M, 2GiB").
#include "util/size.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <optional>

namespace smos {
namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

TEST(ParseSizeTest, PlainNumbersAreBytes) {
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("18446744073709551615"), kMax);
}

TEST(ParseSizeTest, SuffixesArePowersOf1024) {
  EXPECT_EQ(parse_size("64K"), 64u << 10);
  EXPECT_EQ(parse_size("1M"), 1u << 20);
  EXPECT_EQ(parse_size("2G"), 2ull << 30);
  EXPECT_EQ(parse_size("1T"), 1ull << 40);
}

TEST(ParseSizeTest, SuffixesIgnoreCaseAndMayEndInBOrIB) {
  EXPECT_EQ(parse_size("64k"), 64u << 10);
  EXPECT_EQ(parse_size("64KiB"), 64u << 10);
  EXPECT_EQ(parse_size("64kib"), 64u << 10);
  EXPECT_EQ(parse_size("64KB"), 64u << 10);
  EXPECT_EQ(parse_size("64kb"), 64u << 10);
  EXPECT_EQ(parse_size("2GiB"), 2ull << 30);
  EXPECT_EQ(parse_size("3t"), 3ull << 40);
}

// smosd(8): B or iB may follow a K, M, G or T suffix; on its own it is not a unit.
TEST(ParseSizeTest, BOrIBWithoutAUnitIsRejected) {
  EXPECT_EQ(parse_size("10b"), std::nullopt);
  EXPECT_EQ(parse_size("10B"), std::nullopt);
  EXPECT_EQ(parse_size("10iB"), std::nullopt);
}

// `echo 64K | setfattr ...` leaves a newline in the value.
TEST(ParseSizeTest, TrailingWhitespaceIsTolerated) {
  EXPECT_EQ(parse_size("64K\n"), 64u << 10);
  EXPECT_EQ(parse_size("4096 "), 4096u);
}

TEST(ParseSizeTest, MalformedTextIsRejected) {
  for (const char* text : {"", " ", "K", "-1", "+1", "1.5G", " 64K", "64 K", "64X", "64KX",
                           "64KBB", "64KiBB", "64Ki", "64MK", "0x10", "1e3", "ten"}) {
    EXPECT_EQ(parse_size(text), std::nullopt) << '"' << text << '"';
  }
}

TEST(ParseSizeTest, OverflowIsRejected) {
  EXPECT_EQ(parse_size("18446744073709551616"), std::nullopt);
  EXPECT_EQ(parse_size("99999999999999999999"), std::nullopt);
  EXPECT_EQ(parse_size("16777215T"), 16777215ull << 40);
  EXPECT_EQ(parse_size("16777216T"), std::nullopt);  // 2^64
  EXPECT_EQ(parse_size("17179869184G"), std::nullopt);  // 2^64
  EXPECT_EQ(parse_size("18014398509481984K"), std::nullopt);  // 2^64
}

TEST(ParseCountTest, AcceptsPlainDecimals) {
  EXPECT_EQ(parse_count("0"), 0u);
  EXPECT_EQ(parse_count("64"), 64u);
  EXPECT_EQ(parse_count("0064"), 64u);
  EXPECT_EQ(parse_count("18446744073709551615"), kMax);
}

TEST(ParseCountTest, RejectsEverythingElse) {
  for (const char* text : {"", " ", "-1", "+1", "1K", "64 ", " 64", "6 4", "1.0", "0x10",
                           "18446744073709551616", "99999999999999999999",
                           "123456789012345678901"}) {
    EXPECT_EQ(parse_count(text), std::nullopt) << '"' << text << '"';
  }
}

}  // namespace
}  // namespace smos
