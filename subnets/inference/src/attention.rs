//! Causal attention of one new token over a sequence's cached keys and
//! values, for the CPU path.
//!
//! Keys are cached transposed in blocks of [`BLOCK`] positions
//! (`[block][kv_head·head_dim][BLOCK]`), so the scores of 16 positions are
//! one vector of multiply-adds over the head's dimensions, with no
//! horizontal sums; values stay position-major (`[len][kv_head·head_dim]`),
//! so the weighted sum is one multiply-add per dimension vector and
//! position. Grouped-query: query head `h` reads kv head `h / (heads /
//! kv_heads)`.

/// Positions per block of the transposed key cache.
pub(crate) const BLOCK: usize = 16;

/// Appends the keys of position `pos` (`kvw` values) to `kt`.
pub(crate) fn append_key(kt: &mut Vec<f32>, pos: usize, k: &[f32]) {
    let kvw = k.len();
    let (block, lane) = (pos / BLOCK, pos % BLOCK);
    if kt.len() < (block + 1) * kvw * BLOCK {
        kt.resize((block + 1) * kvw * BLOCK, 0.0);
    }
    let base = block * kvw * BLOCK;
    for (i, &v) in k.iter().enumerate() {
        kt[base + i * BLOCK + lane] = v;
    }
}

/// The shape of one attention call.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// `out` (`heads·head_dim`) = softmax(q·Kᵀ/√d)·V over the first `seen`
/// positions of `kt` / `v`.
pub(crate) fn attend(q: &[f32], kt: &[f32], v: &[f32], seen: usize, s: Shape, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F; sizes are the caller's cache.
        unsafe { attend_avx512(q, kt, v, seen, s, out) };
        return;
    }
    attend_portable(q, kt, v, seen, s, out)
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

fn attend_portable(q: &[f32], kt: &[f32], v: &[f32], seen: usize, s: Shape, out: &mut [f32]) {
    let (hd, kvw) = (s.head_dim, s.kv_heads * s.head_dim);
    let rep = s.heads / s.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut p = vec![0f32; seen];
    for h in 0..s.heads {
        let j = h / rep;
        let qh = &q[h * hd..(h + 1) * hd];
        for (t, pt) in p.iter_mut().enumerate() {
            let base = (t / BLOCK) * kvw * BLOCK + t % BLOCK;
            let mut acc = 0f32;
            for (d, &qd) in qh.iter().enumerate() {
                acc += qd * kt[base + (j * hd + d) * BLOCK];
            }
            *pt = acc * scale;
        }
        softmax(&mut p);
        let o = &mut out[h * hd..(h + 1) * hd];
        o.fill(0.0);
        for (t, &w) in p.iter().enumerate() {
            let vv = &v[t * kvw + j * hd..t * kvw + (j + 1) * hd];
            for (oi, vi) in o.iter_mut().zip(vv) {
                *oi += w * vi;
            }
        }
    }
}

/// In place: `p = exp(p - max) / Σ`.
fn softmax(p: &mut [f32]) {
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in p.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in p.iter_mut() {
        *x *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_avx512(q: &[f32], kt: &[f32], v: &[f32], seen: usize, s: Shape, out: &mut [f32]) {
    match s.heads / s.kv_heads {
        1 => group_avx512::<1>(q, kt, v, seen, s, out),
        2 => group_avx512::<2>(q, kt, v, seen, s, out),
        3 => group_avx512::<3>(q, kt, v, seen, s, out),
        4 => group_avx512::<4>(q, kt, v, seen, s, out),
        _ => attend_portable(q, kt, v, seen, s, out),
    }
}

/// The `R` query heads of each kv head together: the cache, which lives
/// in L3 for a batch, is read once per kv head instead of once per query
/// head.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // register tiles read best with indices
unsafe fn group_avx512<const R: usize>(
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    seen: usize,
    s: Shape,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (hd, kvw) = (s.head_dim, s.kv_heads * s.head_dim);
    let scale = 1.0 / (hd as f32).sqrt();
    let blocks = seen.div_ceil(BLOCK);
    assert!(kt.len() >= blocks * kvw * BLOCK && v.len() >= seen * kvw && hd.is_multiple_of(16));
    assert!(q.len() >= s.heads * hd && out.len() >= s.heads * hd);
    let stride = blocks * BLOCK;
    let mut p = vec![0f32; R * stride];
    let (ktp, vp, qp) = (kt.as_ptr(), v.as_ptr(), q.as_ptr());
    for j in 0..s.kv_heads {
        let h0 = j * R;
        // Scores, 16 positions at a time, two sums per head so that
        // multiply-add latency does not serialize the loop.
        for b in 0..blocks {
            let base = ktp.add(b * kvw * BLOCK + j * hd * BLOCK);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for d in 0..hd {
                let kv = _mm512_loadu_ps(base.add(d * BLOCK));
                for r in 0..R {
                    let qd = _mm512_set1_ps(*qp.add((h0 + r) * hd + d));
                    acc[r][d % 2] = _mm512_fmadd_ps(qd, kv, acc[r][d % 2]);
                }
            }
            for r in 0..R {
                let sum = _mm512_add_ps(acc[r][0], acc[r][1]);
                _mm512_storeu_ps(
                    p.as_mut_ptr().add(r * stride + b * BLOCK),
                    _mm512_mul_ps(sum, _mm512_set1_ps(scale)),
                );
            }
        }
        for r in 0..R {
            softmax_avx512(&mut p[r * stride..r * stride + seen]);
        }
        // Weighted sums of the values, 16 dimensions a vector.
        for c in (0..hd).step_by(16) {
            let mut acc = [_mm512_setzero_ps(); R];
            for t in 0..seen {
                let vv = _mm512_loadu_ps(vp.add(t * kvw + j * hd + c));
                for r in 0..R {
                    let w = _mm512_set1_ps(*p.as_ptr().add(r * stride + t));
                    acc[r] = _mm512_fmadd_ps(w, vv, acc[r]);
                }
            }
            for r in 0..R {
                _mm512_storeu_ps(out.as_mut_ptr().add((h0 + r) * hd + c), acc[r]);
            }
        }
    }
}

/// `exp(x)` for 16 lanes: Cephes' `expf` (2ⁿ·e^r with a degree-6
/// polynomial), within 3e-7 relative of `f32::exp`; inputs are clamped to
/// [-87, 88], so it never overflows or goes subnormal.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let e = _mm512_add_ps(
        _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r),
        _mm512_set1_ps(1.0),
    );
    _mm512_scalef_ps(e, n)
}

/// [`softmax`] 16 lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(p: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = p.len();
    let ptr = p.as_mut_ptr();
    let mask = |i: usize| -> __mmask16 {
        let left = n - i;
        if left >= 16 {
            0xffff
        } else {
            (1u16 << left) - 1
        }
    };
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut mx = ninf;
    for i in (0..n).step_by(16) {
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(ninf, mask(i), ptr.add(i)));
    }
    let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    let mut sum = _mm512_setzero_ps();
    for i in (0..n).step_by(16) {
        let m = mask(i);
        let e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, ptr.add(i)), mx));
        sum = _mm512_mask_add_ps(sum, m, sum, e);
        _mm512_mask_storeu_ps(ptr.add(i), m, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    for i in (0..n).step_by(16) {
        let m = mask(i);
        _mm512_mask_storeu_ps(
            ptr.add(i),
            m,
            _mm512_mul_ps(_mm512_maskz_loadu_ps(m, ptr.add(i)), inv),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain attention over position-major keys, for comparison.
    fn reference(q: &[f32], k: &[f32], v: &[f32], seen: usize, s: Shape) -> Vec<f32> {
        let (hd, kvw) = (s.head_dim, s.kv_heads * s.head_dim);
        let rep = s.heads / s.kv_heads;
        let mut out = vec![0f32; s.heads * hd];
        for h in 0..s.heads {
            let j = h / rep;
            let sc: Vec<f64> = (0..seen)
                .map(|t| {
                    (0..hd)
                        .map(|d| q[h * hd + d] as f64 * k[t * kvw + j * hd + d] as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let max = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = sc.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hd {
                out[h * hd + d] = (0..seen)
                    .map(|t| e[t] / sum * v[t * kvw + j * hd + d] as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_matches_f32_exp() {
        if !avx512() {
            return;
        }
        use std::arch::x86_64::*;
        let xs: Vec<f32> = (0..4000).map(|i| -90.0 + i as f32 * 0.0231).collect();
        for c in xs.chunks_exact(16) {
            let mut out = [0f32; 16];
            // SAFETY: AVX-512F checked above.
            unsafe {
                #[target_feature(enable = "avx512f")]
                unsafe fn run(c: &[f32], out: &mut [f32; 16]) {
                    _mm512_storeu_ps(out.as_mut_ptr(), exp512(_mm512_loadu_ps(c.as_ptr())));
                }
                run(c, &mut out);
            }
            for (&x, &e) in c.iter().zip(&out) {
                let want = if x < -87.0 { 0.0 } else { x.exp() };
                let tol = want.abs() * 3e-7 + if x < -86.0 { 1e-37 } else { 0.0 };
                assert!((e - want).abs() <= tol, "exp({x}) = {e}, want {want}");
            }
        }
    }

    #[test]
    fn blocked_keys_give_plain_attention() {
        let s = Shape {
            heads: 6,
            kv_heads: 2,
            head_dim: 32,
        };
        let kvw = s.kv_heads * s.head_dim;
        let val = |i: usize, seed: usize| ((i * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0;
        for seen in [1, 15, 16, 17, 40] {
            let k: Vec<f32> = (0..seen * kvw).map(|i| val(i, 3)).collect();
            let v: Vec<f32> = (0..seen * kvw).map(|i| val(i, 5)).collect();
            let q: Vec<f32> = (0..s.heads * s.head_dim).map(|i| val(i, 9)).collect();
            let mut kt = Vec::new();
            for t in 0..seen {
                append_key(&mut kt, t, &k[t * kvw..(t + 1) * kvw]);
            }
            let want = reference(&q, &k, &v, seen, s);
            let mut fast = vec![0f32; want.len()];
            attend(&q, &kt, &v, seen, s, &mut fast);
            let mut plain = vec![0f32; want.len()];
            attend_portable(&q, &kt, &v, seen, s, &mut plain);
            for ((a, b), w) in fast.iter().zip(&plain).zip(&want) {
                assert!((a - w).abs() < 1e-5, "seen={seen}: {a} vs {w}");
                assert!((b - w).abs() < 1e-5, "seen={seen}: {b} vs {w}");
            }
        }
    }
}
