"""Benchmarks of paper Table 5: FLOP counting, timing, the image and the video benchmarks."""
