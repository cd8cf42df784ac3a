"""How kernels/activations.py's ERF_P and ERF_Q were made (not a benchmark; run it to check or refit).

    python -m bench.fit_erf

erf(x) = x * P(x^2) / Q(x^2) on [0, ERF_CLAMP], P of degree 5 and Q of degree 6 (Q(0) = 1), fitted to
float64 erf on 20 000 points by linearised least squares (P - erf(x)/x * (Q - 1) = erf(x)/x), iterated with
weights 1/|Q| (towards the true rational residual) grown where the error is largest (towards minimax). Prints
the coefficients and the largest error over [-6, 6], clamped as the kernel clamps, in float64 and after rounding
to float32, next to float32's own rounding of erf.
"""

import math

import numpy as np

from mbengine.kernels.activations import ERF_CLAMP

erf = np.vectorize(math.erf)


def rational(p, q, x):
    c = np.clip(x, -ERF_CLAMP, ERF_CLAMP)
    s = c * c
    return c * np.polyval(p[::-1], s) / np.polyval(q[::-1], s)


def fit(n_p: int = 6, n_q: int = 6, iterations: int = 60, points: int = 20000):
    x = np.linspace(0.0, ERF_CLAMP, points)
    s = x * x
    f = np.where(x == 0, 2 / math.sqrt(math.pi), erf(x) / np.where(x == 0, 1.0, x))
    ref = erf(x)
    w = np.ones_like(x)
    best = None
    for _ in range(iterations):
        a = np.concatenate(
            [np.vander(s, n_p, increasing=True), -f[:, None] * np.vander(s, n_q + 1, increasing=True)[:, 1:]], 1
        )
        sol = np.linalg.lstsq(a * w[:, None], f * w, rcond=None)[0]
        p, q = sol[:n_p], np.concatenate([[1.0], sol[n_p:]])
        err = np.abs(rational(p, q, x) - ref)
        if best is None or err.max() < best[0]:
            best = (err.max(), p, q)
        big_q = np.abs(np.polyval(q[::-1], s))
        w = w * (1 + 0.5 * err / err.max()) / big_q * big_q.mean()
        w /= w.mean()
    return best[1], best[2]


def main():
    p, q = fit()
    x = np.linspace(-6, 6, 400001)
    y, ref = rational(p, q, x), erf(x)
    print("ERF_P =", tuple(float(v) for v in p))
    print("ERF_Q =", tuple(float(v) for v in q))
    print(
        f"max |error|: float64 {np.abs(y - ref).max():.2e}, rounded to float32 "
        f"{np.abs(y.astype(np.float32) - ref).max():.2e} (erf's own float32 rounding: "
        f"{np.abs(ref.astype(np.float32) - ref).max():.2e})"
    )


if __name__ == "__main__":
    main()
