// A minimal test harness: DIN_TEST registers a case, the DIN_CHECK* macros record failures, and
// run_all() returns a nonzero exit status when any check failed or a case threw.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

namespace din_ops::test {

struct Case {
  const char* name;
  void (*fn)();
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

inline int& failure_count() {
  static int count = 0;
  return count;
}

struct Registrar {
  Registrar(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

inline void fail(const char* file, int line, const std::string& what) {
  ++failure_count();
  std::fprintf(stderr, "  FAILED %s:%d: %s\n", file, line, what.c_str());
}

inline bool near(double actual, double expected, double rtol, double atol) {
  return std::abs(actual - expected) <= atol + rtol * std::abs(expected);  // false for NaN
}

// Runs every case, or only those whose name contains argv[1].
inline int run_all(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : nullptr;
  int run = 0, failed = 0;
  for (const auto& c : registry()) {
    if (filter != nullptr && std::strstr(c.name, filter) == nullptr) continue;
    ++run;
    const int before = failure_count();
    const auto start = std::chrono::steady_clock::now();
    try {
      c.fn();
    } catch (const std::exception& e) {
      fail(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
    } catch (...) {
      fail(__FILE__, __LINE__, "unexpected non-standard exception");
    }
    const bool ok = failure_count() == before;
    failed += ok ? 0 : 1;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("[%s] %s (%.1f s)\n", ok ? "  OK  " : " FAIL ", c.name, seconds);
    std::fflush(stdout);
  }
  std::printf("%d of %d test cases passed\n", run - failed, run);
  if (run == 0) return 1;  // a filter that matches nothing is an error
  return failed == 0 ? 0 : 1;
}

}  // namespace din_ops::test

#define DIN_TEST(name)                                                   \
  static void name();                                                    \
  static const ::din_ops::test::Registrar name##_registrar(#name, name); \
  static void name()

#define DIN_CHECK(cond)                                            \
  do {                                                             \
    if (!(cond)) ::din_ops::test::fail(__FILE__, __LINE__, #cond); \
  } while (0)

// |actual - expected| <= atol + rtol * |expected|, for scalars.
#define DIN_CHECK_NEAR(actual, expected, rtol, atol)                                         \
  do {                                                                                       \
    const double din_a_ = static_cast<double>(actual);                                       \
    const double din_e_ = static_cast<double>(expected);                                     \
    if (!::din_ops::test::near(din_a_, din_e_, (rtol), (atol))) {                            \
      std::ostringstream din_s_;                                                             \
      din_s_.precision(17);                                                                  \
      din_s_ << #actual << " = " << din_a_ << ", expected " << #expected << " = " << din_e_; \
      ::din_ops::test::fail(__FILE__, __LINE__, din_s_.str());                               \
    }                                                                                        \
  } while (0)

// `expr` must throw exception_type (or a subclass of it).
#define DIN_CHECK_THROWS(expr, exception_type)                                             \
  do {                                                                                     \
    bool din_thrown_ = false;                                                              \
    try {                                                                                  \
      (void)(expr);                                                                        \
    } catch (const exception_type&) {                                                      \
      din_thrown_ = true;                                                                  \
    } catch (const std::exception& din_e_) {                                               \
      ::din_ops::test::fail(__FILE__, __LINE__,                                            \
                            std::string(#expr " threw the wrong type: ") + din_e_.what()); \
      din_thrown_ = true;                                                                  \
    }                                                                                      \
    if (!din_thrown_)                                                                      \
      ::din_ops::test::fail(__FILE__, __LINE__, #expr " did not throw " #exception_type);  \
  } while (0)
