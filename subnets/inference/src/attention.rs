//! Causal attention of one new token over a sequence's cached keys and
//! values, for the CPU path.
//!
//! Keys are cached transposed in blocks of [`BLOCK`] positions
//! (`[block][kv_head·head_dim][BLOCK]`), so the scores of 16 positions are
//! one vector of multiply-adds over the head's dimensions, with no
//! horizontal sums; values are cached in the same blocks, position-major
//! within a block and head (`[block][kv_head][BLOCK][head_dim]`), so the
//! weighted sum is one multiply-add per dimension vector and position and
//! one head's values in a block are one contiguous run (`16·head_dim`
//! floats, 4 KB at head_dim 64). Grouped-query: query head `h` reads kv
//! head `h / (heads / kv_heads)`. The MLP gate's [`silu_mul`] lives here
//! too, beside the vector `exp` it shares with the softmax.

/// Positions per block of the key and value caches.
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

/// Appends the values of position `pos` (`kv_heads·head_dim` values) to
/// `vb`, laid out `[block][kv_head][BLOCK][head_dim]`: one head's values of
/// a block are one contiguous run.
pub(crate) fn append_value(vb: &mut Vec<f32>, pos: usize, v: &[f32], head_dim: usize) {
    let kvw = v.len();
    assert!(kvw.is_multiple_of(head_dim), "whole heads of values");
    let (block, lane) = (pos / BLOCK, pos % BLOCK);
    if vb.len() < (block + 1) * kvw * BLOCK {
        vb.resize((block + 1) * kvw * BLOCK, 0.0);
    }
    let base = block * kvw * BLOCK + lane * head_dim;
    for (j, head) in v.chunks_exact(head_dim).enumerate() {
        let at = base + j * head_dim * BLOCK;
        vb[at..at + head_dim].copy_from_slice(head);
    }
}

/// Where position `t`, kv head `j` starts in a value cache of
/// [`append_value`]'s layout.
fn value_at(t: usize, j: usize, hd: usize, kvw: usize) -> usize {
    (t / BLOCK) * kvw * BLOCK + j * hd * BLOCK + (t % BLOCK) * hd
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
            let at = value_at(t, j, hd, kvw);
            let vv = &v[at..at + hd];
            for (oi, vi) in o.iter_mut().zip(vv) {
                *oi += w * vi;
            }
        }
    }
}

/// `out = silu(g) · u = g / (1 + e⁻ᵍ) · u`, element-wise (the MLP gate).
pub(crate) fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    assert!(g.len() == out.len() && u.len() == out.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F; lengths asserted above.
        unsafe { done = silu_mul_avx512(g, u, out) };
    }
    for ((o, &g), &u) in out[done..].iter_mut().zip(&g[done..]).zip(&u[done..]) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// [`silu_mul`] 16 lanes at a time; returns how many values it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_mul_avx512(g: &[f32], u: &[f32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let n = out.len() / 16 * 16;
    let one = _mm512_set1_ps(1.0);
    for i in (0..n).step_by(16) {
        let gv = _mm512_loadu_ps(g.as_ptr().add(i));
        let e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        let s = _mm512_div_ps(gv, _mm512_add_ps(one, e));
        let uv = _mm512_loadu_ps(u.as_ptr().add(i));
        _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(s, uv));
    }
    n
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
    if !s.head_dim.is_multiple_of(16) {
        return attend_portable(q, kt, v, seen, s, out);
    }
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
unsafe fn group_avx512<const R: usize>(
    q: &[f32],
    kt: &[f32],
    v: &[f32],
    seen: usize,
    s: Shape,
    out: &mut [f32],
) {
    let (hd, kvw) = (s.head_dim, s.kv_heads * s.head_dim);
    let blocks = seen.div_ceil(BLOCK);
    assert!(kt.len() >= blocks * kvw * BLOCK && v.len() >= blocks * kvw * BLOCK);
    assert!(
        hd.is_multiple_of(16) && seen > 0,
        "a token sees at least itself"
    );
    assert!(q.len() >= s.heads * hd && out.len() >= s.heads * hd);
    let stride = blocks * BLOCK;
    let mut p = vec![0f32; R * stride];
    let g = Group {
        kt: kt.as_ptr(),
        v: v.as_ptr(),
        q: q.as_ptr(),
        p: p.as_mut_ptr(),
        hd,
        kvw,
        stride,
        scale: 1.0 / (hd as f32).sqrt(),
    };
    for j in 0..s.kv_heads {
        // Scores, four blocks of 16 positions at a time: 4·R independent
        // sums keep both multiply-add units busy.
        let mut b = 0;
        while b + 4 <= blocks {
            g.scores::<R, 4>(j, b);
            b += 4;
        }
        while b < blocks {
            g.scores::<R, 1>(j, b);
            b += 1;
        }
        for r in 0..R {
            softmax_avx512(&mut p[r * stride..r * stride + seen]);
        }
        // Weighted sums of the values, 64 dimensions (4·R sums) at a time.
        let o = out.as_mut_ptr().add(j * R * hd);
        let mut c = 0;
        while c + 64 <= hd {
            g.values::<R, 4>(j, c, seen, o);
            c += 64;
        }
        while c < hd {
            g.values::<R, 1>(j, c, seen, o);
            c += 16;
        }
    }
}

/// Asks for the cache line at `p` (which may lie past the cache's end: a
/// prefetch never faults).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn prefetch(p: *const f32) {
    use std::arch::x86_64::*;
    _mm_prefetch::<_MM_HINT_T0>(p.cast());
}

/// One attention call's pointers and sizes (see [`group_avx512`]).
#[cfg(target_arch = "x86_64")]
struct Group {
    kt: *const f32,
    v: *const f32,
    q: *const f32,
    p: *mut f32,
    hd: usize,
    kvw: usize,
    stride: usize,
    scale: f32,
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // register tiles read best with indices
impl Group {
    /// Scores of query heads `j·R..` over positions `b·16..(b+NB)·16`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn scores<const R: usize, const NB: usize>(&self, j: usize, b: usize) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); NB]; R];
        let base = self.kt.add(b * self.kvw * BLOCK + j * self.hd * BLOCK);
        let q = self.q.add(j * R * self.hd);
        for d in 0..self.hd {
            let mut kv = [_mm512_setzero_ps(); NB];
            for (k, kv) in kv.iter_mut().enumerate() {
                let at = base.add(k * self.kvw * BLOCK + d * BLOCK);
                *kv = _mm512_loadu_ps(at);
                // A sequence's cache lives in L3 during a batch, and each
                // head's run of a block (4 KB at head_dim 64) is too short
                // for the hardware prefetcher: ask for the next blocks' keys and, line for
                // line, for the values these blocks will weigh next.
                prefetch(at.wrapping_add(NB * self.kvw * BLOCK));
                prefetch(
                    self.v
                        .add(value_at((b + k) * BLOCK, j, self.hd, self.kvw) + d * 16),
                );
            }
            for r in 0..R {
                let qd = _mm512_set1_ps(*q.add(r * self.hd + d));
                for k in 0..NB {
                    acc[r][k] = _mm512_fmadd_ps(qd, kv[k], acc[r][k]);
                }
            }
        }
        let scale = _mm512_set1_ps(self.scale);
        for r in 0..R {
            for k in 0..NB {
                _mm512_storeu_ps(
                    self.p.add(r * self.stride + (b + k) * BLOCK),
                    _mm512_mul_ps(acc[r][k], scale),
                );
            }
        }
    }

    /// `out[h][c..c+16·NC]` for the query heads `j·R..` (`o` points at
    /// head `j·R`'s output).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn values<const R: usize, const NC: usize>(
        &self,
        j: usize,
        c: usize,
        seen: usize,
        o: *mut f32,
    ) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); NC]; R];
        // The values were asked for while scoring; ask now for the next kv
        // head's keys (`hd` lines a block, `hd / 16` per position).
        let next = (c == 0 && (j + 1) * self.hd < self.kvw)
            .then(|| self.kt.add((j + 1) * self.hd * BLOCK));
        let per = self.hd / 16;
        for t in 0..seen {
            let v = self.v.add(value_at(t, j, self.hd, self.kvw) + c);
            let mut vv = [_mm512_setzero_ps(); NC];
            for (k, vv) in vv.iter_mut().enumerate() {
                *vv = _mm512_loadu_ps(v.add(k * 16));
            }
            if let Some(kt) = next {
                let run = kt.add((t / BLOCK) * self.kvw * BLOCK + (t % BLOCK) * per * 16);
                for l in 0..per {
                    prefetch(run.add(l * 16));
                }
            }
            for r in 0..R {
                let w = _mm512_set1_ps(*self.p.add(r * self.stride + t));
                for k in 0..NC {
                    acc[r][k] = _mm512_fmadd_ps(w, vv[k], acc[r][k]);
                }
            }
        }
        for r in 0..R {
            for k in 0..NC {
                _mm512_storeu_ps(o.add(r * self.hd + c + k * 16), acc[r][k]);
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
    fn silu_mul_matches_scalar() {
        let g: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.05).collect();
        let u: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let mut out = vec![0f32; 1000];
        silu_mul(&g, &u, &mut out);
        for ((&g, &u), &o) in g.iter().zip(&u).zip(&out) {
            let want = (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32;
            assert!(
                (o - want).abs() <= 1e-6 * want.abs().max(1.0),
                "silu({g})·{u} = {o}, want {want}"
            );
        }
    }

    #[test]
    fn blocked_keys_give_plain_attention() {
        // head_dim 24 is not a whole number of vectors: the portable path.
        let shapes = [
            (6, 2, 32),
            (9, 3, 64),
            (4, 1, 80),
            (8, 2, 64),
            (2, 2, 16),
            (4, 2, 24),
        ];
        for (heads, kv_heads, head_dim) in shapes {
            check_shape(Shape {
                heads,
                kv_heads,
                head_dim,
            });
        }
    }

    fn check_shape(s: Shape) {
        let kvw = s.kv_heads * s.head_dim;
        let val = |i: usize, seed: usize| ((i * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0;
        for seen in [1, 15, 16, 17, 40, 64, 65, 100] {
            let k: Vec<f32> = (0..seen * kvw).map(|i| val(i, 3)).collect();
            let v: Vec<f32> = (0..seen * kvw).map(|i| val(i, 5)).collect();
            let q: Vec<f32> = (0..s.heads * s.head_dim).map(|i| val(i, 9)).collect();
            let (mut kt, mut vb) = (Vec::new(), Vec::new());
            for t in 0..seen {
                append_key(&mut kt, t, &k[t * kvw..(t + 1) * kvw]);
                append_value(&mut vb, t, &v[t * kvw..(t + 1) * kvw], s.head_dim);
            }
            let want = reference(&q, &k, &v, seen, s);
            let mut fast = vec![0f32; want.len()];
            attend(&q, &kt, &vb, seen, s, &mut fast);
            let mut plain = vec![0f32; want.len()];
            attend_portable(&q, &kt, &vb, seen, s, &mut plain);
            for ((a, b), w) in fast.iter().zip(&plain).zip(&want) {
                assert!(
                    (a - w).abs() < 1e-5,
                    "{}x{}: seen={seen}: {a} vs {w}",
                    s.heads,
                    s.head_dim
                );
                assert!((b - w).abs() < 1e-5, "seen={seen}: {b} vs {w}");
            }
        }
    }
}
