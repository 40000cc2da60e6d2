// Hash64 (common/hash64.hpp), which binds statistics files to the weights they came from:
// equal bytes hash equal, any changed byte, length or split changes the hash.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/hash64.hpp"
#include "test_util.hpp"

using dalr::Hash64;

namespace {

std::string hash_of(const std::vector<unsigned char>& bytes) {
  Hash64 h;
  h.add(bytes.data(), bytes.size());
  return h.hex();
}

TEST(Hash64, EveryByteAndTheLengthCount) {
  std::mt19937_64 rng(dalr::test::test_seed(5));
  for (size_t n : {0, 1, 7, 8, 9, 31, 1001}) {
    std::vector<unsigned char> v(n);
    for (auto& c : v) c = static_cast<unsigned char>(rng());
    const std::string h = hash_of(v);
    EXPECT_EQ(h, hash_of(v));
    EXPECT_EQ(h.size(), 16u);
    std::set<std::string> seen{h};
    for (size_t i = 0; i < n; ++i)
      for (int bit : {0, 7}) {
        auto w = v;
        w[i] ^= static_cast<unsigned char>(1 << bit);
        EXPECT_TRUE(seen.insert(hash_of(w)).second) << "n " << n << " byte " << i;
      }
    auto longer = v;
    longer.push_back(0);  // a trailing zero byte is not the same bytes
    EXPECT_NE(hash_of(longer), h);
  }
  // The same bytes split differently are different inputs ("ab" + "c" vs "a" + "bc").
  Hash64 a, b;
  a.add(std::string("ab"));
  a.add(std::string("c"));
  b.add(std::string("a"));
  b.add(std::string("bc"));
  EXPECT_NE(a.hex(), b.hex());
}

}  // namespace
