// Bilinear backward warp and its adjoint. Torch twin: flowkit.flow.ops.warp(image, flow,
// mode="bilinear", padding_mode="zeros" | "border") and its autograd (grid_sample backward).
//
//   out[b, c, y, x] = bilinear(image[b, c], x + flow[b, 0, y, x], y + flow[b, 1, y, x])
//
// Coordinates are pixels, pixel centres integers (align_corners=True in grid_sample terms, computed
// exactly here, no normalisation round trip). Padding: zeros = taps outside the image are 0;
// border = the sampling point is clamped to [0, W-1] x [0, H-1] (identical to replicating edges),
// and the gradient with respect to a clamped coordinate is 0, as in grid_sample.
//
// Layout: image / out / grad_image (B, C, H, W), flow / grad_flow (B, 2, H, W), float32 contiguous.
// One thread per output pixel loops over the C channels, so the flow gradient (a sum over channels)
// needs no atomics; the image gradient scatters to 4 taps with atomicAdd (grad_image must be zeroed).
// `plane0`: the pair of grid z-slice 0 (a batch beyond the grid-z limit is launched in slices).
// Self-contained: no #include (NVRTC has no host headers).

#define FK_RESTRICT __restrict__

struct BilinearTaps {
    int x0, x1, y0, y1;       // tap indices (x1 = x0 + 1 except at a clamped border)
    float wx0, wx1, wy0, wy1; // linear weights along each axis
    bool in_x0, in_x1, in_y0, in_y1;
    float dgx, dgy;           // 1, or 0 where the coordinate was clamped (border mode)
};

__device__ __forceinline__ BilinearTaps bilinear_taps(float xs, float ys, int H, int W, int border)
{
    BilinearTaps t;
    t.dgx = 1.0f;
    t.dgy = 1.0f;
    if (border) {
        // NaN compares false both ways and goes to 0, like grid_sample's clip.
        if (!(xs > 0.0f)) { t.dgx = 0.0f; xs = 0.0f; }
        if (!(ys > 0.0f)) { t.dgy = 0.0f; ys = 0.0f; }
        if (xs > (float)(W - 1)) { t.dgx = 0.0f; xs = (float)(W - 1); }
        if (ys > (float)(H - 1)) { t.dgy = 0.0f; ys = (float)(H - 1); }
    } else {
        // Far outside (or NaN): every tap is outside; also keeps floorf -> int in range.
        if (!(xs > -2.0f && xs < (float)W + 1.0f)) xs = -2.0f;
        if (!(ys > -2.0f && ys < (float)H + 1.0f)) ys = -2.0f;
    }
    const float fx = floorf(xs), fy = floorf(ys);
    t.x0 = (int)fx;
    t.y0 = (int)fy;
    t.wx1 = xs - fx;
    t.wy1 = ys - fy;
    t.wx0 = 1.0f - t.wx1;
    t.wy0 = 1.0f - t.wy1;
    t.x1 = t.x0 + 1;
    t.y1 = t.y0 + 1;
    if (border) {  // x1 = W at the last column: read the replicated edge
        t.x1 = min(t.x1, W - 1);
        t.y1 = min(t.y1, H - 1);
    }
    t.in_x0 = t.x0 >= 0 && t.x0 < W;
    t.in_x1 = t.x1 >= 0 && t.x1 < W;
    t.in_y0 = t.y0 >= 0 && t.y0 < H;
    t.in_y1 = t.y1 >= 0 && t.y1 < H;
    return t;
}

extern "C" __global__ void warp_bilinear_forward(const float* FK_RESTRICT image, const float* FK_RESTRICT flow,
                                                 float* FK_RESTRICT out, int C, int H, int W, int border,
                                                 int plane0)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z + plane0;
    if (x >= W || y >= H)
        return;
    const long long hw = (long long)H * W;
    const long long pix = (long long)y * W + x;
    const float* fb = flow + (long long)b * 2 * hw;
    const BilinearTaps t = bilinear_taps((float)x + fb[pix], (float)y + fb[hw + pix], H, W, border);
    const float w00 = t.wx0 * t.wy0, w01 = t.wx1 * t.wy0, w10 = t.wx0 * t.wy1, w11 = t.wx1 * t.wy1;
    const bool i00 = t.in_x0 && t.in_y0, i01 = t.in_x1 && t.in_y0, i10 = t.in_x0 && t.in_y1,
               i11 = t.in_x1 && t.in_y1;
    const long long o00 = (long long)t.y0 * W + t.x0, o01 = (long long)t.y0 * W + t.x1,
                    o10 = (long long)t.y1 * W + t.x0, o11 = (long long)t.y1 * W + t.x1;
    for (int c = 0; c < C; ++c) {
        const float* img = image + ((long long)b * C + c) * hw;
        float v = 0.0f;
        if (i00) v += img[o00] * w00;
        if (i01) v += img[o01] * w01;
        if (i10) v += img[o10] * w10;
        if (i11) v += img[o11] * w11;
        out[((long long)b * C + c) * hw + pix] = v;
    }
}

// grad_image (zeroed by the caller) += adjoint of the sampling; grad_flow = d out / d flow . grad_out.
// Either output may be skipped by passing want_image / want_flow = 0 (the pointer is then unused).
extern "C" __global__ void warp_bilinear_backward(const float* FK_RESTRICT grad_out, const float* FK_RESTRICT image,
                                                  const float* FK_RESTRICT flow, float* grad_image,
                                                  float* FK_RESTRICT grad_flow, int C, int H, int W,
                                                  int border, int want_image, int want_flow, int plane0)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z + plane0;
    if (x >= W || y >= H)
        return;
    const long long hw = (long long)H * W;
    const long long pix = (long long)y * W + x;
    const float* fb = flow + (long long)b * 2 * hw;
    const BilinearTaps t = bilinear_taps((float)x + fb[pix], (float)y + fb[hw + pix], H, W, border);
    const float w00 = t.wx0 * t.wy0, w01 = t.wx1 * t.wy0, w10 = t.wx0 * t.wy1, w11 = t.wx1 * t.wy1;
    const bool i00 = t.in_x0 && t.in_y0, i01 = t.in_x1 && t.in_y0, i10 = t.in_x0 && t.in_y1,
               i11 = t.in_x1 && t.in_y1;
    const long long o00 = (long long)t.y0 * W + t.x0, o01 = (long long)t.y0 * W + t.x1,
                    o10 = (long long)t.y1 * W + t.x0, o11 = (long long)t.y1 * W + t.x1;
    float gx = 0.0f, gy = 0.0f;
    for (int c = 0; c < C; ++c) {
        const long long plane = ((long long)b * C + c) * hw;
        const float g = grad_out[plane + pix];
        if (want_image && g != 0.0f) {
            float* gi = grad_image + plane;
            if (i00) atomicAdd(gi + o00, g * w00);
            if (i01) atomicAdd(gi + o01, g * w01);
            if (i10) atomicAdd(gi + o10, g * w10);
            if (i11) atomicAdd(gi + o11, g * w11);
        }
        if (want_flow) {
            const float* img = image + plane;
            const float v00 = i00 ? img[o00] : 0.0f, v01 = i01 ? img[o01] : 0.0f;
            const float v10 = i10 ? img[o10] : 0.0f, v11 = i11 ? img[o11] : 0.0f;
            // d/dxs of sum v * wx * wy, with d wx0/dxs = -1, d wx1/dxs = +1 (same for y).
            gx += g * ((v01 - v00) * t.wy0 + (v11 - v10) * t.wy1);
            gy += g * ((v10 - v00) * t.wx0 + (v11 - v01) * t.wx1);
        }
    }
    if (want_flow) {
        float* gf = grad_flow + (long long)b * 2 * hw;
        gf[pix] = gx * t.dgx;
        gf[hw + pix] = gy * t.dgy;
    }
}
