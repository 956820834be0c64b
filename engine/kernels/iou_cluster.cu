// IoU clustering for StAR's mask-level majority vote, on masks that stay where SAM 2 left them.
//
// Three kernels, two launches before the host sees anything:
//   pack_bits_{u8,f32}  M masks (bool/uint8, or float logits thresholded at > 0) -> 32-pixel words
//                       + exact areas (popcount, warp reduction, one atomic per warp).
//   and_popcount_gram   words -> the M x M matrix of exact intersections (upper triangle), tiled
//                       like a GEMM with AND + popcount in place of multiply-add.
//   combine_parts       the selected clusters -> the final mask as words ("best": OR of one member;
//                       "consensus": float32 SAM-score-weighted pixel vote, summed in member order).
// The greedy clustering itself runs on the host over the M x M integers (a few KB): it is the same
// code as the CPU path, so both paths agree exactly.
//
// Bit b of word w of mask m is pixel 32 * w + b (row-major) of mask m.

#define WORD_BITS 32
#define GRAM_TILE 32
#define GRAM_K 32
#define GRAM_THREADS 256

__device__ __forceinline__ unsigned nonzero_bytes_to_bits(unsigned x) {
    // 4 bytes -> 4 bits: bit i set when byte i (little-endian) is non-zero.
    return (unsigned)((x & 0x000000FFu) != 0) | ((unsigned)((x & 0x0000FF00u) != 0) << 1) |
           ((unsigned)((x & 0x00FF0000u) != 0) << 2) | ((unsigned)((x & 0xFF000000u) != 0) << 3);
}

__device__ __forceinline__ void add_area(unsigned word, unsigned long long* area) {
    unsigned count = __popc(word);
    for (int offset = 16; offset > 0; offset >>= 1) count += __shfl_down_sync(0xFFFFFFFFu, count, offset);
    if ((threadIdx.x & 31) == 0 && count) atomicAdd(area, (unsigned long long)count);
}

// grid: (ceil(words / blockDim.x), M). masks: M device pointers, each to P contiguous pixels.
extern "C" __global__ void pack_bits_u8(const unsigned char* const* masks, long long P, long long words,
                                        int vectorized, unsigned* packed, unsigned long long* areas) {
    const int m = blockIdx.y;
    const long long w = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned char* src = masks[m];
    unsigned word = 0;
    if (w < words) {
        const long long p0 = w * WORD_BITS;
        if (vectorized && p0 + WORD_BITS <= P) {
            // 32 pixels as two 16-byte loads: the host checks every base is 16-byte aligned, and p0 = 32 w keeps
            // each load aligned; p0 + 32 <= P keeps it inside the mask.
            const uint4* v = reinterpret_cast<const uint4*>(src + p0);
            uint4 a = v[0], b = v[1];
            word = nonzero_bytes_to_bits(a.x) | (nonzero_bytes_to_bits(a.y) << 4) | (nonzero_bytes_to_bits(a.z) << 8) |
                   (nonzero_bytes_to_bits(a.w) << 12) | (nonzero_bytes_to_bits(b.x) << 16) | (nonzero_bytes_to_bits(b.y) << 20) |
                   (nonzero_bytes_to_bits(b.z) << 24) | (nonzero_bytes_to_bits(b.w) << 28);
        } else {
            for (int b = 0; b < WORD_BITS && p0 + b < P; ++b) word |= (unsigned)(src[p0 + b] != 0) << b;
        }
        packed[(long long)m * words + w] = word;
    }
    add_area(word, &areas[m]);
}

extern "C" __global__ void pack_bits_f32(const float* const* masks, long long P, long long words,
                                         int vectorized, unsigned* packed, unsigned long long* areas) {
    const int m = blockIdx.y;
    const long long w = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const float* src = masks[m];
    unsigned word = 0;
    if (w < words) {
        const long long p0 = w * WORD_BITS;
        if (vectorized && p0 + WORD_BITS <= P) {
            const float4* v = reinterpret_cast<const float4*>(src + p0);
#pragma unroll
            for (int q = 0; q < 8; ++q) {
                float4 f = v[q];
                word |= ((unsigned)(f.x > 0.f) | ((unsigned)(f.y > 0.f) << 1) | ((unsigned)(f.z > 0.f) << 2) |
                         ((unsigned)(f.w > 0.f) << 3)) << (4 * q);
            }
        } else {
            for (int b = 0; b < WORD_BITS && p0 + b < P; ++b) word |= (unsigned)(src[p0 + b] > 0.f) << b;
        }
        packed[(long long)m * words + w] = word;
    }
    add_area(word, &areas[m]);
}

// grid: (T, T, splits) with T = ceil(M / 32); block: 256 threads. Each block adds the popcounts of
// one 32 x 32 tile over one slice of the words into inter (M x M, uint64, zeroed by the host).
extern "C" __global__ void and_popcount_gram(const unsigned* packed, int M, long long words, long long words_per_split,
                                             unsigned long long* inter) {
    const int ti = blockIdx.y, tj = blockIdx.x;
    if (tj < ti) return;  // the matrix is symmetric: upper tiles only
    __shared__ unsigned A[GRAM_TILE][GRAM_K + 1];
    __shared__ unsigned B[GRAM_TILE][GRAM_K + 1];
    const int tx = threadIdx.x & 31;  // column j within the tile
    const int ty = threadIdx.x >> 5;  // rows ty, ty + 8, ty + 16, ty + 24
    const long long k_begin = (long long)blockIdx.z * words_per_split;
    const long long k_end = min(words, k_begin + words_per_split);
    unsigned acc[4] = {0u, 0u, 0u, 0u};
    for (long long k0 = k_begin; k0 < k_end; k0 += GRAM_K) {
        for (int idx = threadIdx.x; idx < GRAM_TILE * GRAM_K; idx += GRAM_THREADS) {
            const int r = idx / GRAM_K, c = idx % GRAM_K;
            const long long k = k0 + c;
            const int gi = ti * GRAM_TILE + r, gj = tj * GRAM_TILE + r;
            A[r][c] = (gi < M && k < k_end) ? packed[(long long)gi * words + k] : 0u;
            B[r][c] = (gj < M && k < k_end) ? packed[(long long)gj * words + k] : 0u;
        }
        __syncthreads();
#pragma unroll 8
        for (int c = 0; c < GRAM_K; ++c) {
            const unsigned b = B[tx][c];
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[q] += __popc(A[ty + 8 * q][c] & b);
        }
        __syncthreads();
    }
    const int j = tj * GRAM_TILE + tx;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        const int i = ti * GRAM_TILE + ty + 8 * q;
        if (i < M && j < M && i <= j && acc[q]) atomicAdd(&inter[(long long)i * M + j], (unsigned long long)acc[q]);
    }
}

// One thread per output word. Part p covers members[offsets[p] .. offsets[p + 1]); weighted[p] == 0:
// OR of its first member's word; else a pixel is on when the float32 sum of its covering members'
// weights (added in member order, no fused multiply-add) is >= threshold.
extern "C" __global__ void combine_parts(const unsigned* packed, long long words, int n_parts, const int* offsets,
                                         const int* members, const float* weights, const int* weighted, float threshold,
                                         unsigned* out) {
    for (long long w = (long long)blockIdx.x * blockDim.x + threadIdx.x; w < words; w += (long long)gridDim.x * blockDim.x) {
        unsigned acc = 0u;
        for (int p = 0; p < n_parts; ++p) {
            const int begin = offsets[p], end = offsets[p + 1];
            if (!weighted[p]) {
                acc |= packed[(long long)members[begin] * words + w];
                continue;
            }
            float sum[WORD_BITS];
#pragma unroll
            for (int b = 0; b < WORD_BITS; ++b) sum[b] = 0.f;
            for (int m = begin; m < end; ++m) {
                const unsigned word = packed[(long long)members[m] * words + w];
                const float weight = weights[m];
#pragma unroll
                for (int b = 0; b < WORD_BITS; ++b)
                    if ((word >> b) & 1u) sum[b] = __fadd_rn(sum[b], weight);
            }
#pragma unroll
            for (int b = 0; b < WORD_BITS; ++b) acc |= (unsigned)(sum[b] >= threshold) << b;
        }
        out[w] = acc;
    }
}
