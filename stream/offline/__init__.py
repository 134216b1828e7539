"""The one-off and batch deployment modes: `stream train`, `stream replay`, `stream compare`.

They drive the very same Pipeline (features, model, score-then-learn, evaluation) as the
real-time scorer, from a file or a bounded topic range, so there is no train/serve skew.
"""
