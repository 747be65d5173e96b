"""Reductions: sum, mean, max, min, argmax (the row ops are in ``_rows``).

Reproducibility: a sum over contiguous elements is always the same tree, built
from the element count only: fixed blocks of ``BLOCK`` elements, each summed
with 256 bytes of vector lanes, pairwise down to leaves of 8 vector steps
(``_fw_simd.h``; the CPU variant's copy, through ``_dispatch``: the same bits
in each), and the block partials combined pairwise in index order.
max, min and argmax also reduce fixed blocks (vectorised, NaN as a separate
flag) and fold the block results in index order. A team of any size computes
the same block partials and combines them in the same order, so the result is
bitwise the same for 1 or 64 threads (and the serial path is that same tree,
not another one). Each thread reads two distant blocks at once (two memory
streams per core read faster than one); that changes no partial.
"""

from libc.math cimport NAN
from libc.stdlib cimport free, malloc
from cython cimport floating
from cython.parallel cimport prange

from forkwait._native._team cimport team_begin, team_end
from forkwait._native._dispatch cimport kernels
from forkwait._native._fw_common cimport chunk_items

cdef enum:
    SUM = 0
    MAX = 1
    MIN = 2
    ARGMAX = 3

cdef enum:
    BLOCK = 4096    # the unit of parallel work and of reproducibility
    COLW = 128      # column tile of an axis reduction (stack buffer)

#: Reduction op codes, by name.
REDUCE = {"sum": SUM, "max": MAX, "min": MIN, "argmax": ARGMAX}


# ----------------------------------------------------------------- sums

cdef inline floating _pairwise_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    """Sum of n <= BLOCK elements: 256 bytes of lanes, pairwise (_fw_simd.h)."""
    if floating is float:
        return kernels().sum_f(x, n)
    else:
        return kernels().sum_d(x, n)


cdef floating _sum_contig(const floating* x, Py_ssize_t n) noexcept nogil:
    """The canonical sum: blocks of BLOCK, combined pairwise (see module doc)."""
    cdef Py_ssize_t nb, left
    if n <= BLOCK:
        return _pairwise_sum(x, n)
    nb = (n + BLOCK - 1) // BLOCK
    left = ((nb + 1) // 2) * BLOCK
    return _sum_contig(x, left) + _sum_contig(x + left, n - left)


cdef floating _combine_sum(const floating* p, Py_ssize_t lo,
                           Py_ssize_t hi) noexcept nogil:
    """Block partials p[lo:hi] combined with _sum_contig's tree."""
    cdef Py_ssize_t left
    if hi - lo == 1:
        return p[lo]
    left = lo + (hi - lo + 1) // 2
    return _combine_sum(p, lo, left) + _combine_sum(p, left, hi)


cdef void _canonical_nans(floating* v, Py_ssize_t n) noexcept nogil:
    """A sum that is NaN becomes the positive quiet NaN. Which NaN an addition
    of two NaNs (or of inf and -inf, x86's negative default NaN) returns
    follows the order of its operands, which the compiler picks for a
    commutative add (-O0 and -O2 builds of the same code differed in the sign
    of a NaN sum); so the result's bits would depend on the build."""
    cdef Py_ssize_t i
    for i in range(n):
        if v[i] != v[i]:
            v[i] = NAN


# ------------------------------------------------------------ max / min

cdef inline floating _max_contig(const floating* x, Py_ssize_t n,
                                 bint is_max) noexcept nogil:
    """max (or min) of 1 <= n <= BLOCK elements; any NaN makes the result NaN."""
    if floating is float:
        return kernels().max_f(x, n, is_max)
    else:
        return kernels().max_d(x, n, is_max)


cdef inline floating _pick(floating r, floating v, bint is_max) noexcept nogil:
    """The running max/min r updated with v; NaN is sticky."""
    if r != r:
        return r
    if v != v:
        return v
    if is_max:
        return v if v > r else r
    return v if v < r else r


cdef Py_ssize_t _find(const floating* x, Py_ssize_t n, floating m) noexcept nogil:
    """First index of m in x (of the first NaN when m is NaN)."""
    cdef Py_ssize_t i
    if m != m:
        for i in range(n):
            if x[i] != x[i]:
                return i
    else:
        for i in range(n):
            if x[i] == m:
                return i
    return 0


cdef inline bint _better(floating v, floating best) noexcept nogil:
    """argmax rule: a NaN wins over any number, else strictly greater."""
    if best != best:
        return False
    return v != v or v > best


# --------------------------------------------------------- whole arrays

cdef void _reduce_block(int op, const floating* x, Py_ssize_t n,
                        floating* value, Py_ssize_t* index) noexcept nogil:
    """Reduction of one block x[:n], n <= BLOCK (n >= 1 except for SUM)."""
    if op == SUM:
        value[0] = _pairwise_sum(x, n)
    elif op == MAX or op == MIN:
        value[0] = _max_contig(x, n, op == MAX)
    else:
        value[0] = _max_contig(x, n, True)
        index[0] = _find(x, n, value[0])


cdef void _reduce_pair(int op, const floating* xa, const floating* xb,
                       floating* va, floating* vb, Py_ssize_t* ia,
                       Py_ssize_t* ib) noexcept nogil:
    """_reduce_block of two full blocks at once (the same bits as two calls):
    two memory streams per core read much faster than one."""
    if op == SUM:
        if floating is float:
            kernels().sum2_f(xa, xb, BLOCK, va, vb)
        else:
            kernels().sum2_d(xa, xb, BLOCK, va, vb)
        return
    if floating is float:
        kernels().max2_f(xa, xb, BLOCK, op != MIN, va, vb)
    else:
        kernels().max2_d(xa, xb, BLOCK, op != MIN, va, vb)
    if op == ARGMAX:
        ia[0] = _find(xa, BLOCK, va[0])
        ib[0] = _find(xb, BLOCK, vb[0])


cdef void _blocks(int op, const floating* x, Py_ssize_t n, Py_ssize_t b0,
                  Py_ssize_t b1, floating* part, Py_ssize_t* pidx) noexcept nogil:
    """part[b] (pidx[b]: argmax) of the blocks b0 <= b < b1 of x[:n]: the full
    ones in pairs (b0 + j, b0 + h + j), then the odd and the partial one."""
    cdef Py_ssize_t full = n // BLOCK
    cdef Py_ssize_t j, b, start
    cdef Py_ssize_t h
    if full > b1:
        full = b1
    h = (full - b0) // 2 if full > b0 else 0
    for j in range(b0, b0 + h):
        _reduce_pair(op, x + j * BLOCK, x + (j + h) * BLOCK, part + j, part + j + h,
                     pidx + j, pidx + j + h)
    for b in range(b0 + 2 * h, b1):
        start = b * BLOCK
        _reduce_block(op, x + start, BLOCK if start + BLOCK <= n else n - start,
                      part + b, pidx + b)


cdef void _combine(int op, const floating* part, const Py_ssize_t* pidx,
                   Py_ssize_t nb, floating* value, Py_ssize_t* index) noexcept nogil:
    """The block results folded in a fixed order (sum: _sum_contig's tree)."""
    cdef Py_ssize_t b, best
    if op == SUM:
        value[0] = _combine_sum(part, 0, nb)
    elif op == MAX or op == MIN:
        value[0] = part[0]
        for b in range(1, nb):
            value[0] = _pick(value[0], part[b], op == MAX)
    else:
        best = 0
        for b in range(1, nb):
            if _better(part[b], part[best]):
                best = b
        value[0] = part[best]
        index[0] = best * BLOCK + pidx[best]


cdef void _reduce_range(int op, const floating* x, Py_ssize_t n,
                        floating* value, Py_ssize_t* index) noexcept nogil:
    """Serial reduction of x[:n] (n >= 1 except for SUM): the block results
    and the combination of _reduce_parallel, so that every team size (and the
    serial path) gives the same bits (max/min: also the sign of a zero)."""
    cdef Py_ssize_t nb, b, start, i = 0
    cdef floating v
    cdef floating* part
    cdef Py_ssize_t* pidx
    if n <= BLOCK:
        _reduce_block(op, x, n, value, index)
        return
    nb = (n + BLOCK - 1) // BLOCK
    part = <floating*>malloc(nb * sizeof(floating))
    pidx = <Py_ssize_t*>malloc(nb * sizeof(Py_ssize_t))
    if part != NULL and pidx != NULL:
        _blocks(op, x, n, 0, nb, part, pidx)
        _combine(op, part, pidx, nb, value, index)
    elif op == SUM:                         # out of memory: one block at a time
        value[0] = _sum_contig(x, n)
    else:                                   # (the same folds as _combine)
        _reduce_block(op, x, BLOCK, value, index)
        for b in range(1, nb):
            start = b * BLOCK
            _reduce_block(op, x + start, BLOCK if start + BLOCK <= n else n - start,
                          &v, &i)
            if op == ARGMAX:
                if _better(v, value[0]):
                    value[0] = v
                    index[0] = start + i
            else:
                value[0] = _pick(value[0], v, op == MAX)
    free(part)
    free(pidx)


cdef void _reduce_parallel(int op, const floating* x, Py_ssize_t n, int team,
                           floating* value, Py_ssize_t* index) noexcept nogil:
    """x[:n] reduced by a team over fixed blocks; same bits as the serial path."""
    cdef Py_ssize_t nb = (n + BLOCK - 1) // BLOCK
    # blocks dealt out in chunks as the element-wise kernels do (an even
    # number, so that _blocks pairs them); the result does not depend on it
    cdef Py_ssize_t chunk = 2 * ((chunk_items(n, 1, team) + 2 * BLOCK - 1) // (2 * BLOCK))
    cdef Py_ssize_t b0, b1, t
    cdef floating* part = <floating*>malloc(nb * sizeof(floating))
    cdef Py_ssize_t* pidx = <Py_ssize_t*>malloc(nb * sizeof(Py_ssize_t))
    if part == NULL or pidx == NULL:        # out of memory: the serial path
        free(part)
        free(pidx)
        _reduce_range(op, x, n, value, index)
        return
    for t in prange((nb + chunk - 1) // chunk, schedule="dynamic", num_threads=team):
        b0 = t * chunk
        b1 = b0 + chunk if b0 + chunk < nb else nb
        if b0 < b1:
            _blocks(op, x, n, b0, b1, part, pidx)
    _combine(op, part, pidx, nb, value, index)
    free(part)
    free(pidx)


def reduce_all(int op, const floating[::1] x, Py_ssize_t grain):
    """(value, index) of the ``REDUCE`` op over all of x (index: argmax only)."""
    cdef Py_ssize_t n = x.shape[0]
    cdef floating value = 0
    cdef Py_ssize_t index = 0
    cdef int team
    if n == 0:
        return 0.0, 0
    with nogil:
        team = team_begin(n, grain)
        if team == 1 or n <= BLOCK:
            _reduce_range(op, &x[0], n, &value, &index)
        else:
            _reduce_parallel(op, &x[0], n, team, &value, &index)
        team_end(team)
    if op == SUM:
        _canonical_nans(&value, 1)
    return value, index


# ----------------------------------------------------------- along an axis

cdef void _colsum(const floating* x, Py_ssize_t k, Py_ssize_t stride,
                  Py_ssize_t w, floating* out) noexcept nogil:
    """out[j] = sum over r < k of x[r * stride + j], j < w <= COLW, pairwise in r."""
    cdef floating tmp[COLW]
    cdef Py_ssize_t r, j, h
    cdef const floating* row
    if k <= 8:
        for j in range(w):
            out[j] = x[j]
        for r in range(1, k):
            row = x + r * stride
            for j in range(w):
                out[j] = out[j] + row[j]
        return
    h = k // 2
    _colsum(x, h, stride, w, out)
    _colsum(x + h * stride, k - h, stride, w, tmp)
    for j in range(w):
        out[j] = out[j] + tmp[j]


cdef void _colmax(int op, const floating* x, Py_ssize_t k, Py_ssize_t stride,
                  Py_ssize_t w, floating* out, Py_ssize_t* idx) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef const floating* row
    cdef floating v
    for j in range(w):
        out[j] = x[j]
    if op == ARGMAX:
        for j in range(w):
            idx[j] = 0
        for r in range(1, k):
            row = x + r * stride
            for j in range(w):
                if _better(row[j], out[j]):
                    out[j] = row[j]
                    idx[j] = r
    elif op == MAX:
        for r in range(1, k):
            row = x + r * stride
            for j in range(w):
                v = row[j]
                out[j] = v if (v > out[j] or v != v) else out[j]
            # NaN sticky: once out[j] is NaN, v > NaN is false and v == v
    else:
        for r in range(1, k):
            row = x + r * stride
            for j in range(w):
                v = row[j]
                out[j] = v if (v < out[j] or v != v) else out[j]


cdef void _axis_item(int op, const floating* x, Py_ssize_t k, Py_ssize_t inner,
                     Py_ssize_t item, Py_ssize_t tiles, floating* out,
                     Py_ssize_t* idx, Py_ssize_t divisor) noexcept nogil:
    """One work item of an axis reduction: row o, column tile t (item = o*tiles+t)."""
    cdef Py_ssize_t o = item // tiles
    cdef Py_ssize_t j0 = (item % tiles) * COLW
    cdef Py_ssize_t w = COLW if j0 + COLW <= inner else inner - j0
    cdef Py_ssize_t j
    cdef const floating* base = x + o * k * inner + j0
    cdef floating* dst = out + o * inner + j0
    if inner == 1:
        _reduce_range(op, base, k, dst, idx + o)
    elif op == SUM:
        _colsum(base, k, inner, w, dst)
    else:
        _colmax(op, base, k, inner, w, dst, idx + o * inner + j0)
    if divisor > 0:
        for j in range(w):
            dst[j] = dst[j] / divisor


def reduce_axis(int op, const floating[::1] x, Py_ssize_t outer, Py_ssize_t k,
                Py_ssize_t inner, floating[::1] out, Py_ssize_t[::1] idx,
                Py_ssize_t divisor, Py_ssize_t grain):
    """Reduce x viewed as (outer, k, inner) over its middle axis into out.

    ``out`` has outer * inner elements (for ARGMAX: the max values, and ``idx``
    the indices; idx may be any length otherwise). k >= 1, outer * inner >= 1.
    ``divisor`` > 0 divides the results (mean).
    """
    cdef Py_ssize_t tiles = 1 if inner == 1 else (inner + COLW - 1) // COLW
    cdef Py_ssize_t items = outer * tiles
    cdef Py_ssize_t item, o
    cdef Py_ssize_t* pidx = &idx[0]
    cdef int team
    with nogil:
        team = team_begin(outer * k * inner, grain)
        if team == 1:
            for item in range(items):
                _axis_item(op, &x[0], k, inner, item, tiles, &out[0], pidx, divisor)
        elif inner == 1 and outer < 2 * team and k > BLOCK:
            # a few long rows: each row by the whole team (same bits)
            for o in range(outer):
                _reduce_parallel(op, &x[0] + o * k, k, team, &out[0] + o, pidx + o)
                if divisor > 0:
                    out[o] = out[o] / divisor
        else:
            for item in prange(items, schedule="static", num_threads=team):
                _axis_item(op, &x[0], k, inner, item, tiles, &out[0], pidx, divisor)
        team_end(team)
        if op == SUM:
            _canonical_nans(&out[0], outer * inner)
