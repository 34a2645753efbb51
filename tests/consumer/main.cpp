// A program outside the minitrax tree, built against an installed minitrax.
#include <minitrax.hpp>

#include <cmath>
#include <iostream>

int main() {
  using namespace minitrax;
  namespace fm = minitrax::fastmath;
  // d/dx sum(exp(x)) = exp(x)
  Tensor x = Tensor::from<double>({3}, {0.0, 1.0, -1.0});
  auto g = grad([](const autodiff::VarList& v) { return fm::sum(fm::exp(v[0])); }, {x});
  for (std::size_t i = 0; i < 3; ++i) {
    if (std::abs(g[0].flat(i) - std::exp(x.flat(i))) > 1e-12) {
      std::cout << "grad wrong at " << i << "\n";
      return 1;
    }
  }
  std::cout << "grad ok: " << g[0] << "\n";
  return 0;
}
