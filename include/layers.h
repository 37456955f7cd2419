/* layers: the kernels of the chunk Transformer, one _forward/_backward pair per layer
 * (llm.c style). Tensors are row-major floats; N rows (tokens) of C columns. Every backward
 * ACCUMULATES (+=) into its parameter gradients and, unless its `accumulate` argument is 0,
 * into its input gradient; accumulate 0 writes the input gradient (=, what was there is never
 * read), which saves zeroing and reading a fresh buffer. */
#ifndef CAR_LAYERS_H
#define CAR_LAYERS_H
#include <stddef.h>
#include <stdint.h>

/* out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC); bias may be NULL */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC);
/* dinp (N,C) += (or = ) dout (N,OC) @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += column
 * sums of dout. dinp, dbias may be NULL. */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC, int accumulate);

/* out (N,C) = (inp - mean) * rstd * weight + bias, per row; mean, rstd (N) kept for backward */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias,
                       int N, int C);
/* dinp (N,C), dweight (C), dbias (C) += */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C);

/* out (n) = GELU(inp), tanh approximation (GPT-2) */
void gelu_forward(float *out, const float *inp, size_t n);
/* the same, and inp (n) replaced by GELU'(inp), which the training backward then multiplies by */
void gelu_forward_keep_local(float *out, float *inp, size_t n);
/* dinp (n) += (or = ) GELU'(inp) * dout */
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n, int accumulate);
/* dinp (n) = local * dout, local = GELU'(x) as gelu_forward_keep_local left it (bit for bit gelu_backward's) */
void gelu_backward_local(float *dinp, const float *local, const float *dout, size_t n);

/* out (n) = a + b */
void residual_forward(float *out, const float *a, const float *b, size_t n);

/* Causal multi-head self-attention over B packed sequences: sequence b is rows
 * [off[b], off[b+1]) and attends only to itself. qkv (N,3C) holds q | k | v, head h in
 * columns [h*C/NH, (h+1)*C/NH) of each. att: the probabilities, NH (T_b x T_b) per sequence
 * one after another (attention_size floats). out (N,C). */
size_t attention_size(const int *off, int B, int NH);
void attention_forward(float *out, float *att, const float *qkv, const int *off, int B, int C, int NH);
/* The same for the last row of each non-empty sequence only (what encoding a history needs): out
 * (R,C), R = the non-empty sequences in order; p: scratch of max T floats. */
void attention_forward_last(float *out, float *p, const float *qkv, const int *off, int B, int C, int NH);
/* dqkv (N,3C) += (or = ); scratch: T_max * T_max floats */
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, const int *off, int B,
                        int C, int NH, float *scratch, int accumulate);

/* Progressive Act-Think context fusion. level[r] is row r's position inside its chunk; a row
 * continues the chunk of row r-1 when level[r] == level[r-1] + 1 (ar inputs may end inside a
 * chunk). out_r (C) = sum of inp over the chunk's rows up to r (FUSION_SUM), that sum / (level[r] + 1)
 * (FUSION_MEAN), inp_r (FUSION_NONE). */
void fusion_forward(float *out, const float *inp, const int8_t *level, int N, int C, int mode);
/* dinp (N,C) += */
void fusion_backward(float *dinp, const float *dout, const int8_t *level, int N, int C, int mode);

/* out[rows[i]] (C) = table[ids[i]] for i < n; rows NULL: row i */
void embedding_forward(float *out, const int *rows, const int32_t *ids, int n, const float *table, int C);
/* dtable[ids[i]] += dout[rows[i]] */
void embedding_backward(float *dtable, const int *rows, const int32_t *ids, int n, const float *dout, int C);

/* Inverted dropout, fused with the residual add that follows it: out (N,C) = res + inp * keep / (1 - p)
 * (res NULL: no add; out may be inp). Unit (r, c) is kept by a counter-based draw keyed by
 * (seed, stream, row_key[r], c) alone, so the same call on the gradient (res NULL) is the
 * backward. p is rounded to a multiple of 1/65536; p <= 0 keeps everything. */
void dropout_forward(float *out, const float *inp, const float *res, int N, int C, float p, uint64_t seed,
                     uint64_t stream, const uint64_t *row_key);

/* Softmax cross-entropy in phases, written so that a row's columns may be split over ranks
 * (each phase then ends with an all-reduce over the row statistics). x (N rows, ld apart, K used). */
/* mx[n] = max(mx[n], max_k x[n,k]) (start mx at -INFINITY) */
void softmax_rows_max(const float *x, int N, int K, int ld, float *mx);
/* x[n,k] = exp(x[n,k] - mx[n]); sum[n] += sum_k x[n,k] */
void softmax_rows_exp(float *x, int N, int K, int ld, const float *mx, float *sum);
/* x[n,k] = dscale * (x[n,k] / sum[n] - [k == target[n]]); target[n] outside [0, K): no one-hot */
void softmax_rows_grad(float *x, int N, int K, int ld, const float *sum, const int32_t *target, float dscale);
/* All three on logits (N,K) held whole: returns the sum over rows of -log softmax(x)[target];
 * with dscale != 0 leaves dscale * dCE/dlogits in x. mx, sum: N floats of workspace. */
double crossentropy_forward_backward(float *x, int N, int K, const int32_t *target, float dscale, float *mx,
                                     float *sum);

#endif
