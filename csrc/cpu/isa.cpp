// Run-time choice of the instruction-set level of the CPU kernels (see isa.h): the CPU's features,
// the DIN_OPS_CPU_CAPABILITY override, one table of function pointers per level, the public
// functions that call through the chosen table, and the din_ops::cpu_capability operators that
// report it.
#include "isa.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cctype>
#include <cstdlib>
#include <string>
#include <vector>

#include "deformable_loops.h"
#include "direct_conv.h"
#include "loops.h"
#include "winograd.h"

namespace din_ops::cpu {

// The functions of every level, as the hot-loop files define them.
#define DIN_KERNEL(id, ret, name, params, args) ret name params;
namespace base {
#include "isa_kernels.h"
}  // namespace base
#if defined(__x86_64__)
namespace avx2 {
#include "isa_kernels.h"
}  // namespace avx2
namespace avx512 {
#include "isa_kernels.h"
}  // namespace avx512
#endif
#undef DIN_KERNEL

namespace {

// One pointer per dispatched function (overload).
struct Kernels {
#define DIN_KERNEL(id, ret, name, params, args) ret(*id) params;
#include "isa_kernels.h"
#undef DIN_KERNEL
};

// The table of each level: &<level>::name picks the overload of the member's type.
#define DIN_KERNEL(id, ret, name, params, args) &DIN_TABLE_LEVEL::name,
#define DIN_TABLE_LEVEL base
constexpr Kernels kBase = {
#include "isa_kernels.h"
};
#undef DIN_TABLE_LEVEL
#if defined(__x86_64__)
#define DIN_TABLE_LEVEL avx2
constexpr Kernels kAvx2 = {
#include "isa_kernels.h"
};
#undef DIN_TABLE_LEVEL
#define DIN_TABLE_LEVEL avx512
constexpr Kernels kAvx512 = {
#include "isa_kernels.h"
};
#undef DIN_TABLE_LEVEL
#endif
#undef DIN_KERNEL

constexpr Capability kLevels[] = {Capability::base, Capability::avx2, Capability::avx512};

#if defined(__x86_64__)
// The CPU features a level needs, as __builtin_cpu_supports (GCC and clang alike) names them; the
// same as the target strings of isa.h.
std::vector<const char*> features(Capability level) {
  switch (level) {
    case Capability::base: return {};
    case Capability::avx2: return {"avx2", "fma", "bmi", "bmi2"};
    case Capability::avx512:
      return {"avx2", "fma", "bmi", "bmi2", "avx512f", "avx512bw", "avx512dq", "avx512vl",
              "avx512cd"};
  }
  return {};
}

// The features of `level` this CPU (with its operating system's support for the wider registers,
// which __builtin_cpu_supports checks too) lacks.
std::vector<std::string> missing(Capability level) {
  // Runs from a static initializer too (possibly before libgcc's own), hence the explicit init.
  __builtin_cpu_init();
  std::vector<std::string> out;
  for (const char* f : features(level)) {
    const std::string name(f);
    bool has = false;  // __builtin_cpu_supports takes string literals only
    if (name == "avx2") has = __builtin_cpu_supports("avx2");
    else if (name == "fma") has = __builtin_cpu_supports("fma");
    else if (name == "bmi") has = __builtin_cpu_supports("bmi");
    else if (name == "bmi2") has = __builtin_cpu_supports("bmi2");
    else if (name == "avx512f") has = __builtin_cpu_supports("avx512f");
    else if (name == "avx512bw") has = __builtin_cpu_supports("avx512bw");
    else if (name == "avx512dq") has = __builtin_cpu_supports("avx512dq");
    else if (name == "avx512vl") has = __builtin_cpu_supports("avx512vl");
    else if (name == "avx512cd") has = __builtin_cpu_supports("avx512cd");
    if (!has) out.push_back(name);
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}
#endif

LevelChoice select() {
  return choose_level(std::getenv("DIN_OPS_CPU_CAPABILITY"), cpu_supports, [](Capability level) {
#if defined(__x86_64__)
    return "this CPU lacks " + join(missing(level));
#else
    (void)level;
    return std::string("it exists on x86-64 only");
#endif
  });
}

const LevelChoice& selection() {
  static const LevelChoice s = select();
  return s;
}

const Kernels* table_for(const LevelChoice& s) {
  if (!s.error.empty()) return nullptr;
  switch (s.level) {
#if defined(__x86_64__)
    case Capability::avx512: return &kAvx512;
    case Capability::avx2: return &kAvx2;
#endif
    default: return &kBase;
  }
}

// Chosen once, when the library is loaded.
const Kernels* const g_kernels = table_for(selection());

const Kernels& kernels() {
  if (C10_LIKELY(g_kernels != nullptr)) return *g_kernels;
  // Refused (or called from another library's static initializer, before g_kernels is set).
  const Kernels* t = table_for(selection());
  TORCH_CHECK(t != nullptr, "din_ops: ", selection().error);
  return *t;
}

}  // namespace

LevelChoice choose_level(const char* request, const std::function<bool(Capability)>& supports,
                         const std::function<std::string(Capability)>& lacks) {
  LevelChoice s;
  for (Capability level : kLevels) {
    if (supports(level)) s.level = level;
  }
  if (request == nullptr || *request == '\0') return s;
  std::string want(request);
  for (char& c : want) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (Capability level : kLevels) {
    if (want != capability_name(level)) continue;
    if (supports(level)) {
      s.level = level;
    } else {
      s.error = "DIN_OPS_CPU_CAPABILITY=" + std::string(request) + " cannot be used: " +
                lacks(level) + " (the best level here is " + capability_name(s.level) +
                "; unset the variable to use it)";
    }
    return s;
  }
  s.error = "DIN_OPS_CPU_CAPABILITY=" + std::string(request) +
            " is not a level: expected default, avx2 or avx512 (or unset, for the best this CPU "
            "has: " + capability_name(s.level) + ")";
  return s;
}

const char* capability_name(Capability level) {
  switch (level) {
    case Capability::avx2: return "avx2";
    case Capability::avx512: return "avx512";
    default: return "default";
  }
}

bool cpu_supports(Capability level) {
  if (level == Capability::base) return true;
#if defined(__x86_64__)
  return missing(level).empty();
#else
  return false;
#endif
}

Capability cpu_capability() {
  const LevelChoice& s = selection();
  TORCH_CHECK(s.error.empty(), "din_ops: ", s.error);
  return s.level;
}

// The x86-64 baseline's 16 xmm registers hold half the accumulators of the 32-byte blocks (vec.h),
// which then spill; avx2 and avx512 keep them in registers, and so do aarch64's 32 NEON registers
// at its baseline.
bool direct_kernels_fast() {
#if defined(__aarch64__)
  return true;
#else
  return cpu_capability() >= Capability::avx2;
#endif
}

// The public functions: one call through the chosen table each.
#define DIN_KERNEL(id, ret, name, params, args) \
  ret name params { return kernels().id args; }
#include "isa_kernels.h"
#undef DIN_KERNEL

namespace {

std::string cpu_capability_op() { return capability_name(cpu_capability()); }

std::vector<std::string> cpu_capabilities_op() {
  std::vector<std::string> out;
  for (Capability level : kLevels) {
    if (cpu_supports(level)) out.emplace_back(capability_name(level));
  }
  return out;
}

}  // namespace

}  // namespace din_ops::cpu

// No tensor arguments: CompositeImplicitAutograd is the kernel the dispatcher calls.
TORCH_LIBRARY_IMPL(din_ops, CompositeImplicitAutograd, m) {
  m.impl("cpu_capability", &din_ops::cpu::cpu_capability_op);
  m.impl("cpu_capabilities", &din_ops::cpu::cpu_capabilities_op);
}
