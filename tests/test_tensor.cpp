#include <doctest/doctest.h>

#include "core/tensor.hpp"
#include "core/xt.hpp"

using namespace minitrax;

TEST_CASE("tensor: factories, shape and element access") {
  Tensor t = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK(t.dtype() == DType::f32);
  CHECK(t.shape() == Shape{2, 3});
  CHECK(t.size() == 6);
  CHECK(t.at({1, 2}) == 6.0);
  CHECK(t.dim(-1) == 3);
  CHECK_THROWS_AS(t.dim(2), ValueError);
  CHECK_THROWS_AS(t.data<double>(), DTypeError);
  CHECK(Tensor::zeros({3}, DType::i64).to_vector<long>() == std::vector<long>{0, 0, 0});
  CHECK(Tensor::arange(4).to_vector<int>() == std::vector<int>{0, 1, 2, 3});
  CHECK(Tensor::scalar(2.5, DType::f64).item<double>() == 2.5);
  CHECK_THROWS_AS(Tensor::from<float>({2, 2}, {1, 2, 3}), ShapeError);
}

TEST_CASE("tensor: copies share storage, clone does not, reshape shares") {
  Tensor a = Tensor::zeros({4});
  Tensor b = a;
  b.data<float>()[0] = 7;
  CHECK(a.flat(0) == 7.0);
  Tensor c = a.clone();
  c.data<float>()[0] = 1;
  CHECK(a.flat(0) == 7.0);
  Tensor r = a.reshape(std::vector<long>{2, -1});
  CHECK(r.shape() == Shape{2, 2});
  CHECK(r.shares_storage(a));
  CHECK_THROWS_WITH_AS(a.reshape(Shape{3}),
                       "Tensor::reshape: cannot reshape [4] (4 elements) into [3] (3 elements)",
                       ShapeError);
}

TEST_CASE("tensor: astype and the xtensor adaptor") {
  Tensor t = Tensor::from<double>({2}, {1.75, -2.25});
  CHECK(t.astype(DType::i32).to_vector<int>() == std::vector<int>{1, -2});
  auto x = core::xt_of<double>(t);
  x(1) = 3.0;
  CHECK(t.flat(1) == 3.0);
  Tensor s = core::to_tensor<double>(x * 2.0);
  CHECK(s.to_vector<double>() == std::vector<double>{3.5, 6.0});
}

TEST_CASE("tensor: printing elides long rows") {
  Tensor t = Tensor::arange(10, DType::i64);
  CHECK(t.str() == "Tensor(int64, shape=[10], [0, 1, 2, ..., 7, 8, 9])");
  CHECK(Tensor::from<float>({2, 2}, {1, 2, 3, 4}).str() ==
        "Tensor(float32, shape=[2, 2], [[1, 2],\n        [3, 4]])");
}
