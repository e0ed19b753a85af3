"""The shared core of every graph-based method: propagation, sgn estimators, losses, training loop.

Written once and imported, never copied (style.md): `graph` (normalised adjacency and LightGCN
propagation), `estimators` (sgn with pluggable backwards), `losses` (BPR, BCE, smooth recall),
`training` (one loop with early stopping, checkpoints and resumption).
"""
