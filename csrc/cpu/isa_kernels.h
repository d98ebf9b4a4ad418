// The CPU functions dispatched by instruction-set level (isa.h): one entry per overload,
//   DIN_KERNEL(id, return type, name, (parameters), (arguments))
// with `id` unique. Each must be declared, with the same signature, in its public header (loops.h,
// deformable_loops.h, direct_conv.h or winograd.h) in namespace din_ops::cpu, and defined in the
// file of the hot loops in namespace din_ops::cpu::DIN_ISA (between DIN_ISA_BEGIN and DIN_ISA_END);
// a missing or mismatched definition is a link error. No include guard: isa.cpp includes it once
// per use, with its own DIN_KERNEL (an X-macro list).

// loops.h
DIN_KERNEL(shifted_sums_0, void, shifted_sums,
           (const float* x, int64_t n, float shift, double* s1, double* s2),
           (x, n, shift, s1, s2))
DIN_KERNEL(shifted_sums_1, void, shifted_sums,
           (const double* x, int64_t n, double shift, double* s1, double* s2),
           (x, n, shift, s1, s2))
DIN_KERNEL(shifted_sums_pair_0, void, shifted_sums_pair,
           (const float* a, const float* b, int64_t n, float shift_a, float shift_b, double* sums),
           (a, b, n, shift_a, shift_b, sums))
DIN_KERNEL(shifted_sums_pair_1, void, shifted_sums_pair,
           (const double* a, const double* b, int64_t n, double shift_a, double shift_b,
            double* sums),
           (a, b, n, shift_a, shift_b, sums))
DIN_KERNEL(shifted_sums_rows_0, void, shifted_sums_rows,
           (const float* x, int64_t rows, int64_t C, const float* shift, double* s1, double* s2),
           (x, rows, C, shift, s1, s2))
DIN_KERNEL(shifted_sums_rows_1, void, shifted_sums_rows,
           (const double* x, int64_t rows, int64_t C, const double* shift, double* s1, double* s2),
           (x, rows, C, shift, s1, s2))
DIN_KERNEL(grad_sums_0, void, grad_sums,
           (const float* g, const float* x, int64_t n, float hi, float lo, float r, double* sg,
            double* sgxh),
           (g, x, n, hi, lo, r, sg, sgxh))
DIN_KERNEL(grad_sums_1, void, grad_sums,
           (const double* g, const double* x, int64_t n, double hi, double lo, double r, double* sg,
            double* sgxh),
           (g, x, n, hi, lo, r, sg, sgxh))
DIN_KERNEL(grad_sums_rows_0, void, grad_sums_rows,
           (const float* g, const float* x, int64_t rows, int64_t C, const float* hi,
            const float* lo, const float* r, double* sg, double* sgxh),
           (g, x, rows, C, hi, lo, r, sg, sgxh))
DIN_KERNEL(grad_sums_rows_1, void, grad_sums_rows,
           (const double* g, const double* x, int64_t rows, int64_t C, const double* hi,
            const double* lo, const double* r, double* sg, double* sgxh),
           (g, x, rows, C, hi, lo, r, sg, sgxh))
DIN_KERNEL(normalize_0, void, normalize,
           (const float* x, int64_t n, float hi, float lo, float r, float* out, bool stream),
           (x, n, hi, lo, r, out, stream))
DIN_KERNEL(normalize_1, void, normalize,
           (const double* x, int64_t n, double hi, double lo, double r, double* out, bool stream),
           (x, n, hi, lo, r, out, stream))
DIN_KERNEL(normalize_rows_0, void, normalize_rows,
           (const float* x, int64_t rows, int64_t C, const float* hi, const float* lo,
            const float* rstd, float* out, bool stream),
           (x, rows, C, hi, lo, rstd, out, stream))
DIN_KERNEL(normalize_rows_1, void, normalize_rows,
           (const double* x, int64_t rows, int64_t C, const double* hi, const double* lo,
            const double* rstd, double* out, bool stream),
           (x, rows, C, hi, lo, rstd, out, stream))
DIN_KERNEL(normalize_backward_0, void, normalize_backward,
           (const float* g, const float* x, int64_t n, float hi, float lo, float r, float mg,
            float mgxh, float* out, bool stream),
           (g, x, n, hi, lo, r, mg, mgxh, out, stream))
DIN_KERNEL(normalize_backward_1, void, normalize_backward,
           (const double* g, const double* x, int64_t n, double hi, double lo, double r, double mg,
            double mgxh, double* out, bool stream),
           (g, x, n, hi, lo, r, mg, mgxh, out, stream))
DIN_KERNEL(normalize_backward_rows_0, void, normalize_backward_rows,
           (const float* g, const float* x, int64_t rows, int64_t C, const float* hi,
            const float* lo, const float* r, const float* mg, const float* mgxh, float* out,
            bool stream),
           (g, x, rows, C, hi, lo, r, mg, mgxh, out, stream))
DIN_KERNEL(normalize_backward_rows_1, void, normalize_backward_rows,
           (const double* g, const double* x, int64_t rows, int64_t C, const double* hi,
            const double* lo, const double* r, const double* mg, const double* mgxh, double* out,
            bool stream),
           (g, x, rows, C, hi, lo, r, mg, mgxh, out, stream))
DIN_KERNEL(add_scalar_0, void, add_scalar,
           (float* dst, int64_t n, float value),
           (dst, n, value))
DIN_KERNEL(add_scalar_1, void, add_scalar,
           (double* dst, int64_t n, double value),
           (dst, n, value))
DIN_KERNEL(sum_0, double, sum,
           (const float* x, int64_t n),
           (x, n))
DIN_KERNEL(sum_1, double, sum,
           (const double* x, int64_t n),
           (x, n))
DIN_KERNEL(add_to_0, void, add_to,
           (float* dst, const float* src, int64_t n),
           (dst, src, n))
DIN_KERNEL(add_to_1, void, add_to,
           (double* dst, const double* src, int64_t n),
           (dst, src, n))
DIN_KERNEL(scatter_axpy_0, void, scatter_axpy,
           (float* y, int64_t ys, const float* x, int64_t n, float a),
           (y, ys, x, n, a))
DIN_KERNEL(scatter_axpy_1, void, scatter_axpy,
           (double* y, int64_t ys, const double* x, int64_t n, double a),
           (y, ys, x, n, a))
DIN_KERNEL(depthwise_plane_0, void, depthwise_plane,
           (const float* pad, int64_t Wp, const float* w, int64_t kh, int64_t kw, int64_t sh,
            int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, float bias, float* out),
           (pad, Wp, w, kh, kw, sh, sw, dh, dw, Ho, Wo, bias, out))
DIN_KERNEL(depthwise_plane_1, void, depthwise_plane,
           (const double* pad, int64_t Wp, const double* w, int64_t kh, int64_t kw, int64_t sh,
            int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, double bias, double* out),
           (pad, Wp, w, kh, kw, sh, sw, dh, dw, Ho, Wo, bias, out))
DIN_KERNEL(depthwise_weight_grad_0, void, depthwise_weight_grad,
           (const float* pad, int64_t Wp, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
            int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, const float* g, double* gw),
           (pad, Wp, kh, kw, sh, sw, dh, dw, Ho, Wo, g, gw))
DIN_KERNEL(depthwise_weight_grad_1, void, depthwise_weight_grad,
           (const double* pad, int64_t Wp, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
            int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, const double* g, double* gw),
           (pad, Wp, kh, kw, sh, sw, dh, dw, Ho, Wo, g, gw))
DIN_KERNEL(depthwise_plane_backward_0, void, depthwise_plane_backward,
           (const float* pad, int64_t Wp, const float* w, int64_t kh, int64_t kw, int64_t sh,
            int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, const float* g, double* gw,
            float* gpad),
           (pad, Wp, w, kh, kw, sh, sw, dh, dw, Ho, Wo, g, gw, gpad))
DIN_KERNEL(depthwise_plane_backward_1, void, depthwise_plane_backward,
           (const double* pad, int64_t Wp, const double* w, int64_t kh, int64_t kw, int64_t sh,
            int64_t sw, int64_t dh, int64_t dw, int64_t Ho, int64_t Wo, const double* g, double* gw,
            double* gpad),
           (pad, Wp, w, kh, kw, sh, sw, dh, dw, Ho, Wo, g, gw, gpad))
DIN_KERNEL(convert_0, void, convert,
           (const c10::BFloat16* src, int64_t n, float* dst),
           (src, n, dst))
DIN_KERNEL(convert_1, void, convert,
           (const c10::Half* src, int64_t n, float* dst),
           (src, n, dst))
DIN_KERNEL(convert_2, void, convert,
           (const float* src, int64_t n, c10::BFloat16* dst),
           (src, n, dst))
DIN_KERNEL(convert_3, void, convert,
           (const float* src, int64_t n, c10::Half* dst),
           (src, n, dst))
DIN_KERNEL(normalize_affine_0, void, normalize_affine,
           (const float* x, int64_t n, float hi, float lo, float r, const float* gamma,
            const float* beta, float b, float* out, bool stream),
           (x, n, hi, lo, r, gamma, beta, b, out, stream))
DIN_KERNEL(normalize_affine_1, void, normalize_affine,
           (const double* x, int64_t n, double hi, double lo, double r, const double* gamma,
            const double* beta, double b, double* out, bool stream),
           (x, n, hi, lo, r, gamma, beta, b, out, stream))
DIN_KERNEL(normalize_scale_shift_0, void, normalize_scale_shift,
           (const float* x, int64_t n, float hi, float lo, float s, const float* beta, float b,
            float* out, bool stream),
           (x, n, hi, lo, s, beta, b, out, stream))
DIN_KERNEL(normalize_scale_shift_1, void, normalize_scale_shift,
           (const double* x, int64_t n, double hi, double lo, double s, const double* beta,
            double b, double* out, bool stream),
           (x, n, hi, lo, s, beta, b, out, stream))
DIN_KERNEL(normalize_affine_rows_0, void, normalize_affine_rows,
           (const float* x, int64_t rows, int64_t C, const float* hi, const float* lo,
            const float* r, const float* gamma, const float* beta, const float* b, float* out,
            bool stream),
           (x, rows, C, hi, lo, r, gamma, beta, b, out, stream))
DIN_KERNEL(normalize_affine_rows_1, void, normalize_affine_rows,
           (const double* x, int64_t rows, int64_t C, const double* hi, const double* lo,
            const double* r, const double* gamma, const double* beta, const double* b, double* out,
            bool stream),
           (x, rows, C, hi, lo, r, gamma, beta, b, out, stream))
DIN_KERNEL(normalize_plane_0, void, normalize_plane,
           (const float* x, int64_t n, float hi, float lo, float s, const float* shift, float* out,
            bool stream, PlanePrefetch<float> next),
           (x, n, hi, lo, s, shift, out, stream, next))
DIN_KERNEL(normalize_plane_1, void, normalize_plane,
           (const double* x, int64_t n, double hi, double lo, double s, const double* shift,
            double* out, bool stream, PlanePrefetch<double> next),
           (x, n, hi, lo, s, shift, out, stream, next))
DIN_KERNEL(normalize_scale_shift_rows_0, void, normalize_scale_shift_rows,
           (const float* x, int64_t rows, int64_t C, const float* hi, const float* lo,
            const float* s, const float* beta, const float* b, float* out, bool stream),
           (x, rows, C, hi, lo, s, beta, b, out, stream))
DIN_KERNEL(normalize_scale_shift_rows_1, void, normalize_scale_shift_rows,
           (const double* x, int64_t rows, int64_t C, const double* hi, const double* lo,
            const double* s, const double* beta, const double* b, double* out, bool stream),
           (x, rows, C, hi, lo, s, beta, b, out, stream))
DIN_KERNEL(affine_grad_sums_0, void, affine_grad_sums,
           (const float* gy, const float* x, const float* gamma, int64_t n, float hi, float lo,
            float r, double* sg, double* sgxh, double* sgy),
           (gy, x, gamma, n, hi, lo, r, sg, sgxh, sgy))
DIN_KERNEL(affine_grad_sums_1, void, affine_grad_sums,
           (const double* gy, const double* x, const double* gamma, int64_t n, double hi, double lo,
            double r, double* sg, double* sgxh, double* sgy),
           (gy, x, gamma, n, hi, lo, r, sg, sgxh, sgy))
DIN_KERNEL(affine_grad_sums_rows_0, void, affine_grad_sums_rows,
           (const float* gy, const float* x, const float* gamma, int64_t rows, int64_t C,
            const float* hi, const float* lo, const float* r, double* sg, double* sgxh, double* sgy),
           (gy, x, gamma, rows, C, hi, lo, r, sg, sgxh, sgy))
DIN_KERNEL(affine_grad_sums_rows_1, void, affine_grad_sums_rows,
           (const double* gy, const double* x, const double* gamma, int64_t rows, int64_t C,
            const double* hi, const double* lo, const double* r, double* sg, double* sgxh,
            double* sgy),
           (gy, x, gamma, rows, C, hi, lo, r, sg, sgxh, sgy))
DIN_KERNEL(normalize_affine_backward_0, void, normalize_affine_backward,
           (const float* gy, const float* x, const float* gamma, int64_t n, float hi, float lo,
            float r, float mg, float mgxh, float* gx, float* ggamma, bool stream),
           (gy, x, gamma, n, hi, lo, r, mg, mgxh, gx, ggamma, stream))
DIN_KERNEL(normalize_affine_backward_1, void, normalize_affine_backward,
           (const double* gy, const double* x, const double* gamma, int64_t n, double hi, double lo,
            double r, double mg, double mgxh, double* gx, double* ggamma, bool stream),
           (gy, x, gamma, n, hi, lo, r, mg, mgxh, gx, ggamma, stream))
DIN_KERNEL(normalize_affine_backward_rows_0, void, normalize_affine_backward_rows,
           (const float* gy, const float* x, const float* gamma, int64_t rows, int64_t C,
            const float* hi, const float* lo, const float* r, const float* mg, const float* mgxh,
            float* gx, float* ggamma, bool stream),
           (gy, x, gamma, rows, C, hi, lo, r, mg, mgxh, gx, ggamma, stream))
DIN_KERNEL(normalize_affine_backward_rows_1, void, normalize_affine_backward_rows,
           (const double* gy, const double* x, const double* gamma, int64_t rows, int64_t C,
            const double* hi, const double* lo, const double* r, const double* mg,
            const double* mgxh, double* gx, double* ggamma, bool stream),
           (gy, x, gamma, rows, C, hi, lo, r, mg, mgxh, gx, ggamma, stream))
DIN_KERNEL(normalize_backward_scaled_0, void, normalize_backward_scaled,
           (const float* gy, const float* x, int64_t n, float hi, float lo, float r, float gam,
            float mg, float mgxh, float* gx, bool stream),
           (gy, x, n, hi, lo, r, gam, mg, mgxh, gx, stream))
DIN_KERNEL(normalize_backward_scaled_1, void, normalize_backward_scaled,
           (const double* gy, const double* x, int64_t n, double hi, double lo, double r,
            double gam, double mg, double mgxh, double* gx, bool stream),
           (gy, x, n, hi, lo, r, gam, mg, mgxh, gx, stream))
DIN_KERNEL(normalize_backward_scaled_rows_0, void, normalize_backward_scaled_rows,
           (const float* gy, const float* x, int64_t rows, int64_t C, const float* hi,
            const float* lo, const float* r, const float* gam, const float* mg, const float* mgxh,
            float* gx, bool stream),
           (gy, x, rows, C, hi, lo, r, gam, mg, mgxh, gx, stream))
DIN_KERNEL(normalize_backward_scaled_rows_1, void, normalize_backward_scaled_rows,
           (const double* gy, const double* x, int64_t rows, int64_t C, const double* hi,
            const double* lo, const double* r, const double* gam, const double* mg,
            const double* mgxh, double* gx, bool stream),
           (gy, x, rows, C, hi, lo, r, gam, mg, mgxh, gx, stream))

// deformable_loops.h
DIN_KERNEL(deform_columns_0, void, deform_columns,
           (const float* xg, int64_t xs, const bilinear::Corners<float>* pts, int64_t KK,
            int64_t Lt, int64_t Cs, float* col, int64_t ldl, int64_t ldt, int64_t cs),
           (xg, xs, pts, KK, Lt, Cs, col, ldl, ldt, cs))
DIN_KERNEL(deform_columns_1, void, deform_columns,
           (const double* xg, int64_t xs, const bilinear::Corners<double>* pts, int64_t KK,
            int64_t Lt, int64_t Cs, double* col, int64_t ldl, int64_t ldt, int64_t cs),
           (xg, xs, pts, KK, Lt, Cs, col, ldl, ldt, cs))
DIN_KERNEL(deform_points_backward_0, void, deform_points_backward,
           (const float* xg, float* gxg, int64_t xs, const bilinear::Corners<float>* pts,
            const float* mv, int64_t KK, int64_t Lt, int64_t Cs, const float* gcol, float* col,
            int64_t ldl, int64_t ldt, int64_t cs, float* gmk, float* goy, float* gox),
           (xg, gxg, xs, pts, mv, KK, Lt, Cs, gcol, col, ldl, ldt, cs, gmk, goy, gox))
DIN_KERNEL(deform_points_backward_1, void, deform_points_backward,
           (const double* xg, double* gxg, int64_t xs, const bilinear::Corners<double>* pts,
            const double* mv, int64_t KK, int64_t Lt, int64_t Cs, const double* gcol, double* col,
            int64_t ldl, int64_t ldt, int64_t cs, double* gmk, double* goy, double* gox),
           (xg, gxg, xs, pts, mv, KK, Lt, Cs, gcol, col, ldl, ldt, cs, gmk, goy, gox))
DIN_KERNEL(gather_channels_0, void, gather_channels,
           (const float* const* parts, int64_t nparts, int64_t P, int64_t C, int64_t c0, int64_t cb,
            float* out),
           (parts, nparts, P, C, c0, cb, out))
DIN_KERNEL(gather_channels_1, void, gather_channels,
           (const double* const* parts, int64_t nparts, int64_t P, int64_t C, int64_t c0,
            int64_t cb, double* out),
           (parts, nparts, P, C, c0, cb, out))
DIN_KERNEL(transpose_matrix_0, void, transpose_matrix,
           (const float* src, int64_t ss, int64_t rows, int64_t cols, float* dst, int64_t ds),
           (src, ss, rows, cols, dst, ds))
DIN_KERNEL(transpose_matrix_1, void, transpose_matrix,
           (const double* src, int64_t ss, int64_t rows, int64_t cols, double* dst, int64_t ds),
           (src, ss, rows, cols, dst, ds))

// direct_conv.h
DIN_KERNEL(direct_pack_0, void, direct_pack,
           (const float* w, int64_t cout, int64_t cin, int64_t taps, float* packed),
           (w, cout, cin, taps, packed))
DIN_KERNEL(direct_pack_1, void, direct_pack,
           (const double* w, int64_t cout, int64_t cin, int64_t taps, double* packed),
           (w, cout, cin, taps, packed))
DIN_KERNEL(direct_forward_0, void, direct_forward,
           (const float* in, int64_t cs, int64_t cin, const int64_t* shift, int64_t taps,
            const float* packed, const float* bias, int64_t cout, int64_t L, float* out, int64_t ld),
           (in, cs, cin, shift, taps, packed, bias, cout, L, out, ld))
DIN_KERNEL(direct_forward_1, void, direct_forward,
           (const double* in, int64_t cs, int64_t cin, const int64_t* shift, int64_t taps,
            const double* packed, const double* bias, int64_t cout, int64_t L, double* out,
            int64_t ld),
           (in, cs, cin, shift, taps, packed, bias, cout, L, out, ld))
DIN_KERNEL(direct_weight_grad_0, void, direct_weight_grad,
           (const float* g, int64_t ldg, int64_t cout, const float* in, const int64_t* off,
            int64_t K, int64_t L, float* part),
           (g, ldg, cout, in, off, K, L, part))
DIN_KERNEL(direct_weight_grad_1, void, direct_weight_grad,
           (const double* g, int64_t ldg, int64_t cout, const double* in, const int64_t* off,
            int64_t K, int64_t L, double* part),
           (g, ldg, cout, in, off, K, L, part))
DIN_KERNEL(direct_reduce_0, void, direct_reduce,
           (const float* part, int64_t count, float* gw),
           (part, count, gw))
DIN_KERNEL(direct_reduce_1, void, direct_reduce,
           (const double* part, int64_t count, double* gw),
           (part, count, gw))

// winograd.h
DIN_KERNEL(winograd_weights_size_0, int64_t, winograd_weights_size,
           (int64_t cout, int64_t cin),
           (cout, cin))
DIN_KERNEL(winograd_weights_0, void, winograd_weights,
           (const float* w, int64_t cout, int64_t cin, float* packed),
           (w, cout, cin, packed))
DIN_KERNEL(winograd_weights_1, void, winograd_weights,
           (const double* w, int64_t cout, int64_t cin, double* packed),
           (w, cout, cin, packed))
DIN_KERNEL(winograd_work_size_0, int64_t, winograd_work_size,
           (int64_t cout, int64_t cin, int64_t Wo, int64_t value_size),
           (cout, cin, Wo, value_size))
DIN_KERNEL(winograd_forward_0, void, winograd_forward,
           (const float* in, int64_t cs, int64_t cin, int64_t Wp, int64_t R, int64_t Wo,
            const float* packed, const float* bias, int64_t cout, float* out, int64_t ld,
            int64_t rs, float* work),
           (in, cs, cin, Wp, R, Wo, packed, bias, cout, out, ld, rs, work))
DIN_KERNEL(winograd_forward_1, void, winograd_forward,
           (const double* in, int64_t cs, int64_t cin, int64_t Wp, int64_t R, int64_t Wo,
            const double* packed, const double* bias, int64_t cout, double* out, int64_t ld,
            int64_t rs, double* work),
           (in, cs, cin, Wp, R, Wo, packed, bias, cout, out, ld, rs, work))
DIN_KERNEL(winograd_weight_grad_0, void, winograd_weight_grad,
           (const float* in, int64_t cs, int64_t cin, int64_t Wp, int64_t R, int64_t Wo,
            const float* g, int64_t ldg, int64_t cout, float* part, float* work),
           (in, cs, cin, Wp, R, Wo, g, ldg, cout, part, work))
DIN_KERNEL(winograd_weight_grad_1, void, winograd_weight_grad,
           (const double* in, int64_t cs, int64_t cin, int64_t Wp, int64_t R, int64_t Wo,
            const double* g, int64_t ldg, int64_t cout, double* part, double* work),
           (in, cs, cin, Wp, R, Wo, g, ldg, cout, part, work))
DIN_KERNEL(winograd_part_size_0, int64_t, winograd_part_size,
           (int64_t cout, int64_t cin, int64_t value_size),
           (cout, cin, value_size))
DIN_KERNEL(winograd_weight_grad_finish_0, void, winograd_weight_grad_finish,
           (const float* part, int64_t cout, int64_t cin, float* gw),
           (part, cout, cin, gw))
DIN_KERNEL(winograd_weight_grad_finish_1, void, winograd_weight_grad_finish,
           (const double* part, int64_t cout, int64_t cin, double* gw),
           (part, cout, cin, gw))
