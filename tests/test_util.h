// Shared helpers for the tests: seeded random buffers and error metrics.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/rng.h"

namespace sr::test {

template <class T = float>
std::vector<T> randn(size_t n, uint64_t seed, double scale = 1.0) {
  Rng r(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = T(r.normal() * scale);
  return v;
}

template <class A, class B>
std::vector<A> cast(const std::vector<B>& v) {
  return std::vector<A>(v.begin(), v.end());
}

// max |a-b| / (atol + rtol*|b|) over all elements; <= 1 means "close".
template <class A, class B>
double closeness(const std::vector<A>& a, const std::vector<B>& b, double atol, double rtol) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    double d = std::fabs(double(a[i]) - double(b[i])) / (atol + rtol * std::fabs(double(b[i])));
    if (!(d <= worst)) worst = std::isnan(d) ? 1e30 : d;
  }
  return worst;
}

#define EXPECT_CLOSE(a, b, atol, rtol) EXPECT_LE(::sr::test::closeness(a, b, atol, rtol), 1.0) << #a " vs " #b

// Central finite differences of a scalar function f at x (in place, restored afterwards), fp64.
template <class F>
std::vector<double> numeric_grad(std::vector<double>& x, F f, double eps = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double x0 = x[i];
    x[i] = x0 + eps;
    double fp = f();
    x[i] = x0 - eps;
    double fm = f();
    x[i] = x0;
    g[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Checks every analytic gradient of L = <dout, f(inputs)> against central differences.
template <class Fwd>
void check_fd(Fwd fwd, std::vector<std::vector<double>*> inputs, std::vector<const std::vector<double>*> grads,
              const std::vector<double>& dout, std::vector<const char*> names) {
  auto loss = [&] { return dot(fwd(), dout); };
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::vector<double> num = numeric_grad(*inputs[i], loss);
    EXPECT_CLOSE(*grads[i], num, 1e-7, 1e-6) << names[i];
  }
}

}  // namespace sr::test
