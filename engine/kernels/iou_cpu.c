/* Exact intersections of bit-packed mask crops on the CPU (engine.kernels.cpu_iou builds and loads this).
 *
 * Why C: numpy computes one crop pair's AND + popcount fast, but each pair costs ~5 us of call
 * overhead (slicing, three ufuncs, a reduction), and a vote over 64 samples has ~2,000 pairs whose
 * overlaps are a few thousand words: the overhead, not the arithmetic, was the IoU matrix's cost.
 * Here one call answers a whole row (mask i against a list of others) with hardware popcounts.
 *
 * Layout (written by cpu_iou.py): mask k's crop is rows[k] x cols[k] uint64 words at words + offset[k],
 * row-major; its top-left is row y0[k], word column c0[k] (word column c covers pixels 64c..64c+63 of
 * the frame, so word columns of different crops line up). rows[k] == 0: the mask is empty. Bit b of a word is
 * pixel 64c + b (the order only has to be the same for every mask: counts do not depend on it).
 *
 * Packing stays in numpy (np.packbits on each bounding box): a C packer measured no faster, since both
 * are bound by reading the masks once.
 */
#include <stdint.h>

typedef struct {
    int64_t y0, c0, rows, cols, offset;
} crop_t;

static int64_t count_overlap_generic(const uint64_t *a, int64_t stride_a, const uint64_t *b, int64_t stride_b,
                                     int64_t rows, int64_t cols) {
    int64_t total = 0;
    for (int64_t r = 0; r < rows; ++r, a += stride_a, b += stride_b)
        for (int64_t c = 0; c < cols; ++c) total += __builtin_popcountll(a[c] & b[c]);
    return total;
}

#if defined(__x86_64__) || defined(__i386__)
/* The same loop compiled for the POPCNT instruction; chosen at run time, so the library still loads
 * (and runs the generic loop) on an x86 CPU without it. */
__attribute__((target("popcnt"))) static int64_t count_overlap_popcnt(const uint64_t *a, int64_t stride_a,
                                                                      const uint64_t *b, int64_t stride_b,
                                                                      int64_t rows, int64_t cols) {
    int64_t total = 0;
    for (int64_t r = 0; r < rows; ++r, a += stride_a, b += stride_b)
        for (int64_t c = 0; c < cols; ++c) total += __builtin_popcountll(a[c] & b[c]);
    return total;
}
#endif

typedef int64_t (*count_fn)(const uint64_t *, int64_t, const uint64_t *, int64_t, int64_t, int64_t);

static count_fn count = count_overlap_generic;

/* Runs when the library loads, before any call (so concurrent callers never race on the choice). */
__attribute__((constructor)) static void pick_counter(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("popcnt")) count = count_overlap_popcnt;
#endif
}

static int64_t crop_intersection(const crop_t *a, const crop_t *b, const uint64_t *words) {
    if (a->rows == 0 || b->rows == 0) return 0;
    int64_t y0 = a->y0 > b->y0 ? a->y0 : b->y0;
    int64_t y1 = (a->y0 + a->rows) < (b->y0 + b->rows) ? (a->y0 + a->rows) : (b->y0 + b->rows);
    int64_t c0 = a->c0 > b->c0 ? a->c0 : b->c0;
    int64_t c1 = (a->c0 + a->cols) < (b->c0 + b->cols) ? (a->c0 + a->cols) : (b->c0 + b->cols);
    if (y0 >= y1 || c0 >= c1) return 0;
    const uint64_t *pa = words + a->offset + (y0 - a->y0) * a->cols + (c0 - a->c0);
    const uint64_t *pb = words + b->offset + (y0 - b->y0) * b->cols + (c0 - b->c0);
    return count(pa, a->cols, pb, b->cols, y1 - y0, c1 - c0);
}

/* out[k] = |mask i AND mask others[k]| for k < n_others. Returns 0, or -1 for an index out of range. */
int star_row_intersections(const crop_t *crops, int64_t n_crops, const uint64_t *words, int64_t i,
                           const int64_t *others, int64_t n_others, int64_t *out) {
    if (i < 0 || i >= n_crops) return -1;
    for (int64_t k = 0; k < n_others; ++k) {
        int64_t j = others[k];
        if (j < 0 || j >= n_crops) return -1;
        out[k] = crop_intersection(&crops[i], &crops[j], words);
    }
    return 0;
}

/* The upper triangle at once: out[i * n + j] for j >= i (out must hold n * n, zeroed by the caller). */
int star_upper_intersections(const crop_t *crops, int64_t n, const uint64_t *words, int64_t *out) {
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i; j < n; ++j) out[i * n + j] = crop_intersection(&crops[i], &crops[j], words);
    return 0;
}
