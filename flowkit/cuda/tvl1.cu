// TV-L1 optical flow kernels: the inner iteration, the linearisation of the data term, the 5x5
// median and OpenCV-semantics bilinear resize. Torch twins: flowkit/flow/tvl1.py (_iteration,
// linearize) and flowkit/flow/ops.py (median_filter_torch, resize_bilinear).
//
// Layout: float32, contiguous NCHW, one pair per grid z-slice (gridDim.z = batch, or batch*channels
// for the per-plane kernels), 2-D blocks over (x = column, y = row). Sizes are arguments; nothing
// about shapes is compiled in. Self-contained: no #include (NVRTC has no host headers).
// Every kernel takes `plane0`, the index of the pair/plane of grid z-slice 0: a batch with more planes
// than CUDA's grid-z limit (65535) is launched in slices (flowkit/cuda/__init__.py, grid_chunks).
//
// The per-pair stopping rule runs on the device (no host round trip per iteration): `active` (B,)
// int32 says which pairs still iterate in the current warp. The iteration kernels and the median leave
// frozen pairs untouched (whole blocks return at once: a block never straddles two pairs), and
// tvl1_stop_rule, launched after each iteration, freezes a pair whose update was <= epsilon (OpenCV:
// the iteration that meets the rule is applied, then the pair stops) and re-zeroes the error sums.
// So a whole warp's iterations are a fixed launch sequence that can be captured in a CUDA graph.
//
// Finite-difference kernels: OpenCV's are [-1, 1] (forward gradient and divergence); TVNet makes them
// trainable per iteration, so they are arguments (fk0, fk1) and (dk0, dk1), applied as the torch
// twin applies them (k0 * u(x) + k1 * u(x+1); k1 * p(x) + k0 * p(x-1)).
//
//   u        (B, 2, H, W)     flow; channel c in {0: x, 1: y}
//   p        (B, 2, 2, H, W)  dual variable: p[b, c, d] is the d-component (0: x, 1: y) for channel c
//   grad     (B, 2, H, W)     gradient of the warped I1
//   grad_sq  (B, 1, H, W)     |grad|^2
//   rho_c    (B, 1, H, W)     I1w - grad . u0 - I0
//
// Why two passes per iteration (tvl1_primal, tvl1_dual), and not one or three:
//   v(x)     = u(x) + TH(rho(u(x)))                    point-wise in u, grad, grad_sq, rho_c
//   u'(x)    = v(x) + theta * div p(x)                 needs OLD p at x, x-1 (left), x-W (top)
//   p'(x)    = (p(x) + tt * grad+ u'(x)) / (1 + tt*|grad+ u'(x)|)
//                                                      needs NEW u' at x, x+1 (right), x+W (bottom)
// Thresholding, divergence and the primal update depend only on old values, so they fuse into one
// pass (tvl1_primal) that writes u' and accumulates sum (u' - u)^2 per pair. The dual update needs
// u' at neighbours written by other threads/blocks, so it waits for a grid-wide barrier: the kernel
// boundary. It then reads old p only at its own pixel, so tvl1_dual may update p in place, and
// tvl1_primal may update u in place (it reads u only at its own pixel).
// A single pass is possible only by recomputing u' on a one-pixel right/bottom halo per tile and
// double-buffering p (halo threads read old p that other blocks are overwriting); see README.md.
//
// Rounding: the iteration kernels use __fmul_rn/__fadd_rn where the torch twin performs separate
// element-wise ops, so the compiler cannot contract them into FMAs and the results track eager torch
// to the last bit in every point-wise value (the per-pair error sum differs in summation order).

#define FK_RESTRICT __restrict__

__device__ __forceinline__ long long plane_offset(int b, int c, int channels, int H, int W)
{
    return ((long long)b * channels + c) * (long long)H * W;
}

// Sum of `value` over the block, added to *target by one thread. Every thread of the block must call
// it (threads outside the image pass 0). Requires blockDim.x * blockDim.y <= 1024, a multiple of 32.
__device__ __forceinline__ void block_sum_atomic_add(float value, float* target)
{
#ifdef FK_HOST_EMULATION
    // tests/test_cuda_kernels.py runs the kernels on the CPU one thread at a time: no warps.
    if (value != 0.0f)
        atomicAdd(target, value);
#else
    __shared__ float warp_sums[32];
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int warps = (blockDim.x * blockDim.y + 31) >> 5;
    for (int offset = 16; offset > 0; offset >>= 1)
        value += __shfl_down_sync(0xffffffffu, value, offset);
    if (lane == 0)
        warp_sums[warp] = value;
    __syncthreads();
    if (warp == 0) {
        value = lane < warps ? warp_sums[lane] : 0.0f;
        for (int offset = 16; offset > 0; offset >>= 1)
            value += __shfl_down_sync(0xffffffffu, value, offset);
        if (lane == 0 && value != 0.0f)
            atomicAdd(target, value);
    }
#endif
}

// Pass A: thresholding + divergence of old p + primal update; error[b] += sum (u' - u)^2.
// u_out may alias u (in-place). error must be zeroed by the caller (tvl1_stop_rule does it). A frozen
// pair (active[b] == 0) is left untouched, u_out included, so run in place for masked iterations.
extern "C" __global__ void tvl1_primal(const float* u, const float* FK_RESTRICT p,
                                       const float* FK_RESTRICT grad, const float* FK_RESTRICT grad_sq,
                                       const float* FK_RESTRICT rho_c, float* u_out,
                                       float* FK_RESTRICT error, const int* FK_RESTRICT active,
                                       int H, int W, float lambda_theta, float theta, float dk0,
                                       float dk1, int plane0)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z + plane0;
    if (!active[b])
        return;  // uniform over the block: no thread reaches the reduction's barrier
    float sq = 0.0f;
    if (x < W && y < H) {
        const long long hw = (long long)H * W;
        const long long pix = (long long)y * W + x;
        const float* ub = u + plane_offset(b, 0, 2, H, W);
        const float* gb = grad + plane_offset(b, 0, 2, H, W);
        const float* pb = p + plane_offset(b, 0, 4, H, W);
        const float u0 = ub[pix], u1 = ub[hw + pix];
        const float g0 = gb[pix], g1 = gb[hw + pix];
        const float gsq = grad_sq[b * hw + pix];
        const float rho = __fadd_rn(rho_c[b * hw + pix], __fadd_rn(__fmul_rn(g0, u0), __fmul_rn(g1, u1)));
        // TH: step = clamp(-rho / max(|grad|^2, eps), -lambda*theta, lambda*theta)
        float step = -rho / fmaxf(gsq, 1e-12f);
        step = fminf(fmaxf(step, -lambda_theta), lambda_theta);
        float u_new[2];
        const float uc[2] = {u0, u1};
        const float gc[2] = {g0, g1};
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const float* px = pb + (2 * c) * hw;      // p[b, c, 0]
            const float* py = pb + (2 * c + 1) * hw;  // p[b, c, 1]
            const float dx = __fadd_rn(__fmul_rn(dk1, px[pix]), __fmul_rn(dk0, x > 0 ? px[pix - 1] : 0.0f));
            const float dy = __fadd_rn(__fmul_rn(dk1, py[pix]), __fmul_rn(dk0, y > 0 ? py[pix - W] : 0.0f));
            const float v = __fadd_rn(uc[c], __fmul_rn(step, gc[c]));
            u_new[c] = __fadd_rn(v, __fmul_rn(theta, __fadd_rn(dx, dy)));
        }
        float* ob = u_out + plane_offset(b, 0, 2, H, W);
        ob[pix] = u_new[0];
        ob[hw + pix] = u_new[1];
        const float d0 = u_new[0] - u0, d1 = u_new[1] - u1;
        sq = __fadd_rn(__fmul_rn(d0, d0), __fmul_rn(d1, d1));
    }
    block_sum_atomic_add(sq, error + b);
}

// Pass B: forward gradient of the new u and the dual update. p_out may alias p (in-place); frozen
// pairs are left untouched.
extern "C" __global__ void tvl1_dual(const float* FK_RESTRICT u, const float* p, float* p_out,
                                     const int* FK_RESTRICT active, int H, int W, float tau_theta,
                                     float fk0, float fk1, int plane0)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z + plane0;
    if (x >= W || y >= H || !active[b])
        return;
    const long long hw = (long long)H * W;
    const long long pix = (long long)y * W + x;
    const float* ub = u + plane_offset(b, 0, 2, H, W);
    const float* pb = p + plane_offset(b, 0, 4, H, W);
    float* ob = p_out + plane_offset(b, 0, 4, H, W);
#pragma unroll
    for (int c = 0; c < 2; ++c) {
        const float* uc = ub + c * hw;
        const float here = uc[pix];
        const float ux = x + 1 < W ? __fadd_rn(__fmul_rn(fk0, here), __fmul_rn(fk1, uc[pix + 1])) : 0.0f;
        const float uy = y + 1 < H ? __fadd_rn(__fmul_rn(fk0, here), __fmul_rn(fk1, uc[pix + W])) : 0.0f;
        const float mag = sqrtf(__fadd_rn(__fmul_rn(ux, ux), __fmul_rn(uy, uy)));
        const float norm = __fadd_rn(1.0f, __fmul_rn(tau_theta, mag));
        const long long ix = (2 * c) * hw + pix, iy = (2 * c + 1) * hw + pix;
        const float px = __fadd_rn(pb[ix], __fmul_rn(tau_theta, ux));
        const float py = __fadd_rn(pb[iy], __fmul_rn(tau_theta, uy));
        ob[ix] = px / norm;
        ob[iy] = py / norm;
    }
}

// The epsilon rule of OpenCV's DualTVL1, per pair and on the device: a pair whose update of this
// iteration was not > scaled_eps (epsilon^2 * H * W) stops iterating in this warp. Then the error sums
// are zeroed for the next iteration. scaled_eps < 0 never stops a pair (a fixed schedule). One
// thread per pair: grid (ceil(B / blockDim.x), 1, 1). Written as !(error > eps), not error <= eps, so
// a NaN error stops its pair, as the torch twin keeps running only where error > eps: otherwise a NaN
// pair would iterate on to the end and keep its whole batch from leaving early.
extern "C" __global__ void tvl1_stop_rule(float* FK_RESTRICT error, int* FK_RESTRICT active, int B,
                                          float scaled_eps)
{
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B)
        return;
    if (active[b] && !(error[b] > scaled_eps))
        active[b] = 0;
    error[b] = 0.0f;
}

// Keys cubic convolution weights (a = -0.75, OpenCV INTER_CUBIC), written as ATen's
// get_cubic_upsample_coefficients so that grid_sample(mode="bicubic") is reproduced.
__device__ __forceinline__ void cubic_weights(float t, float w[4])
{
    const float A = -0.75f;
    const float x1 = t + 1.0f;
    w[0] = ((A * x1 - 5.0f * A) * x1 + 8.0f * A) * x1 - 4.0f * A;
    w[1] = ((A + 2.0f) * t - (A + 3.0f)) * t * t + 1.0f;
    const float x2 = 1.0f - t;
    w[2] = ((A + 2.0f) * x2 - (A + 3.0f)) * x2 * x2 + 1.0f;
    const float x3 = x2 + 1.0f;
    w[3] = ((A * x3 - 5.0f * A) * x3 + 8.0f * A) * x3 - 4.0f * A;
}

// linearize(): warp I1 and its gradient (i1_stack, 3 channels) to x + u with bicubic interpolation,
// taps outside the image being 0, then grad_out = warped gradient, grad_sq = |grad_out|^2,
// rho_c = I1w - grad_out . u - I0. One read of i0, u and 16 taps x 3 channels (cached), one write
// of 4 values per pixel.
extern "C" __global__ void tvl1_linearize(const float* FK_RESTRICT i0, const float* FK_RESTRICT i1_stack,
                                          const float* FK_RESTRICT u, float* FK_RESTRICT grad_out,
                                          float* FK_RESTRICT grad_sq, float* FK_RESTRICT rho_c,
                                          int H, int W, int plane0)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z + plane0;
    if (x >= W || y >= H)
        return;
    const long long hw = (long long)H * W;
    const long long pix = (long long)y * W + x;
    const float* ub = u + plane_offset(b, 0, 2, H, W);
    const float* sb = i1_stack + plane_offset(b, 0, 3, H, W);
    const float u0 = ub[pix], u1 = ub[hw + pix];
    const float xs = (float)x + u0;
    const float ys = (float)y + u1;
    float acc[3] = {0.0f, 0.0f, 0.0f};
    // Outside this box every tap is outside the image (this also keeps floorf -> int in range and
    // maps NaN coordinates to zero).
    if (xs > -3.0f && xs < (float)W + 2.0f && ys > -3.0f && ys < (float)H + 2.0f) {
        const float fx = floorf(xs), fy = floorf(ys);
        const int ix = (int)fx, iy = (int)fy;
        float wx[4], wy[4];
        cubic_weights(xs - fx, wx);
        cubic_weights(ys - fy, wy);
#pragma unroll
        for (int c = 0; c < 3; ++c) {
            const float* img = sb + c * hw;
            float rows[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int yy = iy - 1 + i;
                float r = 0.0f;
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int xx = ix - 1 + j;
                    const float v = (yy >= 0 && yy < H && xx >= 0 && xx < W) ? img[(long long)yy * W + xx] : 0.0f;
                    r += v * wx[j];
                }
                rows[i] = r;
            }
            acc[c] = rows[0] * wy[0] + rows[1] * wy[1] + rows[2] * wy[2] + rows[3] * wy[3];
        }
    }
    float* gb = grad_out + plane_offset(b, 0, 2, H, W);
    gb[pix] = acc[1];
    gb[hw + pix] = acc[2];
    grad_sq[b * hw + pix] = __fadd_rn(__fmul_rn(acc[1], acc[1]), __fmul_rn(acc[2], acc[2]));
    const float dot = __fadd_rn(__fmul_rn(acc[1], u0), __fmul_rn(acc[2], u1));
    rho_c[b * hw + pix] = __fadd_rn(__fadd_rn(acc[0], -dot), -i0[b * hw + pix]);
}

// Median over a K x K window with a replicated border (OpenCV medianBlur, ops.median_filter_torch).
// One plane (pair b = plane / C, channel plane % C) per grid z-slice. A partial bubble sort: after
// K*K/2 + 1 passes the upper half holds the largest values in order, so the middle one is the median.
// Planes of frozen pairs (active[b] == 0) are copied unchanged; `active` may be null (all active).
template <int K>
__device__ __forceinline__ void median_impl(const float* FK_RESTRICT in, float* FK_RESTRICT out,
                                            const int* FK_RESTRICT active, int C, int H, int W,
                                            int plane0)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= W || y >= H)
        return;
    const int plane = blockIdx.z + plane0;
    const long long base = (long long)plane * H * W;
    if (active != nullptr && !active[plane / C]) {
        out[base + (long long)y * W + x] = in[base + (long long)y * W + x];
        return;
    }
    constexpr int R = K / 2, N = K * K, MID = N / 2;
    float v[N];
#pragma unroll
    for (int i = 0; i < K; ++i) {
        const int yy = min(max(y - R + i, 0), H - 1);
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const int xx = min(max(x - R + j, 0), W - 1);
            v[i * K + j] = in[base + (long long)yy * W + xx];
        }
    }
#pragma unroll
    for (int pass = 0; pass <= MID; ++pass) {
#pragma unroll
        for (int j = 0; j < N - 1 - pass; ++j) {
            const float lo = fminf(v[j], v[j + 1]);
            const float hi = fmaxf(v[j], v[j + 1]);
            v[j] = lo;
            v[j + 1] = hi;
        }
    }
    out[base + (long long)y * W + x] = v[MID];
}

extern "C" __global__ void median_filter_3(const float* FK_RESTRICT in, float* FK_RESTRICT out,
                                            const int* FK_RESTRICT active, int C, int H, int W, int plane0)
{
    median_impl<3>(in, out, active, C, H, W, plane0);
}

extern "C" __global__ void median_filter_5(const float* FK_RESTRICT in, float* FK_RESTRICT out,
                                            const int* FK_RESTRICT active, int C, int H, int W, int plane0)
{
    median_impl<5>(in, out, active, C, H, W, plane0);
}

// torch.lerp's formula (ATen Lerp.h): exact at both ends.
__device__ __forceinline__ float lerp_aten(float a, float b, float w)
{
    return fabsf(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

// OpenCV INTER_LINEAR source taps along one axis, in double as ops._linear_taps computes them.
__device__ __forceinline__ void linear_tap(int i, int n_in, double scale, int* i0, int* i1, float* frac)
{
    double src = ((double)i + 0.5) * scale - 0.5;
    src = src < 0.0 ? 0.0 : src;
    const double fl = floor(src);
    int k = (int)fl;
    double f = src - fl;
    if (k >= n_in - 1) {
        k = n_in - 1;
        f = 0.0;
    }
    *i0 = k;
    *i1 = min(k + 1, n_in - 1);
    *frac = (float)f;
}

// ops.resize_bilinear: (N, H, W) -> (N, OH, OW) with source pixels per output pixel (sy, sx),
// rows interpolated first, then columns, as the torch twin does.
extern "C" __global__ void resize_bilinear(const float* FK_RESTRICT in, float* FK_RESTRICT out,
                                           int H, int W, int OH, int OW, double sy, double sx, int plane0)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= OW || y >= OH)
        return;
    int y0, y1, x0, x1;
    float fy, fx;
    linear_tap(y, H, sy, &y0, &y1, &fy);
    linear_tap(x, W, sx, &x0, &x1, &fx);
    const long long plane = (long long)blockIdx.z + plane0;
    const float* src = in + plane * H * W;
    const float left = lerp_aten(src[(long long)y0 * W + x0], src[(long long)y1 * W + x0], fy);
    const float right = lerp_aten(src[(long long)y0 * W + x1], src[(long long)y1 * W + x1], fy);
    out[plane * OH * OW + (long long)y * OW + x] = lerp_aten(left, right, fx);
}
