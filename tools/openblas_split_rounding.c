/* tools/openblas_split_rounding.c: does an OpenBLAS sgemm give the same bits when it is
 * cut differently? The figures in docs/efficient_attention.md ("Determinism across thread
 * counts") and docs/performance.md ("Threads") come from this program. Standalone (not
 * built by CMake):
 *
 *   gcc -O2 tools/openblas_split_rounding.c -o /tmp/split_rounding \
 *       -I/usr/include/x86_64-linux-gnu/openblas-pthread -lopenblas
 *   for c in Prescott Haswell; do OPENBLAS_CORETYPE=$c /tmp/split_rounding; done
 *
 * It prints, for the kernels OpenBLAS runs (OPENBLAS_CORETYPE or its own choice):
 * 1. threads: C = A B with A [m, k], B [k, n], once with OpenBLAS at 1 thread and once
 *    at 2, for k = 8, 12, ... 1100: how many k give different bits;
 * 2. rows: the same product on 1 thread as one call, and as two calls on rows [0, a) and
 *    [a, m): the split points a that keep every bit;
 * 3. with FILE: one [128, 384] x [384, 64] product on 1 thread written to FILE; with
 *    OTHER too, compared element by element with OTHER (the same product written by
 *    another kernel family), to compare families bit for bit:
 *      OPENBLAS_CORETYPE=Prescott /tmp/split_rounding /tmp/p.bin
 *      OPENBLAS_CORETYPE=Haswell /tmp/split_rounding /tmp/h.bin /tmp/p.bin
 * Exit status 0 unless a file cannot be written or read; the answers are in the output. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float* random_matrix(long n, unsigned seed) {
  float* p = malloc((size_t)n * sizeof(float));
  srand(seed);
  for (long i = 0; i < n; i++) p[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  return p;
}

static void product(int m, int n, int k, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
}

static void threads_part(int m, int n) {
  int differ = 0, total = 0;
  for (int k = 8; k <= 1100; k += 4) {
    float* a = random_matrix((long)m * k, 1);
    float* b = random_matrix((long)k * n, 2);
    float* c1 = calloc((size_t)m * n, sizeof(float));
    float* c2 = calloc((size_t)m * n, sizeof(float));
    openblas_set_num_threads(1);
    product(m, n, k, a, b, c1);
    openblas_set_num_threads(2);
    product(m, n, k, a, b, c2);
    total++;
    if (memcmp(c1, c2, (size_t)m * n * sizeof(float)) != 0) differ++;
    free(a);
    free(b);
    free(c1);
    free(c2);
  }
  printf(
      "  [%d, k] x [k, %d], 1 vs 2 OpenBLAS threads: %d of %d values k = 8, 12, ... 1100 "
      "give different bits\n",
      m, n, differ, total);
}

static void rows_part(int m, int n, int k) {
  float* a = random_matrix((long)m * k, 1);
  float* b = random_matrix((long)k * n, 2);
  float* whole = calloc((size_t)m * n, sizeof(float));
  float* split = calloc((size_t)m * n, sizeof(float));
  openblas_set_num_threads(1);
  product(m, n, k, a, b, whole);
  printf(
      "  [%d, %d] x [%d, %d] on 1 thread, rows cut into [0, a) and [a, %d): the same bits "
      "for a =",
      m, k, k, n, m);
  int same = 0;
  for (int cut = 1; cut < m; cut++) {
    product(cut, n, k, a, b, split);
    product(m - cut, n, k, a + (long)cut * k, b, split + (long)cut * n);
    if (memcmp(whole, split, (size_t)m * n * sizeof(float)) == 0) {
      printf(" %d", cut);
      same++;
    }
  }
  printf("%s (%d of %d cuts)\n", same ? "" : " none", same, m - 1);
  free(a);
  free(b);
  free(whole);
  free(split);
}

int main(int argc, char** argv) {
  printf("OpenBLAS kernels: %s (%s)\n", openblas_get_corename(), openblas_get_config());
  threads_part(128, 64);
  threads_part(300, 300);
  rows_part(128, 64, 384);
  if (argc > 1) {
    const int m = 128, n = 64, k = 384;
    float* a = random_matrix((long)m * k, 1);
    float* b = random_matrix((long)k * n, 2);
    float* c = calloc((size_t)m * n, sizeof(float));
    openblas_set_num_threads(1);
    product(m, n, k, a, b, c);
    FILE* f = fopen(argv[1], "wb");
    if (f == NULL || fwrite(c, sizeof(float), (size_t)m * n, f) != (size_t)m * n) {
      fprintf(stderr, "cannot write %s\n", argv[1]);
      return 1;
    }
    fclose(f);
    printf("  [%d, %d] x [%d, %d] on 1 thread written to %s\n", m, k, k, n, argv[1]);
    if (argc > 2) {
      float* other = calloc((size_t)m * n, sizeof(float));
      FILE* g = fopen(argv[2], "rb");
      if (g == NULL || fread(other, sizeof(float), (size_t)m * n, g) != (size_t)m * n) {
        fprintf(stderr, "cannot read %d floats from %s\n", m * n, argv[2]);
        return 1;
      }
      fclose(g);
      int differ = 0;
      float worst = 0.0f;
      for (int i = 0; i < m * n; i++) {
        if (memcmp(&c[i], &other[i], sizeof(float)) != 0) differ++;
        const float d = c[i] > other[i] ? c[i] - other[i] : other[i] - c[i];
        if (d > worst) worst = d;
      }
      printf("  compared with %s: %d of %d elements differ, by up to %g\n", argv[2], differ, m * n,
             (double)worst);
      free(other);
    }
    free(a);
    free(b);
    free(c);
  }
  return 0;
}
