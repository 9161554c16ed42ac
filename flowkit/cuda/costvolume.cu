// Cosine cost volume and soft-argmax displacement (DDN). Torch twins:
// flowkit.flow.costvolume.cost_volume and soft_argmax_displacement (same window order, border rule,
// stride and dilation semantics; see that module's docstring).
//
// Correlation kernels take features already L2-normalised per vector (the Python wrapper does it
// with F.normalize, eps 1e-6, as the twin does, so autograd handles the normalisation):
//
//   cost[b, k, i, j] = sum_c a[b, c, s*i, s*j] * f[b, c, s*i + dy_k, s*j + dx_k]   (0 outside f)
//   k = iy * (2dW + 1) + ix,  (dy_k, dx_k) = dilation * (iy - dH, ix - dW)          (rows slowest)
//
// with s = stride and output size (OH, OW) = (ceil(H/s), ceil(W/s)).
//
//   disp[b, 0] = sum_k P_k dx_k,  disp[b, 1] = sum_k P_k dy_k,  P = softmax_k(cost / tau)
//
// (the per-axis marginalisation of the twin gives exactly these expectations). tau = 0 (argmax)
// stays in torch. Layout float32 contiguous; one thread per output element; no atomics (both
// correlation gradients are gathers). `plane0` is the grid z-slice offset of a launch split in slices
// (grid-z limit 65535: B*K planes of a large window). Compiled with --use_fast_math (see flowkit/cuda/__init__.py):
// expf / division approximations are ~1e-6 relative here. Self-contained: no #include.

#define FK_RESTRICT __restrict__

// grid: (ceil(OW/bx), ceil(OH/by), B*K); cost (B, K, OH, OW).
extern "C" __global__ void correlation_forward(const float* FK_RESTRICT a, const float* FK_RESTRICT f,
                                               float* FK_RESTRICT cost, int C, int H, int W, int OH,
                                               int OW, int dH, int dW, int stride, int dilation,
                                               int plane0)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y * blockDim.y + threadIdx.y;
    const int K = (2 * dH + 1) * (2 * dW + 1);
    const int plane = blockIdx.z + plane0;
    const int b = plane / K;
    const int k = plane % K;
    if (j >= OW || i >= OH)
        return;
    const int dy = (k / (2 * dW + 1) - dH) * dilation;
    const int dx = (k % (2 * dW + 1) - dW) * dilation;
    const int y = i * stride, x = j * stride;
    const int yy = y + dy, xx = x + dx;
    float acc = 0.0f;
    if (yy >= 0 && yy < H && xx >= 0 && xx < W) {
        const long long hw = (long long)H * W;
        const float* ab = a + (long long)b * C * hw + (long long)y * W + x;
        const float* fb = f + (long long)b * C * hw + (long long)yy * W + xx;
        for (int c = 0; c < C; ++c)
            acc += ab[c * hw] * fb[c * hw];
    }
    cost[(((long long)b * K + k) * OH + i) * OW + j] = acc;
}

// grid: (ceil(W/bx), ceil(H/by), B*C). grad_a, grad_f (B, C, H, W), fully written (no zeroing needed).
//   grad_a[c, y, x] = sum_k g[k, y/s, x/s] f[c, y + dy_k, x + dx_k]          (y, x multiples of s)
//   grad_f[c, y, x] = sum_k g[k, (y-dy_k)/s, (x-dx_k)/s] a[c, y - dy_k, x - dx_k]   (where integral)
extern "C" __global__ void correlation_backward(const float* FK_RESTRICT grad_cost, const float* FK_RESTRICT a,
                                                const float* FK_RESTRICT f, float* FK_RESTRICT grad_a,
                                                float* FK_RESTRICT grad_f, int C, int H, int W, int OH,
                                                int OW, int dH, int dW, int stride, int dilation,
                                                int plane0)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int plane = blockIdx.z + plane0;
    const int b = plane / C;
    const int c = plane % C;
    if (x >= W || y >= H)
        return;
    const int KX = 2 * dW + 1, K = (2 * dH + 1) * KX;
    const long long hw = (long long)H * W, ohw = (long long)OH * OW;
    const float* ab = a + ((long long)b * C + c) * hw;
    const float* fb = f + ((long long)b * C + c) * hw;
    const float* gb = grad_cost + (long long)b * K * ohw;
    float ga = 0.0f, gf = 0.0f;
    const bool on_grid = (y % stride) == 0 && (x % stride) == 0;
    for (int k = 0; k < K; ++k) {
        const int dy = (k / KX - dH) * dilation;
        const int dx = (k % KX - dW) * dilation;
        if (on_grid) {
            const int yy = y + dy, xx = x + dx;
            if (yy >= 0 && yy < H && xx >= 0 && xx < W)
                ga += gb[k * ohw + (long long)(y / stride) * OW + x / stride] * fb[(long long)yy * W + xx];
        }
        const int ys = y - dy, xs = x - dx;  // the frame-t position that compared with (y, x)
        if (ys >= 0 && ys < H && xs >= 0 && xs < W && ys % stride == 0 && xs % stride == 0)
            gf += gb[k * ohw + (long long)(ys / stride) * OW + xs / stride] * ab[(long long)ys * W + xs];
    }
    grad_a[((long long)b * C + c) * hw + (long long)y * W + x] = ga;
    grad_f[((long long)b * C + c) * hw + (long long)y * W + x] = gf;
}

// Softmax statistics of one position: max of cost/tau and the normaliser, two passes over K.
__device__ __forceinline__ void softmax_stats(const float* col, long long step, int K, float inv_tau,
                                              float* zmax, float* denom)
{
    float m = -3.402823466e38f;
    for (int k = 0; k < K; ++k)
        m = fmaxf(m, col[k * step] * inv_tau);
    float s = 0.0f;
    for (int k = 0; k < K; ++k)
        s += expf(col[k * step] * inv_tau - m);
    *zmax = m;
    *denom = s;
}

// grid: (ceil(OW/bx), ceil(OH/by), B). cost (B, K, OH, OW) -> disp (B, 2, OH, OW).
extern "C" __global__ void soft_argmax_forward(const float* FK_RESTRICT cost, float* FK_RESTRICT disp,
                                               int OH, int OW, int dH, int dW, int dilation, float inv_tau,
                                               int plane0)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z + plane0;
    if (j >= OW || i >= OH)
        return;
    const int KX = 2 * dW + 1, K = (2 * dH + 1) * KX;
    const long long ohw = (long long)OH * OW;
    const float* col = cost + (long long)b * K * ohw + (long long)i * OW + j;
    float m, s;
    softmax_stats(col, ohw, K, inv_tau, &m, &s);
    float ex = 0.0f, ey = 0.0f;
    for (int k = 0; k < K; ++k) {
        const float e = expf(col[k * ohw] * inv_tau - m);
        ex += e * (float)((k % KX - dW) * dilation);
        ey += e * (float)((k / KX - dH) * dilation);
    }
    float* db = disp + (long long)b * 2 * ohw + (long long)i * OW + j;
    db[0] = ex / s;
    db[ohw] = ey / s;
}

// grad_cost[k] = P_k * (gu * (dx_k - u) + gv * (dy_k - v)) / tau, with (u, v) the forward output.
extern "C" __global__ void soft_argmax_backward(const float* FK_RESTRICT grad_disp, const float* FK_RESTRICT cost,
                                                const float* FK_RESTRICT disp, float* FK_RESTRICT grad_cost,
                                                int OH, int OW, int dH, int dW, int dilation, float inv_tau,
                                               int plane0)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z + plane0;
    if (j >= OW || i >= OH)
        return;
    const int KX = 2 * dW + 1, K = (2 * dH + 1) * KX;
    const long long ohw = (long long)OH * OW;
    const long long at = (long long)b * K * ohw + (long long)i * OW + j;
    const float* col = cost + at;
    float m, s;
    softmax_stats(col, ohw, K, inv_tau, &m, &s);
    const long long d = (long long)b * 2 * ohw + (long long)i * OW + j;
    const float gu = grad_disp[d], gv = grad_disp[d + ohw];
    const float u = disp[d], v = disp[d + ohw];
    const float scale = inv_tau / s;
    for (int k = 0; k < K; ++k) {
        const float e = expf(col[k * ohw] * inv_tau - m);
        const float dxk = (float)((k % KX - dW) * dilation), dyk = (float)((k / KX - dH) * dilation);
        grad_cost[at + k * ohw] = e * scale * (gu * (dxk - u) + gv * (dyk - v));
    }
}
