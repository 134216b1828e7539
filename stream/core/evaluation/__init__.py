"""evaluation layer: prequential metrics, curves, drift and the champion-vs-challengers
comparison, returned to the pipeline as plain values."""
