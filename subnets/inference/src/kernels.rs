//! CPU kernels for the hot path: `y = x · Wᵀ` with `W` kept in its GGUF
//! encoding (Q4_1, Q8_0, F16 or F32 rows).
//!
//! Reading the weights quantized (0.6 bytes a weight for Q4_1 instead of 4)
//! keeps the whole 135M model in cache. With AVX-512, each block of 32
//! weights is expanded in registers (the block scales are pre-converted to
//! f32 at load) and multiplied with up to 8 tokens at once, so a batch reads
//! every weight once and never writes an f32 copy; tokens are copied to
//! 64-byte-aligned memory so no 16-lane load splits a cache line. With
//! AVX2 only, one token takes a fused dequantize-and-dot and a batch
//! expands rows into a small buffer first. Rows are split across the rayon
//! pool. The arithmetic is the f32 arithmetic of the dequantized model
//! (`q·d + m` as a multiply and an add, as the reference dequantizer does;
//! only the order of the sums differs), so results match a reference that
//! dequantizes to f32. Tests run every path the CPU has.

use rayon::prelude::*;

use crate::gguf::{dequantize_into, GgmlType};

/// A weight matrix of `rows × cols` (`[out, in]`) in a GGUF encoding.
#[derive(Debug, Clone)]
pub struct QMatrix {
    /// Output features.
    pub rows: usize,
    /// Input features (a multiple of the block size).
    pub cols: usize,
    /// Encoding of each row.
    pub ty: GgmlType,
    data: Vec<u8>,
    row_bytes: usize,
    /// Q4_1 and Q8_0: every block's scale (and Q4_1's minimum) as f32,
    /// `[rows, blocks, 2 or 1]`, so the batch kernel broadcasts them from
    /// memory instead of converting them for every block.
    scales: Vec<f32>,
}

impl QMatrix {
    /// Wraps raw GGUF data (`rows` rows of `cols` values each). `None` when
    /// the type is unknown or the sizes disagree.
    pub fn new(rows: usize, cols: usize, ty: GgmlType, data: Vec<u8>) -> Option<Self> {
        let (vals, bytes) = ty.block()?;
        if !cols.is_multiple_of(vals) {
            return None;
        }
        let row_bytes = cols / vals * bytes;
        if data.len() != rows * row_bytes {
            return None;
        }
        let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let scales = match ty {
            GgmlType::Q4_1 => data
                .chunks_exact(bytes)
                .flat_map(|b| [f16(&b[0..2]), f16(&b[2..4])])
                .collect(),
            GgmlType::Q8_0 => data.chunks_exact(bytes).map(|b| f16(&b[0..2])).collect(),
            _ => Vec::new(),
        };
        Some(Self {
            rows,
            cols,
            ty,
            data,
            row_bytes,
            scales,
        })
    }

    /// Bytes held.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// Row `r` dequantized into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize_into(self.ty, self.row(r), out).expect("type checked in new");
    }

    /// The whole matrix as f32, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, o);
        }
        out
    }

    /// `out[t, r] = Σ_k x[t, k] · W[r, k]` for `n = x.len() / cols` tokens;
    /// `out` is `[n, rows]`.
    pub fn matmul_t(&self, x: &[f32], out: &mut [f32]) {
        self.matmul_t_with(Simd::best(), x, out)
    }

    /// [`Self::matmul_t`] with at most the given instruction set (tests run
    /// every path the CPU has).
    fn matmul_t_with(&self, simd: Simd, x: &[f32], out: &mut [f32]) {
        let k = self.cols;
        assert_eq!(x.len() % k, 0, "x is not a whole number of rows");
        let n = x.len() / k;
        assert_eq!(out.len(), n * self.rows, "out has the wrong size");
        if n == 0 {
            return;
        }
        // Rows in chunks across the pool. A chunk computes `[rows, n]` in a
        // small buffer (the kernels' natural layout) and writes its columns
        // of `out` (`[n, rows]`) itself. 32 rows: a 576-row projection is 18
        // chunks, which two threads share evenly (64-row chunks, 9 of them,
        // left one thread idle for a ninth of it; decode got 20% faster
        // alone, 10% in a batch of 8).
        const CHUNK: usize = 32;
        let rows = self.rows;
        let base = OutPtr(out.as_mut_ptr());
        #[cfg(target_arch = "x86_64")]
        if simd == Simd::Avx512 && n >= GEMM_MIN_TOKENS && k.is_multiple_of(16) {
            // A long prompt: a matrix-matrix product (rows expanded once,
            // tokens in the vector lanes; the transposed copy is aligned).
            let xt = x86::transpose_tokens(x, n, k);
            (0..rows.div_ceil(CHUNK)).into_par_iter().for_each(|ci| {
                let r0 = ci * CHUNK;
                // SAFETY: AVX-512 checked; chunk `ci` alone writes rows r0..r0+CHUNK.
                unsafe { x86::gemm512(self, r0, CHUNK.min(rows - r0), &xt, n, base) };
            });
            return;
        }
        // Batches of 8+ for the fused AVX-512 kernel: each group of 8 tokens
        // interleaved by block (see `x86::group_tokens`), in 64-byte aligned
        // memory like the copy below.
        let grouped = cfg!(target_arch = "x86_64")
            && simd == Simd::Avx512
            && n >= 8
            && matches!(self.ty, GgmlType::Q4_1 | GgmlType::Q8_0);
        let aligned;
        let x = if grouped {
            #[cfg(target_arch = "x86_64")]
            {
                aligned = x86::group_tokens(x, n, k);
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                aligned = Aligned::copy(x);
            }
            aligned.as_slice()
        } else if simd == Simd::Avx512
            && k.is_multiple_of(16)
            && !(x.as_ptr() as usize).is_multiple_of(64)
        {
            // 64-byte aligned tokens for the 16-lane loads (a load that
            // splits a cache line costs twice): a third faster than the
            // allocator's 16-byte alignment.
            aligned = Aligned::copy(x);
            aligned.as_slice()
        } else {
            x
        };
        if n == 1 {
            out.par_chunks_mut(CHUNK)
                .enumerate()
                .for_each(|(ci, dst)| self.rows_into(simd, ci * CHUNK, x, 1, dst, false));
            return;
        }
        (0..rows.div_ceil(CHUNK)).into_par_iter().for_each(|ci| {
            let r0 = ci * CHUNK;
            let m = CHUNK.min(rows - r0);
            let mut tmp = [0f32; CHUNK * 16];
            let mut heap = Vec::new();
            let dst: &mut [f32] = if m * n <= tmp.len() {
                &mut tmp[..m * n]
            } else {
                heap.resize(m * n, 0.0);
                &mut heap
            };
            self.rows_into(simd, r0, x, n, dst, grouped);
            let out = base.get();
            for t in 0..n {
                // SAFETY: `out` has n·rows values (asserted above); chunk
                // `ci` alone writes columns r0..r0+m, so writes never overlap.
                let col = unsafe { out.add(t * rows + r0) };
                for i in 0..m {
                    unsafe { *col.add(i) = dst[i * n + t] };
                }
            }
        });
    }

    /// `dst[i, t] = W[r0 + i] · x[t]` for the rows `dst` has room for;
    /// `grouped`: `x` is in `x86::group_tokens`' layout.
    fn rows_into(
        &self,
        simd: Simd,
        r0: usize,
        x: &[f32],
        n: usize,
        dst: &mut [f32],
        grouped: bool,
    ) {
        let k = self.cols;
        #[cfg(target_arch = "x86_64")]
        {
            if k.is_multiple_of(8) && simd >= Simd::Avx2 {
                // SAFETY: the CPU has the features; sizes are checked by the caller.
                let wide = k.is_multiple_of(16) && simd >= Simd::Avx512;
                unsafe { x86::rows_into(self, r0, x, n, dst, wide, grouped) };
                return;
            }
        }
        assert!(!grouped, "grouped tokens are for the AVX-512 kernel");
        let mut buf = vec![0f32; k];
        for (i, drow) in dst.chunks_exact_mut(n).enumerate() {
            dequantize_into(self.ty, self.row(r0 + i), &mut buf).expect("type checked in new");
            dot_many_portable(&buf, x, drow);
        }
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Stacks matrices with the same type and width into one (rows of `self`
    /// first), so several projections of the same input run as one call.
    pub fn concat(parts: &[&QMatrix]) -> Option<QMatrix> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.cols != first.cols || p.ty != first.ty)
        {
            return None;
        }
        let data: Vec<u8> = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        QMatrix::new(
            parts.iter().map(|p| p.rows).sum(),
            first.cols,
            first.ty,
            data,
        )
    }
}

/// Tokens from which [`QMatrix::matmul_t`] switches to the matrix-matrix
/// kernel (prompts).
const GEMM_MIN_TOKENS: usize = 32;

/// Instruction sets the kernels use, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Simd {
    Portable,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
}

impl Simd {
    /// The best this CPU has (detected once).
    fn best() -> Simd {
        use std::sync::OnceLock;
        static BEST: OnceLock<Simd> = OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c");
                if avx2 && is_x86_feature_detected!("avx512f") {
                    return Simd::Avx512;
                }
                if avx2 {
                    return Simd::Avx2;
                }
            }
            Simd::Portable
        })
    }

    /// Every level up to the best, for tests.
    #[cfg(test)]
    fn all() -> Vec<Simd> {
        [Simd::Portable, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|s| *s <= Simd::best())
            .collect()
    }
}

/// f32 values starting on a 64-byte boundary.
struct Aligned {
    blocks: Vec<Block64>,
    len: usize,
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Block64([f32; 16]);

impl Aligned {
    fn copy(x: &[f32]) -> Self {
        let mut blocks = vec![Block64([0.0; 16]); x.len().div_ceil(16)];
        for (b, c) in blocks.iter_mut().zip(x.chunks(16)) {
            b.0[..c.len()].copy_from_slice(c);
        }
        Aligned {
            blocks,
            len: x.len(),
        }
    }

    /// Zeros from the allocator's zeroed memory (fresh pages for a long
    /// prompt's megabytes, instead of a fill on the calling thread).
    fn zeroed(len: usize) -> Self {
        let n = len.div_ceil(16);
        let blocks = if n == 0 {
            Vec::new()
        } else {
            let layout = std::alloc::Layout::array::<Block64>(n).expect("buffer size");
            // SAFETY: the layout is not empty; all-zero bits are a valid
            // `Block64` (16 f32 zeros); the Vec takes the allocation with
            // the same layout (n elements of Block64, capacity n).
            unsafe {
                let p = std::alloc::alloc_zeroed(layout).cast::<Block64>();
                if p.is_null() {
                    std::alloc::handle_alloc_error(layout);
                }
                Vec::from_raw_parts(p, n, n)
            }
        };
        Aligned { blocks, len }
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr() as *mut f32, self.len) }
    }

    fn as_slice(&self) -> &[f32] {
        // SAFETY: `Block64` is 16 f32 with no padding (repr(C), size 64), so
        // the blocks are `16 × blocks.len() ≥ len` contiguous f32.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr() as *const f32, self.len) }
    }
}

/// `out`'s base pointer shared by the workers of [`QMatrix::matmul_t`],
/// each writing its own columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: used only for disjoint writes while `out` is mutably borrowed.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

fn dot_many_portable(w: &[f32], x: &[f32], out: &mut [f32]) {
    let k = w.len();
    for (o, xr) in out.iter_mut().zip(x.chunks_exact(k)) {
        let mut acc = [0f32; 8];
        for (wc, xc) in w.chunks_exact(8).zip(xr.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += wc[l] * xc[l];
            }
        }
        let tail: f32 = w
            .chunks_exact(8)
            .remainder()
            .iter()
            .zip(xr.chunks_exact(8).remainder())
            .map(|(a, b)| a * b)
            .sum();
        *o = acc.iter().sum::<f32>() + tail;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2/FMA/F16C and AVX-512 kernels. Quantized rows are expanded with exactly the
    //! arithmetic of `gguf::dequantize_into` (`q·d + m` as a multiply and an
    //! add), so only the order of the dot products' sums differs.
    use std::arch::x86_64::*;

    use super::QMatrix;
    use crate::gguf::{dequantize_into, GgmlType};

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn u8x8(v: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn i8x8(p: *const u8) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
    }

    /// One Q4_1 block (20 bytes at `b`) as 4×8 floats.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1(b: *const u8) -> [__m256; 4] {
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((b as *const i32).read_unaligned()));
        let d = _mm256_broadcastss_ps(dm);
        let m = _mm256_broadcastss_ps(_mm_shuffle_ps(dm, dm, 1));
        let q = _mm_loadu_si128(b.add(4) as *const __m128i);
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        [
            _mm256_add_ps(_mm256_mul_ps(u8x8(lo), d), m),
            _mm256_add_ps(_mm256_mul_ps(u8x8(_mm_srli_si128(lo, 8)), d), m),
            _mm256_add_ps(_mm256_mul_ps(u8x8(hi), d), m),
            _mm256_add_ps(_mm256_mul_ps(u8x8(_mm_srli_si128(hi, 8)), d), m),
        ]
    }

    /// One Q8_0 block (34 bytes at `b`) as 4×8 floats.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0(b: *const u8) -> [__m256; 4] {
        let d16 = (b as *const u16).read_unaligned() as i32;
        let d = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(d16)));
        let q = b.add(2);
        [
            _mm256_mul_ps(i8x8(q), d),
            _mm256_mul_ps(i8x8(q.add(8)), d),
            _mm256_mul_ps(i8x8(q.add(16)), d),
            _mm256_mul_ps(i8x8(q.add(24)), d),
        ]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dequant_row(ty: GgmlType, raw: &[u8], out: &mut [f32]) {
        let o = out.as_mut_ptr();
        match ty {
            GgmlType::Q4_1 => {
                for blk in 0..out.len() / 32 {
                    let w = q4_1(raw.as_ptr().add(blk * 20));
                    for (j, v) in w.iter().enumerate() {
                        _mm256_storeu_ps(o.add(blk * 32 + j * 8), *v);
                    }
                }
            }
            GgmlType::Q8_0 => {
                for blk in 0..out.len() / 32 {
                    let w = q8_0(raw.as_ptr().add(blk * 34));
                    for (j, v) in w.iter().enumerate() {
                        _mm256_storeu_ps(o.add(blk * 32 + j * 8), *v);
                    }
                }
            }
            _ => dequantize_into(ty, raw, out).expect("type checked in QMatrix::new"),
        }
    }

    /// Dot product of one quantized row with one vector, without expanding the row to memory.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fused_dot<const Q4_1: bool>(raw: &[u8], x: &[f32]) -> f32 {
        let xp = x.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        for blk in 0..x.len() / 32 {
            let w = if Q4_1 {
                q4_1(raw.as_ptr().add(blk * 20))
            } else {
                q8_0(raw.as_ptr().add(blk * 34))
            };
            for j in 0..4 {
                acc[j] = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(xp.add(blk * 32 + j * 8)), acc[j]);
            }
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    /// `out[r][t] = w[r] · x[t]` for R rows and T tokens of length `k`
    /// (a multiple of 8), all R×T sums in registers.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::needless_range_loop)] // register tiles read best with indices
    unsafe fn tile<const R: usize, const T: usize>(
        w: *const f32,
        x: *const f32,
        k: usize,
    ) -> [[f32; T]; R] {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut i = 0;
        while i < k {
            let mut wv = [_mm256_setzero_ps(); R];
            for r in 0..R {
                wv[r] = _mm256_loadu_ps(w.add(r * k + i));
            }
            for t in 0..T {
                let xv = _mm256_loadu_ps(x.add(t * k + i));
                for r in 0..R {
                    acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
                }
            }
            i += 8;
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                out[r][t] = hsum(acc[r][t]);
            }
        }
        out
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_rows<const R: usize>(
        w: *const f32,
        x: &[f32],
        n: usize,
        k: usize,
        dst: &mut [f32],
        i: usize,
    ) {
        let mut t = 0;
        while t + 4 <= n {
            let o = tile::<R, 4>(w, x.as_ptr().add(t * k), k);
            for (r, row) in o.iter().enumerate() {
                dst[(i + r) * n + t..(i + r) * n + t + 4].copy_from_slice(row);
            }
            t += 4;
        }
        while t < n {
            let o = tile::<R, 1>(w, x.as_ptr().add(t * k), k);
            for (r, row) in o.iter().enumerate() {
                dst[(i + r) * n + t] = row[0];
            }
            t += 1;
        }
    }

    /// 16 bytes as 16 floats (unsigned or signed).
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn u8x16(v: __m128i) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn i8x16(p: *const u8) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)))
    }

    /// One Q4_1 block (quants at `b`, scale and minimum at `sm`) as 2×16
    /// floats, with the arithmetic of [`q4_1`].
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn q4_1_512(b: *const u8, sm: *const f32) -> [__m512; 2] {
        let d = _mm512_set1_ps(*sm);
        let m = _mm512_set1_ps(*sm.add(1));
        let q = _mm_loadu_si128(b.add(4) as *const __m128i);
        let mask = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        [
            _mm512_add_ps(_mm512_mul_ps(u8x16(lo), d), m),
            _mm512_add_ps(_mm512_mul_ps(u8x16(hi), d), m),
        ]
    }

    /// One Q8_0 block (quants at `b`, scale at `sm`) as 2×16 floats, with
    /// the arithmetic of [`q8_0`].
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn q8_0_512(b: *const u8, sm: *const f32) -> [__m512; 2] {
        let d = _mm512_set1_ps(*sm);
        [
            _mm512_mul_ps(i8x16(b.add(2)), d),
            _mm512_mul_ps(i8x16(b.add(18)), d),
        ]
    }

    /// `out[t] = w · x[t]` over `blocks` blocks of one quantized row and T
    /// tokens (`stride` floats apart): each block is expanded in registers
    /// once and used by every token, so the weights are read once and never
    /// written out.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    #[allow(clippy::needless_range_loop)] // register tiles read best with indices
    unsafe fn fused_tile512<const Q4: bool, const T: usize>(
        row: *const u8,
        sm: *const f32,
        x: *const f32,
        stride: usize,
        blocks: usize,
    ) -> [f32; T] {
        let bytes = if Q4 { 20 } else { 34 };
        // Two sums per token (one per half block): twice the independent
        // chains, so multiply-add latency does not stall the loop.
        let mut lo = [_mm512_setzero_ps(); T];
        let mut hi = [_mm512_setzero_ps(); T];
        for blk in 0..blocks {
            let b = row.add(blk * bytes);
            let w = if Q4 {
                q4_1_512(b, sm.add(blk * 2))
            } else {
                q8_0_512(b, sm.add(blk))
            };
            for t in 0..T {
                let xp = x.add(t * stride + blk * 32);
                lo[t] = _mm512_fmadd_ps(w[0], _mm512_loadu_ps(xp), lo[t]);
                hi[t] = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(xp.add(16)), hi[t]);
            }
        }
        let mut out = [0f32; T];
        for t in 0..T {
            out[t] = _mm512_reduce_add_ps(_mm512_add_ps(lo[t], hi[t]));
        }
        out
    }

    /// [`fused_tile512`] for 8 tokens grouped by [`group_tokens`] (`x` at
    /// the group's first block of the pass): one sum per token (both half
    /// blocks add into it: 8 chains of two multiply-adds a block are enough
    /// to hide their latency), reduced together by [`hsum8`]. The 8
    /// separate horizontal sums cost a sixth of a row's instructions.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn fused_tile8_512<const Q4: bool>(
        row: *const u8,
        sm: *const f32,
        x: *const f32,
        blocks: usize,
    ) -> [f32; 8] {
        let bytes = if Q4 { 20 } else { 34 };
        let mut acc = [_mm512_setzero_ps(); 8];
        for blk in 0..blocks {
            let b = row.add(blk * bytes);
            let w = if Q4 {
                q4_1_512(b, sm.add(blk * 2))
            } else {
                q8_0_512(b, sm.add(blk))
            };
            for (t, acc) in acc.iter_mut().enumerate() {
                let xp = x.add(blk * 256 + t * 32);
                *acc = _mm512_fmadd_ps(w[0], _mm512_loadu_ps(xp), *acc);
                *acc = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(xp.add(16)), *acc);
            }
        }
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), hsum8(acc));
        out
    }

    /// The lane sums of 8 vectors, in order, in 24 instructions (8
    /// separate reductions take 64): 256-bit halves of pairs added, then
    /// 128-bit quarters of quads, then the last 4 values of each 128-bit
    /// lane, gathered into token order.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn hsum8(a: [__m512; 8]) -> __m256 {
        // [p.L0+p.L2, p.L1+p.L3, q.L0+q.L2, q.L1+q.L3] (L = 128-bit lane).
        let halves = |p: __m512, q: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(p, q),
                _mm512_shuffle_f32x4::<0xEE>(p, q),
            )
        };
        let (s01, s23) = (halves(a[0], a[1]), halves(a[2], a[3]));
        let (s45, s67) = (halves(a[4], a[5]), halves(a[6], a[7]));
        // Lane t: four partial sums of vector t (of 4 + t in the second).
        let quarters = |p: __m512, q: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(p, q),
                _mm512_shuffle_f32x4::<0xDD>(p, q),
            )
        };
        let (c0, c4) = (quarters(s01, s23), quarters(s45, s67));
        // Lane t: [c0.0+c0.2, c4.0+c4.2, c0.1+c0.3, c4.1+c4.3], then element
        // 0 = sum of vector t, element 1 = sum of vector t + 4.
        let d = _mm512_add_ps(_mm512_unpacklo_ps(c0, c4), _mm512_unpackhi_ps(c0, c4));
        let e = _mm512_add_ps(d, _mm512_permute_ps::<0x4E>(d));
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_castps512_ps256(_mm512_permutexvar_ps(idx, e))
    }

    /// [`rows_into`] for a batch of Q4_1 or Q8_0 rows with AVX-512. One row
    /// at a time (a tile of 8 tokens keeps its sums in registers); long
    /// rows in passes of [`PASS`] blocks, so the tokens' slice of `x` stays
    /// in L1 while every row of the chunk reads it.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn fused_batch512<const Q4: bool>(
        m: &QMatrix,
        r0: usize,
        x: &[f32],
        n: usize,
        dst: &mut [f32],
        grouped: bool,
    ) {
        assert_eq!(grouped, n >= 8, "batches of 8+ come grouped");
        /// 24 blocks: 768 columns, 24 KB of `x` for 8 tokens.
        const PASS: usize = 24;
        let (bytes, per) = if Q4 { (20, 2) } else { (34, 1) };
        let k = m.cols;
        let nrows = dst.len() / n;
        let kb = k / 32;
        let mut b0 = 0;
        while b0 < kb {
            let blocks = PASS.min(kb - b0);
            let first = b0 == 0;
            let xp = x.as_ptr().add(b0 * 32);
            for i in 0..nrows {
                prefetch_row(m, r0 + i + AHEAD);
                let row = m.row(r0 + i).as_ptr().add(b0 * bytes);
                let sm = m.scales.as_ptr().add(((r0 + i) * kb + b0) * per);
                let d = &mut dst[i * n..(i + 1) * n];
                let mut t = 0;
                macro_rules! run {
                    ($t:literal) => {
                        let o = fused_tile512::<Q4, $t>(row, sm, xp.add(t * k), k, blocks);
                        if first {
                            d[t..t + $t].copy_from_slice(&o);
                        } else {
                            for (a, b) in d[t..t + $t].iter_mut().zip(o) {
                                *a += b;
                            }
                        }
                        t += $t;
                    };
                }
                while t + 8 <= n {
                    // Group t / 8 starts at t·k; its blocks are 256 floats.
                    let xg = x.as_ptr().add(t * k + b0 * 256);
                    let o = fused_tile8_512::<Q4>(row, sm, xg, blocks);
                    if first {
                        d[t..t + 8].copy_from_slice(&o);
                    } else {
                        for (a, b) in d[t..t + 8].iter_mut().zip(o) {
                            *a += b;
                        }
                    }
                    t += 8;
                }
                if t + 4 <= n {
                    run!(4);
                }
                if t + 2 <= n {
                    run!(2);
                }
                if t < n {
                    run!(1);
                }
                let _ = t;
            }
            b0 += blocks;
        }
    }

    /// `x` (`[n, k]`, k a multiple of 32) with each whole group of 8 tokens
    /// interleaved by block: group `g`'s block `b` holds its 8 tokens' 32
    /// values one after another (`[g][b][8][32]` from `g·8·k`), so the
    /// fused kernel reads a group's block as one 1 KB run at fixed offsets;
    /// the last `n % 8` tokens follow in rows. 64-byte aligned.
    pub(super) fn group_tokens(x: &[f32], n: usize, k: usize) -> super::Aligned {
        assert!(
            k.is_multiple_of(32) && x.len() >= n * k,
            "whole blocks of tokens"
        );
        let mut g = super::Aligned::zeroed(n * k);
        let dst = g.as_mut_slice();
        let full = n / 8 * 8;
        for t in 0..full {
            let base = t / 8 * 8 * k + t % 8 * 32;
            for (b, src) in x[t * k..(t + 1) * k].chunks_exact(32).enumerate() {
                dst[base + b * 256..base + b * 256 + 32].copy_from_slice(src);
            }
        }
        dst[full * k..].copy_from_slice(&x[full * k..n * k]);
        g
    }

    /// `x` (`[n, k]`) in groups of 32 tokens, each group transposed to
    /// `[k, 32]` (zero-padded, 64-byte aligned) so the kernel reads it as
    /// one stream.
    pub(super) fn transpose_tokens(x: &[f32], n: usize, k: usize) -> super::Aligned {
        use rayon::prelude::*;
        let groups = n.div_ceil(32);
        let mut t = super::Aligned::zeroed(groups * k * 32);
        // Groups in parallel (a 512-token prompt's copies, one per
        // projection, cost a tenth of its step on one thread), each written
        // in order, reading its tokens' rows side by side.
        t.as_mut_slice()
            .par_chunks_mut(k * 32)
            .enumerate()
            .for_each(|(g, out)| {
                let rows: Vec<&[f32]> = (g * 32..n.min(g * 32 + 32))
                    .map(|t| &x[t * k..(t + 1) * k])
                    .collect();
                for (kk, col) in out.chunks_exact_mut(32).enumerate() {
                    for (o, row) in col.iter_mut().zip(&rows) {
                        *o = row[kk];
                    }
                }
            });
        t
    }

    /// Rows `r0..r0 + rows` of `x · Wᵀ` for `n` tokens into `out`
    /// (`[n, rows]`): the rows are expanded to f32 once (exactly as the
    /// reference dequantizer does), then for every 32 tokens, eight rows at
    /// a time take 8×32 sums in 16 registers, one broadcast weight times two
    /// vectors of tokens per step.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    #[allow(clippy::needless_range_loop)] // register tiles read best with indices
    pub(super) unsafe fn gemm512(
        m: &QMatrix,
        r0: usize,
        rows: usize,
        xt: &super::Aligned,
        n: usize,
        out: super::OutPtr,
    ) {
        const R: usize = 8;
        let k = m.cols;
        let padded = rows.div_ceil(R) * R;
        let mut w = vec![0f32; padded * k];
        for r in 0..rows {
            dequant_row(m.ty, m.row(r0 + r), &mut w[r * k..(r + 1) * k]);
        }
        let xt = xt.as_slice();
        let mut tile = [[0f32; 32]; R];
        let out = out.get();
        for g in 0..n.div_ceil(32) {
            let xp = xt.as_ptr().add(g * k * 32);
            let tokens = 32.min(n - g * 32);
            for i in (0..rows).step_by(R) {
                let wp = w.as_ptr().add(i * k);
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                for kk in 0..k {
                    let x0 = _mm512_load_ps(xp.add(kk * 32));
                    let x1 = _mm512_load_ps(xp.add(kk * 32 + 16));
                    for r in 0..R {
                        let wv = _mm512_set1_ps(*wp.add(r * k + kk));
                        acc[r][0] = _mm512_fmadd_ps(wv, x0, acc[r][0]);
                        acc[r][1] = _mm512_fmadd_ps(wv, x1, acc[r][1]);
                    }
                }
                for r in 0..R {
                    _mm512_storeu_ps(tile[r].as_mut_ptr(), acc[r][0]);
                    _mm512_storeu_ps(tile[r].as_mut_ptr().add(16), acc[r][1]);
                }
                let rr = R.min(rows - i);
                for t in 0..tokens {
                    let o = out.add((g * 32 + t) * m.rows + r0 + i);
                    for r in 0..rr {
                        *o.add(r) = tile[r][t];
                    }
                }
            }
        }
    }

    /// Rows to prefetch ahead of the one being read: weights stream from
    /// memory, and the hardware prefetcher alone leaves the loop waiting.
    const AHEAD: usize = 4;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn prefetch_row(m: &QMatrix, r: usize) {
        if r < m.rows {
            // Every cache line the row touches: rows are not line-aligned.
            let start = m.data.as_ptr().add(r * m.row_bytes) as usize;
            let end = start + m.row_bytes;
            let mut line = start & !63;
            while line < end {
                _mm_prefetch::<_MM_HINT_T0>(line as *const i8);
                line += 64;
            }
        }
    }

    /// [`QMatrix::rows_into`] with AVX2.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows_into(
        m: &QMatrix,
        r0: usize,
        x: &[f32],
        n: usize,
        dst: &mut [f32],
        wide: bool,
        grouped: bool,
    ) {
        let k = m.cols;
        let nrows = dst.len() / n;
        // `wide`: 16 lanes and 32 registers (AVX-512), one token or many.
        if wide && m.ty == GgmlType::Q4_1 {
            fused_batch512::<true>(m, r0, x, n, dst, grouped);
            return;
        }
        if wide && m.ty == GgmlType::Q8_0 {
            fused_batch512::<false>(m, r0, x, n, dst, grouped);
            return;
        }
        assert!(!grouped, "grouped tokens are for the fused kernel");
        if n == 1 && m.ty == GgmlType::Q4_1 {
            for (i, d) in dst.iter_mut().enumerate() {
                prefetch_row(m, r0 + i + AHEAD);
                *d = fused_dot::<true>(m.row(r0 + i), x);
            }
            return;
        }
        if n == 1 && m.ty == GgmlType::Q8_0 {
            for (i, d) in dst.iter_mut().enumerate() {
                prefetch_row(m, r0 + i + AHEAD);
                *d = fused_dot::<false>(m.row(r0 + i), x);
            }
            return;
        }
        const R: usize = 3;
        let mut buf = vec![0f32; R * k];
        let mut i = 0;
        while i < nrows {
            let r = (nrows - i).min(R);
            for j in 0..r {
                prefetch_row(m, r0 + i + j + AHEAD);
                dequant_row(m.ty, m.row(r0 + i + j), &mut buf[j * k..(j + 1) * k]);
            }
            match r {
                3 => tile_rows::<3>(buf.as_ptr(), x, n, k, dst, i),
                2 => tile_rows::<2>(buf.as_ptr(), x, n, k, dst, i),
                _ => tile_rows::<1>(buf.as_ptr(), x, n, k, dst, i),
            }
            i += r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{quantize_q4_1, quantize_q8_0};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    fn reference(w: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let n = x.len() / cols;
        let mut out = vec![0f32; n * rows];
        for t in 0..n {
            for r in 0..rows {
                out[t * rows + r] = (0..cols)
                    .map(|c| w[r * cols + c] as f64 * x[t * cols + c] as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn matmul_matches_reference_for_every_type_and_batch() {
        // 70 = 32 + 32 + 6: three chunks, row groups of 3; 96 columns take the
        // 16-lane path where the CPU has it, 32 the 8-lane one; 1,600 are
        // read in three passes.
        for (rows, cols) in [(70, 96), (70, 32), (9, 1600)] {
            let wf = data(rows * cols, 1);
            for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q4_1, GgmlType::Q8_0] {
                let raw = match ty {
                    GgmlType::F32 => wf.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    GgmlType::F16 => wf
                        .iter()
                        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                        .collect(),
                    GgmlType::Q4_1 => quantize_q4_1(&wf),
                    GgmlType::Q8_0 => quantize_q8_0(&wf),
                    GgmlType::Other(_) => unreachable!(),
                };
                let m = QMatrix::new(rows, cols, ty, raw).unwrap();
                let deq = m.dequantize();
                for (simd, n) in Simd::all()
                    .into_iter()
                    .flat_map(|s| [1, 2, 3, 4, 5, 8, 9, 15, 16, 27, 32, 45, 70].map(|n| (s, n)))
                {
                    let x = data(n * cols, 7 + n as u32);
                    let mut out = vec![0f32; n * rows];
                    m.matmul_t_with(simd, &x, &mut out);
                    let want = reference(&deq, rows, cols, &x);
                    for (a, b) in out.iter().zip(&want) {
                        // f32 sums of up to 1,600 terms: relative, not absolute.
                        assert!(
                            (a - b).abs() < 1e-4 + 2e-6 * b.abs(),
                            "{ty:?} {simd:?} n={n}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn eight_way_lane_sum_is_each_vectors_sum_in_order() {
        if Simd::best() != Simd::Avx512 {
            return;
        }
        use std::arch::x86_64::*;
        // Vector v lane l holds v·1000 + l·l: every lane and vector differs,
        // and the sums are exact in f32.
        let vals: Vec<[f32; 16]> = (0..8)
            .map(|v| std::array::from_fn(|l| (v * 1000 + l * l) as f32))
            .collect();
        let mut got = [0f32; 8];
        // SAFETY: AVX-512 checked above.
        unsafe {
            #[target_feature(enable = "avx512f,avx2,fma,f16c")]
            unsafe fn run(vals: &[[f32; 16]], got: &mut [f32; 8]) {
                let a: [__m512; 8] = std::array::from_fn(|v| _mm512_loadu_ps(vals[v].as_ptr()));
                _mm256_storeu_ps(got.as_mut_ptr(), x86::hsum8(a));
            }
            run(&vals, &mut got);
        }
        let want: Vec<f32> = vals.iter().map(|v| v.iter().sum()).collect();
        assert_eq!(got.to_vec(), want);
    }

    #[test]
    fn simd_expansion_is_bit_exact() {
        // The AVX2 path expands rows with the same arithmetic as the
        // reference dequantizer: a one-hot input reads single weights back.
        let (rows, cols) = (5, 64);
        let wf = data(rows * cols, 11);
        for (ty, raw) in [
            (GgmlType::Q4_1, quantize_q4_1(&wf)),
            (GgmlType::Q8_0, quantize_q8_0(&wf)),
        ] {
            let m = QMatrix::new(rows, cols, ty, raw).unwrap();
            let deq = m.dequantize();
            for c in [0, 7, 16, 31, 45, 63] {
                let mut x = vec![0f32; cols];
                x[c] = 1.0;
                for (simd, n) in Simd::all().into_iter().flat_map(|s| [(s, 1), (s, 2)]) {
                    let xs: Vec<f32> = x.iter().copied().cycle().take(n * cols).collect();
                    let mut out = vec![0f32; n * rows];
                    m.matmul_t_with(simd, &xs, &mut out);
                    for r in 0..rows {
                        assert_eq!(
                            out[r],
                            deq[r * cols + c],
                            "{ty:?} {simd:?} n={n} r={r} c={c}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(QMatrix::new(2, 33, GgmlType::Q8_0, vec![0; 68]).is_none());
        assert!(QMatrix::new(2, 32, GgmlType::Q8_0, vec![0; 67]).is_none());
        assert!(QMatrix::new(2, 32, GgmlType::Other(13), vec![0; 68]).is_none());
    }
}
